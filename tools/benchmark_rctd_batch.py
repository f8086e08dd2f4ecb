#!/usr/bin/env python3
"""RCTD's batched CPU fit against rctd-py's own loop, side by side on the same inputs: parity and time.

For each data set, rctd-py fits the platform effects and sigma once (``spatialmap.methods.rctd.fitted_model``,
as the pipeline's RCTD does), then both engines fit that same ``rctd.RCTD`` object in one process,
``--repeats`` times each, alternating: rctd-py's ``run_<mode>_mode`` (``--rctd_engine package``)
and ``rctd_batch.fit`` (``--rctd_engine batched``; its first call compiles, or loads numba's cache,
and is timed apart). Prints the parity numbers (``rctd_batch.parity``) and the times (wall and
CPU seconds of the process, all threads; min and median), and writes them as a TSV.

Data sets: ``hd`` is a seeded random subset of ``--n-bins`` bins of the generated full-size
Visium HD slide (``make_hd_test_data.py --big-hd-side 550 --n-genes 5000``, generated into
``--workdir`` unless there), with its reference; ``xenium`` is the Xenium test cells
(``assets/test_data_hd/xenium1``, reference ``assets/test_data/reference.h5ad``)::

    nice -n 10 ~/.cache/spatialmap/env/bin/python tools/benchmark_rctd_batch.py --workdir /tmp/rctdb \\
        --q-matrix q.npz --n-bins 5000 --threads 2 --repeats 3

``--q-matrix``: a likelihood table (``bin/compute_rctd_q.py``); both engines read the same one, so
parity does not depend on it. The full-slide RCTD task is ``map_rctd.py`` on the slide's QC h5ad
(see tools/BENCHMARKS.md for the command).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

from spatialmap import cli

REPO = Path(__file__).resolve().parents[1]


def hd_subset(workdir: Path, n_bins: int, seed: int):
    """``n_bins`` random bins (seeded) of the generated full slide, with coordinates, and its reference."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scanpy as sc

    data = workdir / "big"
    folder = data / "hdbig" / "outs" / "binned_outputs" / "square_008um"
    if not folder.is_dir():
        cmd = [sys.executable, str(REPO / "tools" / "make_hd_test_data.py"), "--outdir", str(data),
               "--big-hd-side", "550", "--n-genes", "5000"]  # fmt: skip
        subprocess.run(cmd, check=True)
    slide = sc.read_10x_h5(folder / "filtered_feature_bc_matrix.h5")
    slide.var_names_make_unique()
    idx = np.sort(np.random.default_rng(seed).choice(slide.n_obs, min(n_bins, slide.n_obs), replace=False))
    slide = slide[idx].copy()
    positions = pd.read_parquet(folder / "spatial" / "tissue_positions.parquet").set_index("barcode")
    slide.obsm["spatial"] = positions.loc[slide.obs_names, ["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    return slide, ad.read_h5ad(data / "reference.h5ad")


def xenium_cells():
    """The Xenium test cells (the pipeline's reader) and the test reference."""
    import anndata as ad

    from spatialmap.io import sdata as io_hd

    slide = io_hd.read_xenium(REPO / "assets" / "test_data_hd" / "xenium1", "xenium1")
    return slide, ad.read_h5ad(REPO / "assets" / "test_data" / "reference.h5ad")


def side_by_side(name: str, slide, reference, q_matrix: Path, mode: str, threads: int, repeats: int) -> dict:
    """Both engines on the same fitted RCTD object: parity and times."""
    from spatialmap.methods import rctd, rctd_batch

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        model = rctd.fitted_model(slide, reference, "cell_type", q_matrix, threads=threads)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    rctd_batch.fit(model, mode)
    first = time.perf_counter() - t0
    times = {"package": [], "batched": [], "package_cpu": [], "batched_cpu": []}
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            package = rctd.package_fit(model, mode)
        times["package"].append(time.perf_counter() - t0)
        times["package_cpu"].append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        batched = rctd_batch.fit(model, mode)
        times["batched"].append(time.perf_counter() - t0)
        times["batched_cpu"].append(time.process_time() - c0)
    row = {"data": name, "mode": mode, "spots": slide.n_obs, "sigma": model.sigma / 100.0, "setup_s": setup,
           "batched_first_call_s": first}  # fmt: skip
    row.update(rctd_batch.parity(batched, package, mode))
    for engine, values in times.items():
        row[f"{engine}_min_s"] = min(values)
        row[f"{engine}_median_s"] = statistics.median(values)
    row["speedup_median"] = row["package_median_s"] / row["batched_median_s"]
    row["speedup_cpu_median"] = row["package_cpu_median_s"] / row["batched_cpu_median_s"]
    return row


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (transposed: one column per data set)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| | " + " | ".join(f"{r['data']} ({r['mode']})" for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for key in keys[2:]:
        cells = [r.get(key, "") for r in rows]
        lines.append(f"| {key} | " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="holds (or gets) the generated slide in big/")
    parser.add_argument("--q-matrix", type=Path, required=True, help="RCTD likelihood table both engines read")
    parser.add_argument("--data", default="hd,xenium", help="data sets: hd, xenium (default: hd,xenium)")
    parser.add_argument("--mode", default="doublet", choices=("full", "doublet", "multi"), help="RCTD mode")
    parser.add_argument("--n-bins", type=int, default=5000, help="bins of the HD subset (default: 5000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset (default: 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="fits per engine, alternating (default: 3)")
    parser.add_argument("--out", type=Path, default=None, help="TSV (default: <workdir>/benchmark_rctd_batch.tsv)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print it."""
    import pandas as pd

    args = parse_args(argv)
    rows = []
    for name in args.data.split(","):
        slide, reference = hd_subset(args.workdir, args.n_bins, args.seed) if name == "hd" else xenium_cells()
        rows.append(side_by_side(name, slide, reference, args.q_matrix, args.mode, args.threads, args.repeats))
        print(rows[-1], flush=True)
    out = args.out or args.workdir / "benchmark_rctd_batch.tsv"
    with cli.atomic_path(out) as tmp:
        pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)
    print(markdown(rows))


if __name__ == "__main__":
    cli.run(main)
