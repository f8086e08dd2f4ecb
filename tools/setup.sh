#!/usr/bin/env bash
# Idempotent set-up of everything the pipeline needs to run with -profile local:
#   - Nextflow 24.10.0 and its runtime jars, resolved from Maven Central
#     (skipped when a `nextflow` is already on PATH);
#   - the pinned Python environment (requirements.lock) in a virtualenv, and this checkout's
#     spatialmap package (pyproject.toml) installed into it, editable (the `spatialmap` command);
#   - with --with-proseg: the ProSeg binary (crates.io, exact version, --locked) for
#     --segmentation proseg with -profile local, in $cache/proseg-<version>/bin.
#   - with --with-lint: ruff, the linter, at the version ruff.toml requires, in
#     $cache/ruff-<version>/bin (not in requirements.lock: the lock keys the images).
# Both live in the project's cache, ${SPATIALMAP_CACHE:-~/.cache/spatialmap},
# keyed by version / lock hash, so repeated runs and fresh clones reuse them.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SPATIALMAP_CACHE:-$HOME/.cache/spatialmap}
nf_version=$(sed -n 's:.*<nextflow.version>\(.*\)</nextflow.version>.*:\1:p' "$repo/tools/nextflow-maven/pom.xml")
mkdir -p "$cache"

log() { echo "[setup] $*" >&2; }

setup_nextflow() {
    local dest="$cache/nextflow-$nf_version"
    if [[ -f "$dest/.complete" ]]; then return; fi
    log "resolving Nextflow $nf_version from Maven Central into $dest"
    rm -rf "$dest"
    mvn -q -B -f "$repo/tools/nextflow-maven/pom.xml" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest/lib"
    touch "$dest/.complete"
}

setup_python() {
    local python=${SPATIALMAP_PYTHON:-python3.11}
    command -v "$python" >/dev/null || python=python3
    local hash
    hash=$(cat "$repo/requirements.lock" | sha256sum | cut -c1-12)
    local dest="$cache/venv-$hash"
    if [[ ! -f "$dest/.complete" ]]; then
        log "building the Python environment from requirements.lock into $dest (a few minutes, once)"
        rm -rf "$dest"
        "$python" -m venv "$dest"
        "$dest/bin/python" -m pip install -q --upgrade pip
        "$dest/bin/python" -m pip install -q -r "$repo/requirements.lock"
        touch "$dest/.complete"
    fi
    ln -sfn "$dest" "$cache/env"
    setup_package "$dest"
}

# The spatialmap package (pyproject.toml: bin/spatialmap and the `spatialmap` entry point),
# editable, so that this checkout's code is what `python tools/x.py` and `spatialmap` run. Offline:
# no dependencies (the lock is the environment) and no build isolation (the lock's setuptools
# builds it). The virtualenv is shared by every checkout using this cache, so the install points at
# the checkout that ran this last: it is redone (a few seconds) when that was another checkout or
# pyproject.toml / the package's __init__.py (its version) changed, and skipped otherwise.
setup_package() {
    local env=$1 want
    want="$repo $(cat "$repo/pyproject.toml" "$repo/bin/spatialmap/__init__.py" | sha256sum | cut -c1-12)"
    (
        flock 9  # one install at a time in the shared environment
        if [[ "$(cat "$env/.spatialmap-package" 2>/dev/null)" == "$want" ]] \
            && compgen -G "$env/lib/python3*/site-packages/spatialmap-*.dist-info" >/dev/null; then
            exit 0
        fi
        log "installing the spatialmap package of $repo into $env (editable)"
        "$env/bin/python" -m pip install -q --no-deps --no-build-isolation --no-index --disable-pip-version-check \
            -e "$repo"
        echo "$want" > "$env/.spatialmap-package"
    ) 9> "$env/.spatialmap-package.lock"
}

