"""Every Redis key, queue and Kubernetes object name, in one place."""

from __future__ import annotations

import hashlib

CONTRACTS_INDEX = "ff:contracts"
ROLLOUT_QUEUE = "forestflow-rollouts"
RECONCILE_LOCK = "ff:reconcile:lock"
LOCAL_SERVICES = "ff:local:services"
LOCAL_ROUTES = "ff:local:routes"
LOCAL_STATUS = "ff:local:status"
LOCAL_CHANGED = "ff:local:changed"

# The runtime's FF_PAYLOAD_STREAM default; the local platform leaves it as it is.
PAYLOAD_STREAM = "forestflow:payloads"
SHADOW_PREFIX = "ff:shadow"

DNS_LABEL_MAX = 63
REVISION_DIGEST_LENGTH = 7
# A revision is named `<service>-<digest>` and is a DNS label too.
SERVICE_NAME_MAX = DNS_LABEL_MAX - 1 - REVISION_DIGEST_LENGTH


def contract_key(contract: str) -> str:
    return f"ff:contract:{contract}"


def variants_key(contract: str) -> str:
    return f"ff:variants:{contract}"


def swap_lease_key(contract: str) -> str:
    """Held while an in-place swap of the contract runs; whoever holds it may move replicas."""
    return f"ff:swap:{contract}"


def events_key(contract: str) -> str:
    return f"ff:events:{contract}"


def stream_out_key(contract: str) -> str:
    """A streaming variant's default output stream."""
    return f"ff:stream:{contract}:out"


def stream_dead_key(contract: str) -> str:
    """A streaming variant's default dead-letter stream."""
    return f"ff:stream:{contract}:dead"


def mirror_seen_key(entry_id: str) -> str:
    """Marks a payload entry the mirror has recorded, so a redelivery is not counted twice."""
    return f"ff:mirror:seen:{entry_id}"


def metrics_replicas_key(contract: str, version: str) -> str:
    """The replica URLs scraped for a variant's gate, scored by when each was seen."""
    return f"ff:metrics:replicas:{contract}@{version}"


def metrics_samples_key(contract: str, version: str, url: str) -> str:
    """One replica's cumulative scrape samples, scored by time."""
    return f"ff:metrics:samples:{contract}@{version}:{url}"


def shadow_results_key(contract: str, shadow: str) -> str:
    return f"{SHADOW_PREFIX}:{contract}:{shadow}"


def shadow_primaries_key(contract: str, shadow: str) -> str:
    return f"{SHADOW_PREFIX}:{contract}:{shadow}:primaries"


def shadow_latency_key(contract: str, shadow: str, side: str) -> str:
    """Latency samples of `side` (primary or shadow) on the requests mirrored to `shadow`."""
    return f"{SHADOW_PREFIX}:{contract}:{shadow}:latency:{side}"


def shadow_max_diff_key(contract: str) -> str:
    return f"{SHADOW_PREFIX}:{contract}:max-abs-diff"


def shadows_key(contract: str) -> str:
    """The shadows of a contract that have results."""
    return f"{SHADOW_PREFIX}:{contract}:shadows"


def split_contract(contract: str) -> tuple[str, str]:
    namespace, _, name = contract.partition("/")
    return namespace, name


def model_name(contract: str) -> str:
    """The name the runtime serves the model under: the contract's own name."""
    return split_contract(contract)[1]


def contract_label(contract: str) -> str:
    """The contract as a label value: a label cannot hold the slash of `fraud/scoring`."""
    return contract.replace("/", ".")


def service_name(contract: str, version: str) -> str:
    """`ff-<name>-<version>`, cut with a stable hash when longer than SERVICE_NAME_MAX."""
    _, name = split_contract(contract)
    full = f"ff-{name}-{version}"
    if len(full) <= SERVICE_NAME_MAX:
        return full
    digest = hashlib.sha256(f"{contract}@{version}".encode()).hexdigest()[:8]
    return f"{full[: SERVICE_NAME_MAX - 9].rstrip('-')}-{digest}"


def revision_name(service: str, digest: str) -> str:
    """`<service>-<digest of its template>`: a new name for every new template. Knative
    wants the Service's whole name as the prefix, which SERVICE_NAME_MAX leaves room for."""
    return f"{service}-{digest[:REVISION_DIGEST_LENGTH]}"


def tag_host_label(contract: str, version: str) -> str:
    """The first label of a version's own host on Knative (config-network's tag-template)."""
    return f"{version}-{split_contract(contract)[1]}"


def object_key(namespace: str, name: str) -> str:
    """Field of a Knative object in the local platform's hashes."""
    return f"{namespace}/{name}"
