#!/usr/bin/env bash
# Build ForestFlow's two images where there is no Docker engine and no registry to pull from.
# mmdebstrap makes a Debian bookworm root filesystem with Python 3.11 and pip (cached, keyed by
# its suite and package list), which stands in for python:3.11-slim as the Dockerfiles'
# BASE_IMAGE; buildah builds each Dockerfile on it, RUN steps in a chroot, and writes the image
# as an OCI layout (`oci:` for skopeo and umoci) under the build folder.
#
#   runtime_image/build.sh [control-plane] [runtime]    # default: both
#
# FF_IMAGES: where the OCI layouts go (build/images); FF_BASE_CACHE: the cached base rootfs
# tarballs (~/.cache/forestflow/base). The runtime image is built with FLAVOR=cuda: PyPI's
# torch, the only wheel index reachable here (it runs on the CPU too).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${FF_IMAGES:-$repo/build/images}
cache=${FF_BASE_CACHE:-$HOME/.cache/forestflow/base}
suite=bookworm
packages=(python3 python3-pip python3-venv python-is-python3 ca-certificates)
# vfs: the sandboxes this runs in allow no overlay mounts; chroot: nor an OCI runtime.
buildah=(buildah --storage-driver vfs)

key=$(printf '%s\n' "$suite" "${packages[@]}" | sha256sum | cut -c1-16)
rootfs=$cache/$suite-$key.tar
base=localhost/forestflow-base:$suite-$key
if [[ ! -f $rootfs ]]; then
    mkdir -p "$cache"
    # Debian marks its Python as managed by apt; the image's pip, like python:3.11-slim's,
    # installs into it.
    mmdebstrap --variant=minbase --format=tar --include="$(IFS=,; echo "${packages[*]}")" \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$suite" "$rootfs.part" http://deb.debian.org/debian
    mv "$rootfs.part" "$rootfs"
fi
if ! "${buildah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
    container=$("${buildah[@]}" from scratch)
    "${buildah[@]}" add --quiet "$container" "$rootfs" /
    "${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd python3 "$container"
    "${buildah[@]}" commit --quiet --rm "$container" "$base" >/dev/null
fi

# Where this machine's HTTPS goes through a proxy with a CA of its own (a sandbox's), its
# trust store and pip.conf are lent to the RUN steps; the image keeps neither.
lent=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
[[ -f /etc/pip.conf ]] && lent+=(--volume /etc/pip.conf:/etc/pip.conf:ro)

build() {  # name, Dockerfile, context, build arguments...
    local name=$1 dockerfile=$2 context=$3
    shift 3
    "${buildah[@]}" bud --quiet --isolation chroot --layers=false "${lent[@]}" \
        --build-arg BASE_IMAGE="$base" "$@" -f "$dockerfile" -t "localhost/forestflow-$name:dev" \
        "$context" >/dev/null
    rm -rf "${out:?}/$name"
    mkdir -p "$out"
    "${buildah[@]}" push --quiet "localhost/forestflow-$name:dev" "oci:$out/$name:latest"
    "${buildah[@]}" rmi "localhost/forestflow-$name:dev" >/dev/null  # kept as the layout
    echo "$out/$name"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(control-plane runtime)
for target in "${targets[@]}"; do
    case $target in
        control-plane) build control-plane "$repo/control_plane/Dockerfile" "$repo" ;;
        runtime) build runtime "$repo/runtime_image/Dockerfile" "$repo/runtime_image" \
            --build-arg FLAVOR=cuda ;;
        *) echo "unknown image $target (control-plane, runtime)" >&2; exit 2 ;;
    esac
done
