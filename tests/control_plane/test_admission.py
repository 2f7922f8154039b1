"""Admission: one row per rule; the good objects pass, each broken one fails naming its object
and field. (What the rollout policies produce: test_admission_policies.py.)"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from forestflow_control_plane.knative.admission import (
    CLUSTER,
    ClusterConfig,
    InvalidObjectError,
    check_all,
)
from forestflow_control_plane.knative.resources import make_objects
from forestflow_control_plane.policies.desired import desired_state

from .test_golden import snapshot

GOLDEN = make_objects(desired_state(snapshot()), "ghcr.io/forestflow/runtime:0.1.0")
SERVICE, ROUTE = GOLDEN[0], GOLDEN[-1]
DELETE = object()
ANN = ("spec", "template", "metadata", "annotations")
A = "autoscaling.knative.dev/"
POD = ("spec", "template", "spec")
C0 = (*POD, "containers", 0)
T = ("spec", "traffic")


def changed(obj: dict[str, Any], *edits: tuple[tuple[str | int, ...], Any]) -> dict[str, Any]:
    """A deep copy of `obj` with each (path, value) set, or removed when value is DELETE."""
    out = copy.deepcopy(obj)
    for path, value in edits:
        node: Any = out
        for key in path[:-1]:
            node = node[key]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return out


def note(key: str, value: Any) -> tuple[tuple[str, ...], Any]:
    return (*ANN, key), value


# (name, object, cluster, field, message): field None means the object passes.
ROWS: list[tuple[str, dict[str, Any], ClusterConfig, str | None, str]] = [
    ("the golden Service passes", SERVICE, CLUSTER, None, ""),
    ("the golden Route passes", ROUTE, CLUSTER, None, ""),
    ("not a Knative kind", changed(ROUTE, (("kind",), "Ingress")), CLUSTER, "kind",
     "Service or Route"),
    # the CRD schema
    ("schema: percent is an integer", changed(ROUTE, ((*T, 1, "percent"), "10")), CLUSTER,
     "spec.traffic[1].percent", "is not of type 'integer'"),
    ("schema: containerConcurrency is an integer",
     changed(SERVICE, ((*POD, "containerConcurrency"), "4")), CLUSTER,
     "spec.template.spec.containerConcurrency", "is not of type 'integer'"),
    ("schema: annotation values are strings", changed(SERVICE, note(A + "min-scale", 0)),
     CLUSTER, f"spec.template.metadata.annotations[{A}min-scale]", "is not of type 'string'"),
    # metadata
    ("name is a DNS-1035 label", changed(ROUTE, (("metadata", "name"), "Scoring")), CLUSTER,
     "metadata.name", "not a DNS-1035 label"),
    ("name is at most 63 characters", changed(ROUTE, (("metadata", "name"), "r" * 64)),
     CLUSTER, "metadata.name", "at most 63"),
    ("name is required", changed(ROUTE, (("metadata", "name"), DELETE)), CLUSTER,
     "metadata.name", "required"),
    ("namespace is required", changed(ROUTE, (("metadata", "namespace"), DELETE)), CLUSTER,
     "metadata.namespace", "required"),
    ("label values are label values",
     changed(ROUTE, (("metadata", "labels", "forestflow.dev/contract"), "fraud/scoring")),
     CLUSTER, "metadata.labels[forestflow.dev/contract]", "not a label value"),
    ("top-level annotation values are strings",
     changed(ROUTE, (("metadata", "annotations", "forestflow.dev/sticky-header"), 1)),
     CLUSTER, "metadata.annotations[forestflow.dev/sticky-header]", "values are strings"),
    ("serving.knative.dev labels are Knative's",
     changed(SERVICE, (("metadata", "labels", "serving.knative.dev/route"), "x")), CLUSTER,
     "metadata.labels[serving.knative.dev/route]", "reserves"),
    ("a standalone Route has no service label",
     changed(ROUTE, (("metadata", "labels", "serving.knative.dev/service"), "ff-scoring-v1")),
     CLUSTER, "metadata.labels[serving.knative.dev/service]", "standalone Route"),
    ("visibility is cluster-local only",
     changed(ROUTE, (("metadata", "labels", "networking.knative.dev/visibility"), "public")),
     CLUSTER, "metadata.labels[networking.knative.dev/visibility]", "cluster-local"),
    ("cluster-local visibility passes",
     changed(ROUTE, (("metadata", "labels", "networking.knative.dev/visibility"),
                     "cluster-local")), CLUSTER, None, ""),
    ("autoscaling annotations go on the template",
     changed(SERVICE, (("metadata", "annotations"), {A + "min-scale": "1"})), CLUSTER,
     f"metadata.annotations[{A}min-scale]", "spec.template.metadata.annotations"),
    # revision template name
    ("revision name has the Service's prefix",
     changed(SERVICE, (("spec", "template", "metadata", "name"), "other-00001")), CLUSTER,
     "spec.template.metadata.name", "must have the prefix 'ff-scoring-v1-'"),
    ("revision name is a DNS-1035 label",
     changed(SERVICE, (("spec", "template", "metadata", "name"), "ff-scoring-v1-0000_")),
     CLUSTER, "spec.template.metadata.name", "not a DNS-1035 label"),
    # autoscaling annotations
    ("class is kpa or hpa", changed(SERVICE, note(A + "class", "x.autoscaling.knative.dev")),
     CLUSTER, f"spec.template.metadata.annotations[{A}class]", "is not kpa"),
    ("min-scale is an integer", changed(SERVICE, note(A + "min-scale", "one")), CLUSTER,
     f"spec.template.metadata.annotations[{A}min-scale]", "not an integer"),
    ("min-scale is not negative", changed(SERVICE, note(A + "min-scale", "-1")), CLUSTER,
     f"spec.template.metadata.annotations[{A}min-scale]", "not an integer in 0.."),
    ("the camelCase spelling is read too",
     changed(SERVICE, ((*ANN, A + "min-scale"), DELETE), note(A + "minScale", "x")), CLUSTER,
     f"spec.template.metadata.annotations[{A}minScale]", "not an integer"),
    ("min-scale <= max-scale", changed(SERVICE, note(A + "min-scale", "5")), CLUSTER,
     f"spec.template.metadata.annotations[{A}max-scale]",
     "max-scale=4 is less than min-scale=5"),
    ("max-scale 0 is unlimited", changed(SERVICE, note(A + "min-scale", "5"),
                                         note(A + "max-scale", "0")),
     ClusterConfig(max_scale_limit=0), None, ""),
    ("max-scale within the cluster's limit", changed(SERVICE, note(A + "max-scale", "101")),
     CLUSTER, f"spec.template.metadata.annotations[{A}max-scale]", "max-scale-limit"),
    ("no unlimited max-scale under a limit", changed(SERVICE, note(A + "max-scale", "0")),
     CLUSTER, f"spec.template.metadata.annotations[{A}max-scale]", "outside 1..100"),
    ("target is a number", changed(SERVICE, note(A + "target", "many")), CLUSTER,
     f"spec.template.metadata.annotations[{A}target]", "not a number"),
    ("target is at least 0.01", changed(SERVICE, note(A + "target", "0")), CLUSTER,
     f"spec.template.metadata.annotations[{A}target]", "at least 0.01"),
    ("initial-scale is an integer >= 0", changed(SERVICE, note(A + "initial-scale", "-1")),
     CLUSTER, f"spec.template.metadata.annotations[{A}initial-scale]", "integer >= 0"),
    ("initial-scale 0 where the cluster allows it",
     changed(SERVICE, note(A + "initial-scale", "0")), CLUSTER, None, ""),
    ("initial-scale 0 where the cluster does not",
     changed(SERVICE, note(A + "initial-scale", "0")),
     ClusterConfig(allow_zero_initial_scale=False),
     f"spec.template.metadata.annotations[{A}initial-scale]", "allow-zero-initial-scale"),
    ("window is a duration", changed(SERVICE, note(A + "window", "60")), CLUSTER,
     f"spec.template.metadata.annotations[{A}window]", "not a duration"),
    ("window is at least 6s", changed(SERVICE, note(A + "window", "5s")), CLUSTER,
     f"spec.template.metadata.annotations[{A}window]", "outside 6s..3600s"),
    ("window is at most 1h", changed(SERVICE, note(A + "window", "1h0m1s")), CLUSTER,
     f"spec.template.metadata.annotations[{A}window]", "outside 6s..3600s"),
    ("window is whole seconds", changed(SERVICE, note(A + "window", "60.5s")), CLUSTER,
     f"spec.template.metadata.annotations[{A}window]", "second precision"),
    ("a Go duration like 1m30s passes", changed(SERVICE, note(A + "window", "1m30s")),
     CLUSTER, None, ""),
    ("retention is at most 1h", changed(SERVICE, note(A + "scale-to-zero-pod-retention-period",
                                                      "2h")), CLUSTER,
     f"spec.template.metadata.annotations[{A}scale-to-zero-pod-retention-period]",
     "outside 0s..3600s"),
    ("the kpa scales on concurrency or rps", changed(SERVICE, note(A + "metric", "cpu")),
     CLUSTER, f"spec.template.metadata.annotations[{A}metric]", "concurrency or rps"),
    ("rps passes", changed(SERVICE, note(A + "metric", "rps")), CLUSTER, None, ""),
    ("the hpa scales on cpu", changed(SERVICE, note(A + "class", "hpa.autoscaling.knative.dev"),
                                      note(A + "metric", "cpu")), CLUSTER, None, ""),
    ("the hpa needs a metric", changed(SERVICE, note(A + "class", "hpa.autoscaling.knative.dev"),
                                       note(A + "metric", "")), CLUSTER,
     f"spec.template.metadata.annotations[{A}metric]", "needs a metric"),
    ("progress deadline is a duration",
     changed(SERVICE, note("serving.knative.dev/progress-deadline", "ten minutes")), CLUSTER,
     "spec.template.metadata.annotations[serving.knative.dev/progress-deadline]",
     "not a duration"),
    ("progress deadline is positive",
     changed(SERVICE, note("serving.knative.dev/progress-deadline", "0s")), CLUSTER,
     "spec.template.metadata.annotations[serving.knative.dev/progress-deadline]", "positive"),
    ("progress deadline is whole seconds",
     changed(SERVICE, note("serving.knative.dev/progress-deadline", "1500ms")), CLUSTER,
     "spec.template.metadata.annotations[serving.knative.dev/progress-deadline]",
     "second precision"),
    # the revision's pod spec
    ("containerConcurrency >= 0", changed(SERVICE, ((*POD, "containerConcurrency"), -1)),
     CLUSTER, "spec.template.spec.containerConcurrency", "outside 0..1000"),
    ("containerConcurrency <= the cluster's limit",
     changed(SERVICE, ((*POD, "containerConcurrency"), 1001)), CLUSTER,
     "spec.template.spec.containerConcurrency", "outside 0..1000"),
    ("timeoutSeconds > 0", changed(SERVICE, ((*POD, "timeoutSeconds"), 0)), CLUSTER,
     "spec.template.spec.timeoutSeconds", "outside 1..3600"),
    ("timeoutSeconds <= the cluster's maximum",
     changed(SERVICE, ((*POD, "timeoutSeconds"), 3601)), CLUSTER,
     "spec.template.spec.timeoutSeconds", "max-revision-timeout-seconds"),
    ("a container is required", changed(SERVICE, ((*POD, "containers"), [])), CLUSTER,
     "spec.template.spec.containers", "required"),
    ("image is required", changed(SERVICE, ((*C0, "image"), DELETE)), CLUSTER,
     "spec.template.spec.containers[0].image", "required"),
    ("queue-proxy is Knative's container", changed(SERVICE, ((*C0, "name"), "queue-proxy")),
     CLUSTER, "spec.template.spec.containers[0].name", "reserved container name"),
    ("PORT is Knative's variable",
     changed(SERVICE, ((*C0, "env", 0, "name"), "PORT")), CLUSTER,
     "spec.template.spec.containers[0].env[0].name", "reserved environment variable"),
    ("port names are http1 or h2c", changed(SERVICE, ((*C0, "ports", 0, "name"), "http")),
     CLUSTER, "spec.template.spec.containers[0].ports[0].name", "'h2c' or 'http1'"),
    ("queue-proxy's ports are reserved",
     changed(SERVICE, ((*C0, "ports", 0, "containerPort"), 8012)), CLUSTER,
     "spec.template.spec.containers[0].ports[0].containerPort", "reserved port"),
    ("one serving port",
     changed(SERVICE, ((*C0, "ports"), [{"containerPort": 8080}, {"containerPort": 9000}])),
     CLUSTER,
     "spec.template.spec.containers", "more than one container port"),
    # traffic
    ("percent is at most 100", changed(ROUTE, ((*T, 1, "percent"), 110)), CLUSTER,
     "spec.traffic[1].percent", "outside 0..100"),
    ("percent is at least 0", changed(ROUTE, ((*T, 0, "percent"), 110), ((*T, 1, "percent"),
                                                                           -10)), CLUSTER,
     "spec.traffic[1].percent", "outside 0..100"),
    ("percents sum to 100", changed(ROUTE, ((*T, 1, "percent"), 5)), CLUSTER, "spec.traffic",
     "sum to 95, want 100"),
    ("a Route with no targets sums to 0", changed(ROUTE, (T, [])), CLUSTER, "spec.traffic",
     "sum to 0, want 100"),
    ("tags are unique", changed(ROUTE, ((*T, 1, "tag"), "v1")), CLUSTER, "spec.traffic[1].tag",
     "also the tag of spec.traffic[0]"),
    ("tags are DNS-1035 labels", changed(ROUTE, ((*T, 1, "tag"), "V2")), CLUSTER,
     "spec.traffic[1].tag", "not a DNS-1035 label"),
    ("a target names one of revision or configuration",
     changed(ROUTE, ((*T, 1, "configurationName"), "ff-scoring-v2")), CLUSTER,
     "spec.traffic[1]", "got both"),
    ("a target names a revision or configuration",
     changed(ROUTE, ((*T, 1, "revisionName"), DELETE)), CLUSTER, "spec.traffic[1]",
     "got neither"),
    ("a configuration target passes",
     changed(ROUTE, ((*T, 1, "revisionName"), DELETE),
             ((*T, 1, "configurationName"), "ff-scoring-v2")), CLUSTER, None, ""),
    ("latestRevision true is not a pinned revision",
     changed(ROUTE, ((*T, 1, "latestRevision"), True)), CLUSTER,
     "spec.traffic[1].latestRevision", "when latestRevision is true"),
    ("latestRevision false pins a revision",
     changed(ROUTE, ((*T, 1, "revisionName"), DELETE),
             ((*T, 1, "configurationName"), "ff-scoring-v2"),
             ((*T, 1, "latestRevision"), False)), CLUSTER,
     "spec.traffic[1].latestRevision", "when latestRevision is false"),
    ("revision names are qualified names",
     changed(ROUTE, ((*T, 1, "revisionName"), "ff scoring")), CLUSTER,
     "spec.traffic[1].revisionName", "not a qualified name"),
    ("url is Knative's to set", changed(ROUTE, ((*T, 1, "url"), "http://x")), CLUSTER,
     "spec.traffic[1].url", "status"),
    ("a Service routes to its own configuration",
     changed(SERVICE, (("spec", "traffic"), [{"configurationName": "x", "percent": 100}])),
     CLUSTER, "spec.traffic[0].configurationName", "its own"),
]


@pytest.mark.parametrize(
    ("name", "obj", "cluster", "field", "message"), ROWS, ids=[row[0] for row in ROWS]
)
def test_each_rule(
    name: str, obj: dict[str, Any], cluster: ClusterConfig, field: str | None, message: str
) -> None:
    if field is None:
        check_all([obj], cluster)
        return
    with pytest.raises(InvalidObjectError) as info:
        check_all([obj], cluster)
    found = {p.field: p.message for p in info.value.problems}
    assert field in found, found
    assert message in found[field], found[field]
    where = f"{obj['kind']} {obj['metadata'].get('namespace', '?')}/"
    assert str(info.value).startswith(where), str(info.value)


def test_every_problem_of_every_object_is_reported() -> None:
    route = changed(ROUTE, ((*T, 1, "percent"), 120), ((*T, 1, "tag"), "v1"))
    service = changed(SERVICE, ((*POD, "timeoutSeconds"), 0))
    with pytest.raises(InvalidObjectError) as info:
        check_all([service, ROUTE, route])
    assert [str(p) for p in info.value.problems] == [
        "Service fraud/ff-scoring-v1: spec.template.spec.timeoutSeconds: 0 is outside 1..3600 "
        "(the cluster's max-revision-timeout-seconds)",
        "Route fraud/scoring: spec.traffic[1].percent: 120 is outside 0..100",
        "Route fraud/scoring: spec.traffic[1].tag: 'v1' is also the tag of spec.traffic[0]",
        "Route fraud/scoring: spec.traffic: traffic targets sum to 210, want 100",
    ]
