"""Uploaded files on S3-compatible object storage: a real S3-protocol server (moto) on loopback.

Files go to the bucket in the same ``ab/cd/<sha256>`` layout as on disk, deleting the last copy
deletes the object, an outage or a silent server is a 503 that changes nothing (never a hang),
and two real API processes sharing the database and the bucket serve each other's uploads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from api import file_storage
from api.app import create_app
from api.errors import StorageUnavailable
from api.file_storage import content_key
from api.services import files
from api.services.context import ServiceContext
from api.services.keys import create_key
from api.services.workspaces import Workspace
from h0p_settings import Settings, SettingsError, load_settings
from tests.api.conftest import client_for, running, s3_settings
from tests.moto_server import MotoServer
from tests.services import free_port, wait_for_port


def png(color: tuple[int, int, int] | None = None, size: tuple[int, int] = (32, 24)) -> bytes:
    # bytes of their own by default: files are stored by content, and the session's other tests
    # (and other workspaces) may hold the same image, which would keep its object or file alive
    out = io.BytesIO()
    Image.new("RGB", size, color or tuple(secrets.randbelow(256) for _ in range(3))).save(out, format="PNG")
    return out.getvalue()


def path_of(url: str) -> str:
    """``/files/{id}/content?sig=…`` of a public content URL (whatever host it names)."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def on_bucket(ctx: ServiceContext, settings: Settings) -> ServiceContext:
    return dataclasses.replace(ctx, settings=settings)


# ---- settings


def test_h0p_files_url_selects_s3_and_bad_values_name_the_variable() -> None:
    s = load_settings(
        {
            "H0P_FILES_URL": "s3://my-bucket/h0p/files/",
            "H0P_S3_ENDPOINT_URL": "http://minio.internal:9000",
            "H0P_S3_REGION": "eu-west-3",
            "H0P_S3_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID",
            "H0P_S3_SECRET_ACCESS_KEY": "very-secret-access-key",
            "H0P_S3_TIMEOUT_S": "2.5",
        }
    )
    assert (s.files_url, s.s3_endpoint_url, s.s3_region, s.s3_timeout_s) == (
        "s3://my-bucket/h0p/files",
        "http://minio.internal:9000",
        "eu-west-3",
        2.5,
    )
    store = files.storage_for(s)
    assert isinstance(store, file_storage.S3FileStorage)
    assert (store.bucket, store.prefix) == ("my-bucket", "h0p/files")
    # credentials are never printed: not by the settings, not by the store
    for text in (repr(s), repr(store)):
        assert "very-secret-access-key" not in text and "AKIAEXAMPLEKEYID" not in text
    assert isinstance(files.storage_for(load_settings({"H0P_FILES_URL": ""})), file_storage.LocalFileStorage)
    for bad in ("my-bucket/files", "https://my-bucket.s3.amazonaws.com/x", "s3://", "s3://key:secret@bucket/x"):
        with pytest.raises(SettingsError, match="H0P_FILES_URL"):
            load_settings({"H0P_FILES_URL": bad})
    with pytest.raises(SettingsError, match="H0P_S3_ENDPOINT_URL"):
        load_settings({"H0P_S3_ENDPOINT_URL": "minio:9000"})
    with pytest.raises(SettingsError, match="H0P_S3_SECRET_ACCESS_KEY"):
        load_settings({"H0P_S3_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID"})
    with pytest.raises(SettingsError, match="H0P_S3_TIMEOUT_S"):
        load_settings({"H0P_S3_TIMEOUT_S": "0"})


