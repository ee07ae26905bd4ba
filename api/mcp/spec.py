"""What a tool is: name, description with an example, required scope, argument type, service call.

Each tool is a thin adapter like an HTTP handler: its arguments are a msgspec Struct (the very
schema the route decodes, or a small wrapper adding a path parameter such as ``id``), its input
and output schemas are generated from those Structs, and its body calls the service the route
calls. The tool modules (``api.mcp.links`` …) declare ``ToolSpec`` lists; ``api.mcp.tools``
collects them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from api.errors import field_error
from api.services.context import ServiceContext
from api.services.keys import Principal

# Ids as the routes take them in a path (longer ones, or with a NUL, are NOT_FOUND there, refused here)
Id = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[^\x00]*$")]


def refuse_nul(node: object, path: str = "") -> None:
    """VALIDATION_ERROR naming the first text holding a NUL, which Postgres text cannot store (as the routes)."""
    if isinstance(node, str):
        if "\x00" in node:
            raise field_error(path, "text must not contain NUL characters")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            refuse_nul(item, f"{path}[{i}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            refuse_nul(key, path)
            refuse_nul(item, f"{path}.{key}" if path else str(key))


@dataclass(frozen=True, slots=True)
class ImageResult:
    """A tool result that is an image (sent as MCP image content, base64)."""

    data: bytes
    mime_type: str
    caption: str = ""


def json_schema(tp: Any) -> dict[str, Any]:
    """A self-contained JSON Schema for ``tp`` whose root is the object itself (MCP wants ``type: object``)."""
    (ref,), components = msgspec.json.schema_components([tp], ref_template="#/$defs/{name}")
    if "$ref" not in ref:
        return ref
    root = dict(components.pop(ref["$ref"].rsplit("/", 1)[1]))
    if components:
        root["$defs"] = components
    return root


ToolRun = Callable[[ServiceContext, Principal, Any], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool: what an agent reads in ``tools/list`` and what a call runs."""

    name: str
    title: str
    description: str
    example: str  # JSON arguments an agent can copy; alternatives separated by " or "
    route: str  # the HTTP route this tool mirrors: same service, same scope
    scope: str
    args: type[msgspec.Struct]
    run: ToolRun
    output: Any = None
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    input_schema: dict[str, Any] = field(init=False)
    output_schema: dict[str, Any] | None = field(init=False)

    def __post_init__(self) -> None:
        # Every tool's arguments are checked for NUL before its body runs, whichever Struct they
        # decode to: the routes refuse NUL in paths, queries and bodies alike, and so do the tools.
        run = self.run

        async def run_checked(ctx: ServiceContext, who: Principal, args: Any) -> object:
            refuse_nul(msgspec.to_builtins(args))
            return await run(ctx, who, args)

        object.__setattr__(self, "run", run_checked)
        # The examples go into the schema too: some clients show schema examples, not descriptions.
        examples = [json.loads(e) for e in self.example.split(" or ")]
        object.__setattr__(self, "input_schema", {**json_schema(self.args), "examples": examples})
        output = self.output
        schema = output if isinstance(output, dict) or output is None else json_schema(output)
        object.__setattr__(self, "output_schema", schema)

    @property
    def full_description(self) -> str:
        return (
            f"{self.description}\n\nExample arguments: {self.example}\n\n"
            f"Same as `{self.route}` of the HTTP API; requires an API key with the `{self.scope}` scope."
        )
