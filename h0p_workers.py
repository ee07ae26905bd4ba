"""Several processes serving one port: ``SO_REUSEPORT`` sockets and the supervisor that keeps them.

``h0p redirect --workers N`` and ``h0p api --workers N`` (N > 1) run a ``Supervisor``: it starts
N worker processes (``h0p redirect --worker-index I --worker-dir DIR``), each of which binds the
service's port itself with ``SO_REUSEPORT``, so the kernel spreads incoming connections over
the workers' sockets (a worker that is busy or dead gets none; uvicorn's own ``--workers`` would
share one socket instead, where the busiest worker keeps accepting). The supervisor serves no
request. It restarts a worker that exits without being asked (after a pause that doubles while
workers die young, up to ``MAX_BACKOFF_S``), and on SIGTERM or SIGINT asks every worker to stop
(SIGTERM: each drains its requests and flushes its click events) and waits for them, up to a
deadline, before killing what is left. A worker that exits with code 2 (a configuration error,
which a restart cannot mend) stops the whole service with code 2.

Workers run in a session of their own, so a terminal's Ctrl-C reaches only the supervisor (a
second signal would cut a worker's drain short in uvicorn), and each asks the kernel to send it
SIGTERM if the supervisor dies (``die_with_parent``): no worker outlives it unsupervised.

Like ``h0p_settings``, this module crosses package lines (the edge and the API both use it), so
it imports nothing of theirs: standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Backlog of each worker's socket: as deep as uvicorn's default (the kernel caps it at somaxconn).
BACKLOG = 2048
MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
# A worker that ran this long before dying is restarted at once: it was not crash-looping.
HEALTHY_AFTER_S = 10.0
CONFIG_ERROR = 2  # the exit code of a bad setting: restarting would fail the same way
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Worker:
    """What a worker process is told: its index (0..N-1), the supervisor's private directory and pid."""

    index: int
    directory: str
    supervisor: int

    @property
    def metrics_path(self) -> str:
        """Unix socket where this worker serves its /metrics to the supervisor (never a TCP port)."""
        return os.path.join(self.directory, f"worker-{self.index}.sock")


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that other workers' sockets share (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def check_port_free(host: str, port: int) -> None:
    """``OSError`` if anything listens on ``host:port``, another group of ``SO_REUSEPORT`` workers included.

    Sockets of the same user with ``SO_REUSEPORT`` share a port without a word: a second stack
    started on the same port would quietly take half the traffic. A probe without the option
    fails on any listener, so the supervisor refuses to start instead.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no listener
        probe.bind((host, port))


def worker_command(service: str, worker: Worker) -> list[str]:
    """The argv of one worker: the ``h0p`` command (``api.cli``) with this interpreter."""
    return [
        *(sys.executable, "-m", "api.cli", service),
        *("--worker-index", str(worker.index), "--worker-dir", worker.directory),
        *("--supervisor-pid", str(worker.supervisor)),
    ]


def die_with_parent(worker: Worker) -> None:
    """Have the kernel send this worker SIGTERM when its supervisor dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != worker.supervisor:  # it died before the request took effect (while we imported)
        os.kill(os.getpid(), signal.SIGTERM)


