#!/usr/bin/env python3
"""Compare two result folders of the pipeline: the same files, the same numbers.

Used by tools/test_containers.sh (a podman run against the local run, within a float
tolerance) and to prove a refactor changed nothing (before against after, ``--rtol 0
--atol 0``: every number bit-identical)::

    python tools/compare_results.py BEFORE AFTER --rtol 0 --atol 0 [--rename OLD=NEW ...]

What is compared: the set of files (``pipeline_info/`` aside); every CSV/TSV/TXT table
column by column; every JSON key (wall times aside: keys and columns ending in
``seconds``); every h5ad's names, ``X``, ``obs``, ``obsm`` and ``layers``; the tables of
SpatialData stores and their ``.zattrs``/``zarr.json``; cell shapes (GeoParquet: areas,
centres and columns); the software versions in the report (Python only to the minor
version). Images and HTML: present in both is all it asks. With ``--work-a/--work-b``
it first checks that both runs ran the same tasks with the same commands.

Exit status 0 when the results agree, 1 with every difference listed otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# run-specific files: timings, paths, logs
SKIP = {"multiqc.log", "multiqc_sources.txt", "multiqc_data.json", "llms-full.txt", "multiqc.parquet"}
# wall times the methods report (QC JSON "seconds", "train_seconds"; report columns) and when a model
# was trained (CellTypist's description "date"): not results
TIMING = re.compile(r"seconds$|^date$")
# storeDir tasks (RCTD's likelihood table) run only where their output is not stored yet
STORED = re.compile(r"RCTD_QMATRIX")
GENERAL_STATS = Path("multiqc/multiqc_data/multiqc_general_stats.txt")


class Comparison:
    """Differences found between two result folders, within a tolerance."""

    def __init__(self, rtol: float, atol: float):
        self.rtol, self.atol = rtol, atol
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.worst: dict[str, float] = {}
        self.compared = 0

    def close(self, name, a, b):
        """Numbers equal within tolerance; anything else equal."""
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            self.problems.append(f"{name}: shape {a.shape} vs {b.shape}")
            return
        if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
            a, b = a.astype(float), b.astype(float)
            if not np.allclose(a, b, rtol=self.rtol, atol=self.atol, equal_nan=True):
                diff = np.nanmax(np.abs(a - b))
                self.problems.append(f"{name}: differs by up to {diff:.3g}")
            elif a.size:
                diff = float(np.nanmax(np.abs(a - b), initial=0.0))
                self.worst[name] = max(self.worst.get(name, 0.0), diff)
        elif not np.array_equal(a.astype(str), b.astype(str)):
            self.problems.append(f"{name}: values differ")

    def json(self, name, a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                self.problems.append(f"{name}: keys {sorted(a)} vs {sorted(b)}")
            for key in a.keys() & b.keys():
                if not TIMING.search(str(key)):
                    self.json(f"{name}.{key}", a[key], b[key])
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                self.json(f"{name}[{i}]", x, y)
        elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            if not math.isclose(a, b, rel_tol=self.rtol, abs_tol=self.atol) and not (math.isnan(a) and math.isnan(b)):
                self.problems.append(f"{name}: {a} vs {b}")
        elif a != b:
            self.problems.append(f"{name}: {a!r} vs {b!r}")

    def table(self, name, a: pd.DataFrame, b: pd.DataFrame):
        if list(a.columns) != list(b.columns) or sorted(map(str, a.index)) != sorted(map(str, b.index)):
            self.problems.append(f"{name}: rows or columns differ")
            return
        if list(a.index) != list(b.index) and a.index.is_unique:
            self.notes.append(f"{name}: same rows in another order")  # e.g. slides collected in another order
            b = b.loc[a.index]
        for column in a.columns:
            if not TIMING.search(str(column)):
                self.close(f"{name}[{column}]", a[column].to_numpy(), b[column].to_numpy())

    def versions(self, name, a: pd.DataFrame, b: pd.DataFrame):
        """Every tool at the same version in both runs; Python only to the minor version."""
        for frame in (a, b):
            if "python" in frame.columns:
                frame["python"] = frame["python"].astype(str).str.rsplit(".", n=1).str[0]
        if a.fillna("").astype(str).to_dict() != b.fillna("").astype(str).to_dict():
            self.problems.append(f"{name}: tool versions differ:\n{a}\n{b}")

    def h5ad(self, name, a, b):
        from scipy import sparse

        for what in ("obs_names", "var_names"):
            if list(getattr(a, what)) != list(getattr(b, what)):
                self.problems.append(f"{name}: {what} differ")
                return

        def dense(m):
            return m.toarray() if sparse.issparse(m) else np.asarray(m)

        self.close(f"{name}:X", dense(a.X), dense(b.X))
        self.table(f"{name}:obs", a.obs, b.obs)
        for slot in ("obsm", "layers"):
            ka, kb = set(getattr(a, slot).keys()), set(getattr(b, slot).keys())
            if ka != kb:
                self.problems.append(f"{name}:{slot} keys {sorted(ka)} vs {sorted(kb)}")
            for key in ka & kb:
                x, y = getattr(a, slot)[key], getattr(b, slot)[key]
                if isinstance(x, pd.DataFrame):
                    self.table(f"{name}:{slot}[{key}]", x, y)
                else:
                    self.close(f"{name}:{slot}[{key}]", dense(x), dense(y))

    def store(self, name, a: Path, b: Path):
        """A SpatialData store: its table as an AnnData (the chunk files themselves are binary)."""
        import anndata as ad

        ta, tb = a / "tables" / "table", b / "tables" / "table"
        if ta.is_dir() and tb.is_dir():
            self.h5ad(f"{name}:table", ad.read_zarr(ta), ad.read_zarr(tb))

    def shapes(self, name, a: Path, b: Path):
        """Cell shapes (GeoParquet): the same cells, areas and centres within tolerance."""
        import geopandas as gpd

        ga, gb = gpd.read_parquet(a), gpd.read_parquet(b)
        self.close(f"{name}:area", ga.geometry.area.to_numpy(), gb.geometry.area.to_numpy())
        centres = [g.geometry.centroid.get_coordinates().to_numpy() for g in (ga, gb)]
        self.close(f"{name}:centroid", *centres)
        columns = [pd.DataFrame(g.drop(columns=g.geometry.name)) for g in (ga, gb)]
        self.table(f"{name}:columns", *columns)


def result_files(root: Path) -> set[Path]:
    """Every file of a result folder, relative to it, pipeline_info/ aside (run logs, timings)."""
    return {
        p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "pipeline_info"
    }


def task_scripts(work: str, *projects: str) -> dict[str, list[str]]:
    """{task name: its command's words}: what each task of a run was asked to do.

    Words, not text: the order of files collected from several tasks may differ. The
    pipeline folder's path (e.g. the samplesheet's base folder) reads as <project>.
    """
    scripts = {}
    for run in Path(work).glob("*/*/.command.run"):
        name = re.search(r"^### name: '(.+)'$", run.read_text(), flags=re.M).group(1)
        text = (run.parent / ".command.sh").read_text()
        for project in sorted({str(Path(p).resolve()) for p in projects if p}, key=len, reverse=True):
            text = text.replace(project, "<project>")
        scripts[name] = sorted(text.split())
    return scripts


def same_tasks(work_a: str, work_b: str, projects: tuple[str, str]) -> list[str]:
    """Tasks whose commands differ between two runs (or that only one ran); storeDir tasks aside."""
    a, b = task_scripts(work_a, *projects), task_scripts(work_b, *projects)
    a = {name: words for name, words in a.items() if not STORED.search(name)}
    b = {name: words for name, words in b.items() if not STORED.search(name)}
    changed = sorted(name for name in a.keys() & b.keys() if a[name] != b[name])
    return changed or sorted(a.keys() ^ b.keys())


def compare_file(cmp: Comparison, rel: Path, a: Path, b: Path):
    """One file present in both folders, by its kind."""
    name = str(rel)
    if any(part.endswith(".zarr") for part in rel.parts):
        if rel.name in ("zarr.json", ".zattrs", ".zgroup", ".zarray"):
            cmp.json(name, json.loads(a.read_text()), json.loads(b.read_text()))
        else:
            return False  # chunks: the store's table is compared as a whole
    elif rel.suffix == ".parquet":
        cmp.shapes(name, a, b)
    elif rel.name == "multiqc_software_versions.txt":
        cmp.versions(name, pd.read_csv(a, sep="\t", index_col=0), pd.read_csv(b, sep="\t", index_col=0))
    elif rel.suffix == ".json":
        cmp.json(name, json.loads(a.read_text()), json.loads(b.read_text()))
    elif rel.suffix in (".csv", ".tsv", ".txt"):
        sep = "," if rel.suffix == ".csv" else "\t"
        cmp.table(name, pd.read_csv(a, sep=sep, index_col=0), pd.read_csv(b, sep=sep, index_col=0))
    elif rel.suffix == ".h5ad":
        import anndata as ad

        cmp.h5ad(name, ad.read_h5ad(a), ad.read_h5ad(b))
    else:
        return False  # images, html: present in both is all we ask
    return True


def renamed(files: set[Path], renames: list[tuple[str, str]]) -> dict[Path, Path]:
    """{name in B: name in A} after the renames asked for (OLD=NEW: a file named OLD in A is NEW in B)."""
    mapping = {}
    for rel in files:
        new = str(rel)
        for old, to in renames:
            new = new.replace(old, to)
        mapping[Path(new)] = rel
    return mapping


def compare_folders(a: Path, b: Path, cmp: Comparison, renames: list[tuple[str, str]]) -> None:
    """Every file of two result folders: the sets, then each common file."""
    in_a = renamed(result_files(a), renames)  # {name as in B: name in A}
    in_b = result_files(b)
    only_a, only_b = set(in_a) - in_b, in_b - set(in_a)
    if only_a or only_b:
        cmp.problems.append(
            f"different files: only in {a}: {sorted(str(in_a[p]) for p in only_a)}, only in {b}: {sorted(map(str, only_b))}"
        )
    common = sorted(set(in_a) & in_b)
    stores = sorted(
        {Path(*rel.parts[: i + 1]) for rel in common for i, part in enumerate(rel.parts) if part.endswith(".zarr")}
    )
    for rel in stores:
        old = Path(str(rel))
        for key, value in in_a.items():  # the store's folder in A
            if key.parts[: len(rel.parts)] == rel.parts:
                old = Path(*value.parts[: len(rel.parts)])
                break
        cmp.store(str(rel), a / old, b / rel)
        cmp.compared += 1
    for rel in common:
        if rel.name in SKIP or ".cell2location_model" in str(rel):
            continue
        cmp.compared += compare_file(cmp, rel, a / in_a[rel], b / rel)


def summary(cmp: Comparison, b: Path) -> int:
    """Print what was compared and what differs; the exit status."""
    if (b / GENERAL_STATS).is_file():
        stats = pd.read_csv(b / GENERAL_STATS, sep="\t", index_col=0)
        print(f"slides in the second run's MultiQC general stats: {', '.join(map(str, stats.index))}")
    else:
        cmp.problems.append(f"the second run made no {GENERAL_STATS}")
    differing = sorted(((d, n) for n, d in cmp.worst.items() if d > 0), reverse=True)
    print(f"compared {cmp.compared} files; numbers not bit-identical in {len(differing)} of their columns/arrays")
    for diff, name in differing[:10]:
        print(f"  {name}: largest difference {diff:.3g}")
    for note in cmp.notes:
        print(f"  note: {note}")
    if cmp.problems:
        print("FAIL: the two runs' results differ:", *cmp.problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"OK: same results (rtol {cmp.rtol:g}, atol {cmp.atol:g})")
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the first run's --outdir (e.g. before, or local)")
    parser.add_argument("b", type=Path, help="the second run's --outdir (e.g. after, or podman)")
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of numbers (0: exact)")
    parser.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance of numbers (0: exact)")
    parser.add_argument("--work-a", default="", help="the first run's work dir: check both ran the same commands")
    parser.add_argument("--work-b", default="", help="the second run's work dir")
    parser.add_argument(
        "--project-a", default="", help="the folder the first run was launched from (its path reads as <project>)"
    )
    parser.add_argument("--project-b", default="", help="the folder the second run was launched from")
    parser.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="a file renamed on purpose: OLD in a file name of the first run is NEW in the second (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.work_a and args.work_b:  # the code must not have changed between the two runs
        changed = same_tasks(args.work_a, args.work_b, (args.project_a, args.project_b))
        if changed:
            print(
                f"FAIL: the two runs ran different tasks or commands (was the pipeline edited meanwhile?): {changed}",
                file=sys.stderr,
            )
            return 1
    renames = [tuple(r.split("=", 1)) for r in args.rename]
    if any(len(r) != 2 for r in renames):
        print("--rename takes OLD=NEW", file=sys.stderr)
        return 2
    cmp = Comparison(args.rtol, args.atol)
    compare_folders(args.a, args.b, cmp, renames)
    return summary(cmp, args.b)


if __name__ == "__main__":
    sys.exit(main())