# ProSeg 3.2.0 (the version of containers/Dockerfile's proseg-build stage) needs Rust >= 1.88:
# a cargo on PATH that new enough is used; otherwise, as root on Debian bookworm, Debian's
# rustc-web / cargo-web from bookworm-security (bookworm's own rustc, 1.63, is too old).
# With PROSEG_IMAGE=<spatial image> (tools/test.sh --heavy) the image's binary is copied out instead.
proseg_version=3.2.0
setup_proseg() {
    local dest="$cache/proseg-$proseg_version"
    # a plain `cargo install proseg --root $cache/proseg` of this version: adopted
    if [[ -d "$cache/proseg" && ! -L "$cache/proseg" && ! -e "$dest" ]] \
        && "$cache/proseg/bin/proseg" --version 2>/dev/null | grep -qx "proseg $proseg_version"; then
        log "adopting $cache/proseg (proseg $proseg_version) as $dest"
        mv "$cache/proseg" "$dest" && touch "$dest/.complete"
    fi
    if [[ -f "$dest/.complete" ]]; then return; fi
    # PROSEG_IMAGE: take the binary the spatial image compiled (same crate, --locked), no second compile
    if [[ -n "${PROSEG_IMAGE:-}" ]] && podman image exists "$PROSEG_IMAGE" 2>/dev/null; then
        log "taking ProSeg from $PROSEG_IMAGE into $dest"
        rm -rf "$dest" && mkdir -p "$dest/bin"
        local id copied=0
        id=$(podman create "$PROSEG_IMAGE")
        podman cp "$id:/usr/local/bin/proseg" "$dest/bin/proseg" && copied=1
        podman rm "$id" >/dev/null
        if [[ $copied == 1 ]] && "$dest/bin/proseg" --version 2>/dev/null | grep -qx "proseg $proseg_version"; then
            touch "$dest/.complete"
            return
        fi
        log "$PROSEG_IMAGE has no proseg $proseg_version that runs here: compiling"
    fi
    local cargo rust
    cargo=$(command -v cargo || true)
    rust=$( { [[ -n "$cargo" ]] && rustc --version 2>/dev/null || true; } | awk '{print $2}')
    if [[ -z "$rust" ]] || ! printf '1.88.0\n%s\n' "$rust" | sort -V -C; then
        [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null \
            || { log "ERROR: ProSeg needs Rust >= 1.88 (found ${rust:-none}): install it (cargo), or run as root on Debian"; exit 1; }
        log "installing Debian's rustc-web / cargo-web (Rust >= 1.88) for ProSeg"
        grep -rqs bookworm-security /etc/apt/sources.list /etc/apt/sources.list.d/ \
            || echo "deb http://deb.debian.org/debian-security bookworm-security main" > /etc/apt/sources.list.d/spatialmap-security.list
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rustc-web cargo-web gcc g++ libc6-dev make
        cargo=/usr/bin/cargo
    fi
    log "compiling ProSeg $proseg_version with $("$cargo" --version) into $dest (long: tens of minutes on 2 cores, once)"
    rm -rf "$dest"
    local start=$SECONDS
    # no debug info (proseg's release profile asks for it): a faster build and a smaller binary
    CARGO_PROFILE_RELEASE_DEBUG=0 nice -n 10 "$cargo" install proseg --version "$proseg_version" --locked --root "$dest" -q
    "$dest/bin/proseg" --version >/dev/null
    touch "$dest/.complete"
    log "ProSeg compiled in $((SECONDS - start)) s"
}

# ruff at the version ruff.toml pins (required-version = "==X"), from PyPI with the env's pip
setup_ruff() {
    local version
    version=$(sed -n 's/^required-version *= *"==\(.*\)"/\1/p' "$repo/ruff.toml")
    [[ -n "$version" ]] || { log "ERROR: ruff.toml has no required-version = \"==<version>\""; exit 1; }
    local dest="$cache/ruff-$version"
    if [[ ! -f "$dest/.complete" ]]; then
        log "installing ruff $version into $dest"
        rm -rf "$dest"
        "$cache/env/bin/python" -m pip install -q --no-deps --target "$dest" "ruff==$version"
        "$dest/bin/ruff" --version >/dev/null
        touch "$dest/.complete"
    fi
    ln -sfn "ruff-$version" "$cache/ruff"
}

setup_nextflow
setup_python
if [[ " $* " == *" --with-lint "* ]]; then setup_ruff; fi
if [[ " $* " == *" --with-proseg "* ]]; then
    setup_proseg
    if [[ -e "$cache/proseg" && ! -L "$cache/proseg" ]]; then
        log "ERROR: $cache/proseg is not the link this script makes: move it away"; exit 1
    fi
    ln -sfn "proseg-$proseg_version" "$cache/proseg"
    log "ProSeg: add $cache/proseg/bin to PATH (tools/test.sh --heavy does)"
fi
log "ready: Python environment $cache/env, Nextflow via tools/nextflow"
