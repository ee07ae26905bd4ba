"""The API's exception tree and the one table that maps it to HTTP status and error code.

Services raise these (they know nothing of HTTP); the app turns any of them into
``{"error": {"code", "message", "details"?}}`` with the status from ``ERROR_TABLE``.
Anything else becomes a 500 ``INTERNAL_ERROR`` without a trace.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec


class H0pError(Exception):
    """Base of every error the API reports to a client."""

    default_message = "request failed"

    def __init__(self, message: str | None = None, details: Sequence[dict[str, Any]] | None = None) -> None:
        self.message = message or self.default_message
        self.details = list(details) if details else None
        super().__init__(self.message)


class ValidationFailed(H0pError):
    """The request (body, query or path) is not acceptable; details name the field paths."""

    default_message = "request validation failed"

    def __init__(self, details: Sequence[dict[str, Any]], message: str | None = None) -> None:
        super().__init__(message or (details[0]["message"] if len(details) == 1 else None), details)


class Unauthorized(H0pError):
    default_message = "missing or invalid API key"


class Forbidden(H0pError):
    default_message = "you do not have permission for this action"


class ActionNotAllowed(H0pError):
    default_message = "this API key does not have the scope for this action"


class PlanLimitReached(H0pError):
    default_message = "your plan limit has been reached"


class FeatureNotAvailable(H0pError):
    default_message = "this feature is not available on your plan"


class NotFound(H0pError):
    default_message = "the requested resource does not exist"


class AlreadyExists(H0pError):
    default_message = "a resource with this identifier already exists"


class RateLimited(H0pError):
    default_message = "rate limit exceeded"

    def __init__(self, retry_after_s: int, message: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = {**(headers or {}), "Retry-After": str(retry_after_s)}


class QueryTimedOut(H0pError):
    """A read took longer than its statement timeout (analytics over a range too wide for it)."""

    default_message = "the query took too long"


class StorageUnavailable(H0pError):
    """The file storage (S3) could not be reached in time; the request changed nothing and may be retried."""

    default_message = "the file storage is unavailable; try again later"


class InternalError(H0pError):
    default_message = "something went wrong on our end"


# The one place where a domain error becomes an HTTP status and a code (most specific first).
ERROR_TABLE: dict[type[H0pError], tuple[int, str]] = {
    ValidationFailed: (400, "VALIDATION_ERROR"),
    Unauthorized: (401, "UNAUTHORIZED"),
    Forbidden: (403, "FORBIDDEN"),
    ActionNotAllowed: (403, "ACTION_NOT_ALLOWED"),
    PlanLimitReached: (403, "PLAN_LIMIT_REACHED"),
    FeatureNotAvailable: (403, "FEATURE_NOT_AVAILABLE"),
    NotFound: (404, "NOT_FOUND"),
    AlreadyExists: (409, "ALREADY_EXIST"),
    RateLimited: (429, "RATE_LIMITED"),
    QueryTimedOut: (503, "QUERY_TIMEOUT"),
    StorageUnavailable: (503, "STORAGE_UNAVAILABLE"),
    InternalError: (500, "INTERNAL_ERROR"),
}


def status_and_code(exc: H0pError) -> tuple[int, str]:
    """HTTP status and error code of ``exc`` (looked up by class, then by its bases)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return ERROR_TABLE[InternalError]


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    """One problem with one field: ``path`` is a dotted/indexed path such as ``rules[0].url``."""

    message: str
    path: str | None = None


class ErrorInfo(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorBody(msgspec.Struct):
    """The body of every error response."""

    error: ErrorInfo


def error_body(exc: H0pError) -> tuple[int, ErrorBody]:
    """The status and JSON body a client receives for ``exc``."""
    status, code = status_and_code(exc)
    details = None
    if exc.details:
        details = [ErrorDetail(message=str(d.get("message", "")), path=d.get("path")) for d in exc.details]
    return status, ErrorBody(ErrorInfo(code=code, message=exc.message, details=details))


_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def from_msgspec(
    exc: msgspec.ValidationError | msgspec.DecodeError, root: str = "", whole: str = "body"
) -> ValidationFailed:
    """Translate a msgspec error ("Expected `int`, got `str` - at `$.rules[0].url`") to a field path.

    A missing field is named by its own path; an error about the whole document (malformed JSON,
    an array where an object belongs) by ``whole``, so every detail names where to look.
    """
    match = _MSGSPEC_PATH.match(str(exc))
    assert match is not None  # the pattern matches any text
    message = match.group("message")
    if "matching regex '^[^\\\\x00]*$'" in message:  # schemas.TEXT, in words
        message = "text must not contain NUL characters"
    path = (match.group("path") or "").lstrip(".")
    unknown = re.match(r"Object contains unknown field `([^`]*)`", message)
    if unknown:
        message += "; see /doc for the fields of this request"
    field = unknown or re.match(r"Object missing required field `([^`]*)`", message)
    if field:
        path = f"{path}.{field.group(1)}" if path else field.group(1)
    full = ".".join(p for p in (root, path) if p).replace(".[", "[") or whole or None
    return ValidationFailed([{"path": full, "message": message}])


def field_error(path: str, message: str) -> ValidationFailed:
    """A validation error on one field."""
    return ValidationFailed([{"path": path, "message": message}])
