#!/usr/bin/env bash
# Builds the code-location image with podman where no image registry is reachable, then checks
# that it loads the code, as uid 10001.
#
#   deploy/build-image.sh [TAG]                      (as root; default TAG localhost/screenlake:dev)
#
# BASE_IMAGE  image to build on; default: Debian bookworm made here with debootstrap, once
# WHEELHOUSE  folder in the repo whose wheels pip prefers (default var/wheels); put a CPU torch
#             wheel there where download.pytorch.org is out of reach
# BUILD_CA    CA bundle pip trusts during the build (a TLS-inspecting proxy); never in the image
# RUN_FLAGS   extra `podman run` flags the host needs (a sandbox: --runtime runc --ulimit ...)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/screenlake:dev}
wheelhouse=${WHEELHOUSE:-var/wheels}
mkdir -p "$wheelhouse"
scratch=$(mktemp -d /tmp/screenlake-image.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

base=${BASE_IMAGE:-localhost/debian-bookworm:local}
if [ -z "${BASE_IMAGE:-}" ] && ! podman image exists "$base"; then
    debootstrap --variant=minbase bookworm "$scratch/rootfs" http://deb.debian.org/debian
    printf 'deb http://deb.debian.org/debian %s main\n' bookworm bookworm-updates \
        > "$scratch/rootfs/etc/apt/sources.list"
    echo 'deb http://deb.debian.org/debian-security bookworm-security main' \
        >> "$scratch/rootfs/etc/apt/sources.list"
    rm -rf "$scratch"/rootfs/var/lib/apt/lists/* "$scratch"/rootfs/var/cache/apt/archives/*.deb
    tar -C "$scratch/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base"
fi

build=(podman build --isolation chroot --network host --format docker -f deploy/Containerfile
       --build-arg "BASE_IMAGE=$base" --build-arg "WHEELHOUSE=$wheelhouse")
# The build stage alone first, with the CA mounted for pip; the full build then reuses it, so the
# runtime stage never sees the mounts (buildah leaves empty mount points behind).
ca=()
if [ -n "${BUILD_CA:-}" ]; then
    printf '[global]\ncert = /etc/ssl/build-ca.crt\n' > "$scratch/pip.conf"
    ca=(-v "$BUILD_CA:/etc/ssl/build-ca.crt:ro" -v "$scratch/pip.conf:/etc/pip.conf:ro")
fi
start=$SECONDS
"${build[@]}" "${ca[@]}" --target build .
"${build[@]}" -t "$tag" .
echo "built $tag in $((SECONDS - start)) s: $(podman image inspect --format '{{.Size}}' "$tag") bytes"

# RUN_FLAGS is split on purpose: it holds several flags.
# shellcheck disable=SC2086
run() { podman run --rm --no-healthcheck ${RUN_FLAGS:-} "$@"; }
run "$tag" id
run -e SCREENLAKE_ENV=local -e SCREENLAKE_HOME=/tmp/screenlake "$tag" \
    python -c 'from orchestration.definitions import defs; print(len(list(defs.assets)), "assets")'
run "$tag" screenlake --help > /dev/null
run "$tag" dagster code-server start --help > /dev/null
run "$tag" celery --version
echo "smoke test passed"
