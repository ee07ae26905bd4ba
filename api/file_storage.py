"""Where uploaded file bytes live: a small content-addressed blob interface and its local implementation.

Blobs are keyed by the sha256 of their bytes, so the same image uploaded twice is stored once,
and a key always names the same content (responses for it can be cached forever). An
S3-compatible store fits behind the same four methods (key -> object name).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[0-9a-f]{64}$")


class BlobMissing(LookupError):
    """No blob is stored under this key (deleted, or the storage was changed behind our back)."""


def content_key(data: bytes) -> str:
    """The key a blob is stored under: the hex sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


class FileStorage(Protocol):
    """A content-addressed blob store. ``put`` is idempotent; ``delete`` of a missing key is not an error."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...


class LocalFileStorage:
    """Blobs as files under ``root/ab/cd/<sha256>``: two levels of fan-out keep directories small."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        # The key becomes a path: anything but a sha256 hex digest could escape the root.
        if not _KEY.match(key):
            raise ValueError(f"not a content key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    async def put(self, key: str, data: bytes) -> None:
        if content_key(data) != key:
            raise ValueError("the key is not the sha256 of the data")
        await asyncio.to_thread(self._put, self.path_for(key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        if path.exists():
            return  # same key, same bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees a half-written blob, a crash leaves only a temp file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobMissing(key) from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_for(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path_for(key).unlink, True)
