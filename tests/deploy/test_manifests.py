"""deploy/: the Kubernetes manifests, the compose file and the Dockerfile, checked without a cluster or Docker.

Schemas: every document of deploy/k8s against the Kubernetes OpenAPI schemas bundled in the pinned
``kubernetes-validate`` (offline; its ``-strict`` variants refuse unknown fields, so a misspelt
``readinesProbe`` fails), and deploy/docker-compose.yml against the Compose Specification's JSON
schema as vendored in the pinned ``check-jsonschema`` (``builtin_schemas/vendor/compose-spec.json``,
from compose-spec/compose-spec's ``schema/compose-spec.json``).

Policy: what a cluster operator expects of the manifests (probes, resources, non-root read-only
containers, disruption budgets, autoscalers, ingest within the partitions, files on object
storage, a migration Job, no credential in a manifest), and that the manifests agree with the
code: each container's settings are built by the real ``load_settings`` from the image's ENV, the
ConfigMap and the container's env, and the ports probed are the ports those settings listen on.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from api.cli import SERVICES, build_parser
from h0p_settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
# The oldest Kubernetes minor still supported by the large managed offerings, and the newest
# whose schemas the pinned kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# Stands in for the Secret `h0p`, which the manifests reference but do not ship (config.yaml).
SECRET_EXAMPLE = {
    "H0P_SECRET_KEY": "k" * 48,
    "H0P_DATABASE_URL": "postgresql://h0p:pw@postgres:5432/h0p",
    "H0P_REDIS_URL": "redis://:pw@redis:6379/0",
}
# Settings that name a credential, or a URL that carries one: a Secret's, never a literal.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|KEY|TOKEN|CREDENTIAL", re.IGNORECASE)
SECRET_URLS = {"H0P_DATABASE_URL", "H0P_READ_DATABASE_URL", "H0P_REDIS_URL", "H0P_EDGE_REDIS_URL"}

Doc = dict[str, Any]


def load_yaml_documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


DOCS: list[tuple[str, Doc]] = [(path.name, doc) for path in K8S_FILES for doc in load_yaml_documents(path)]


def of_kind(kind: str) -> list[Doc]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def named(kind: str, name: str) -> Doc:
    (doc,) = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    return doc


def workloads() -> list[Doc]:
    return of_kind("Deployment") + of_kind("Job")


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def all_containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def main_container(deployment: Doc) -> Doc:
    (container,) = pod_spec(deployment)["containers"]
    return container


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, rest of the line) of deploy/Dockerfile, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and line[0] != "#"]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in dockerfile():
        if instruction == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def container_env(container: Doc) -> dict[str, str]:
    """The environment the container's process sees: image ENV, then envFrom in order, then env."""
    env = dict(image_env())
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            assert source["secretRef"]["name"] == "h0p"
            env.update(SECRET_EXAMPLE)
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return env


def container_settings(container: Doc) -> Settings:
    return load_settings(container_env(container))


def container_port(container: Doc, port: int | str) -> int:
    """The number of a probe's port, which may name one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert isinstance(number, int)
    return number


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (cpu: 250m, 2; memory: 512Mi, 1Gi) as a number."""
    text = str(value)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(suffixes.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def literal_secrets(env_items: list[Doc]) -> list[str]:
    """Names of env entries that spell out a credential instead of taking it from a Secret."""
    found = []
    for item in env_items:
        name, value = item["name"], item.get("value")
        if value is None:
            continue
        if SECRET_NAME.search(name) or name in SECRET_URLS or urlsplit(str(value)).password:
            found.append(name)
    return found


# --- the schemas ---------------------------------------------------------------------------------


def test_the_manifests_hold_every_object_an_operator_applies() -> None:
    present = {(doc["kind"], doc["metadata"]["name"]) for _, doc in DOCS}
    components = ("redirect", "api", "ingest", "webhooks")
    expected = {("ConfigMap", "h0p"), ("Job", "h0p-migrate"), ("Service", "h0p-redirect"), ("Service", "h0p-api")}
    expected |= {("Deployment", f"h0p-{c}") for c in components}
    expected |= {("PodDisruptionBudget", f"h0p-{c}") for c in components}
    expected |= {("HorizontalPodAutoscaler", "h0p-redirect"), ("HorizontalPodAutoscaler", "h0p-api")}
    assert expected <= present, f"missing: {sorted(expected - present)}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("filename", "doc"), DOCS, ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in DOCS]
)
def test_every_manifest_document_is_valid_kubernetes(filename: str, doc: Doc, version: str) -> None:
    # validate() itself, not the CLI: the CLI only warns about a kind it has no schema for
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{filename}: {doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")


def test_the_strict_kubernetes_schemas_refuse_a_misspelt_or_mistyped_field() -> None:
    typo = copy.deepcopy(named("Deployment", "h0p-redirect"))
    container = main_container(typo)
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[-1], strict=True)
    assert "readinesProbe" in caught.value.message

    wrong_type = copy.deepcopy(named("Deployment", "h0p-ingest"))
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSIONS[-1], strict=True)
    assert list(caught.value.path) == ["spec", "replicas"]


