#!/usr/bin/env bash
# End-to-end test of the container images: builds every image with podman
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
#   RTOL, ATOL     float tolerance of the comparison (default 1e-4, 1e-6)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SPATIALMAP_CACHE:-$HOME/.cache/spatialmap}
profile=${PROFILE:-test}
dir=${TEST_DIR:-${TMPDIR:-/tmp}/spatialmap-containers-test}/$profile
log() { echo "[test_containers] $*" >&2; }

cd "$repo"
bash tools/setup.sh
if [[ -z "${SKIP_BUILD:-}" ]]; then
    start=$SECONDS
    bash tools/build_images.sh
    log "images ready in $((SECONDS - start)) s"
fi

rm -rf "$dir/podman" "$dir/work-podman"
mkdir -p "$dir"
start=$SECONDS
log "nextflow run . -profile $profile,podman --outdir $dir/podman $*"
bash tools/nextflow run . -profile "$profile",podman --outdir "$dir/podman" -work-dir "$dir/work-podman" "$@"
log "podman run took $((SECONDS - start)) s"
# every task ran in its family's image
if grep -L 'podman run' "$dir"/work-podman/*/*/.command.run | grep -q .; then
    log "FAIL: some tasks did not run in podman"; exit 1
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
"$cache/env/bin/python" - "$local_results" "$dir/podman" "$local_work" "$dir/work-podman" "$local_project" "$repo" <<'EOF'
"""Compare two result folders of the pipeline: same files, same numbers within tolerance."""
import json
import math
import os
import re
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

local, podman = map(Path, sys.argv[1:3])
local_work, podman_work = sys.argv[3:5]
local_project, podman_project = sys.argv[5:7]
RTOL, ATOL = float(os.environ.get("RTOL", 1e-4)), float(os.environ.get("ATOL", 1e-6))
# run-specific files: timings, paths, logs
SKIP = {"multiqc.log", "multiqc_sources.txt", "multiqc_data.json", "llms-full.txt", "multiqc.parquet"}
# wall times the methods report (QC JSON "seconds", "train_seconds"; report columns): not results
TIMING = re.compile(r"seconds$")
problems, notes, worst = [], [], {}


def files(root):
    return {p.relative_to(root) for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != "pipeline_info"}


