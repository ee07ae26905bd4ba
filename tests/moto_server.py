"""A real S3-protocol server (moto) as its own process on a free loopback port, for the object-storage tests."""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
import time
from typing import Any

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

    @functools.cached_property
    def client(self) -> Any:
        """A real S3 client (boto3, which moto brings) of this server: signed requests, like any S3 tool."""
        import boto3  # only where a bucket is used: every API test imports this module

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="moto-test-key",
            aws_secret_access_key="moto-test-secret",
        )

    def new_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (named ``name``, or a new name); its name."""
        name = name or f"h0p-test-{os.getpid()}-{next(_buckets)}"
        self.client.create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> list[str]:
        """The keys in ``bucket`` (ListObjectsV2)."""
        return [o["Key"] for o in self.client.list_objects_v2(Bucket=bucket).get("Contents", [])]

    def get_object(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def anonymous_get(self, bucket: str, key: str) -> int:
        """The status of an unsigned GET of the object (what a browser given a bucket URL would get)."""
        return httpx.get(f"{self.endpoint}/{bucket}/{key}", timeout=10).status_code