class Companion(Protocol):
    """Something the supervisor runs beside its workers (the edge's aggregated /metrics)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class Slot:
    """One worker index and the process currently holding it."""

    worker: Worker
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = MIN_BACKOFF_S


@dataclass
class Supervisor:
    """Runs ``count`` workers of ``name`` (``h0p NAME``) until SIGTERM/SIGINT; see the module docstring.

    ``command(worker)`` is the worker's argv; ``stop_timeout_s`` how long a stopping worker may
    drain before it is killed.
    """

    name: str
    count: int
    command: Callable[[Worker], Sequence[str]]
    stop_timeout_s: float
    companions: list[Companion] = field(default_factory=list)
    directory: str = ""
    slots: list[Slot] = field(default_factory=list)
    exit_code: int = 0
    _stopping: asyncio.Event | None = None

    def __post_init__(self) -> None:
        # Private to this user (mode 0700): it holds the workers' metrics sockets.
        self.directory = tempfile.mkdtemp(prefix=f"h0p-{self.name}-")
        self.slots = [Slot(Worker(i, self.directory, os.getpid())) for i in range(self.count)]

    def say(self, message: str) -> None:
        print(f"h0p {self.name}: {message}", file=sys.stderr, flush=True)

    def run(self) -> int:
        """Supervise until stopped; the exit code (0, or 2 when a worker found a configuration error)."""
        try:
            return asyncio.run(self._main())
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def pids(self) -> dict[int, int]:
        """Worker index to the pid of its running process."""
        return {s.worker.index: s.proc.pid for s in self.slots if s.proc is not None and s.proc.returncode is None}

    async def _main(self) -> int:
        stopping = self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        started: list[Companion] = []
        try:
            for companion in self.companions:
                await companion.start()
                started.append(companion)
            self.say(f"{self.count} workers sharing the port (SO_REUSEPORT), supervisor pid {os.getpid()}")
            keepers = [
                asyncio.create_task(self._keep(slot), name=f"keep-worker-{slot.worker.index}") for slot in self.slots
            ]
            await stopping.wait()
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            await self._stop_all()
        finally:
            for companion in reversed(started):
                await companion.close()
        return self.exit_code

    def _on_signal(self, sig: int) -> None:
        assert self._stopping is not None
        if not self._stopping.is_set():
            self.say(f"{signal.Signals(sig).name}: stopping {len(self.pids())} workers (each flushes its work)")
            self._stopping.set()  # a second signal changes nothing: the orderly stop goes on

    async def _spawn(self, slot: Slot) -> None:
        """Start the slot's worker; a failure to start it at all (no memory, no processes left) is retried."""
        while True:
            try:
                slot.proc = await asyncio.create_subprocess_exec(
                    *self.command(slot.worker), stdin=asyncio.subprocess.DEVNULL, start_new_session=True
                )
            except OSError as exc:
                self.say(f"cannot start worker {slot.worker.index} ({exc}); trying again in {slot.backoff_s:.1f}s")
                await asyncio.sleep(slot.backoff_s)
                slot.backoff_s = min(slot.backoff_s * 2, MAX_BACKOFF_S)
                continue
            slot.started_at = time.monotonic()
            return

    async def _keep(self, slot: Slot) -> None:
        """Start the slot's worker and start it again whenever it exits, until cancelled."""
        assert self._stopping is not None
        while True:
            await self._spawn(slot)
            assert slot.proc is not None
            code = await slot.proc.wait()
            lived = time.monotonic() - slot.started_at
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
            if code == CONFIG_ERROR:
                self.say(f"worker {slot.worker.index} (pid {slot.proc.pid}) exited with {how}: stopping")
                self.exit_code = CONFIG_ERROR
                self._stopping.set()
                return
            if lived >= HEALTHY_AFTER_S:
                slot.backoff_s = MIN_BACKOFF_S
                delay = 0.0
            else:
                delay = slot.backoff_s
                slot.backoff_s = min(slot.backoff_s * 2, MAX_BACKOFF_S)
            self.say(
                f"worker {slot.worker.index} (pid {slot.proc.pid}) exited with {how}; restarting it in {delay:.1f}s"
            )
            slot.restarts += 1
            await asyncio.sleep(delay)

    async def _stop_all(self) -> None:
        running = [s.proc for s in self.slots if s.proc is not None and s.proc.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(proc.wait()) for proc in running]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=self.stop_timeout_s)
        if late:
            for proc in running:
                if proc.returncode is None:
                    self.say(f"worker pid {proc.pid} did not stop within {self.stop_timeout_s:.0f}s: killing it")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.wait(waits)
        for slot in self.slots:
            code = slot.proc.returncode if slot.proc is not None else 0
            # uvicorn ends a process stopped by SIGTERM with that signal, once it has drained
            if code not in (0, -signal.SIGTERM, None):
                self.say(f"worker {slot.worker.index} stopped with code {code}")