def close(name, a, b):
    """Numbers equal within tolerance; anything else equal."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        problems.append(f"{name}: shape {a.shape} vs {b.shape}")
        return
    if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
        a, b = a.astype(float), b.astype(float)
        if not np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True):
            diff = np.nanmax(np.abs(a - b))
            problems.append(f"{name}: differs by up to {diff:.3g}")
        elif a.size:
            worst[name] = max(worst.get(name, 0.0), float(np.nanmax(np.abs(a - b), initial=0.0)))
    elif not np.array_equal(a.astype(str), b.astype(str)):
        problems.append(f"{name}: values differ")


def compare_json(name, a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            problems.append(f"{name}: keys {sorted(a)} vs {sorted(b)}")
        for key in a.keys() & b.keys():
            if not TIMING.search(str(key)):
                compare_json(f"{name}.{key}", a[key], b[key])
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            compare_json(f"{name}[{i}]", x, y)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL):
            problems.append(f"{name}: {a} vs {b}")
    elif a != b:
        problems.append(f"{name}: {a!r} vs {b!r}")


def compare_table(name, a, b):
    if list(a.columns) != list(b.columns) or sorted(map(str, a.index)) != sorted(map(str, b.index)):
        problems.append(f"{name}: rows or columns differ")
        return
    if list(a.index) != list(b.index) and a.index.is_unique:
        notes.append(f"{name}: same rows in another order")  # e.g. slides collected in another order
        b = b.loc[a.index]
    for column in a.columns:
        if not TIMING.search(str(column)):
            close(f"{name}[{column}]", a[column].to_numpy(), b[column].to_numpy())


def compare_versions(name, a, b):
    """Every tool at the same version in both runs; Python only to the minor version."""
    for frame in (a, b):
        if "python" in frame.columns:
            frame["python"] = frame["python"].astype(str).str.rsplit(".", n=1).str[0]
    if a.fillna("").astype(str).to_dict() != b.fillna("").astype(str).to_dict():
        problems.append(f"{name}: tool versions differ:\n{a}\n{b}")


def compare_h5ad(name, a, b):
    for what in ("obs_names", "var_names"):
        if list(getattr(a, what)) != list(getattr(b, what)):
            problems.append(f"{name}: {what} differ")
            return
    dense = lambda m: m.toarray() if sparse.issparse(m) else np.asarray(m)  # noqa: E731
    close(f"{name}:X", dense(a.X), dense(b.X))
    compare_table(f"{name}:obs", a.obs, b.obs)
    for slot in ("obsm", "layers"):
        ka, kb = set(getattr(a, slot).keys()), set(getattr(b, slot).keys())
        if ka != kb:
            problems.append(f"{name}:{slot} keys {sorted(ka)} vs {sorted(kb)}")
        for key in ka & kb:
            x, y = getattr(a, slot)[key], getattr(b, slot)[key]
            if isinstance(x, pd.DataFrame):
                compare_table(f"{name}:{slot}[{key}]", x, y)
            else:
                close(f"{name}:{slot}[{key}]", dense(x), dense(y))


def compare_store(name, a, b):
    """A SpatialData store: its table as an AnnData (the chunk files themselves are binary)."""
    ta, tb = a / "tables" / "table", b / "tables" / "table"
    if ta.is_dir() and tb.is_dir():
        compare_h5ad(f"{name}:table", ad.read_zarr(ta), ad.read_zarr(tb))


def compare_shapes(name, a, b):
    """Cell shapes (GeoParquet): the same cells, areas and centres within tolerance."""
    import geopandas as gpd

    ga, gb = gpd.read_parquet(a), gpd.read_parquet(b)
    close(f"{name}:area", ga.geometry.area.to_numpy(), gb.geometry.area.to_numpy())
    close(f"{name}:centroid", ga.geometry.centroid.get_coordinates().to_numpy(),
          gb.geometry.centroid.get_coordinates().to_numpy())
    compare_table(f"{name}:columns", pd.DataFrame(ga.drop(columns=ga.geometry.name)),
                  pd.DataFrame(gb.drop(columns=gb.geometry.name)))


def task_scripts(work, *projects):
    """{task name: its command's words}: what each task of a run was asked to do.

    Words, not text: the order of files collected from several tasks may differ. The
    pipeline folder's path (e.g. the samplesheet's base folder) reads as <project>.
    """
    scripts = {}
    for run in Path(work).glob("*/*/.command.run"):
        name = re.search(r"^### name: '(.+)'$", run.read_text(), flags=re.M).group(1)
        text = (run.parent / ".command.sh").read_text()
        for project in sorted({str(Path(p).resolve()) for p in projects}, key=len, reverse=True):
            text = text.replace(project, "<project>")
        scripts[name] = sorted(text.split())
    return scripts


# storeDir tasks (RCTD's likelihood table) run only where their output is not stored yet
STORED = re.compile(r"RCTD_QMATRIX")

if local_work:  # the code must not have changed between the two runs
    projects = (local_project, podman_project)
    a, b = task_scripts(local_work, *projects), task_scripts(podman_work, *projects)
    a = {name: words for name, words in a.items() if not STORED.search(name)}
    b = {name: words for name, words in b.items() if not STORED.search(name)}
    changed = sorted(name for name in a.keys() & b.keys() if a[name] != b[name])
    if changed or a.keys() != b.keys():
        sys.exit(f"FAIL: the two runs ran different tasks or commands (was the pipeline edited meanwhile?): "
                 f"{changed or sorted(a.keys() ^ b.keys())}")

only_local, only_podman = files(local) - files(podman), files(podman) - files(local)
if only_local or only_podman:
    problems.append(f"different files: only local {sorted(map(str, only_local))}, "
                    f"only podman {sorted(map(str, only_podman))}")
compared = 0
stores = sorted({Path(*rel.parts[:i + 1]) for rel in files(local) & files(podman)
                 for i, part in enumerate(rel.parts) if part.endswith(".zarr")})
for rel in stores:
    compare_store(str(rel), local / rel, podman / rel)
    compared += 1
for rel in sorted(files(local) & files(podman)):
    a, b, name = local / rel, podman / rel, str(rel)
    if rel.name in SKIP or ".cell2location_model" in name:
        continue
    compared += 1
    if any(part.endswith(".zarr") for part in rel.parts):
        if rel.name in ("zarr.json", ".zattrs", ".zgroup", ".zarray"):
            compare_json(name, json.loads(a.read_text()), json.loads(b.read_text()))
        else:
            compared -= 1  # chunks: the store's table is compared above
    elif rel.suffix == ".parquet":
        compare_shapes(name, a, b)
    elif rel.name == "multiqc_software_versions.txt":
        compare_versions(name, pd.read_csv(a, sep="\t", index_col=0), pd.read_csv(b, sep="\t", index_col=0))
    elif rel.suffix == ".json":
        compare_json(name, json.loads(a.read_text()), json.loads(b.read_text()))
    elif rel.suffix in (".csv", ".tsv", ".txt"):
        sep = "," if rel.suffix == ".csv" else "\t"
        compare_table(name, pd.read_csv(a, sep=sep, index_col=0), pd.read_csv(b, sep=sep, index_col=0))
    elif rel.suffix == ".h5ad":
        compare_h5ad(name, ad.read_h5ad(a), ad.read_h5ad(b))
    else:
        compared -= 1  # images, html: present in both is all we ask

general_stats = Path("multiqc/multiqc_data/multiqc_general_stats.txt")
if (podman / general_stats).is_file():
    stats = pd.read_csv(podman / general_stats, sep="\t", index_col=0)
    print(f"slides in the podman run's MultiQC general stats: {', '.join(stats.index)}")
else:
    problems.append(f"the podman run made no {general_stats}")
differing = sorted(((d, n) for n, d in worst.items() if d > 0), reverse=True)
print(f"compared {compared} files; numbers not bit-identical in {len(differing)} of their columns/arrays")
for diff, name in differing[:10]:
    print(f"  {name}: largest difference {diff:.3g}")
for note in notes:
    print(f"  note: {note}")
if problems:
    print("FAIL: the podman run differs from the local run:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"OK: same results (rtol {RTOL:g}, atol {ATOL:g})")
EOF
