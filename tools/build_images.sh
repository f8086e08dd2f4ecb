#!/usr/bin/env bash
# Builds the pipeline's container images with podman, one per module family
# (the targets of containers/Dockerfile, one per containers/<family>/), tagged
#     ${REGISTRY:-ghcr.io/spatialmap}/spatialmap-<family>:<manifest.version of nextflow.config>
# which is the name the modules' `container` directives use with the default
# params.container_registry / params.container_tag.
#
# Idempotent: installs and configures podman when it is missing (Debian/Ubuntu, as
# root), builds the base image once, and skips an image whose build inputs
# (Dockerfile, the files it copies, base image) hash to its org.spatialmap.build-hash
# label. The wheels pip downloads (or builds) are kept in the project cache and mounted
# into the builds (the Dockerfiles' WHEELHOUSE), so rebuilds and the second torch image
# do not download them again; unchanged steps come from podman's layer cache.
#
# Usage: tools/build_images.sh [family ...]        (default: every family)
# Environment:
#   REGISTRY    image name prefix (default ghcr.io/spatialmap)
#   TAG         image tag (default manifest.version in nextflow.config)
#   BASE_IMAGE  FROM image of every Dockerfile. Default: a Debian bookworm image made
#               here with debootstrap (localhost/spatialmap-base:bookworm), for machines
#               that reach Debian's mirror and PyPI but no image registry. Give
#               docker.io/library/python:3.11-slim-bookworm to build what Docker users get.
#   CA_BUNDLE   CA certificates for a TLS-intercepting proxy: mounted read-only into the
#               builds, never stored in an image (default: $PIP_CERT or
#               $REQUESTS_CA_BUNDLE when set)
#   PUSH=1      push each image after building it (podman login first)
#   FORCE=1     build even when the hash label matches
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SPATIALMAP_CACHE:-$HOME/.cache/spatialmap}
registry=${REGISTRY:-ghcr.io/spatialmap}
tag=${TAG:-$(awk '/^manifest *\{/{m=1} m && /^ *version *=/{gsub(/[\047" ]/, "", $0); sub(/version=/, ""); print; exit}' "$repo/nextflow.config")}
default_base=localhost/spatialmap-base:bookworm
base=${BASE_IMAGE:-$default_base}
ca=${CA_BUNDLE:-${PIP_CERT:-${REQUESTS_CA_BUNDLE:-}}}
label=org.spatialmap.build-hash

log() { echo "[build_images] $*" >&2; }
die() { echo "[build_images] ERROR: $*" >&2; exit 1; }

[[ -n "$tag" ]] || die "no manifest.version in nextflow.config; set TAG"

ensure_podman() {
    if ! command -v podman >/dev/null; then
        [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null \
            || die "podman is not installed: install it (https://podman.io/docs/installation)"
        log "installing podman"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            podman runc conmon containers-storage uidmap
    fi
    # Settings that work inside VMs and containers without systemd or cgroup v2:
    # runc, cgroupfs, and explicit open-file / process limits for the containers.
    local conf=/etc/containers/containers.conf
    if [[ $(id -u) == 0 && ! -s $conf ]]; then
        log "writing $conf (runc, cgroupfs, nofile/nproc ulimits)"
        mkdir -p /etc/containers
        cat > "$conf" <<'EOF'
# Written by spatialmap's tools/build_images.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
    fi
    podman info >/dev/null || die "podman does not work here: see 'podman info'"
}

# A Debian bookworm image from Debian's packages (debootstrap, minbase) with python3
# (3.11, as in python:3.11-slim-bookworm), python3-venv and procps, imported into podman
# under $default_base: it stands in for the Dockerfiles' FROM where no registry is reachable.
# Delete $cache/spatialmap-base-bookworm.tar and the image to make it afresh.
ensure_base() {
    if [[ "$base" != "$default_base" ]]; then
        return  # podman build pulls a given BASE_IMAGE when it is missing
    fi
    if podman image exists "$base"; then
        log "base image $base present"
        return
    fi
    # the root file system is kept in the project cache: a fresh podman store re-imports it
    local tarball="$cache/spatialmap-base-bookworm.tar"
    if [[ -s "$tarball" ]]; then
        log "importing $base from $tarball"
        import_base < "$tarball"
        return
    fi
    [[ $(id -u) == 0 ]] || die "building $base needs root (debootstrap); or set BASE_IMAGE"
    command -v debootstrap >/dev/null || {
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
    }
    local rootfs
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/spatialmap-rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' RETURN
    log "building $base with debootstrap (a few minutes, once)"
    debootstrap --variant=minbase --include=python3,python3-venv,procps \
        bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    import_base < "$tarball"
}

import_base() {
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$base" >/dev/null
}

# Hash of everything an image is built from: the base image, the Dockerfile, the
# install script, the shared torch layer's pins and the family's own pins.
build_hash() {
    local family=$1 base_id
    # the base's layers (content digests), not its id: a re-imported base keeps its hash
    base_id=$(podman image inspect --format '{{.RootFS.Layers}} {{.Config.Env}}' "$base" 2>/dev/null || echo "$base")
    {
        echo "$base_id $family"
        cd "$repo/containers"
        sha256sum Dockerfile install_requirements.sh torch.txt "$family/requirements.txt"
    } | sha256sum | cut -c1-16
}

build_family() {
    local family=$1 image="$registry/spatialmap-$1:$tag" hash current start
    hash=$(build_hash "$family")
    current=$(podman image inspect --format "{{index .Labels \"$label\"}}" "$image" 2>/dev/null || true)
    if [[ "$current" == "$hash" && -z "${FORCE:-}" ]]; then
        log "$image is up to date ($label=$hash)"
        return
    fi
    local args=(--network=host --layers --label "$label=$hash" --build-arg "BASE_IMAGE=$base"
                -v "$cache/wheelhouse:/tmp/wheelhouse")
    if [[ -n "$ca" ]]; then
        # over the path the Dockerfiles' PIP_CERT names: used by the build, not stored
        [[ -f "$ca" ]] || die "CA bundle $ca does not exist"
        args+=(-v "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
    fi
    [[ -n "${PIP_INDEX_URL:-}" ]] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
    log "building $image"
    start=$SECONDS
    podman build "${args[@]}" -f "$repo/containers/Dockerfile" --target "$family" -t "$image" "$repo/containers"
    log "built $image in $((SECONDS - start)) s ($(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=si)B)"
    if [[ -n "${PUSH:-}" ]]; then
        podman push "$image"
    fi
}

families=("$@")
if [[ ${#families[@]} == 0 ]]; then
    for spec in "$repo"/containers/*/requirements.in; do
        families+=("$(basename "$(dirname "$spec")")")
    done
fi
for family in "${families[@]}"; do
    grep -q "^FROM .* AS $family\$" "$repo/containers/Dockerfile" \
        || die "no stage '$family' in containers/Dockerfile"
done

mkdir -p "$cache/wheelhouse"
ensure_podman
ensure_base
for family in "${families[@]}"; do
    build_family "$family"
done
# images these builds replaced (untagged, ours): free their space
podman image prune -f --filter "label=$label" >/dev/null
podman images --filter "reference=$registry/spatialmap-*:$tag" >&2
