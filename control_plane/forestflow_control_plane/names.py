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

DNS_LABEL_MAX = 63


def contract_key(contract: str) -> str:
    return f"ff:contract:{contract}"


def variants_key(contract: str) -> str:
    return f"ff:variants:{contract}"


def events_key(contract: str) -> str:
    return f"ff:events:{contract}"


def split_contract(contract: str) -> tuple[str, str]:
    namespace, _, name = contract.partition("/")
    return namespace, name


def service_name(contract: str, version: str) -> str:
    """`ff-<name>-<version>`, a DNS-1035 label; cut with a stable hash when too long."""
    _, name = split_contract(contract)
    full = f"ff-{name}-{version}"
    if len(full) <= DNS_LABEL_MAX:
        return full
    digest = hashlib.sha256(f"{contract}@{version}".encode()).hexdigest()[:8]
    return f"{full[: DNS_LABEL_MAX - 9].rstrip('-')}-{digest}"


def revision_name(service: str, digest: str) -> str:
    """`<service>-<digest of its template>`: a new name for every new template."""
    suffix = f"-{digest}"
    return f"{service[: DNS_LABEL_MAX - len(suffix)].rstrip('-')}{suffix}"


def object_key(namespace: str, name: str) -> str:
    """Field of a Knative object in the local platform's hashes."""
    return f"{namespace}/{name}"
