"""The MCP tool catalogue itself: schemas, examples, scopes and error shape (no servers needed)."""

from __future__ import annotations

import importlib
import json

import jsonschema  # type: ignore[import-untyped]  # no stubs installed; the SDK brings it
import msgspec
import pytest

from api.app import ROUTE_MODULES, all_endpoints
from api.errors import NotFound, RateLimited, ValidationFailed
from api.mcp.server import error_result
from api.mcp.spec import ToolSpec
from api.mcp.tools import TOOLS
from api.routes.files import RawEndpoint


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_tool_schema_is_a_json_schema_object_whose_examples_the_api_accepts(tool: ToolSpec) -> None:
    jsonschema.Draft202012Validator.check_schema(tool.input_schema)
    assert tool.input_schema["type"] == "object"
    assert tool.input_schema["examples"] and "Example arguments: {" in tool.full_description
    for example in tool.input_schema["examples"]:
        jsonschema.validate(example, tool.input_schema)
        msgspec.json.decode(json.dumps(example), type=tool.args)  # what a call decodes with
    if tool.output_schema is not None:
        jsonschema.Draft202012Validator.check_schema(tool.output_schema)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_tool_requires_the_scope_of_the_route_it_mirrors(tool: ToolSpec) -> None:
    scopes: dict[str, str | None] = {f"{e.method} {e.path}": e.scope for e in all_endpoints()}
    for module in map(importlib.import_module, ROUTE_MODULES):
        for value in vars(module).values():
            if isinstance(value, RawEndpoint):  # non-JSON routes (QR images) are declared apart
                scopes[f"{value.method} {value.path}"] = value.scope
    for route in tool.route.split(", "):
        assert route in scopes, f"{tool.name} mirrors {route}, which the API does not serve"
        assert scopes[route] == tool.scope


def test_tool_names_are_unique_and_snake_case() -> None:
    names = [t.name for t in TOOLS]
    assert len(names) == len(set(names))
    assert all(n.replace("_", "").isalpha() and n.islower() for n in names)


def test_tool_error_carries_the_api_error_code_message_and_field_paths() -> None:
    not_found = error_result(NotFound("link 'link_x' not found"))
    invalid = error_result(ValidationFailed([{"path": "rules[0].url", "message": "expected an absolute URL"}]))
    limited = error_result(RateLimited(3))
    assert not_found.is_error and not_found.structured_content == {
        "error": {"code": "NOT_FOUND", "message": "link 'link_x' not found"}
    }
    assert invalid.structured_content == {
        "error": {
            "code": "VALIDATION_ERROR",
            "message": "expected an absolute URL",
            "details": [{"message": "expected an absolute URL", "path": "rules[0].url"}],
        }
    }
    assert limited.structured_content is not None and limited.structured_content["error"]["retryAfter"] == 3
