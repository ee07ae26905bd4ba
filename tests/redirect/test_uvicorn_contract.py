"""What the edge relies on in uvicorn: the start-up check of its private names, and its behaviours over real sockets.

``redirect/protocol.py`` subclasses uvicorn's httptools protocol (see ``redirect/uvicorn_internals.py``).
The first tests check the check itself: it passes on the pinned uvicorn, names what is missing
on one that lacks something, stops ``h0p redirect`` with one line, and covers every uvicorn name
protocol.py uses. The others are the contract a uvicorn upgrade must keep, against a real edge
over loopback: 100-continue, flow control, graceful shutdown, connection loss mid-request,
keep-alive and pipelining through uvicorn's own path. tests/redirect/test_protocol.py holds the
rest of the contract (pipelining across both paths, keep-alive timeout and reuse, HTTP/1.0,
Connection: close, clients gone during a lookup, replies' order before a close or a 400).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from uvicorn.protocols.http import flow_control, httptools_impl

import redirect
from h0p_settings import Settings
from redirect import protocol as edge_protocol
from redirect import uvicorn_internals
from tests.redirect.conftest import LinkMaker, edge_settings, read_events, serving, unique
from tests.redirect.test_protocol import connect, read_responses, warm
from tests.redirect.test_resolution import eventually
from tests.services import free_port

ROOT = Path(redirect.__file__).parent.parent


def real_problems(**replace: Any) -> list[str]:
    """The check run on the installed uvicorn, with some of its parts replaced."""
    parts: dict[str, Any] = {
        "version": uvicorn.__version__,
        "protocol": httptools_impl.HttpToolsProtocol,
        "cycle": httptools_impl.RequestResponseCycle,
        "flow": flow_control.FlowControl,
        "server_state": uvicorn_internals.ServerState,
        "status_line": httptools_impl.STATUS_LINE,
    }
    return uvicorn_internals.problems(**(parts | replace))


def without(cls: type, *names: str) -> type:
    """A copy of ``cls`` whose own namespace lacks ``names`` (as if uvicorn had renamed them)."""
    namespace = {k: v for k, v in vars(cls).items() if k not in names and k not in ("__dict__", "__weakref__")}
    return type(cls.__name__, cls.__bases__, namespace)


# -- the start-up check ---------------------------------------------------------------------------


def test_the_pinned_uvicorn_has_everything_the_edge_relies_on() -> None:
    assert real_problems() == []


def test_the_version_the_edge_was_tested_with_is_the_one_pyproject_pins() -> None:
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [p for p in pins if p.startswith("uvicorn==")]
    assert pin.removeprefix("uvicorn==") in uvicorn_internals.TESTED_VERSIONS


class _NoLongerCallsTheHook(httptools_impl.HttpToolsProtocol):
    def data_received(self, data: bytes) -> None:  # uvicorn's, without _unset_keepalive_if_required
        self.parser.feed_data(data)


class _StartsTasksDifferently(httptools_impl.HttpToolsProtocol):
    def _start_asgi_task(self, cycle: Any) -> None:  # type: ignore[override]
        pass


class _CycleWithoutDisconnected:  # uvicorn's cycle, without the field its connection_lost sets
    def __init__(self) -> None:
        self.response_complete = self.keep_alive = False
        self.message_event = asyncio.Event()


@pytest.mark.parametrize(
    ("replace", "named"),
    [
        ({"version": "0.55.0"}, "not a version the edge was tested with (0.54.0)"),
        (
            {"protocol": without(httptools_impl.HttpToolsProtocol, "_unset_keepalive_if_required")},
            "HttpToolsProtocol._unset_keepalive_if_required() is missing",
        ),
        (
            {"protocol": without(httptools_impl.HttpToolsProtocol, "on_message_begin")},
            "HttpToolsProtocol.url is no longer set",
        ),
        ({"protocol": _NoLongerCallsTheHook}, "data_received() no longer calls _unset_keepalive_if_required()"),
        ({"protocol": _StartsTasksDifferently}, "_start_asgi_task(cycle) no longer takes (cycle, app)"),
        ({"cycle": _CycleWithoutDisconnected}, "_CycleWithoutDisconnected.disconnected is no longer set"),
        ({"flow": without(flow_control.FlowControl, "pause_reading")}, "FlowControl.pause_reading() is missing"),
        ({"server_state": None}, "ServerState is missing"),
        ({"status_line": {200: b"HTTP/1.1 200 OK\r\n"}}, "STATUS_LINE is no longer a status → bytes table"),
    ],
)
def test_a_uvicorn_missing_something_the_edge_relies_on_is_named_by_the_check(
    replace: dict[str, Any], named: str
) -> None:
    found = real_problems(**replace)
    assert len(found) == 1 and named in found[0], found


# A uvicorn without what protocol.py relies on, as an upgrade would install it, then `h0p redirect`.
_BROKEN_UVICORNS = {
    "newer": "import uvicorn; uvicorn.__version__ = '0.99.0'",
    "renamed": "from uvicorn.protocols.http import httptools_impl as m; del m.HttpToolsProtocol._start_asgi_task",
}


@pytest.mark.parametrize(("broken", "named"), [("newer", "0.99.0"), ("renamed", "_start_asgi_task() is missing")])
def test_h0p_redirect_refuses_to_start_on_an_incompatible_uvicorn_with_one_line(broken: str, named: str) -> None:
    script = f"{_BROKEN_UVICORNS[broken]}\nimport sys\nfrom api.cli import main\nsys.exit(main(['redirect']))"
    env = os.environ | {"H0P_REDIRECT_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()  # one line, no traceback
    assert line.startswith("h0p: the redirect edge cannot start with the installed uvicorn ")
    assert named in line and line.endswith("(see redirect/uvicorn_internals.py)")


def _used_uvicorn_names(tree: ast.Module) -> tuple[set[str], set[str], set[str]]:
    """EdgeProtocol's ``self.x`` names not its own, its ``super().m`` calls, its ``self.flow.x`` and
    ``self.server_state.x``."""
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EdgeProtocol"]
    own = {n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    own |= {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    own |= {
        t.attr for n in ast.walk(init) if isinstance(n, ast.Assign | ast.AnnAssign)
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
    }  # fmt: skip
    inherited, supers, nested = set(), set(), set()
    for node in ast.walk(cls):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id == "self" and node.attr not in own:
            inherited.add(node.attr)
        elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super":
            supers.add(node.attr)
        elif isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id == "self":
            if value.attr in ("flow", "server_state"):
                nested.add(f"{value.attr}.{node.attr}")
    overridden = own & set(dir(httptools_impl.HttpToolsProtocol)) - {"__init__"}
    return inherited | overridden, supers, nested


def test_every_uvicorn_name_the_edge_protocol_uses_is_checked_at_start_up() -> None:
    inherited, supers, nested = _used_uvicorn_names(ast.parse(Path(edge_protocol.__file__).read_text()))
    checked = set(uvicorn_internals.PROTOCOL_ATTRIBUTES) | set(uvicorn_internals.PROTOCOL_METHODS)
    assert inherited - checked == set()
    assert supers - set(uvicorn_internals.PROTOCOL_METHODS) == set()
    checked_nested = {f"flow.{n}" for n in uvicorn_internals.FLOW_FIELDS + uvicorn_internals.FLOW_METHODS}
    checked_nested |= {f"server_state.{n}" for n in uvicorn_internals.SERVER_STATE_FIELDS}
    assert nested - checked_nested == set()
    # the stand-in for uvicorn's cycle has every field uvicorn reads or writes on a cycle
    assert all(hasattr(edge_protocol._Answering(False, True), f) for f in uvicorn_internals.CYCLE_FIELDS)
    assert {"pipeline", "cycle", "_start_asgi_task", "timeout_keep_alive_task"} <= inherited | supers  # found at all


def test_only_the_adapter_imports_uvicorn_internals() -> None:
    """Elsewhere in the edge only uvicorn's public names (``uvicorn.Config``, ``uvicorn.Server``)."""
    private = re.compile(r"^\s*(from uvicorn\.|import uvicorn\.)", re.MULTILINE)
    offenders = [
        path.name for path in Path(redirect.__file__).parent.glob("*.py")
        if path.name != "uvicorn_internals.py" and private.search(path.read_text())
    ]  # fmt: skip
    assert offenders == []


