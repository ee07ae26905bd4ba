"""A real S3-protocol server (moto) as its own process on a free loopback port, for the object-storage tests."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

import httpx

from tests.services import free_port

_buckets = itertools.count()


class MotoServer:
    """``moto.server`` in a child process: start, stop (an S3 outage), start again on the same port (empty)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        code = "from moto.server import main; main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Ready when it answers S3 (ListBuckets), not merely when the port is open.
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.endpoint + "/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"moto server did not start on {self.endpoint}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def new_bucket(self) -> str:
        """A new empty bucket (moto accepts unsigned requests); its name."""
        name = f"h0p-test-{os.getpid()}-{next(_buckets)}"
        r = httpx.put(f"{self.endpoint}/{name}", timeout=10)
        r.raise_for_status()
        return name

    def objects(self, bucket: str) -> list[str]:
        """The keys in ``bucket``, read over the S3 protocol (ListObjectsV2)."""
        r = httpx.get(f"{self.endpoint}/{bucket}", params={"list-type": "2"}, timeout=10)
        r.raise_for_status()
        return [k.split("</Key>")[0] for k in r.text.split("<Key>")[1:]]
