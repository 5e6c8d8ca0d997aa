"""The chart's metrics options, rendered without a cluster: the ServiceMonitor and its headless Services validated
and wired to the pods, the Grafana dashboard ConfigMap, and a dashboard that plots every metric family."""
from __future__ import annotations

import json
import re

import jsonschema
import kubernetes_validate
import pytest

from test_chart import CHART, KUBE_VERSION, by_kind, helm, merged, render  # noqa: F401 - helm: skip without it

DASHBOARD = CHART / "dashboards" / "gigaudit.json"
ON = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                  "dashboard": {"enabled": True}}}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
# Written from prometheus-operator's ServiceMonitor reference (monitoring.coreos.com/v1), restricted to the fields
# the chart sets; unknown fields are refused so that a typo fails here rather than in the operator.
SERVICE_MONITOR = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
            "namespace": {"type": "string"}, "labels": _LABELS, "annotations": _LABELS}},
        "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
                 "properties": {
                     "selector": {"type": "object", "additionalProperties": False, "required": ["matchLabels"],
                                  "properties": {"matchLabels": _LABELS}},
                     "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                         "matchNames": {"type": "array", "items": {"type": "string"}}, "any": {"type": "boolean"}}},
                     "targetLabels": {"type": "array", "items": {"type": "string"}},
                     "endpoints": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "additionalProperties": False, "required": ["port"], "properties": {
                             "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                             "scheme": {"enum": ["http", "https"]}, "interval": _DURATION,
                             "scrapeTimeout": _DURATION}}}}}},
}


def validate(manifests: list[dict]) -> None:
    for manifest in manifests:
        if manifest["kind"] == "ServiceMonitor":
            jsonschema.validate(manifest, SERVICE_MONITOR)
        elif manifest["apiVersion"].startswith("keda.sh/"):
            continue  # test_chart validates the KEDA resources
        else:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def test_nothing_is_rendered_for_prometheus_or_grafana_by_default():
    manifests = render({})
    assert not by_kind(manifests, "ServiceMonitor") and not by_kind(manifests, "ConfigMap")
    assert [name for name in by_kind(manifests, "Service") if name.endswith("-metrics")] == []
    assert merged({})["metrics"]["enabled"] and merged({})["metrics"]["port"] == 9090


def test_service_monitor_scrapes_the_api_and_every_worker_pod():
    manifests = render(ON)
    validate(manifests)
    monitor = by_kind(manifests, "ServiceMonitor")["audit-gigaudit"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "30s",
                        "scrapeTimeout": "10s"}
    services, deployments = by_kind(manifests, "Service"), by_kind(manifests, "Deployment")
    selected = {name: s for name, s in services.items()
                if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()}
    assert sorted(selected) == ["audit-gigaudit-api-metrics", "audit-gigaudit-worker-metrics"]
    for component in ("api", "worker"):
        service = selected[f"audit-gigaudit-{component}-metrics"]
        assert service["spec"]["clusterIP"] == "None"  # headless: Prometheus scrapes each pod
        assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]
        pods = deployments[f"audit-gigaudit-{component}"]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pods.items()
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == component
        assert "app.kubernetes.io/component" in monitor["spec"]["targetLabels"]
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == component


def test_metrics_port_follows_the_values():
    manifests = render({"metrics": {"port": 9400, "serviceMonitor": {"enabled": True}}})
    ports = [s["spec"]["ports"] for name, s in by_kind(manifests, "Service").items() if name.endswith("-metrics")]
    assert ports == [[{"name": "metrics", "port": 9400, "targetPort": 9400, "protocol": "TCP"}]] * 2


def test_pods_serve_metrics_on_the_scraped_port():
    for values, expected in ((ON, "9090"), ({"metrics": {"enabled": False}}, None)):
        for deployment in by_kind(render(values), "Deployment").values():
            [container] = deployment["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            assert env.get("GIGAUDIT_METRICS_PORT") == expected
            assert ports.get("metrics") == (int(expected) if expected else None)


def test_strict_lint_is_clean_with_service_monitor_and_dashboard():
    report = helm.lint(str(CHART), ON, strict=True, namespace="ml")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("bad", [
    {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},  # nothing to scrape
    {"metrics": {"serviceMonitor": {"interval": "thirty seconds"}}},
    {"metrics": {"port": 0}},
    {"metrics": {"serviceMonitor": {"enable": True}}},
    {"metrics": {"dashboard": {"labels": {"grafana_dashboard": 1}}}},
])
def test_schema_refuses_inconsistent_metrics_values(bad):
    with pytest.raises(helm.HelmValuesError):
        helm.Chart.load(str(CHART)).validate_schema(bad)


def test_dashboard_config_map_holds_the_dashboard_for_the_grafana_sidecar():
    config_map = by_kind(render(ON), "ConfigMap")["audit-gigaudit-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["gigaudit.json"]) == json.loads(DASHBOARD.read_text())


def test_dashboard_plots_every_metric_family(redis_client):
    from gigaudit_server.observability.metrics import (GpuMemoryCollector, QueueCollector, RpcMetrics, WorkerMetrics,
                                                       new_registry)

    class Cache:
        def stats(self):
            return {"hits": 0, "misses": 0, "evictions": 0, "resident": 0, "capacity": 1}

    registry = new_registry()
    RpcMetrics(registry)
    registry.register(QueueCollector(redis_client))
    WorkerMetrics(registry, models=Cache())
    registry.register(GpuMemoryCollector("cuda:0", read=lambda _: dict.fromkeys(
        ("allocated", "reserved", "peak_allocated", "free", "total"), 0)))
    families = {f.name for f in registry.collect()
                if f.name.startswith(("gigaudit_", "grpc_")) or f.name in ("process_cpu_seconds",
                                                                          "process_resident_memory_bytes")}
    assert len(families) > 25
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", " ".join(exprs)))
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    assert sorted(f for f in families if not any(f + s in used for s in suffixes)) == []
    # a well-formed dashboard: unique panel ids, a data source variable, balanced expressions
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] and dashboard["schemaVersion"] >= 36
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource"}
    assert all(p["datasource"]["uid"] == "${datasource}" and p["targets"] and p["gridPos"]["w"] <= 24 for p in panels)
    assert all(e.count("(") == e.count(")") and e.count("{") == e.count("}") for e in exprs)
