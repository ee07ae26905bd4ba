"""Where uploaded file bytes live: a small content-addressed blob interface, on local disk or S3.

Blobs are keyed by the sha256 of their bytes, so the same image uploaded twice is stored once,
and a key always names the same content (responses for it can be cached forever).

Both stores use the same layout, ``ab/cd/<sha256>`` (under the directory, or under the bucket's
prefix), so moving from disk to S3 is a plain copy of the directory tree (README: "Files on
object storage"). The S3 store is obstore (Rust object_store): async, with a timeout on every
request and a bounded retry budget, so an unreachable store is ``StorageUnavailable`` after at
most ``timeout_s`` instead of a request that hangs.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError as ObjectStoreError
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

T = TypeVar("T")

_KEY = re.compile(r"^[0-9a-f]{64}$")


class BlobMissing(LookupError):
    """No blob is stored under this key (deleted, or the storage was changed behind our back)."""


class StorageUnavailable(Exception):
    """The store could not be reached or answered with an error in time; nothing was changed by the call."""


def content_key(data: bytes) -> str:
    """The key a blob is stored under: the hex sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


class FileStorage(Protocol):
    """A content-addressed blob store. ``put`` is idempotent; ``delete`` of a missing key is not an error."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...


def _check_key(key: str) -> str:
    # The key becomes a path or an object name: anything but a sha256 hex digest could escape the root.
    if not _KEY.match(key):
        raise ValueError(f"not a content key: {key!r}")
    return key


def blob_path(key: str) -> str:
    """Where a blob lives relative to the store's root (directory or bucket prefix): ``ab/cd/<key>``."""
    return f"{key[:2]}/{key[2:4]}/{_check_key(key)}"


class LocalFileStorage:
    """Blobs as files under ``root/ab/cd/<sha256>``: two levels of fan-out keep directories small."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / blob_path(key)

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


class S3FileStorage:
    """Blobs as objects ``<prefix>/ab/cd/<sha256>`` in an S3-compatible bucket (``url`` is ``s3://bucket/prefix``).

    Every call is bounded by ``timeout_s`` in total (each HTTP attempt, the retries of transient
    errors, and an outer ``asyncio.timeout`` in case the client does not give up on its own);
    any failure but "no such object" is ``StorageUnavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str = "",
        region: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.timeout_s = timeout_s
        timeout = timedelta(seconds=timeout_s)
        config: dict[str, str] = {}
        if endpoint_url:
            config["endpoint"] = endpoint_url
        if region:
            config["region"] = region
        if access_key_id:
            config["access_key_id"] = access_key_id
            config["secret_access_key"] = secret_access_key
        self._store = S3Store(
            self.bucket,
            prefix=self.prefix or None,
            config=config,  # type: ignore[arg-type]  # S3Config is a TypedDict of these str keys
            client_options={
                "timeout": timeout,
                "connect_timeout": min(timeout, timedelta(seconds=3)),
                # MinIO or moto inside the cluster or on loopback speak plain HTTP; AWS is https.
                "allow_http": endpoint_url.startswith("http://"),
            },
            retry_config={
                "max_retries": 2,
                "retry_timeout": timeout,
                "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1)},
            },
        )

    def __repr__(self) -> str:  # never the credentials
        return f"S3FileStorage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    async def _call(self, what: str, key: str, op: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await op()
        except (FileNotFoundError, NotFoundError):  # obstore raises the builtin one for a 404 GET
            raise BlobMissing(key) from None
        except TimeoutError:
            raise StorageUnavailable(f"{what} {self}: no answer in {self.timeout_s}s") from None
        except (ObjectStoreError, OSError) as exc:
            # obstore's message names the URL and the cause, never the credentials; first line only.
            raise StorageUnavailable(f"{what} {self}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None

    async def put(self, key: str, data: bytes) -> None:
        if content_key(data) != key:
            raise ValueError("the key is not the sha256 of the data")
        path = blob_path(key)
        # Same key, same bytes: a second put rewrites identical content (and restores a lost object).
        await self._call("put", key, lambda: obstore.put_async(self._store, path, data))

    async def get(self, key: str) -> bytes:
        path = blob_path(key)

        async def fetch() -> bytes:
            result = await obstore.get_async(self._store, path)
            return bytes(await result.bytes_async())

        return await self._call("get", key, fetch)

    async def exists(self, key: str) -> bool:
        path = blob_path(key)
        try:
            await self._call("head", key, lambda: obstore.head_async(self._store, path))
        except BlobMissing:
            return False
        return True

    async def delete(self, key: str) -> None:
        # S3 DELETE of a missing object succeeds: deleting twice is not an error, as on disk.
        path = blob_path(key)
        await self._call("delete", key, lambda: obstore.delete_async(self._store, path))


@functools.lru_cache(maxsize=8)
def s3_storage(
    url: str, endpoint_url: str, region: str, access_key_id: str, secret_access_key: str, timeout_s: float
) -> S3FileStorage:
    """One S3 store (and its HTTP connection pool) per configuration, shared by every request of the process."""
    return S3FileStorage(
        url,
        endpoint_url=endpoint_url,
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        timeout_s=timeout_s,
    )
