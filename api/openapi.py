"""The OpenAPI 3.0 document, generated from the served endpoints and their msgspec types.

``openapi_document(endpoints)`` walks the same ``Endpoint`` list the app serves: path and
query parameters, request body, success and error responses, examples, and the two ways to
send a key (``x-api-key`` or ``Authorization: Bearer``, which ``api.auth`` accepts alike).
msgspec emits JSON Schema 2020-12; ``_to_openapi_30`` rewrites the few constructs OpenAPI 3.0
spells differently (``null`` in unions becomes ``nullable``, ``examples`` becomes ``example``),
because the overview promises 3.0 and the Swagger UI
shipped in ``swagger-ui-bundle`` renders 3.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from api.endpoints import Endpoint
from api.errors import ERROR_TABLE, ErrorBody
from api.urls import RESERVED_SLUGS

_REF = "#/components/schemas/{name}"
_STATUS_TEXT = {
    200: "Success",
    201: "Created",
    400: "Bad Request - invalid parameters or request body",
    401: "Unauthorized - invalid or missing API key",
    403: "Forbidden - insufficient permissions or plan limit reached",
    404: "Not Found - the resource does not exist",
    409: "Conflict - the resource already exists",
    429: "Too Many Requests - rate limit exceeded",
    500: "Server Error - something went wrong on our end",
    503: "Service Unavailable - the query took too long (narrow it) or the file storage did not answer; try again",
}
# Either scheme authenticates a request (api/auth.py reads both): OR-ed alternatives in OpenAPI.
SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearerAuth": []}]
SECURITY_SCHEMES = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "The same API key as `x-api-key`."},
}
# Rules the services enforce that the types alone do not show, documented wherever the field appears.
_SLUG_RULES = (
    "Case-sensitive: `Sale` and `sale` are two links. 1 to 190 letters, digits, `-` and `_`. "
    "Reserved (in any case): " + ", ".join(f"`{s}`" for s in sorted(RESERVED_SLUGS)) + "."
)
_SPLIT_RULES = (
    "A/B split of visitors: empty (no split), or 2 to 4 destinations whose `weight`s (1-99 each) sum to 100; "
    "a visitor is assigned one by weight and keeps it (a cookie); a matching routing rule takes precedence."
)
FIELD_NOTES = {"slug": _SLUG_RULES, "split": _SPLIT_RULES}
_RATE_HEADERS = {
    "X-RateLimit-Limit": "Requests allowed in the window closest to refusing",
    "X-RateLimit-Remaining": "Requests left in that window",
    "X-RateLimit-Reset": "When that window starts over (Unix time, seconds)",
}


def _to_openapi_30(node: Any) -> Any:
    """Rewrite a JSON Schema 2020-12 fragment (from msgspec) into the OpenAPI 3.0 dialect."""
    if isinstance(node, list):
        return [_to_openapi_30(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_openapi_30(v) for k, v in node.items()}
    if "examples" in out:
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "enum" in out and "type" not in out:
        values = out["enum"]
        if all(isinstance(v, str) for v in values):
            out["type"] = "string"
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out["type"] = "integer"
    for union in ("anyOf", "oneOf"):
        if union in out:
            branches = [b for b in out[union] if b != {"type": "null"}]
            if len(branches) < len(out[union]):
                out["nullable"] = True
                if len(branches) == 1:
                    only = branches[0]
                    del out[union]
                    if "$ref" in only:  # 3.0 ignores siblings of $ref: wrap it
                        out["allOf"] = [only]
                    else:
                        out.update({k: v for k, v in only.items() if k not in out})
                else:
                    out[union] = branches
    return out


def _error_response(status: int) -> dict[str, Any]:
    codes = sorted(code for s, code in ERROR_TABLE.values() if s == status)
    example_code = codes[0] if codes else "INTERNAL_ERROR"
    response: dict[str, Any] = {
        "description": _STATUS_TEXT.get(status, "Error") + (f" ({', '.join(codes)})" if codes else ""),
        "content": {
            "application/json": {
                "schema": {"$ref": _REF.format(name="ErrorBody")},
                "example": {"error": {"code": example_code, "message": _STATUS_TEXT.get(status, "error")}},
            }
        },
    }
    if status == 429:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
    return response


def _query_parameters(query: type[msgspec.Struct], components: dict[str, Any]) -> list[dict[str, Any]]:
    schema = components[query.__name__]
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _to_openapi_30(prop),
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema["properties"].items()
    ]


def _operation(e: Endpoint, components: dict[str, Any], refs: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": e.operation_id or f"{e.method.lower()}_{e.path.strip('/').replace('/', '_')}",
        "summary": e.summary,
        "tags": [e.tag],
        "security": SECURITY,
    }
    description = e.description + (f"\n\nRequires the `{e.scope}` scope." if e.scope else "")
    if description.strip():
        op["description"] = description.strip()
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 100}}
        for p in e.path_params
    ]
    if e.query is not None:
        params += _query_parameters(e.query, components)
    if params:
        op["parameters"] = params
    if e.body is not None:
        content: dict[str, Any] = {"schema": refs[e.body]}
        if e.example is not None:
            content["example"] = e.example
        op["requestBody"] = {"required": True, "content": {"application/json": content}}
    headers = {name: {"description": text, "schema": {"type": "integer"}} for name, text in _RATE_HEADERS.items()}
    if e.response_variants:
        success = {"type": "array", "items": {"oneOf": [refs[v] for v in e.response_variants]}}
    else:
        success = refs[e.response]
    responses: dict[str, Any] = {}
    for status in (e.status, *e.other_statuses):
        responses[str(status)] = {
            "description": _STATUS_TEXT.get(status, "Success"),
            "headers": headers,
            "content": {"application/json": {"schema": success}},
        }
    errors = {401, 429, 500, *e.errors}
    if e.body is not None or e.query is not None:
        errors.add(400)
    if e.scope is not None:
        errors.add(403)
    if e.path_params:
        errors.add(404)
    for status in sorted(errors):
        responses[str(status)] = _error_response(status)
    op["responses"] = responses
    return op


def openapi_document(
    endpoints: Sequence[Endpoint],
    extra_paths: Mapping[str, Mapping[str, Any]] | None = None,
    title: str = "H0p API",
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of ``endpoints`` plus the non-JSON routes' own ``extra_paths``."""
    types: list[Any] = [ErrorBody]
    for e in endpoints:
        for t in (e.body, e.response, e.query, *e.response_variants):
            if t is not None and t not in types:
                types.append(t)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    for component in components.values():
        for name, prop in component.get("properties", {}).items():
            if name in FIELD_NOTES:
                prop["description"] = " ".join(filter(None, (prop.get("description"), FIELD_NOTES[name])))
    refs = {t: _to_openapi_30(s) for t, s in zip(types, schemas, strict=True)}
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, components, refs)
    for path, operations in (extra_paths or {}).items():
        for method, op in operations.items():
            if op.get("security") == [{"apiKey": []}]:  # the non-JSON routes take a key the same two ways
                op = {**op, "security": SECURITY}
            paths.setdefault(path, {})[method] = op
    for e in endpoints:  # query structs became parameters; they are not schemas of their own
        if e.query is not None:
            components.pop(e.query.__name__, None)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Manage short links, custom domains, folders, tags and API keys. Authenticate with the "
                "`x-api-key` header, or send the same key as `Authorization: Bearer <key>`. "
                'Errors are `{"error": {"code", "message", "details"?}}`; each detail\'s `path` names the field. '
                "Lists take `page` (from 0) and `limit` (default 10, max 50).\n\n"
                f"**Slugs.** {_SLUG_RULES}\n\n**Split.** {_SPLIT_RULES}\n\n"
                "**Custom domains** serve links once verified through DNS; a pending claim does not stop "
                "another workspace from verifying the domain, and lapses after a while."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {name: _to_openapi_30(s) for name, s in sorted(components.items())},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def swagger_page(assets: str) -> str:
    """The /ui page, loading Swagger UI from ``assets`` (a URL prefix that names the bundle's version)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>H0p API</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/swagger-ui-standalone-preset.js"></script>
<script src="/ui/init.js"></script>
</body></html>
"""


SWAGGER_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({url: "/doc", dom_id: "#swagger-ui", deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});
};
"""
