"""The Knative API's group and version, and every annotation and label key that our
builders write, admission checks and the local platform reads: one table, so the three
cannot drift apart."""

from __future__ import annotations

GROUP = "serving.knative.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

CLASS = "autoscaling.knative.dev/class"
METRIC = "autoscaling.knative.dev/metric"
TARGET = "autoscaling.knative.dev/target"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
INITIAL_SCALE = "autoscaling.knative.dev/initial-scale"
WINDOW = "autoscaling.knative.dev/window"
RETENTION = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"
PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"
# Knative still reads the camelCase spellings, after the canonical key (kmap.KeyPriority).
ALIASES = {
    MIN_SCALE: "autoscaling.knative.dev/minScale",
    MAX_SCALE: "autoscaling.knative.dev/maxScale",
    INITIAL_SCALE: "autoscaling.knative.dev/initialScale",
    RETENTION: "autoscaling.knative.dev/scaleToZeroPodRetentionPeriod",
}
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
VISIBILITY_LABEL = "networking.knative.dev/visibility"
SERVICE_LABEL = "serving.knative.dev/service"
CONFIGURATION_GENERATION_LABEL = "serving.knative.dev/configurationGeneration"

# Ours, on every object we make.
CONTRACT_LABEL = "forestflow.dev/contract"
VERSION_LABEL = "forestflow.dev/version"
# The variant's in-place revision counter; the revision's name follows its template.
REVISION_LABEL = "forestflow.dev/revision"
STICKY_HEADER_ANNOTATION = "forestflow.dev/sticky-header"
