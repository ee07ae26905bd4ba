"""The local spool: click events that could not go to the broker, kept in append-only files.

One JSON event per line. A process appends to its own active file (exclusively locked, so no
other process replays it while it grows); ``rotate`` closes it for replay. Replay progress is
recorded in a ``.offset`` file beside each spool file, so a replay cut by a new outage resumes
where it stopped instead of sending events twice. Files left by a dead process are replayed by
whichever edge process finds them unlocked.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("h0p.redirect")

SUFFIX = ".jsonl"


class Spool:
    """Append-only spool files under ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self._active: BinaryIO | None = None
        self._active_path: Path | None = None
        self.active_bytes = 0

    def append(self, lines: Sequence[bytes]) -> None:
        """Append encoded events; raises OSError (the caller counts them as dropped)."""
        if self._active is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
            handle = open(path, "ab")  # stays open across calls until rotate()
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._active, self._active_path = handle, path
        data = b"".join(line + b"\n" for line in lines)
        self._active.write(data)
        self._active.flush()  # into the OS: survives a crash of this process
        self.active_bytes += len(data)

    def rotate(self) -> None:
        """Close the active file so that it can be replayed (``ready_files``)."""
        if self._active is not None:
            try:
                os.fsync(self._active.fileno())
            finally:
                self._active.close()  # closing drops the lock
                self._active = self._active_path = None
                self.active_bytes = 0

    def has_pending(self) -> bool:
        """Anything spooled, by this process or a dead one (cheap enough to call once a batch)."""
        if self.active_bytes:
            return True
        try:
            return any(p.suffix == SUFFIX for p in self.directory.iterdir())
        except FileNotFoundError:
            return False

    def pending_bytes(self) -> int:
        total = 0
        try:
            for path in self.directory.iterdir():
                if path.suffix == SUFFIX:
                    total += path.stat().st_size - read_offset(path)
        except OSError:
            pass
        return total

    def ready_files(self) -> list[Path]:
        """Closed spool files in the order they were written (the active file excluded)."""
        try:
            paths = sorted(p for p in self.directory.iterdir() if p.suffix == SUFFIX)
        except FileNotFoundError:
            return []
        return [p for p in paths if p != self._active_path]

    def close(self) -> None:
        self.rotate()


def read_offset(path: Path) -> int:
    try:
        return int(path.with_suffix(".offset").read_text())
    except (OSError, ValueError):
        return 0


def write_offset(path: Path, offset: int) -> None:
    """Record replay progress atomically (write then rename)."""
    tmp = path.with_suffix(".offset.tmp")
    tmp.write_text(str(offset))
    os.replace(tmp, path.with_suffix(".offset"))


def remove(path: Path) -> None:
    """A fully replayed file and its progress record."""
    path.unlink(missing_ok=True)
    path.with_suffix(".offset").unlink(missing_ok=True)


class ReplayLock:
    """Exclusive, non-blocking lock on a spool file for the duration of its replay."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO | None = None

    def acquire(self) -> bool:
        try:
            self._handle = open(self.path, "rb")  # closed in release()
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            return False  # another live process owns it
        return True

    def lines(self, offset: int, chunk: int) -> Iterator[tuple[list[bytes], int]]:
        """Chunks of complete lines from ``offset`` with the offset after each chunk."""
        assert self._handle is not None
        self._handle.seek(offset)
        batch: list[bytes] = []
        position = offset
        for line in self._handle:
            if not line.endswith(b"\n"):
                break  # a torn last write: not an event
            position += len(line)
            if line.strip():
                batch.append(line.rstrip(b"\n"))
            if len(batch) >= chunk:
                yield batch, position
                batch = []
        if batch or position != offset:
            yield batch, position

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