def test_the_k8s_config_gives_the_api_replicas_one_bucket_and_no_files_volume() -> None:
    root = Path(__file__).resolve().parents[2] / "deploy/k8s"
    config = next(d for d in yaml.safe_load_all((root / "config.yaml").read_text()) if d["kind"] == "ConfigMap")
    store = files.storage_for(load_settings(config["data"]))
    assert isinstance(store, file_storage.S3FileStorage) and store.bucket
    api = next(d for d in yaml.safe_load_all((root / "api.yaml").read_text()) if d["kind"] == "Deployment")
    assert api["spec"]["replicas"] > 1
    mounts = [m["mountPath"] for c in api["spec"]["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])]
    assert not [m for m in mounts if "files" in m]  # a per-pod files volume would split the uploads again


# ---- one process, the service


async def test_an_upload_is_an_object_in_the_disk_layout_under_the_prefix_and_deleting_it_deletes_the_object(
    ctx: ServiceContext, workspace: Workspace, moto_server: MotoServer
) -> None:
    bucket = moto_server.new_bucket()
    s3 = on_bucket(ctx, s3_settings(ctx.settings, moto_server, bucket))
    info = await files.upload_file(s3, workspace.id, png())
    key = f"files/{info.sha256[:2]}/{info.sha256[2:4]}/{info.sha256}"
    assert moto_server.objects(bucket) == [key]
    assert content_key(moto_server.get_object(bucket, key)) == info.sha256
    assert moto_server.anonymous_get(bucket, key) == 403  # the bucket stays private: the API serves the bytes
    # nothing was written to the local directory: another replica could not have read it there
    assert not file_storage.LocalFileStorage(ctx.settings.files_dir).path_for(info.sha256).exists()
    await files.delete_file(s3, workspace.id, info.id)
    assert moto_server.objects(bucket) == []
    with pytest.raises(ValueError, match="not a content key"):  # a key never becomes another object's name
        await files.storage_for(s3.settings).get(f"../other/{info.sha256}")


async def test_files_copied_from_the_disk_layout_into_the_bucket_are_served_from_s3(
    ctx: ServiceContext, workspace: Workspace, moto_server: MotoServer, tmp_path: Path
) -> None:
    """The README's migration: copy the files directory into the bucket prefix as it is (``aws s3 sync``)."""
    local = on_bucket(ctx, dataclasses.replace(ctx.settings, files_dir=str(tmp_path / "files")))
    info = await files.upload_file(local, workspace.id, png((1, 2, 3)))
    bucket = moto_server.new_bucket()
    copy_tree(tmp_path / "files", moto_server, bucket, "files")
    s3 = on_bucket(ctx, s3_settings(ctx.settings, moto_server, bucket))
    got, content = await files.read_file(s3, workspace.id, info.id)
    assert got == info and content_key(content) == info.sha256


def copy_tree(root: Path, moto: MotoServer, bucket: str, prefix: str) -> None:
    """What ``aws s3 sync ROOT s3://BUCKET/PREFIX --exclude '*.tmp-*'`` does: each file, same relative key."""
    for path in root.rglob("*"):
        if path.is_file() and not path.name.startswith(".tmp-"):
            moto.put_object(bucket, f"{prefix}/{path.relative_to(root)}", path.read_bytes())


class SilentServer:
    """A TCP server on loopback that accepts connections and never answers: a hung S3 endpoint."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.connections = 0

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.read()  # until the client gives up and closes
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_an_s3_endpoint_that_never_answers_is_storage_unavailable_not_a_hang(
    ctx: ServiceContext, workspace: Workspace
) -> None:
    silent = SilentServer()
    async with silent as endpoint:
        settings = dataclasses.replace(
            ctx.settings,
            files_url="s3://h0p-silent/files",
            s3_endpoint_url=endpoint,
            s3_region="us-east-1",
            s3_access_key_id="test-key-id",
            s3_secret_access_key="test-secret-access-key",
            s3_timeout_s=1.0,
        )
        s3 = on_bucket(ctx, settings)
        with pytest.raises(StorageUnavailable) as caught:
            await files.upload_file(s3, workspace.id, png())
        assert (await files.list_files(s3, workspace.id))[1] == 0  # no row points at bytes that were never stored
    assert silent.connections >= 1  # it was really asked, and really did not answer
    assert "test-secret-access-key" not in str(caught.value)


@pytest.fixture
def own_moto() -> Iterator[MotoServer]:
    """A moto server this test may stop (the session's one is shared)."""
    server = MotoServer().start()
    yield server
    server.stop()


def error_of(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


@pytest.mark.chaos
async def test_while_s3_is_down_upload_read_and_delete_are_503_and_change_nothing_then_recover(
    ctx: ServiceContext, workspace: Workspace, api_settings: Settings, own_moto: MotoServer
) -> None:
    bucket = own_moto.new_bucket()
    settings = s3_settings(api_settings, own_moto, bucket)
    s3 = on_bucket(ctx, settings)
    kept = await files.upload_file(s3, workspace.id, png((5, 5, 5)))
    public_path = path_of(files.public_content_url(settings, kept.id))
    _, secret = await create_key(ctx, workspace.id, "s3-outage", None)

    own_moto.stop()
    with pytest.raises(StorageUnavailable):
        await files.upload_file(s3, workspace.id, png((6, 6, 6)))
    with pytest.raises(StorageUnavailable):
        await files.read_file(s3, workspace.id, kept.id)
    with pytest.raises(StorageUnavailable):
        await files.delete_file(s3, workspace.id, kept.id)
    assert [f.id for f in (await files.list_files(s3, workspace.id))[0]] == [kept.id]  # nothing added or removed
    async with running(create_app(settings)) as app, client_for(app, secret) as api, client_for(app, None) as anon:
        r = await api.post("/files", files={"file": ("x.png", png((7, 7, 7)), "image/png")})
        assert error_of(r) == (503, "STORAGE_UNAVAILABLE")
        assert "test-secret-access-key" not in r.text and "test-key-id" not in r.text
        assert error_of(await api.get(f"/files/{kept.id}/content")) == (503, "STORAGE_UNAVAILABLE")
        assert error_of(await anon.get(public_path)) == (503, "STORAGE_UNAVAILABLE")
        assert error_of(await api.delete(f"/files/{kept.id}")) == (503, "STORAGE_UNAVAILABLE")
        assert (await api.get(f"/files/{kept.id}")).status_code == 200

        # back on the same port (moto starts empty): the same store object works again, no restart needed
        own_moto.start()
        own_moto.new_bucket(bucket)
        r = await api.post("/files", files={"file": ("x.png", png((7, 7, 7)), "image/png")})
        assert r.status_code == 201
        assert (await anon.get(path_of(r.json()["url"]))).status_code == 200


# ---- two API processes


def start_api(settings: Settings, moto: MotoServer, bucket: str, files_dir: Path, aws_env: bool) -> tuple[
    subprocess.Popen[bytes], str
]:  # fmt: skip
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "H0P_"))}
    env.update(
        {
            "H0P_DATABASE_URL": settings.database_url,
            "H0P_REDIS_URL": settings.redis_url,
            "H0P_SECRET_KEY": settings.secret_key,
            "H0P_API_PORT": str(port),
            "H0P_BIND_HOST": "127.0.0.1",
            "H0P_RATE_LIMITS_ENABLED": "false",
            "H0P_DNS_RESOLVER": settings.dns_resolver,
            "H0P_LOG_LEVEL": "warning",
            "H0P_FILES_DIR": str(files_dir),  # each its own: a file found on the other one came from the bucket
            "H0P_FILES_URL": f"s3://{bucket}/h0p",
            "H0P_S3_ENDPOINT_URL": moto.endpoint,
        }
    )
    if aws_env:  # the standard AWS variables, read by the S3 client when no H0P_S3_* credentials are set
        env.update({"AWS_ACCESS_KEY_ID": "aws-env-key", "AWS_SECRET_ACCESS_KEY": "aws-env-secret"})
        env["AWS_REGION"] = "us-east-1"
    else:
        env.update({"H0P_S3_ACCESS_KEY_ID": "h0p-key", "H0P_S3_SECRET_ACCESS_KEY": "h0p-secret"})
        env["H0P_S3_REGION"] = "us-east-1"
    code = "from api.app import serve; from h0p_settings import load_settings_or_exit; serve(load_settings_or_exit())"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    wait_for_port(port, timeout=30)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
async def two_apis(
    api_settings: Settings, moto_server: MotoServer, tmp_path: Path
) -> AsyncIterator[tuple[str, str, str]]:
    """Two real ``h0p api`` processes sharing Postgres, Redis and one bucket; their URLs and the bucket."""
    bucket = moto_server.new_bucket()
    procs = []
    try:
        for n, aws_env in ((1, False), (2, True)):
            procs.append(start_api(api_settings, moto_server, bucket, tmp_path / f"api{n}", aws_env))
        yield procs[0][1], procs[1][1], bucket
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            # uvicorn drains on SIGTERM, then re-raises the signal: -15 is its clean exit
            assert proc.wait(timeout=20) in (0, -15)


@pytest.mark.slow
async def test_a_file_uploaded_through_one_api_process_is_served_by_the_other(
    ctx: ServiceContext, workspace: Workspace, two_apis: tuple[str, str, str], moto_server: MotoServer
) -> None:
    one, other, bucket = two_apis
    _, secret = await create_key(ctx, workspace.id, "replicas", None)
    headers = {"x-api-key": secret}
    async with httpx.AsyncClient(timeout=20) as http:
        r = await http.post(f"{one}/files", headers=headers, files={"file": ("logo.png", png(), "image/png")})
        assert r.status_code == 201, r.text
        created = r.json()
        assert moto_server.objects(bucket) == [
            f"h0p/{created['sha256'][:2]}/{created['sha256'][2:4]}/{created['sha256']}"
        ]

        keyed = await http.get(f"{other}/files/{created['id']}/content", headers=headers)
        assert keyed.status_code == 200 and keyed.headers["content-type"] == "image/png"
        assert content_key(keyed.content) == created["sha256"]
        # the signed public URL (issued by the first process) opens on the second without a key
        path_and_sig = path_of(created["url"])
        public = await http.get(f"{other}{path_and_sig}")
        assert public.status_code == 200 and content_key(public.content) == created["sha256"]
        assert "immutable" in public.headers["cache-control"]

        # deleted through the second: gone from the bucket, and a 404 on the first
        assert (await http.delete(f"{other}/files/{created['id']}", headers=headers)).status_code == 200
        assert moto_server.objects(bucket) == []
        assert (await http.get(f"{one}{path_and_sig}")).status_code == 404
