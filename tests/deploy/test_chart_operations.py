"""The chart's operating options: worker probes, KEDA from zero (lagCount + pending entries) or on the stream
length, one GPU per worker process, and pods that roll when the Secrets they read change.

Rendered with helm-python-sdk and validated like test_chart (Kubernetes schemas, KEDA's); the Secret checksums
are rendered cluster-aware against a minimal Kubernetes API server on loopback that serves Secrets from a dict.
"""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk")

from keda_schemas import SCHEMAS as CRD_SCHEMAS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gigaudit"
VALUES_FILES = sorted((ROOT / "helm" / "values").glob("*.yaml"))
NAMESPACE = "ml"
WORKER, API = "audit-gigaudit-worker", "audit-gigaudit-api"


def chart():
    return helm.Chart.load(str(CHART))


def manifests_of(rendered: dict[str, str]) -> list[dict]:
    return [doc for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def render(values: dict) -> list[dict]:
    return manifests_of(chart().render(values, name="audit", namespace=NAMESPACE))


def validated(manifests: list[dict]) -> list[dict]:
    for manifest in manifests:
        crd = CRD_SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
        if crd is not None:
            jsonschema.validate(manifest, crd)
        else:
            kubernetes_validate.validate(manifest, "1.30", strict=True)
    return manifests


def one(manifests: list[dict], kind: str, name: str) -> dict:
    return next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)


def worker_container(manifests: list[dict]) -> dict:
    return one(manifests, "Deployment", WORKER)["spec"]["template"]["spec"]["containers"][0]


def flag(container: dict, name: str) -> str:
    return container["args"][container["args"].index(name) + 1]


def checked(values: dict) -> list[dict]:
    """Strict lint, schema and rendering of ``values``, every manifest validated."""
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    return validated(render(values))


