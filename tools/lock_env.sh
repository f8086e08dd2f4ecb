#!/usr/bin/env bash
# Regenerates requirements.lock from requirements.in: resolves the top-level requirements
# in a scratch virtualenv (Python 3.11), then `pip freeze --all` (so pip and setuptools are
# pinned too), then rewrites the image families' pins (containers/sync_requirements.py).
# Run tools/setup.sh afterwards to build the environment of the new lock.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${SPATIALMAP_PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
scratch=$(mktemp -d "${TMPDIR:-/tmp}/spatialmap-lock.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
"$python" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --upgrade pip
"$scratch/venv/bin/python" -m pip install -q -r "$repo/requirements.in"
"$scratch/venv/bin/python" -m pip check
"$scratch/venv/bin/python" -m pip freeze --all > "$repo/requirements.lock.tmp"
mv "$repo/requirements.lock.tmp" "$repo/requirements.lock"
echo "wrote requirements.lock; now: bash tools/setup.sh && ~/.cache/spatialmap/env/bin/python containers/sync_requirements.py" >&2
