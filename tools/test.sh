#!/usr/bin/env bash
# The tests, in two tiers. Sets everything up first (tools/setup.sh, cached).
#
#   bash tools/test.sh            fast tier (about 15 min on 2 cores): the formatter and
#                                 linter (ruff format --check, ruff check; ruff.toml), the unit
#                                 tests (but those marked heavy), then the pipeline tests tagged `fast` (bad
#                                 samplesheets, bad parameters, --help, -stub runs of the
#                                 whole graph, the failure line, the out-of-memory retry)
#   bash tools/test.sh --heavy    heavy tier: ProSeg (compiled once into the cache) and its unit
#                                 tests, the unit tests marked heavy (pytest -m heavy), then the pipeline tests tagged `heavy` (the test
#                                 profile with every method and its numbers, Visium HD and
#                                 Xenium, StarDist per patch, ProSeg, gene-ID matching, resume
#                                 after a kill, no partial files), then the SLURM test
#                                 (tools/test_slurm.sh, root) and the container test
#                                 (tools/test_containers.sh) of the image families whose inputs
#                                 changed since containers/verified.tsv, which reuses the local
#                                 results of the test profile and of test_hd with StarDist cells
#
# Extra arguments go to the pipeline tests' pytest, e.g. `--tag samplesheet`
# (tags select workflows having all the given tags, and the tier's tag is added).
# WORKFLOW_THREADS (default 2): pipeline tests run side by side.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
tier=fast
if [[ "${1:-}" == --heavy ]]; then tier=heavy; shift; fi
cache=${SPATIALMAP_CACHE:-$HOME/.cache/spatialmap}
# the fast tier lints first: ruff at the version ruff.toml requires (setup.sh --with-lint)
lint=(); [[ $tier == fast ]] && lint=(--with-lint)
bash tools/setup.sh "${lint[@]}"
python="$cache/env/bin/python"
if [[ $tier == heavy ]]; then
    # the image families whose inputs (containers/) differ from those verified in containers/verified.tsv:
    # only those are built and run by the container test below (none: no image is built)
    read -r -a families <<< "$("$python" tools/image_families.py changed)"
    [[ -n "${SPATIALMAP_TEST_CONTAINERS:-}" ]] && read -r -a families <<< "$("$python" tools/image_families.py all)"
    # ProSeg for its tests (test_hd proseg, the ProSeg unit tests), kept in the cache: when the spatial
    # image is to be built anyway, the binary it compiled (containers/Dockerfile, proseg-build) is
    # copied out; otherwise tools/setup.sh --with-proseg compiles the same crate with cargo
    if [[ ! -f "$cache/proseg/.complete" && " ${families[*]} " == *" spatial "* ]]; then
        bash tools/build_images.sh spatial
        tag=$(awk '/^manifest *\{/{m=1} m && /^ *version *=/{gsub(/[\047" ]/, "", $0); sub(/version=/, ""); print; exit}' nextflow.config)
        export PROSEG_IMAGE="${REGISTRY:-ghcr.io/spatialmap}/spatialmap-spatial:${TAG:-$tag}"
    fi
    bash tools/setup.sh --with-proseg
    export PATH="$cache/proseg/bin:$PATH"
    echo "== ProSeg unit tests with the binary, and the unit tests marked heavy (pytest -m heavy)"
    "$python" -m pytest tests/unit/test_segmentation_proseg.py -q -p no:cacheprovider
    # one process per file: a file's compiled code must not meet another's (pynndescent's numba LLVM
    # loaded before triton's, in one process, aborts the interpreter)
    for file in $(grep -l "pytest.mark.heavy" tests/unit/test_*.py); do
        "$python" -m pytest "$file" -m heavy -q -p no:cacheprovider
    done
fi
basetemp="${TMPDIR:-/tmp}/spatialmap-workflow-tests-$tier"
# the heavy tier keeps its workflow folders: the container test compares with the test profile's
keep=(--kwdof); [[ $tier == heavy ]] && keep=(--kwd)

if [[ $tier == fast ]]; then
    echo "== format and lint (ruff format --check, ruff check; settings in ruff.toml)"
    "$cache/ruff/bin/ruff" format --check --no-cache .
    "$cache/ruff/bin/ruff" check --no-cache .
    echo "== unit tests (pytest tests/unit, those marked heavy aside)"
    "$python" -m pytest tests/unit -m "not heavy" -q -p no:cacheprovider
fi

export PATH="$cache/env/bin:$PATH"
# the helpers the pipeline tests run (python tests/workflow/make_*.py, tools/make_hd_test_data.py) import
# this checkout's package and test-data generators (tools/testdata) even while another checkout's
# setup.sh re-points the shared environment's editable install (the tasks' bin/ scripts import the
# package beside them anyway)
export PYTHONPATH="$repo/bin:$repo/tools${PYTHONPATH:+:$PYTHONPATH}"
# workflows start in the order they are collected: the heavy tier's longest (the test profile, cell2location
# trained to convergence) first, so it is not the last one still running
# (the files named one by one, in that order: a folder argument collects in name order)
paths=(tests/workflow)
if [[ $tier == heavy ]]; then
    paths=(tests/workflow/test_pipeline.yml)
    for f in tests/workflow/test_*.yml tests/workflow/test_*.py; do
        [[ $f == tests/workflow/test_pipeline.yml ]] || paths+=("$f")
    done
fi
"$python" -m pytest "${paths[@]}" -p no:cacheprovider --git-aware --symlink "${keep[@]}" \
    --wt "${WORKFLOW_THREADS:-2}" --basetemp "$basetemp" --tag "$tier" "$@"

if [[ $tier == heavy && $# == 0 ]]; then
    echo "== SLURM test (tools/test_slurm.sh)"
    bash tools/test_slurm.sh
    if [[ ${#families[@]} == 0 ]]; then
        echo "== container test skipped: every image family's inputs are those verified in containers/verified.tsv" \
            "(SPATIALMAP_TEST_CONTAINERS=1 builds and tests them all)"
        exit 0
    fi
    echo "== container test of ${families[*]} (tools/test_containers.sh)"
    FAMILIES="${families[*]}" LOCAL_RESULTS="$basetemp/test_profile/results" LOCAL_WORK="$basetemp/test_profile/work" \
        LOCAL_PROJECT="$basetemp/test_profile" \
        bash tools/test_containers.sh
    echo "== container test of ${families[*]}, Visium HD and Xenium with StarDist per patch (tools/test_containers.sh)"
    # the same arguments as the pipeline test `test_hd stardist cells` (tests/workflow/test_hd.yml),
    # whose local results it compares with: the HD, Xenium, segmentation and SpatialData processes
    FAMILIES="${families[*]}" PROFILE=test_hd SKIP_BUILD=1 LOCAL_RESULTS="$basetemp/test_hd_stardist_cells/results" \
        LOCAL_WORK="$basetemp/test_hd_stardist_cells/work" LOCAL_PROJECT="$basetemp/test_hd_stardist_cells" \
        bash tools/test_containers.sh --hd_mode cells --segmentation stardist \
        --stardist_model assets/stardist_synth_he --segmentation_patch_width 300 \
        --segmentation_patch_overlap 40 --stardist_expand_ratio 0.667 --methods flashdeconv,nnls,rctd,celltypist
fi