def compose_schema() -> Doc:
    schema: Doc = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text("utf-8")
    )
    return schema


def compose_errors(doc: Doc) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def compose_file() -> Doc:
    doc: Doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return doc


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert compose_schema()["title"] == "Compose Specification"
    assert compose_errors(compose_file()) == []


def test_the_compose_schema_refuses_a_misspelt_service_field() -> None:
    doc = compose_file()
    doc["services"]["redirect"]["restrat"] = "always"
    doc["services"]["api"]["ports"] = "8000:8000"
    errors = compose_errors(doc)
    assert any(e.startswith("services.redirect:") and "restrat" in e for e in errors), errors
    assert any(e.startswith("services.api.ports:") for e in errors), errors


# --- probes -------------------------------------------------------------------------------------


def http_probe(container: Doc, kind: str) -> tuple[str, int]:
    probe = container.get(kind)
    assert probe is not None, f"{container['name']} has no {kind}"
    assert "httpGet" in probe, f"{container['name']}'s {kind} is not an HTTP probe"
    return probe["httpGet"]["path"], container_port(container, probe["httpGet"]["port"])


def test_the_edge_is_ready_on_readyz_and_alive_on_healthz_of_its_public_port() -> None:
    edge = main_container(named("Deployment", "h0p-redirect"))
    port = container_settings(edge).redirect_port
    assert http_probe(edge, "readinessProbe") == ("/readyz", port)
    assert http_probe(edge, "livenessProbe") == ("/healthz", port)


def test_the_api_is_probed_on_healthz_of_its_port() -> None:
    api = main_container(named("Deployment", "h0p-api"))
    port = container_settings(api).api_port
    assert http_probe(api, "readinessProbe") == ("/healthz", port)
    assert http_probe(api, "livenessProbe") == ("/healthz", port)


def test_ingest_and_webhooks_are_probed_on_the_metrics_port_they_listen_on() -> None:
    # No HTTP of their own: the metrics server is their one listener (ingest.yaml says why).
    ingest = main_container(named("Deployment", "h0p-ingest"))
    webhooks = main_container(named("Deployment", "h0p-webhooks"))
    for container, port in (
        (ingest, container_settings(ingest).ingest_metrics_port),
        (webhooks, container_settings(webhooks).webhook_metrics_port),
    ):
        assert port != 0, f"{container['name']}: metrics are off, nothing to probe"
        assert http_probe(container, "readinessProbe") == ("/metrics", port)
        assert http_probe(container, "livenessProbe") == ("/metrics", port)


def test_metrics_are_served_on_the_pod_address_where_prometheus_is_told_to_scrape() -> None:
    for name, field in (
        ("h0p-redirect", "edge_metrics_port"),
        ("h0p-api", "api_metrics_port"),
        ("h0p-ingest", "ingest_metrics_port"),
        ("h0p-webhooks", "webhook_metrics_port"),
    ):
        deployment = named("Deployment", name)
        container = main_container(deployment)
        settings = container_settings(container)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == getattr(settings, field) != 0, name
        host = settings.edge_metrics_host if name in ("h0p-redirect", "h0p-api") else settings.bind_host
        assert host == "0.0.0.0", f"{name}: /metrics on {host}, out of the scraper's reach"
    for service in of_kind("Service"):
        exposed = {p["targetPort"] for p in service["spec"]["ports"]}
        assert exposed == {"http"}, f"{service['metadata']['name']} exposes {exposed}: /metrics must stay internal"


