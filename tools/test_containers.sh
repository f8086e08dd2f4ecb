#!/usr/bin/env bash
# End-to-end test of the container images: builds the images with podman
# (tools/build_images.sh, cached), runs a test profile in them
#     nextflow run . -profile <PROFILE>,podman --outdir <dir>/<PROFILE>/podman
# and checks that the results are those of the local profile (-profile <PROFILE>,local):
# the same files; the same slides, QC numbers and tables; the same package versions
# in the report (Python's own patch version aside); mapping numbers, h5ad files, the
# SpatialData stores' tables and the cell shapes equal within a float tolerance (RTOL, ATOL).
#
# Usage: tools/test_containers.sh [nextflow args for both runs, e.g. --reference false]
# Environment:
#   PROFILE        the test profile (default test: standard Visium; test_hd: Visium, Visium HD
#                  and Xenium, e.g. with --hd_mode cells --segmentation stardist ...)
#   TEST_DIR       where results and work dirs go (default ${TMPDIR:-/tmp}/spatialmap-containers-test)
#   LOCAL_RESULTS  results of an earlier `-profile <PROFILE>,local` run to compare with (skips that run)
#   LOCAL_WORK     its work dir: checks that both runs ran the same commands
#   LOCAL_PROJECT  the pipeline folder that run was launched from (default: this repo), e.g. a
#                  pytest-workflow copy; its path in commands counts as this repo's
#   SKIP_BUILD=1   use the images as they are
#   FAMILIES       the image families to test (default: all). With some only, their processes run
#                  in their images and every other process natively (tools/image_families.py config):
#                  the heavy tier passes the families whose inputs changed since they were verified
#   RTOL, ATOL     float tolerance of the comparison (default 1e-4, 1e-6)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SPATIALMAP_CACHE:-$HOME/.cache/spatialmap}
profile=${PROFILE:-test}
dir=${TEST_DIR:-${TMPDIR:-/tmp}/spatialmap-containers-test}/$profile
log() { echo "[test_containers] $*" >&2; }

cd "$repo"
bash tools/setup.sh
all_families=$("$cache/env/bin/python" tools/image_families.py all)
read -r -a families <<< "${FAMILIES:-$all_families}"
[[ ${#families[@]} -gt 0 ]] || { log "no image family to test"; exit 0; }
if [[ -z "${SKIP_BUILD:-}" ]]; then
    start=$SECONDS
    bash tools/build_images.sh "${families[@]}"
    log "images ready in $((SECONDS - start)) s (${families[*]})"
fi
mkdir -p "$dir"
only=()
if [[ $(printf '%s\n' "${families[@]}" | sort -u | xargs) != "$all_families" ]]; then
    "$cache/env/bin/python" tools/image_families.py config "${families[@]}" --native-env "$cache/env" > "$dir/families.config"
    only=(-c "$dir/families.config")
    log "only ${families[*]} in their images; every other process natively"
fi

rm -rf "$dir/podman" "$dir/work-podman"
mkdir -p "$dir"
start=$SECONDS
log "nextflow run . -profile $profile,podman --outdir $dir/podman $*"
bash tools/nextflow run . -profile "$profile",podman "${only[@]}" --outdir "$dir/podman" -work-dir "$dir/work-podman" "$@"
log "podman run took $((SECONDS - start)) s"
# every task ran in its family's image (with some families only: at least one task did)
if [[ ${#only[@]} == 0 ]] && grep -L 'podman run' "$dir"/work-podman/*/*/.command.run | grep -q .; then
    log "FAIL: some tasks did not run in podman"; exit 1
fi
if ! grep -l 'podman run' "$dir"/work-podman/*/*/.command.run | grep -q .; then
    log "FAIL: no task ran in podman"; exit 1
fi

local_results=${LOCAL_RESULTS:-}
local_work=${LOCAL_WORK:-}
local_project=${LOCAL_PROJECT:-$repo}
if [[ -n "$local_results" && ! -d "$local_results/multiqc" ]]; then
    log "no local results in $local_results: running the local profile here instead"
    local_results=
fi
if [[ -z "$local_results" ]]; then
    local_project=$repo
    local_results=$dir/local
    local_work=$dir/work-local
    rm -rf "$local_results" "$dir/work-local"
    start=$SECONDS
    log "nextflow run . -profile $profile,local --outdir $local_results $*"
    bash tools/nextflow run . -profile "$profile",local --outdir "$local_results" -work-dir "$dir/work-local" "$@"
    log "local run took $((SECONDS - start)) s"
fi

log "comparing $dir/podman with $local_results"
"$cache/env/bin/python" tools/compare_results.py "$local_results" "$dir/podman" \
    --work-a "$local_work" --work-b "$dir/work-podman" --project-a "$local_project" --project-b "$repo" \
    --rtol "${RTOL:-1e-4}" --atol "${ATOL:-1e-6}"
"$cache/env/bin/python" tools/image_families.py record "${families[@]}"
log "recorded ${families[*]} as verified in containers/verified.tsv (commit it with the change that needed it)"
