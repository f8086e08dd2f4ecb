#!/usr/bin/env bash
# Runs the pipeline on the embedded test data as a user would:
#   nextflow run . -profile test,local --outdir <dir>
# Sets everything up first (tools/setup.sh, cached). Usage: run_test_profile.sh [outdir] [extra nextflow args]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
outdir=${1:-results_test}
shift || true
bash "$repo/tools/setup.sh"
cd "$repo"
exec bash tools/nextflow run . -profile test,local --outdir "$outdir" "$@"