# --------------------------------------------------------------------------------------------- worker probes
@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.stem)
def test_workers_are_probed_on_their_health_port(path):
    values = chart().merge_values(yaml.safe_load(path.read_text()) or {})
    container = worker_container(validated(render(values)))
    port = values["worker"]["healthPort"]
    assert container["ports"][0] == {"name": "health", "containerPort": port, "protocol": "TCP"}  # (then metrics)
    assert container["startupProbe"]["httpGet"] == container["livenessProbe"]["httpGet"] == {"path": "/livez",
                                                                                             "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    # the kubelet gives a slow start (torch, CUDA) minutes before liveness counts
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 120
    from gigaudit_server.worker.main import parse_args  # the worker understands the flags the chart gives it

    given = container["args"][1:]
    given[given.index("--device") + 1] = "cpu"  # parse_args checks the device against this machine, which has none
    args = parse_args(given)
    assert (args.health_port, args.health_host) == (port, "0.0.0.0")
    assert args.stall_timeout_s == values["worker"]["stallTimeoutSeconds"]


def test_stall_timeout_and_health_port_options():
    container = worker_container(checked({"worker": {"healthPort": 9100, "stallTimeoutSeconds": 0}}))
    assert (flag(container, "--health-port"), flag(container, "--stall-timeout-s")) == ("9100", "0")
    assert container["ports"][0]["containerPort"] == 9100
    for bad in ({"worker": {"healthPort": 0}}, {"worker": {"stallTimeoutSeconds": -1}}):
        with pytest.raises(helm.HelmValuesError):
            chart().validate_schema(bad)


# ---------------------------------------------------------------------------------------------- KEDA scaling
KEDA = {"keda": {"enabled": True, "redisAddress": "redis.data.svc:6379"}}


def triggers(manifests: list[dict]) -> list[dict]:
    return one(manifests, "ScaledObject", WORKER)["spec"]["triggers"]


def test_keda_scales_from_zero_on_lag_and_keeps_a_worker_per_running_job():
    manifests = checked(KEDA)
    spec = one(manifests, "ScaledObject", WORKER)["spec"]
    assert spec["minReplicaCount"] == 0
    found = [t["metadata"] for t in triggers(manifests)]
    assert [t["type"] for t in triggers(manifests)] == ["redis-streams", "redis-streams"]
    lag, pending = found
    assert lag["lagCount"] == "2" and pending["pendingEntriesCount"] == "1"  # jobsPerWorker; one per running job
    for trigger in found:
        assert (trigger["stream"], trigger["consumerGroup"], trigger["address"]) == ("gigaudit:stream", "workers",
                                                                                     "redis.data.svc:6379")
        assert not {"streamLength"} & set(trigger)
    assert "replicas" not in one(manifests, "Deployment", WORKER)["spec"]  # KEDA owns it


def test_keda_stream_length_option_for_older_redis():
    values = {"keda": {**KEDA["keda"], "trigger": "streamLength", "minReplicas": 1, "jobsPerWorker": 3,
                       "redisPasswordSecret": {"name": "redis-password", "key": "password"}}}
    found = triggers(checked(values))
    assert len(found) == 1 and found[0]["metadata"]["streamLength"] == "3"
    assert found[0]["authenticationRef"] == {"name": "audit-gigaudit-redis-auth"}
    with pytest.raises(helm.HelmValuesError):  # streamLength does not activate from zero
        chart().validate_schema({"keda": {"trigger": "streamLength", "minReplicas": 0}})
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema({"keda": {"trigger": "xlen"}})
    chart().validate_schema({"keda": {"trigger": "lagCount", "minReplicas": 0}})


def test_lag_triggers_authenticate_each():
    values = {"keda": {**KEDA["keda"], "redisPasswordSecret": {"name": "redis-password", "key": "password"}}}
    assert [t["authenticationRef"]["name"] for t in triggers(checked(values))] == ["audit-gigaudit-redis-auth"] * 2


# ------------------------------------------------------------------------------------------------------ GPUs
def test_one_gpu_per_worker_process():
    container = worker_container(checked({"worker": {"gpu": {"enabled": True, "count": 1}}}))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1 and flag(container, "--device") == "cuda:0"
    with pytest.raises(helm.HelmValuesError, match="count"):  # the worker would use only cuda:0 of them
        chart().validate_schema({"worker": {"gpu": {"enabled": True, "count": 2}}})


# ------------------------------------------------------------------------------------------ Secret checksums
class FakeKubernetes:
    """Serves ``GET /api/v1`` (discovery) and ``GET /api/v1/namespaces/NS/secrets/NAME`` from ``secrets``."""

    def __init__(self):
        self.secrets: dict[str, dict[str, str]] = {}
        secrets = self.secrets

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = self.path.split("?", 1)[0]
                prefix = f"/api/v1/namespaces/{NAMESPACE}/secrets/"
                if path == "/api/v1":
                    self._json(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
                         "verbs": ["get", "list"]}]})
                elif path.startswith(prefix) and path[len(prefix):] in secrets:
                    name = path[len(prefix):]
                    self._json(200, {"kind": "Secret", "apiVersion": "v1", "type": "Opaque",
                                     "metadata": {"name": name, "namespace": NAMESPACE},
                                     "data": {k: base64.b64encode(v.encode()).decode()
                                              for k, v in secrets[name].items()}})
                else:
                    self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotFound", "code": 404})

            def _json(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        port = self.server.server_address[1]
        self.kubeconfig = yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": NAMESPACE}}]})

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cluster():
    fake = FakeKubernetes()
    config = helm.Config(kubeconfig_content=fake.kubeconfig, namespace=NAMESPACE)
    try:
        yield fake, config
    finally:
        config.close()
        fake.close()


TLS = yaml.safe_load((ROOT / "helm" / "values" / "gpu-s3-tls-keda.yaml").read_text())


def checksums(config, values: dict) -> dict[str, str]:
    """``{deployment: checksum/secrets}`` of a cluster-aware render (lookup reads the fake cluster)."""
    manifests = validated(manifests_of(config.render(chart(), values, name="audit", namespace=NAMESPACE)))
    return {m["metadata"]["name"]: m["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
            for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] in (API, WORKER)}


def test_pods_roll_when_the_secrets_they_read_change(cluster):
    fake, config = cluster
    fake.secrets.update({
        "audit-tokens": {"tokens": "ci auditor " + "a" * 64},
        "gigaudit-api-tls": {"tls.crt": "cert-1", "tls.key": "key-1"},
        "audit-clients-ca": {"ca.crt": "ca-1"},
        "redis-connection": {"url": "rediss://:old@redis:6379/0"},
        "audit-bucket-credentials": {"access-key": "AK", "secret-key": "SK"}})
    first = checksums(config, TLS)
    assert checksums(config, TLS) == first  # the same data: nothing rolls
    assert first[API] != first[WORKER]  # the API reads more Secrets than the workers

    fake.secrets["audit-tokens"] = {"tokens": "ci auditor " + "b" * 64}  # a rotated token: the API rolls
    tokens = checksums(config, TLS)
    assert tokens[API] != first[API] and tokens[WORKER] == first[WORKER]

    fake.secrets["gigaudit-api-tls"] = {"tls.crt": "cert-2", "tls.key": "key-2"}  # a renewed certificate
    tls = checksums(config, TLS)
    assert tls[API] != tokens[API] and tls[WORKER] == first[WORKER]

    fake.secrets["audit-clients-ca"] = {"ca.crt": "ca-2"}
    assert checksums(config, TLS)[API] != tls[API]

    fake.secrets["redis-connection"] = {"url": "rediss://:new@redis:6379/0"}  # read by both, as env at start
    redis = checksums(config, TLS)
    assert redis[WORKER] != first[WORKER] and redis[API] != tls[API]


def test_secret_names_not_in_use_do_not_roll_pods(cluster):
    fake, config = cluster
    values = {"auth": {"enabled": False}, "redis": {"bundled": {"enabled": True}}}
    before = checksums(config, values)
    fake.secrets.update({"gigaudit-tokens": {"tokens": "x"}, "gigaudit-redis": {"url": "redis://other"}})
    assert checksums(config, values) == before  # neither Secret is mounted nor read


def test_offline_renders_are_stable():
    """Without a cluster (helm template, GitOps) lookup finds nothing: the checksum is constant, not random."""
    def annotations():
        return {m["metadata"]["name"]: m["spec"]["template"]["metadata"]["annotations"]
                for m in render(TLS) if m["kind"] == "Deployment"}

    assert annotations() == annotations()
    assert "checksum/secrets" in annotations()[API] and "checksum/secrets" in annotations()[WORKER]
