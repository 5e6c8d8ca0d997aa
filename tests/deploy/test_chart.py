"""The Helm chart, without a helm binary or a cluster: strict lint, schema, rendering of every values file, every
manifest validated against the Kubernetes (or KEDA) schema, and the properties that matter checked one by one."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk")

from gigaudit_server import keys  # noqa: E402
from gigaudit_server.config import Settings  # noqa: E402
from keda_schemas import SCHEMAS as CRD_SCHEMAS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gigaudit"
VALUES_FILES = sorted((ROOT / "helm" / "values").glob("*.yaml"))
KUBE_VERSION = "1.30"
CREDENTIAL_ENV = ("REDIS_URL", "ACCESS_KEY", "SECRET", "PASSWORD", "TOKEN")


def values_of(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict) -> list[dict]:
    """The manifests a release named ``audit`` in namespace ``ml`` would apply."""
    rendered = helm.Chart.load(str(CHART)).render(values, name="audit", namespace="ml")
    return [doc for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def merged(values: dict) -> dict:
    return helm.Chart.load(str(CHART)).merge_values(values)


def by_kind(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def containers(manifests: list[dict]) -> dict[str, dict]:
    """``{deployment/container: container}`` over all Deployments."""
    return {f"{name}/{c['name']}": c for name, d in by_kind(manifests, "Deployment").items()
            for c in d["spec"]["template"]["spec"]["containers"]}


@pytest.fixture(scope="module", params=VALUES_FILES, ids=lambda p: p.stem)
def release(request):
    values = values_of(request.param)
    return request.param.stem, merged(values), render(values)


def test_values_files_cover_gpu_s3_tls_and_keda():
    stems = {p.stem for p in VALUES_FILES}
    assert {"default", "gpu-s3-tls-keda"} <= stems
    values = merged(values_of(CHART.parent.parent / "helm" / "values" / "gpu-s3-tls-keda.yaml"))
    assert values["worker"]["gpu"]["enabled"] and values["store"]["type"] == "s3"
    assert values["tls"]["enabled"] and values["tls"]["clientCA"]["secretName"] and values["keda"]["enabled"]


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.stem)
def test_strict_lint_is_clean(path):
    report = helm.lint(str(CHART), values_of(path), strict=True, namespace="ml")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # no warnings or errors


def test_schema_refuses_unknown_keys_at_every_level():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def objects(node, path="$"):
        if isinstance(node, dict):
            if "properties" in node:
                yield path, node
            for key, child in node.items():
                if key != "allOf":  # if/then rules constrain values the properties above define
                    yield from objects(child, f"{path}.{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                yield from objects(child, f"{path}[{i}]")

    found = list(objects(schema))
    assert len(found) > 20
    assert [path for path, node in found if node.get("additionalProperties") is not False] == []
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema({})
    for bad in ({"replicas": 2}, {"api": {"replica": 2}}, {"worker": {"gpu": {"enable": True}}},
                {"store": {"s3": {"bucket": "x"}}}, {"keda": {"redisPasswordSecret": {"value": "hunter2"}}}):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


@pytest.mark.parametrize("bad, why", [
    ({"store": {"type": "s3"}}, "an S3 store needs its URL"),
    ({"store": {"type": "nfs"}}, "unknown store type"),
    ({"tls": {"enabled": True}}, "TLS needs its Secret"),
    ({"auth": {"tokensSecret": {"name": ""}}}, "auth needs the tokens Secret"),
    ({"worker": {"gpu": {"enabled": True, "count": 0}}}, "at least one GPU"),
    ({"keda": {"redisAddress": "redis://host:6379"}}, "KEDA wants host:port"),
])
def test_schema_refuses_inconsistent_values(bad, why):
    with pytest.raises(helm.HelmValuesError):
        helm.Chart.load(str(CHART)).validate_schema(bad)


def test_every_manifest_validates(release):
    _, _, manifests = release
    assert manifests
    for manifest in manifests:
        crd = CRD_SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
        if crd is not None:
            jsonschema.validate(manifest, crd)
        else:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def test_gpus_are_limits_of_workers_only(release):
    _, values, manifests = release
    gpu = values["worker"]["gpu"]
    for name, container in containers(manifests).items():
        resources = container.get("resources", {})
        requested = {**resources.get("requests", {}), **resources.get("limits", {})}
        is_worker = name.endswith("-worker/worker")
        if is_worker and gpu["enabled"]:
            assert resources["limits"][gpu["resourceName"]] == gpu["count"]
            assert container["args"][container["args"].index("--device") + 1] == "cuda:0"
        else:
            assert not any("gpu" in key for key in requested), name
        if is_worker and not gpu["enabled"]:
            assert container["args"][container["args"].index("--device") + 1] == "cpu"


def test_api_probes_use_the_plaintext_health_port(release):
    _, values, manifests = release
    api = containers(manifests)["audit-gigaudit-api/api"]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    metrics = {"metrics": values["metrics"]["port"]} if values.get("metrics", {}).get("enabled", True) else {}
    assert ports == {"grpc": values["api"]["port"], "health": values["api"]["healthPort"], **metrics}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert api[probe]["grpc"] == {"port": values["api"]["healthPort"], "service": "gigaudit.process"}
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert env["GIGAUDIT_HEALTH_PORT"] == str(values["api"]["healthPort"])
    service = by_kind(manifests, "Service")["audit-gigaudit-api"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["grpc"]  # probes stay inside the pod


def test_secrets_are_never_inlined(release):
    name, values, manifests = release
    assert by_kind(manifests, "Secret") == {}  # the chart references Secrets and never writes one
    for where, container in containers(manifests).items():
        for env in container.get("env", []):
            if any(word in env["name"] for word in CREDENTIAL_ENV):
                if env["name"].endswith("_FILE"):  # a path to a file of a mounted Secret
                    assert env["value"].startswith("/etc/gigaudit/")
                elif env["name"] == "GIGAUDIT_REDIS_URL" and values["redis"]["bundled"]["enabled"]:
                    assert "@" not in env["value"]  # the bundled Redis has no password to leak
                else:
                    assert set(env) == {"name", "valueFrom"} and "secretKeyRef" in env["valueFrom"], (where, env)
    api = by_kind(manifests, "Deployment")["audit-gigaudit-api"]["spec"]["template"]["spec"]
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in api["volumes"] if "secret" in v}
    if values["auth"]["enabled"]:
        assert secret_volumes["auth"] == values["auth"]["tokensSecret"]["name"]
    if values["tls"]["enabled"]:
        assert secret_volumes["tls"] == values["tls"]["secretName"]


def test_api_environment_is_understood_by_the_server_settings(release):
    _, values, manifests = release
    api = containers(manifests)["audit-gigaudit-api/api"]
    given = {}
    for env in api["env"]:
        # the key prefix and the log format are read before the settings (keys module, log setup)
        if not env["name"].startswith("GIGAUDIT_") or env["name"] in ("GIGAUDIT_KEY_PREFIX", "GIGAUDIT_LOG_FORMAT"):
            continue
        field = env["name"].removeprefix("GIGAUDIT_").lower()
        assert field in Settings.model_fields, env["name"]
        if "value" in env:
            given[field] = json.loads(env["value"]) if field == "dataset_uri_allowlist" else env["value"]
    settings = Settings(**given)
    assert settings.host == "0.0.0.0" and settings.health_port == values["api"]["healthPort"]
    assert (settings.auth_tokens_file is not None) == values["auth"]["enabled"]
    assert (settings.tls_cert_file is not None) == values["tls"]["enabled"]
    mounts = {m["mountPath"] for m in api["volumeMounts"]}
    for path in (settings.auth_tokens_file, settings.tls_cert_file, settings.tls_client_ca_file):
        assert path is None or str(Path(path).parent) in mounts


def test_scale_in_hands_jobs_back_and_disruptions_are_bounded(release):
    _, values, manifests = release
    deployments = by_kind(manifests, "Deployment")
    worker = deployments["audit-gigaudit-worker"]["spec"]
    assert worker["template"]["spec"]["terminationGracePeriodSeconds"] >= 300
    assert ("replicas" in worker) != values["keda"]["enabled"]  # KEDA owns the replica count when enabled
    budgets = by_kind(manifests, "PodDisruptionBudget")
    assert budgets["audit-gigaudit-api"]["spec"]["selector"]["matchLabels"] == \
        deployments["audit-gigaudit-api"]["spec"]["selector"]["matchLabels"]
    assert budgets["audit-gigaudit-worker"]["spec"]["selector"]["matchLabels"] == worker["selector"]["matchLabels"]
    for pod in (d["spec"]["template"]["spec"] for d in deployments.values()):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False


def test_keda_scales_on_the_queue_stream_the_workers_read(release, monkeypatch):
    _, values, manifests = release
    scaled = by_kind(manifests, "ScaledObject")
    if not values["keda"]["enabled"]:
        assert scaled == {}
        return
    monkeypatch.setattr(keys, "PREFIX", values["keyPrefix"])
    trigger = scaled["audit-gigaudit-worker"]["spec"]["triggers"][0]["metadata"]
    assert (trigger["stream"], trigger["consumerGroup"]) == (keys.stream(), keys.consumer_group())
    assert scaled["audit-gigaudit-worker"]["spec"]["scaleTargetRef"]["name"] in by_kind(manifests, "Deployment")


def test_store_is_a_shared_volume_or_a_bucket(release):
    _, values, manifests = release
    claims = by_kind(manifests, "PersistentVolumeClaim")
    for name, container in containers(manifests).items():
        if name.endswith("-redis/redis"):
            continue
        env = {e["name"]: e.get("value") for e in container["env"]}
        if values["store"]["type"] == "s3":
            assert env["GIGAUDIT_STORE"] == values["store"]["s3"]["url"]
        else:
            assert env["GIGAUDIT_STORE"] == "file:///var/lib/gigaudit/store"
            assert claims["audit-gigaudit-store"]["spec"]["accessModes"] == ["ReadWriteMany"]
    if values["redis"]["bundled"]["enabled"]:
        redis = containers(manifests)["audit-gigaudit-redis/redis"]
        image = values["redis"]["bundled"]["image"]
        assert redis["image"] == f"{image['repository']}:{image['tag']}" and "--appendonly" in redis["args"]
