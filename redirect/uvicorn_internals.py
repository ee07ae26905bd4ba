"""The one door to uvicorn's private names: each one the edge's protocol relies on, checked at import.

``redirect/protocol.py`` answers GET and HEAD inside uvicorn's httptools protocol (a subclass
selected through the documented ``Config(http=…)`` hook) and leaves everything else to it:
POST and bodies, ``Expect: 100-continue``, chunked and streamed ASGI responses, upgrades,
flow control, pipelining behind an ASGI request, 400s on bad input, graceful shutdown. That
was chosen over a protocol of our own (uvicorn's ``httptools_impl.py`` rewritten) because
those are the edge cases where an HTTP server goes wrong, uvicorn's tests cover them, and the
edge only needs the fast path (which is ours either way: the benchmark does not choose). The
price is leaning on uvicorn's private names, and this module makes that price explicit and safe:

- every private name the subclass touches is imported from here or listed below;
  ``tests/redirect/test_uvicorn_contract.py`` checks protocol.py uses no other;
- at import the installed uvicorn's version and each listed name are checked, and a mismatch
  stops the edge at start-up with one line (``IncompatibleUvicorn``), not as wrong behaviour
  under load;
- the behaviours relied on (pipelining, keep-alive, 100-continue, flow control, shutdown,
  connection loss) are exercised over real sockets by the contract tests.

Upgrading uvicorn: bump the pin and add the version to ``TESTED_VERSIONS``, read the diff of
``httptools_impl.py`` for the methods protocol.py replaces (on_response_complete,
timeout_keep_alive_handler, _unset_keepalive_if_required), run the contract tests and
tests/redirect/test_protocol.py, and keep the change only if they pass.
"""

from __future__ import annotations

import dis
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import uvicorn
from uvicorn.config import Config

__all__ = ["STATUS_LINE", "Config", "HttpToolsProtocol", "IncompatibleUvicorn", "ServerState", "problems"]

# The versions protocol.py was read against and the contract tests passed with (pyproject.toml pins one).
TESTED_VERSIONS = frozenset({"0.54.0"})

# HttpToolsProtocol methods the edge overrides or calls, with the parameters it relies on.
PROTOCOL_METHODS: dict[str, tuple[str, ...]] = {
    "__init__": ("config", "server_state", "app_state", "_loop"),
    "connection_made": ("transport",),
    "connection_lost": ("exc",),
    "data_received": ("data",),
    "on_headers_complete": (),
    "on_body": ("body",),
    "on_message_complete": (),
    "on_response_complete": (),  # replaced: the keep-alive timer is armed only when none is
    "timeout_keep_alive_handler": (),  # replaced, then called once the connection was idle long enough
    "_unset_keepalive_if_required": (),  # replaced by a no-op: the timer stays armed across reads
    "_start_asgi_task": ("cycle", "app"),  # starts the next pipelined request
    "send_400_response": ("msg",),
    "shutdown": (),
}

# Per-connection state the edge reads or writes, set by uvicorn in these methods.
PROTOCOL_ATTRIBUTES = (
    "loop", "client", "transport", "flow", "parser", "server_state", "tasks", "pipeline", "cycle", "url",
    "headers", "expect_100_continue", "limit_concurrency", "timeout_keep_alive", "timeout_keep_alive_task",
)  # fmt: skip
_ATTRIBUTES_SET_IN = ("__init__", "connection_made", "on_message_begin")

# uvicorn calls these hooks from its own methods: an override it no longer calls would do nothing.
CALL_SITES = {"_unset_keepalive_if_required": "data_received", "on_response_complete": "on_headers_complete"}

# The request cycle the edge's stand-in (protocol._Answering) replaces while a reply is looked up:
# uvicorn reads and writes these on whatever ``self.cycle`` holds.
CYCLE_FIELDS = ("response_complete", "keep_alive", "disconnected", "message_event")
FLOW_FIELDS = ("write_paused",)
FLOW_METHODS = ("pause_reading", "resume_reading")
SERVER_STATE_FIELDS = ("total_requests", "default_headers", "connections", "tasks")


