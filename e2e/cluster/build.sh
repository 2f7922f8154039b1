#!/usr/bin/env bash
# Builds the test cluster's binaries from their Go modules (versions pinned in modules/*/go.mod)
# into a cache outside the clone, keyed by those pins: a second run reuses them.
# Prints the bin directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
key="$( (go version; cat "$0" "$here"/modules/*/go.mod "$here"/modules/*/go.sum "$here"/modules/*/*.go) | sha256sum | cut -c1-16)"
bin="${FF_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/forestflow/cluster}/$key/bin"
mkdir -p "$bin"

# Kubernetes' binaries report their version from these (its own build sets them the same
# way); Knative refuses an API server whose version does not parse.
kube="$(cd "$here/modules/kube" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="${kube#v1.}"
version_flags="-X k8s.io/component-base/version.gitVersion=$kube \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*} \
 -X k8s.io/component-base/version.gitTreeState=clean"

build() {  # module-dir output package [ldflags] [tags]
    if [ ! -x "$bin/$2" ]; then
        local start=$SECONDS
        (cd "$here/modules/$1" && go build -trimpath -ldflags="-s -w ${4:-}" -tags="${5:-}" \
            -o "$bin/$2.partial" "$3")
        mv "$bin/$2.partial" "$bin/$2"
        echo "built $2 in $((SECONDS - start)) s" >&2
    fi
}

build etcd etcd .
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
build knative knative-webhook knative.dev/serving/cmd/webhook
build knative knative-controller knative.dev/serving/cmd/controller
build knative knative-autoscaler knative.dev/serving/cmd/autoscaler
build knative knative-activator knative.dev/serving/cmd/activator
build knative knative-queue knative.dev/serving/cmd/queue
build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$version_flags"
build kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$version_flags"
build kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$version_flags"
build kube kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$version_flags"
build coredns coredns .
# Debian's Prometheus has no Kubernetes discovery; this one has only that (its own build tags).
build prometheus prometheus github.com/prometheus/prometheus/cmd/prometheus "" \
    remove_all_sd,enable_kubernetes_sd
# The manifests the cluster is set up from, copied from the same modules. Knative's
# config/core links its networking and caching CRDs from their own modules.
manifests="$(dirname "$bin")/manifests"
if [ ! -d "$manifests" ]; then
    mkdir -p "$manifests.partial"/{serving,networking,caching,kwok}
    dir() { (cd "$here/modules/$1" && go list -m -f '{{.Dir}}' "$2"); }
    serving="$(dir knative knative.dev/serving)"
    networking="$(dir knative knative.dev/networking)"
    caching="$(dir knative knative.dev/caching)"
    kwok="$(dir kwok sigs.k8s.io/kwok)"
    (cd "$serving/config/core" && find . -name '*.yaml' | while read -r f; do
        mkdir -p "$manifests.partial/serving/$(dirname "$f")"; cp "$f" "$manifests.partial/serving/$f"; done)
    cp "$networking"/config/{certificate,ingress,serverlessservice,domain-claim,config-network}.yaml \
        "$manifests.partial/networking/"
    cp "$caching/config/image.yaml" "$manifests.partial/caching/"
    # kwok's own "fast" set: nodes ready and kept alive by their leases, pods Running.
    cp "$kwok"/kustomize/stage/node/fast/node-*.yaml \
        "$kwok"/kustomize/stage/node/heartbeat-with-lease/node-*.yaml \
        "$kwok"/kustomize/stage/pod/fast/pod-*.yaml "$manifests.partial/kwok/"
    chmod -R u+w "$manifests.partial"
    mv "$manifests.partial" "$manifests"
fi
# Builds of other pins are of no further use.
find "$(dirname "$(dirname "$bin")")" -mindepth 1 -maxdepth 1 ! -name "$key" -exec rm -rf {} +
echo "$bin"
