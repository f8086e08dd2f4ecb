#!/usr/bin/env bash
# Runs every test: the package's unit tests, then the pipeline tests
# (pytest-workflow: the real pipeline on the test profile, bad samplesheets,
# a -stub run). Sets everything up first (tools/setup.sh, cached).
# Extra arguments go to the pipeline tests' pytest, e.g. `--tag samplesheet`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash tools/setup.sh
cache=${SPATIALMAP_CACHE:-$HOME/.cache/spatialmap}
python="$cache/env/bin/python"

echo "== unit tests (pytest tests/unit)"
"$python" -m pytest tests/unit -q -p no:cacheprovider

echo "== pipeline tests (pytest-workflow tests/workflow)"
export PATH="$cache/env/bin:$PATH"
"$python" -m pytest tests/workflow -p no:cacheprovider --git-aware --symlink --kwdof \
    --basetemp "${TMPDIR:-/tmp}/spatialmap-workflow-tests" "$@"
