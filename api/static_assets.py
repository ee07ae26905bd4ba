"""Versioned static files (Swagger UI's bundle): gzipped once per process, cached for a year.

The bundle is 1 MB of JavaScript. Compressing it per request (Starlette's GZipMiddleware)
costs ~170 ms of CPU on every new visitor; here each file is read and gzipped once, on its
first request, and kept in memory (three files, ~450 kB gzipped). The URL carries the
bundle's version, so browsers may keep each answer forever (``immutable``).
"""

from __future__ import annotations

import asyncio
import gzip
import mimetypes
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

IMMUTABLE = "public, max-age=31536000, immutable"
GZIP_MIN_BYTES = 1024  # below this the gzip header and a round trip's worth of work are not worth it


class VersionedAssets:
    """Serves the files of one directory (no subfolders) by name; ``serve`` is a Starlette endpoint."""

    def __init__(self, directory: str) -> None:
        self._directory = Path(directory)
        # Only names listed now are served: no path from a request ever reaches the file system.
        self._names = frozenset(p.name for p in self._directory.iterdir() if p.is_file())
        self._plain: dict[str, bytes] = {}
        self._gzipped: dict[str, bytes] = {}

    async def _bytes(self, name: str, gzipped: bool) -> bytes:
        plain = self._plain.get(name)
        if plain is None:
            plain = self._plain[name] = await asyncio.to_thread((self._directory / name).read_bytes)
        if not gzipped:
            return plain
        packed = self._gzipped.get(name)
        if packed is None:  # two first requests at once may both compress: same bytes, no harm
            packed = self._gzipped[name] = await asyncio.to_thread(gzip.compress, plain, 9, mtime=0)
        return packed

    async def serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self._names:
            raise HTTPException(404)
        headers = {"cache-control": IMMUTABLE, "vary": "accept-encoding"}
        body = await self._bytes(name, gzipped=False)
        if len(body) >= GZIP_MIN_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
            body = await self._bytes(name, gzipped=True)
            headers["content-encoding"] = "gzip"
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(body, media_type=media_type, headers=headers)
