"""knative/: the cluster settings ForestFlow relies on, the Prometheus scrape config and the
Grafana dashboard. They parse, the ConfigMaps agree with what admission judges by, the scrape
config keeps exactly the runtime's serving port, and every PromQL metric is one that exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from forestflow_control_plane.knative.admission import (
    CLUSTER,
    WINDOW_MAX,
    WINDOW_MIN,
    ClusterConfig,
)
from forestflow_control_plane.knative.values import go_duration
from forestflow_runtime.metrics import RuntimeMetrics
from tests.support import REPO

KNATIVE = REPO / "knative"
GATEWAY = {
    "forestflow_gateway_requests_total",
    "forestflow_gateway_request_duration_seconds_bucket",
    "forestflow_gateway_request_duration_seconds_count",
    "forestflow_gateway_request_duration_seconds_sum",
    "forestflow_gateway_replicas",
    "forestflow_gateway_traffic_percent",
}
MIRROR = {
    "forestflow_shadow_compared_total",
    "forestflow_shadow_agreed_total",
    "forestflow_shadow_max_abs_diff",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def runtime_metrics() -> set[str]:
    """The sample names the runtime's registry exposes, read from the registry itself."""
    families = RuntimeMetrics("m", "c", "v").registry.collect()
    return {f.name + suffix for f in families for suffix in SUFFIXES[f.type]}


