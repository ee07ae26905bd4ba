"""The MCP server: one low-level ``mcp`` Server whose tools are the API's services.

Both transports (Streamable HTTP at ``/mcp`` and stdio for ``h0p mcp``) build their server
here; they differ only in how a call finds its caller (``CallerSource``). Every tool call
goes through the same gate as an HTTP route (``api/endpoints.py``): the caller's key is
resolved, one request is charged to the key's rate limit (here over stdio; by ``/mcp`` for
every HTTP request, ``initialize`` and ``tools/list`` included), the key's scope is checked, the
arguments are decoded with the msgspec schema the route decodes with, and the service runs. Any ``H0pError``
comes back as a tool error (``isError``) carrying the API's code and message; anything else
is logged here and reported as ``INTERNAL_ERROR`` without a trace.
"""

from __future__ import annotations

import base64
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
import msgspec
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError

from api import auth, ratelimit
from api.errors import H0pError, InternalError, RateLimited, error_body, from_msgspec, status_and_code
from api.mcp.spec import ImageResult, ToolSpec
from api.mcp.tools import TOOLS
from api.services.context import ServiceContext
from api.services.keys import Principal

log = logging.getLogger("h0p.mcp")

SERVER_NAME = "h0p"
INSTRUCTIONS = (
    "H0p manages short links. Create links with create_link (UTM fields, routing rules, tags and a "
    "folder are all arguments), find them with list_links or get_link, change them with update_link. "
    "Tags and folders must exist before a link refers to them: use list_tags/create_tag and "
    "list_folders/create_folder first. get_qr_code draws a link's QR code; get_analytics reads its clicks. "
    "Ids are prefixed strings (link_…, tag_…, fold_…). A failed call returns "
    '{"error": {"code", "message", "details"}} with the same codes as the HTTP API (VALIDATION_ERROR '
    "with field paths, NOT_FOUND, ALREADY_EXIST, ACTION_NOT_ALLOWED, PLAN_LIMIT_REACHED, "
    "FEATURE_NOT_AVAILABLE, RATE_LIMITED with retryAfter seconds)."
)

CallerSource = Callable[["ServerRequestContext[Any, Any]"], Awaitable[tuple[ServiceContext, Principal]]]
"""For one tool call: the process's service context and who calls (raises ``Unauthorized``).

Over HTTP both come from the request the endpoint authenticated; over stdio, the process's
own context and its ``H0P_API_KEY``.
"""

_JSON = msgspec.json.Encoder()


def _tool_definition(spec: ToolSpec) -> types.Tool:
    return types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.full_description,
        input_schema=spec.input_schema,
        output_schema=spec.output_schema,
        annotations=types.ToolAnnotations(
            title=spec.title,
            read_only_hint=spec.read_only,
            destructive_hint=spec.destructive,
            idempotent_hint=spec.idempotent,
            open_world_hint=False,
        ),
    )


def error_result(exc: H0pError) -> types.CallToolResult:
    """The tool error an agent sees for a domain error: the API's error body, as JSON text and structured."""
    _, body = error_body(exc)
    payload: dict[str, Any] = msgspec.to_builtins(body)
    if isinstance(exc, RateLimited):
        # An agent cannot read a Retry-After header: say how long to wait in the body.
        payload["error"]["retryAfter"] = exc.retry_after_s
    return types.CallToolResult(
        content=[types.TextContent(text=_JSON.encode(payload).decode())],
        structured_content=payload,
        is_error=True,
    )


def success_result(value: object) -> types.CallToolResult:
    """A tool's return value as MCP content: an image, or JSON both as text and as structured content."""
    if isinstance(value, ImageResult):
        content: list[types.ContentBlock]
        if value.mime_type == "image/svg+xml":
            # Model APIs accept raster images only: an SVG is more useful to an agent as its markup.
            content = [types.TextContent(text=value.data.decode())]
        else:
            content = [types.ImageContent(data=base64.b64encode(value.data).decode(), mime_type=value.mime_type)]
        if value.caption:
            content.append(types.TextContent(text=value.caption))
        return types.CallToolResult(content=content)
    structured = msgspec.to_builtins(value)
    if not isinstance(structured, dict):  # structured content must be a JSON object
        structured = {"data": structured}
    return types.CallToolResult(
        content=[types.TextContent(text=_JSON.encode(structured).decode())], structured_content=structured
    )


async def call_tool(spec: ToolSpec, ctx: ServiceContext, principal: Principal, arguments: dict[str, Any]) -> object:
    """Run one tool for ``principal`` in the order a route does (api/endpoints.py): scope, decode, call.

    The rate limit is charged before (by ``on_call_tool`` or the HTTP endpoint), ahead of even the name lookup.
    """
    auth.require_scope(principal, spec.scope)
    try:
        # Through JSON bytes on purpose: the route decodes the request body with this same call,
        # so types, lengths, unknown fields and error paths are judged identically.
        args = msgspec.json.decode(_JSON.encode(arguments), type=spec.args)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise from_msgspec(exc) from None
    return await spec.run(ctx, principal, args)


def _version() -> str:
    try:
        return importlib.metadata.version("h0p")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout that is not installed
        return ""


def build_server(caller_of: CallerSource, version: str | None = None, charge_messages: bool = True) -> Server[Any]:
    """The MCP server for one process; ``caller_of`` is asked on every tool call and listing.

    ``charge_messages``: charge each ``tools/call`` and ``tools/list`` to the key's rate limit
    here (stdio); False where the transport charges every request itself (``/mcp``).
    """
    tools = {spec.name: spec for spec in TOOLS}
    listing = types.ListToolsResult(tools=[_tool_definition(spec) for spec in TOOLS])

    async def on_list_tools(
        rctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        if charge_messages:
            # Listing is a request like any other: a loop of tools/list must hit the limit too.
            try:
                ctx, principal = await caller_of(rctx)
                await ratelimit.charge(ctx, principal)
            except H0pError as exc:  # a listing has no error result: a protocol error carrying the API's code
                _, code = status_and_code(exc)
                raise MCPError(code=types.INVALID_REQUEST, message=f"{code}: {exc.message}") from None
        return listing

    async def on_call_tool(
        rctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            ctx, principal = await caller_of(rctx)
            # One tool call is one API request of the key (HTTP and MCP share its windows), charged
            # before the name is looked up: calls of unknown tools are not free either.
            if charge_messages:
                await ratelimit.charge(ctx, principal)
        except H0pError as exc:
            return error_result(exc)
        spec = tools.get(params.name)
        if spec is None:
            # The spec's answer to an unknown tool is a protocol error, not a tool result.
            raise MCPError(code=types.INVALID_PARAMS, message=f"unknown tool {params.name!r}; see tools/list")
        try:
            value = await call_tool(spec, ctx, principal, params.arguments or {})
        except H0pError as exc:
            return error_result(exc)
        except Exception:
            log.exception("MCP tool %s failed", spec.name)
            return error_result(InternalError())
        return success_result(value)

    return Server(
        SERVER_NAME,
        version=_version() if version is None else version,
        title="H0p link management",
        instructions=INSTRUCTIONS,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


__all__ = ["CallerSource", "build_server", "call_tool", "error_result", "success_result"]
