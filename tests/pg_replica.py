"""A PostgreSQL primary and its streaming replica, both our own, in a temporary directory on loopback.

The machine's cluster does not accept replication connections (its pg_hba.conf has no
``replication`` line), and tests must not change it: so ``initdb`` makes a primary of our own,
``pg_basebackup -R`` copies it into a standby, and both run on free ports until ``stop``, which
removes the directory. As root the servers run as the ``postgres`` user (Postgres refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.services import free_port

STEP_TIMEOUT_S = 60
SETTINGS = (
    "listen_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
    "shared_buffers = 16MB\nmax_connections = 40\nwal_level = replica\nmax_wal_senders = 4\n"
    "hot_standby = on\nwal_receiver_status_interval = 1s\n"
)


def bin_dir() -> Path | None:
    """Where initdb, pg_ctl and pg_basebackup are, or None."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_basebackup").exists():
            return candidate
    return None


class PostgresPair:
    """``start`` both servers (raises ``RuntimeError`` saying why not); ``stop`` ends and removes them."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="h0p-pg-replica-"))
        self.primary_port = free_port()
        self.replica_port = free_port()
        self._user: list[str] = []
        self._started: list[Path] = []

    def url(self, port: int, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._user, *args], capture_output=True, text=True, timeout=STEP_TIMEOUT_S, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-500:]}")

    def start(self) -> PostgresPair:
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_basebackup) under /usr/lib/postgresql")
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no postgres user to run the servers as") from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]
        primary, replica = self.root / "primary", self.root / "replica"
        self._run(str(self.bin / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust", "--no-sync")
        with (primary / "postgresql.conf").open("a") as conf:
            conf.write(SETTINGS + f"port = {self.primary_port}\nunix_socket_directories = '{self.root}'\n")
        self._pg_ctl(primary, "start")
        self._run(
            str(self.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(replica), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        with (replica / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.replica_port}\n")
        self._pg_ctl(replica, "start")
        return self

    def _pg_ctl(self, data: Path, action: str) -> None:
        assert self.bin is not None
        log = str(self.root / f"{data.name}.log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", log, "-w", "-t", "30", action)
        self._started.append(data)

    def stop(self) -> None:
        assert self.bin is not None or not self._started
        for data in reversed(self._started):
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass  # already gone
        self._started = []
        shutil.rmtree(self.root, ignore_errors=True)