def configmap(name: str) -> dict[str, str]:
    doc = yaml.safe_load((KNATIVE / f"{name}.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "ConfigMap")
    assert doc["metadata"] == {**doc["metadata"], "name": name, "namespace": "knative-serving"}
    assert all(isinstance(v, str) for v in doc["data"].values()), "ConfigMap values are strings"
    return dict(doc["data"])


SETTINGS = [
    ("config-autoscaler", "pod-autoscaler-class", "kpa.autoscaling.knative.dev"),
    ("config-autoscaler", "enable-scale-to-zero", "true"),
    ("config-autoscaler", "allow-zero-initial-scale", "true"),
    ("config-autoscaler", "max-scale-limit", "100"),
    ("config-defaults", "max-revision-timeout-seconds", "3600"),
    ("config-defaults", "allow-container-concurrency-zero", "true"),
    ("config-features", "tag-header-based-routing", "enabled"),
    ("config-network", "domain-template", "{{.Name}}.{{.Namespace}}.{{.Domain}}"),
    ("config-network", "tag-template", "{{.Tag}}-{{.Name}}"),
]


@pytest.mark.parametrize(
    ("name", "key", "value"), SETTINGS, ids=[f"{r[0]}:{r[1]}" for r in SETTINGS]
)
def test_configmaps_hold_the_settings_forestflow_relies_on(
    name: str, key: str, value: str
) -> None:
    assert configmap(name).get(key) == value


def test_the_autoscaler_durations_are_ones_knative_accepts() -> None:
    data = configmap("config-autoscaler")
    grace = go_duration(data["scale-to-zero-grace-period"])
    window = go_duration(data["stable-window"])
    assert grace is not None and grace >= WINDOW_MIN
    assert window is not None and WINDOW_MIN <= window <= WINDOW_MAX
    assert window.denominator == 1


def test_admission_judges_by_the_settings_shipped() -> None:
    autoscaler, defaults = configmap("config-autoscaler"), configmap("config-defaults")
    shipped = ClusterConfig(
        allow_zero_initial_scale=autoscaler["allow-zero-initial-scale"] == "true",
        max_scale_limit=int(autoscaler["max-scale-limit"]),
        max_revision_timeout_seconds=int(defaults["max-revision-timeout-seconds"]),
        container_concurrency_max_limit=int(defaults["container-concurrency-max-limit"]),
        allow_container_concurrency_zero=defaults["allow-container-concurrency-zero"] == "true",
    )
    assert shipped == CLUSTER


def scrape_job(name: str = "forestflow-runtime") -> dict[str, Any]:
    config = yaml.safe_load((KNATIVE / "prometheus" / "scrape.yaml").read_text())
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == name)
    return dict(job)


def relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus's relabeling (keep and replace), enough to run the scrape config's rules on
    a target; None when the target is dropped. Meta labels go once relabeling is done."""
    labels = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule["source_labels"])
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and match is None:
            return None
        if action == "replace" and match is not None:
            template = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", rule.get("replacement", "$1"))
            result = match.expand(template)
            if result:
                labels[rule["target_label"]] = result
            else:
                labels.pop(rule["target_label"], None)
    return {k: v for k, v in labels.items() if not k.startswith("__meta_")}


def pod_target(port_name: str, phase: str = "Running", **pod_labels: str) -> dict[str, str]:
    meta = "__meta_kubernetes_pod_label_"
    return {
        "__address__": "10.0.0.7:8080",
        "__meta_kubernetes_namespace": "fraud",
        "__meta_kubernetes_pod_name": "ff-scoring-v1-00001-deployment-7d9c-x2v",
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_container_port_name": port_name,
        **{meta + k: v for k, v in pod_labels.items()},
    }


RUNTIME_POD = {
    "forestflow_dev_contract": "fraud.scoring",
    "forestflow_dev_version": "v1",
    "serving_knative_dev_revision": "ff-scoring-v1-00001",
}
TARGETS = [
    ("the serving port on a cluster", pod_target("user-port", **RUNTIME_POD), True),
    ("the serving port as the Revision names it", pod_target("http1", **RUNTIME_POD), True),
    ("queue-proxy's metrics port", pod_target("http-usermetric", **RUNTIME_POD), False),
    ("a pod that is no runtime", pod_target("user-port", app="other"), False),
    ("a pod not running yet", pod_target("user-port", phase="Pending", **RUNTIME_POD), False),
]


@pytest.mark.parametrize(("name", "target", "kept"), TARGETS, ids=[t[0] for t in TARGETS])
def test_the_scrape_config_keeps_only_runtime_serving_ports(
    name: str, target: dict[str, str], kept: bool
) -> None:
    job = scrape_job()
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert job["metrics_path"] == "/metrics"
    labels = relabel(job["relabel_configs"], target)
    assert (labels is not None) == kept
    if labels is not None:
        assert labels["contract"] == "fraud/scoring"
        assert labels["version"] == "v1"
        assert labels["revision"] == "ff-scoring-v1-00001"
        assert labels["namespace"] == "fraud"
        assert labels["pod"] == target["__meta_kubernetes_pod_name"]


def test_the_mirror_job_scrapes_the_mirror_pods_of_the_cluster_manifest_and_no_runtime() -> None:
    job = scrape_job("forestflow-mirror")
    manifest = list(yaml.safe_load_all((KNATIVE / "control-plane.yaml").read_text()))
    (mirror,) = (d for d in manifest if d["metadata"]["name"] == "forestflow-mirror")
    pod = mirror["spec"]["template"]
    (port,) = pod["spec"]["containers"][0]["ports"]
    meta = "__meta_kubernetes_pod_label_"
    target = {
        **pod_target(port["name"]), "__meta_kubernetes_namespace": mirror["metadata"]["namespace"],
        **{meta + re.sub(r"[^A-Za-z0-9_]", "_", k): v
           for k, v in pod["metadata"]["labels"].items()},
    }
    assert job["kubernetes_sd_configs"] == [
        {"role": "pod", "namespaces": {"names": [mirror["metadata"]["namespace"]]}}
    ]
    assert relabel(job["relabel_configs"], target) is not None
    runtime = pod_target("user-port", forestflow_dev_contract="fraud.scoring")
    assert relabel(job["relabel_configs"], runtime) is None


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    """Checked with static targets in place of Kubernetes discovery, which some builds of
    Prometheus leave out; everything else is the file as shipped."""
    config = yaml.safe_load((KNATIVE / "prometheus" / "scrape.yaml").read_text())
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": ["127.0.0.1:8080"]}]
        del job["kubernetes_sd_configs"]
    path = tmp_path / "scrape.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard() -> dict[str, Any]:
    return dict(json.loads((KNATIVE / "grafana" / "forestflow.json").read_text()))


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label
    matchers, ranges, label lists and function calls are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("(") or match.group() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, contract) (rate(a_bucket{code=~"5.."}'
            '[$__rate_interval]))) / ignoring(x) b_total and on(y) c')
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def test_every_dashboard_metric_is_one_that_exists() -> None:
    runtime = runtime_metrics()
    used = {name for expr in expressions() for name in metric_names(expr)}
    variables = [v["definition"] for v in dashboard()["templating"]["list"] if "definition" in v]
    for definition in variables:
        (metric,) = re.findall(r"label_values\(([A-Za-z_:][A-Za-z0-9_:]*)", definition)
        used.add(metric)
    assert used <= runtime | GATEWAY | MIRROR, used - (runtime | GATEWAY | MIRROR)
    assert used & runtime and used & GATEWAY and used & MIRROR


PANELS = [
    ("Requests per second", "rate("),
    ("Latency p50 / p95 / p99 (runtime)", "histogram_quantile(0.99"),
    ("Batch size", "forestflow_batch_size"),
    ("Queue depth and requests in flight", "forestflow_queue_depth"),
    ("Replicas", "forestflow_gateway_replicas"),
    ("Traffic split per contract", "forestflow_gateway_traffic_percent"),
    ("Shadow agreement", "forestflow_shadow_agreed_total"),
]


@pytest.mark.parametrize(("title", "reads"), PANELS, ids=[p[0] for p in PANELS])
def test_the_dashboard_has_the_panel(title: str, reads: str) -> None:
    panel = next(p for p in dashboard()["panels"] if p["title"] == title)
    assert any(reads in t["expr"] for t in panel["targets"])
    assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query as a recording rule, Grafana's variables filled in, so promtool parses it."""
    fill = {"$__rate_interval": "5m", "$contract": ".*", "$version": ".*"}
    rules = []
    for i, expr in enumerate(expressions()):
        for variable, value in fill.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"forestflow:dashboard_query_{i}", "expr": expr})
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