# -- the behaviours, over real sockets ------------------------------------------------------------


def get(slug: str, extra: str = "") -> bytes:
    return f"GET /{slug} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


def post_head(slug: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST /{slug} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


async def locked_link(make_link: LinkMaker, password: str = "pw") -> str:
    slug = unique("lk")
    await make_link("https://example.com/locked", slug=slug, password_hash=PasswordHasher().hash(password))
    return slug


async def closed(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection (EOF or reset), waiting up to 5 s for it."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def until(condition: Callable[[], bool], within: float = 5) -> None:
    """Waits for ``condition`` (checked every 20 ms); fails after ``within`` seconds."""

    async def check() -> bool:
        return condition()

    await eventually(check, within)


async def test_a_password_form_sent_with_expect_100_continue_gets_100_then_the_answer(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = await locked_link(make_link)
    async with serving(edge_settings(settings, tmp_path)) as (_, base, _server):
        reader, writer = await connect(base)
        form = b"password=pw"
        writer.write(post_head(slug, len(form), "Expect: 100-continue\r\n"))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any of the body was sent
        writer.write(form)
        [(status, headers, _)] = await read_responses(reader, 1)
        assert (status, headers["location"]) == (303, f"/{slug}")
        cookie = headers["set-cookie"].split(";")[0]
        writer.write(get(slug, f"Cookie: {cookie}\r\n"))  # the same connection, now on the protocol's own path
        [(status, headers, _)] = await read_responses(reader, 1)
        assert (status, headers["location"]) == (302, "https://example.com/locked")
        writer.close()


async def test_gets_pipelined_behind_a_post_are_answered_after_it_in_order(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    locked, cached = await locked_link(make_link), unique("pc")
    await make_link("https://example.com/behind", slug=cached)
    async with serving(edge_settings(settings, tmp_path)) as (_, base, _server):
        await warm(base, cached)
        reader, writer = await connect(base)
        form = b"password=wrong"
        head = f"HEAD /{cached} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        writer.write(post_head(locked, len(form)) + form + get(cached) + head + get(cached))
        responses = [*await read_responses(reader, 2), *await read_responses(reader, 1, head=True)]
        responses += await read_responses(reader, 1)
        writer.close()
    assert [(s, h.get("location")) for s, h, _ in responses] == [
        (403, None),
        (302, "https://example.com/behind"),
        (302, "https://example.com/behind"),
        (302, "https://example.com/behind"),
    ]


async def test_a_connection_idle_after_a_post_is_closed_by_the_keep_alive_timeout(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    slug = await locked_link(make_link)
    async with serving(edge_settings(settings, tmp_path), keep_alive_s=1) as (_, base, server):
        reader, writer = await connect(base)
        form = b"password=wrong"
        writer.write(post_head(slug, len(form)) + form)
        [(status, _, _)] = await read_responses(reader, 1)
        assert status == 403
        assert await closed(reader)  # answered through uvicorn's path: the timer is armed there too
        await until(lambda: not server.server_state.connections, within=5)
        writer.close()


def _connection_of(server: uvicorn.Server, writer: asyncio.StreamWriter) -> Any:
    port = writer.get_extra_info("sockname")[1]
    found = [c for c in server.server_state.connections if c.client and c.client[1] == port]
    return found[0] if found else None


async def test_a_client_that_does_not_read_its_answers_is_no_longer_read_and_others_are_served(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    """Flow control: the edge stops reading a connection whose answers pile up instead of buffering them all."""
    slug, pad = unique("fc"), "x" * 2000  # long answers to short requests
    # each answer names its request: the visitor's ?n=… goes first in the destination
    await make_link(f"https://example.com/flow?pad={pad}", slug=slug, forward_query=True)
    async with serving(edge_settings(settings, tmp_path)) as (_, base, server):
        await warm(base, slug)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the kernel holds little
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(base.rsplit(":", 1)[1])))
        reader, writer = await asyncio.open_connection(sock=sock)
        await until(lambda: _connection_of(server, writer) is not None, within=5)
        conn = _connection_of(server, writer)
        sent, state = 0, server.server_state
        answered_before = state.total_requests

        def send_batch() -> None:
            nonlocal sent
            writer.write(b"".join(get(f"{slug}?n={n}") for n in range(sent, sent + 100)))
            sent += 100

        while conn.transport.is_reading():
            assert sent < 100_000, "the edge kept reading a client that reads nothing"
            send_batch()
            # in step with the edge: each batch answered (into the kernel's buffers), or reading paused
            target = answered_before + sent
            await until(lambda t=target: not conn.transport.is_reading() or state.total_requests >= t, within=10)
        held = conn.transport.get_write_buffer_size()
        assert held < 2**20  # past the 64 KiB mark by about one read's answers, and no further
        for _ in range(20):  # the client keeps sending: it stays unread
            send_batch()
        async with httpx.AsyncClient(base_url=base) as other:  # meanwhile another client is served
            for _ in range(5):
                assert (await other.get(f"/{slug}")).status_code == 302
        assert not conn.transport.is_reading()
        assert conn.transport.get_write_buffer_size() <= held  # nothing more was read and answered
        # the client reads at last: every answer arrives, in order, and the edge reads again
        responses = await read_responses(reader, sent)
        expected = [(302, f"https://example.com/flow?n={n}&pad={pad}") for n in range(sent)]
        assert [(s, h["location"]) for s, h, _ in responses] == expected
        writer.write(get(slug, "Connection: close\r\n"))
        [(status, headers, _)] = await read_responses(reader, 1)
        assert (status, headers["connection"]) == (302, "close")
        writer.close()


class HeldRedis:
    """A loopback proxy in front of Redis whose requests can be held: a lookup in flight for as long as a test needs."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.port = free_port()
        self.released = asyncio.Event()
        self.released.set()
        self.waiting = 0  # writes held right now
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> HeldRedis:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.released.set()
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        pipes = (self._pipe(reader, up_writer, hold=True), self._pipe(up_reader, writer, hold=False))
        tasks = [asyncio.create_task(p) for p in pipes]
        self.tasks.update(tasks)
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        writer.close()
        up_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if hold and not self.released.is_set():
                    self.waiting += 1
                    await self.released.wait()
                    self.waiting -= 1
                writer.write(data)
                await writer.drain()


async def test_shutdown_answers_requests_in_flight_closes_idle_connections_and_sends_the_clicks(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    locked, slug = await locked_link(make_link), unique("sd")
    link = await make_link("https://example.com/shutdown", slug=slug)
    redis_port = int(settings.redis_url.rsplit(":", 1)[1].split("/")[0])
    async with HeldRedis(redis_port) as held_redis:
        # no in-process cache: every GET is a Redis lookup; clicks leave only with the shutdown's drain
        local = edge_settings(
            settings, tmp_path, redis_url=f"redis://127.0.0.1:{held_redis.port}/0", cache_size=0,
            event_linger_ms=60_000, event_batch_size=100_000,
        )  # fmt: skip
        async with serving(local) as (app, base, server):
            idle_reader, idle = await connect(base)
            idle.write(get(slug))
            [(status, _, _)] = await read_responses(idle_reader, 1)
            assert status == 302  # and now idle on a kept-alive connection
            form = b"password=wrong"
            post_reader, post = await connect(base)
            post.write(post_head(locked, len(form)) + form[:4])  # uvicorn's path, waiting for the rest of its body
            await until(lambda: len(server.server_state.tasks) == 1, within=5)
            held_redis.released.clear()
            lookup_reader, lookup = await connect(base)
            lookup.write(get(slug))  # the protocol's own path, its Redis lookup held
            await until(lambda: held_redis.waiting > 0, within=5)

            server.should_exit = True
            assert await closed(idle_reader)
            held_redis.released.set()
            [(status, headers, _)] = await read_responses(lookup_reader, 1)
            assert (status, headers["location"]) == (302, "https://example.com/shutdown")
            assert headers["connection"] == "close"  # answered, then closed: the edge is stopping
            assert await closed(lookup_reader)
            post.write(form[4:])
            [(status, headers, _)] = await read_responses(post_reader, 1)
            assert (status, headers["connection"]) == (403, "close")
            assert await closed(post_reader)
            for writer in (idle, post, lookup):
                writer.close()
    events = await read_events(settings.kafka_bootstrap, local.kafka_topic, expect=2)
    assert [e.link_id for e in events if e.link_id == link.link_id] == [link.link_id] * 2
    assert app.producer.spool.pending_bytes() == 0


async def test_clients_lost_mid_request_leave_nothing_behind_and_the_next_client_is_served(
    settings: Settings, tmp_path: Path, make_link: LinkMaker
) -> None:
    locked, slug = await locked_link(make_link), unique("ml")
    await make_link("https://example.com/lost", slug=slug)
    async with serving(edge_settings(settings, tmp_path)) as (_, base, server):
        await warm(base, slug)
        _, half_head = await connect(base)
        half_head.write(f"GET /{slug} HTTP/1.1\r\nHo".encode())  # lost in the middle of its headers
        _, half_body = await connect(base)
        half_body.write(post_head(locked, 100) + b"password=")  # lost in the middle of its body
        await until(lambda: len(server.server_state.tasks) == 1, within=5)
        _, reset = await connect(base)
        reset.write(post_head(locked, 100) + b"pass")
        await until(lambda: len(server.server_state.tasks) == 2, within=5)
        half_head.close()
        half_body.close()
        reset.transport.abort()  # a reset, not a close
        await until(lambda: not server.server_state.connections, within=5)
        await until(lambda: not server.server_state.tasks, within=5)  # the waiting requests ended
        reader, writer = await connect(base)
        writer.write(get(slug) + get(slug))
        responses = await read_responses(reader, 2)
        assert [(s, h["location"]) for s, h, _ in responses] == [(302, "https://example.com/lost")] * 2
        writer.close()
