"""A private redis-server on a free loopback port, for tests that stop and restart Redis."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

from tests.services import free_port, wait_for_port


class RedisServer:
    """Our own redis-server process (never the shared one): start, stop, start again on the same port."""

    def __init__(self, replica_of: RedisServer | None = None) -> None:
        self.replica_of = replica_of  # a real replica of that server (``--replicaof``), read-only
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = ""

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        replica = []
        if self.replica_of is not None:  # the full sync arrives as a file: in a directory of its own, not the cwd
            self.dir = self.dir or tempfile.mkdtemp(prefix="h0p-redis-replica-")
            replica = ["--replicaof", "127.0.0.1", str(self.replica_of.port), "--dir", self.dir]
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no", *replica],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""