class IncompatibleUvicorn(SystemExit):
    """The installed uvicorn lacks what protocol.py relies on: the process exits with this one line."""


def _refuse(found: Iterable[str]) -> IncompatibleUvicorn:
    return IncompatibleUvicorn(
        f"h0p: the redirect edge cannot start with the installed uvicorn {uvicorn.__version__}: "
        f"{'; '.join(found)} (see redirect/uvicorn_internals.py)"
    )


try:
    from uvicorn import server as uvicorn_server
    from uvicorn.protocols.http import flow_control, httptools_impl
except ImportError as exc:
    raise _refuse([f"module {exc.name} is missing"]) from None


def problems(
    version: str,
    protocol: type | None,
    cycle: type | None,
    flow: type | None,
    server_state: type | None,
    status_line: object,
) -> list[str]:
    """What does not match, one short phrase each; empty when everything the edge relies on is there."""
    found: list[str] = []
    if version not in TESTED_VERSIONS:
        found.append(f"not a version the edge was tested with ({', '.join(sorted(TESTED_VERSIONS))})")
    classes = {"HttpToolsProtocol": protocol, "RequestResponseCycle": cycle, "FlowControl": flow,
               "ServerState": server_state}  # fmt: skip
    found += [f"{name} is missing" for name, cls in classes.items() if cls is None]
    if protocol is not None:
        found += _protocol_problems(protocol)
    for cls, names in ((cycle, CYCLE_FIELDS), (flow, FLOW_FIELDS), (server_state, SERVER_STATE_FIELDS)):
        if cls is not None:
            fields = _stored_attributes(cls, ("__init__",))
            found += [f"{cls.__name__}.{f} is no longer set" for f in names if f not in fields]
    if flow is not None:
        found += [f"{flow.__name__}.{m}() is missing" for m in FLOW_METHODS if not callable(getattr(flow, m, None))]
    if not (isinstance(status_line, dict) and all(isinstance(status_line.get(s), bytes) for s in range(100, 600))):
        found.append("STATUS_LINE is no longer a status → bytes table for 100-599")
    return found


def _protocol_problems(protocol: type) -> list[str]:
    found: list[str] = []
    name = protocol.__name__
    for method, parameters in PROTOCOL_METHODS.items():
        function = getattr(protocol, method, None)
        if not callable(function):
            found.append(f"{name}.{method}() is missing")
            continue
        try:
            actual = tuple(inspect.signature(function).parameters)[1:]  # without self
        except (TypeError, ValueError):
            actual = ()
        if actual[: len(parameters)] != parameters:
            found.append(f"{name}.{method}{_params(actual)} no longer takes {_params(parameters)}")
    set_in = _stored_attributes(protocol, _ATTRIBUTES_SET_IN)
    found += [f"{name}.{a} is no longer set" for a in PROTOCOL_ATTRIBUTES if a not in set_in]
    for hook, caller in CALL_SITES.items():
        if hook not in _names_used(getattr(protocol, caller, None)):
            found.append(f"{name}.{caller}() no longer calls {hook}()")
    return found


def _params(names: Iterable[str]) -> str:
    return f"({', '.join(names)})"


def _stored_attributes(cls: type, methods: Iterable[str]) -> set[str]:
    """Attribute names assigned (``x.name = …``) in these methods of the class or its bases."""
    stored: set[str] = set()
    for klass in cls.__mro__:
        for method in methods:
            function = vars(klass).get(method)
            code = getattr(function, "__code__", None)
            if code is not None:
                stored.update(i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR")
    return stored


def _names_used(function: Callable[..., Any] | None) -> tuple[str, ...]:
    code = getattr(function, "__code__", None)
    return code.co_names if code is not None else ()


def _check() -> None:
    found = problems(
        uvicorn.__version__,
        getattr(httptools_impl, "HttpToolsProtocol", None),
        getattr(httptools_impl, "RequestResponseCycle", None),
        getattr(flow_control, "FlowControl", None),
        getattr(uvicorn_server, "ServerState", None),
        getattr(httptools_impl, "STATUS_LINE", None),
    )
    if found:
        raise _refuse(found)


_check()

# Only now: each of these was just checked to exist.
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402