def test_every_service_routes_to_a_named_port_of_the_pods_it_selects() -> None:
    for service in of_kind("Service"):
        name = service["metadata"]["name"]
        selector = service["spec"]["selector"].items()
        selected = [d for d in of_kind("Deployment") if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, f"{name} selects {len(selected)} Deployments"
        for port in service["spec"]["ports"]:
            container_port(main_container(selected[0]), port["targetPort"])


# --- resources and security ---------------------------------------------------------------------


def test_every_container_requests_and_limits_cpu_and_memory() -> None:
    for workload in workloads():
        for container in all_containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request is not None and limit is not None, f"{where}: {resource} request and limit"
                assert quantity(request) <= quantity(limit), f"{where}: {resource} request above its limit"


def dockerfile_user() -> tuple[int, int]:
    (user,) = [rest for instruction, rest in dockerfile() if instruction == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER {user}: Kubernetes verifies runAsNonRoot only for a numeric id"
    return int(uid), int(gid)


def test_every_pod_runs_as_the_images_non_root_user_and_drops_every_privilege() -> None:
    uid, gid = dockerfile_user()
    assert uid != 0
    for workload in workloads():
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (uid, gid, gid), name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in all_containers(workload):
            where = f"{name}/{container['name']}"
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot") is True, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not security.get("privileged", False), where


def mounts(workload: Doc, container: Doc) -> dict[str, Doc]:
    """Mount path -> the volume mounted there."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def test_with_a_read_only_root_the_writable_paths_are_scratch_volumes() -> None:
    for workload in workloads():
        for container in all_containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            mounted = mounts(workload, container)
            assert "emptyDir" in mounted.get("/tmp", {}), f"{where}: /tmp is not a writable emptyDir"
            for path, volume in mounted.items():
                # nothing a pod keeps: no node path, no per-pod disk
                assert set(volume) == {"name", "emptyDir"}, f"{where}: {path} is {volume}"
                assert "sizeLimit" in volume["emptyDir"], f"{where}: {path} may fill the node's disk"
    edge = named("Deployment", "h0p-redirect")
    spool = Path(container_settings(main_container(edge)).spool_dir)
    assert spool.is_absolute()
    assert any(spool == Path(p) or Path(p) in spool.parents for p in mounts(edge, main_container(edge))), (
        f"the edge's spool {spool} is on the read-only root"
    )


def test_the_api_keeps_uploaded_files_in_object_storage() -> None:
    api = named("Deployment", "h0p-api")
    settings = container_settings(main_container(api))
    assert settings.files_url.startswith("s3://"), "files on pod-local disk: one replica's upload is 404 elsewhere"
    assert set(mounts(api, main_container(api))) == {"/tmp"}


def test_one_image_for_every_container_with_the_h0p_entrypoint() -> None:
    images = {c["image"] for w in workloads() for c in all_containers(w)}
    assert len(images) == 1, images
    entrypoints = [rest for instruction, rest in dockerfile() if instruction == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["h0p"]]
    for workload in workloads():
        for container in all_containers(workload):
            assert "command" not in container, "the image's entrypoint runs; `args` picks the h0p command"


def test_every_container_runs_an_h0p_command_the_cli_accepts() -> None:
    parser = build_parser()
    for workload in workloads():
        for container in all_containers(workload):
            args = parser.parse_args(container["args"])
            assert args.command in (*SERVICES, "migrate"), container["args"]


def test_the_dockerfile_copies_every_module_the_package_installs() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    wanted = {f"{module}.py" for module in setuptools["py-modules"]}
    wanted |= {pattern.rstrip("*") for pattern in setuptools["packages"]["find"]["include"]}
    copied: set[str] = set()
    for instruction, rest in dockerfile():
        if instruction == "COPY":
            copied |= {Path(source).name for source in shlex.split(rest)[:-1]}
    assert wanted <= copied, f"`pip install .` in the image would miss {sorted(wanted - copied)}"


# --- availability and scale ---------------------------------------------------------------------


def test_every_deployment_has_a_disruption_budget_that_lets_a_drain_through() -> None:
    budgets = of_kind("PodDisruptionBudget")
    for deployment in of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, f"{name}: {len(covering)} disruption budgets"
        # maxUnavailable, not minAvailable: one replica (or an autoscaler at its floor) never blocks a drain
        assert covering[0]["spec"].get("maxUnavailable", 0) >= 1, name


def test_the_edge_and_the_api_scale_by_cpu_within_their_autoscalers() -> None:
    for name in ("h0p-redirect", "h0p-api"):
        deployment = named("Deployment", name)
        (hpa,) = [h for h in of_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"], name
        # a utilization target is a share of the request, and a fixed count would fight the autoscaler
        assert "cpu" in main_container(deployment)["resources"]["requests"], name
        assert "replicas" not in deployment["spec"], f"{name}: each apply would reset the autoscaler's count"


def test_ingest_runs_no_more_replicas_than_the_topic_has_partitions() -> None:
    ingest = named("Deployment", "h0p-ingest")
    partitions = container_settings(main_container(ingest)).kafka_partitions
    # the partitions `h0p migrate` creates are those of the Job's settings: the same number
    migrate = main_container(named("Job", "h0p-migrate"))
    assert container_settings(migrate).kafka_partitions == partitions
    most = max(
        [ingest["spec"].get("replicas", 1)]
        + [
            h["spec"]["maxReplicas"]
            for h in of_kind("HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == "h0p-ingest"
        ]
    )
    assert most <= partitions, f"{most} ingest replicas for {partitions} partitions: some would sit idle"


def test_a_job_runs_the_migrations_and_creates_the_topics() -> None:
    job = named("Job", "h0p-migrate")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["migrate"], "the Job creates the Kafka topics too (no --skip-topics)"
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"]["backoffLimit"] >= 1
    api = named("Deployment", "h0p-api")
    assert container["envFrom"] == main_container(api)["envFrom"], "the Job migrates the database the API uses"
    # the API's init container is a guard on the schema, not a second topic creator (api.yaml says why)
    (init,) = pod_spec(api)["initContainers"]
    assert init["args"] == ["migrate", "--skip-topics"]


# --- credentials --------------------------------------------------------------------------------


def test_no_manifest_ships_a_secret_or_a_credential() -> None:
    # a Secret applied with the rest would overwrite the real one on every `kubectl apply`
    assert of_kind("Secret") == []
    (config,) = of_kind("ConfigMap")
    as_env = [{"name": key, "value": value} for key, value in config["data"].items()]
    assert literal_secrets(as_env) == []
    for workload in workloads():
        for container in all_containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert literal_secrets(container.get("env", [])) == [], where
            assert {"secretRef": {"name": "h0p"}} in container["envFrom"], f"{where} does not read the Secret"


def test_the_credential_scan_finds_a_literal_key_password_or_url_with_a_password() -> None:
    env = [
        {"name": "H0P_SECRET_KEY", "value": "s3cr3t" * 8},
        {"name": "H0P_S3_SECRET_ACCESS_KEY", "value": "abc"},
        {"name": "PGPASSWORD", "value": "abc"},
        {"name": "H0P_READ_DATABASE_URL", "value": "postgresql://h0p:pw@replica/h0p"},
        {"name": "UPSTREAM", "value": "https://user:pw@example.com/"},
        {"name": "H0P_API_KEY", "valueFrom": {"secretKeyRef": {"name": "h0p", "key": "H0P_API_KEY"}}},
        {"name": "H0P_LOG_LEVEL", "value": "info"},
    ]
    assert literal_secrets(env) == [
        "H0P_SECRET_KEY", "H0P_S3_SECRET_ACCESS_KEY", "PGPASSWORD", "H0P_READ_DATABASE_URL", "UPSTREAM",
    ]  # fmt: skip


def h0p_variables() -> Iterator[tuple[str, str]]:
    (config,) = of_kind("ConfigMap")
    yield from ((key, "ConfigMap") for key in config["data"])
    for workload in workloads():
        for container in all_containers(workload):
            yield from ((item["name"], workload["metadata"]["name"]) for item in container.get("env", []))


def test_every_variable_the_manifests_set_is_a_documented_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, where in h0p_variables():
        assert name.startswith("H0P_") and f"`{name}`" in readme, f"{where}: {name} is no H0P setting"


# --- compose ------------------------------------------------------------------------------------


def test_compose_runs_the_images_user_and_takes_credentials_from_the_environment() -> None:
    uid, gid = dockerfile_user()
    services = compose_file()["services"]
    parser = build_parser()
    for name, service in services.items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            value = str(value)
            credential = SECRET_NAME.search(key) or urlsplit(value).password
            assert not credential or "${" in value, f"compose {name}: {key} is a literal credential"
        if service.get("image") == "h0p:latest":
            assert service["user"] == f"{uid}:{gid}", name
            assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
            parser.parse_args(service["command"])
