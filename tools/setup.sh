#!/usr/bin/env bash
# Idempotent set-up of everything the pipeline needs to run with -profile local:
#   - Nextflow 24.10.0 and its runtime jars, resolved from Maven Central
#     (skipped when a `nextflow` is already on PATH);
#   - the pinned Python environment (requirements.lock) in a virtualenv.
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
}

setup_nextflow
setup_python
log "ready: Python environment $cache/env, Nextflow via tools/nextflow"
