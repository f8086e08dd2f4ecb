#!/usr/bin/env python3
"""Wall time (and accuracy) of the mapping methods against slide size: the figures behind
``--methods auto`` and ``--large_slide_locations`` (docs/usage.md, "Choosing methods").

Slides of N locations are tiles of the embedded test slide ``assets/test_data/slide1`` (243
spots, 8 cell types, known proportions): copies side by side in space, each with its counts
resampled (Poisson), so every size has the same composition and truth. Each method runs through
the package function the pipeline's script calls (``spatialmap.methods.<method>.run``) and is timed with ``time.perf_counter`` around that call
(an untimed run on the smallest slide first, so imports and numba/torch JIT are not counted).

Example::

    ~/.cache/spatialmap/env/bin/python tools/benchmark_deconv_scaling.py \\
        --sizes 243,2500,10000,40000 --methods nnls,flashdeconv,rctd --rctd-q-matrix q.npz --out scaling.tsv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from spatialmap import keys
from spatialmap.io import visium as io
from spatialmap.methods import flashdeconv, nnls, rctd
from spatialmap.methods import tangram as tangram_map
from spatialmap.qc import slide as qc

REPO = Path(__file__).resolve().parents[1]

TEST_DATA = REPO / "assets" / "test_data"


def tiled_slide(n_spots: int, seed: int = 0) -> tuple[ad.AnnData, pd.DataFrame]:
    """A slide of ``n_spots`` locations tiled from slide1 (counts resampled), and its truth."""
    raw = io.read_spaceranger(TEST_DATA / "slide1" / "outs", "slide1")
    base = raw[:, ~qc.find_mt_genes(raw.var_names)].copy()
    truth = pd.read_csv(TEST_DATA / "truth" / "slide1_proportions.csv", index_col=0).loc[base.obs_names]
    reps = int(np.ceil(n_spots / base.n_obs))
    side = int(np.ceil(np.sqrt(reps)))
    coords = np.asarray(base.obsm[keys.SPATIAL], dtype=float)
    span = coords.max(axis=0) - coords.min(axis=0) + 200.0
    rng = np.random.default_rng(seed)
    x = base.X.toarray()
    blocks, xy, names = [], [], []
    for r in range(reps):
        blocks.append(sparse.csr_matrix(rng.poisson(x).astype(np.float32)))
        xy.append(coords + span * np.array([r % side, r // side]))
        names.extend(f"t{r}_{b}" for b in base.obs_names)
    slide = ad.AnnData(
        X=sparse.vstack(blocks).tocsr()[:n_spots],
        var=base.var.copy(),
        obs=pd.DataFrame({keys.SAMPLE: "tiled"}, index=names[:n_spots]),
    )
    slide.obsm[keys.SPATIAL] = np.vstack(xy)[:n_spots]
    full_truth = pd.DataFrame(
        np.tile(truth.to_numpy(), (reps, 1))[:n_spots], index=names[:n_spots], columns=truth.columns
    )
    return slide, full_truth


def run_method(method: str, slide, reference, args) -> pd.DataFrame:
    if method == "rctd":
        return rctd.run(
            slide, reference, "cell_type", q_matrix_path=args.rctd_q_matrix, accelerator="cpu", threads=args.threads
        ).proportions
    if method in ("flashdeconv", "nnls"):
        return {"flashdeconv": flashdeconv, "nnls": nnls}[method].run(slide, reference, "cell_type").proportions
    mode = method.split("_", 1)[1]  # tangram_cells, tangram_clusters
    result = tangram_map.run(
        slide,
        reference,
        "cell_type",
        mode=mode,
        num_epochs=args.tangram_epochs,
        accelerator="cpu",
        threads=args.threads,
    )
    return result.proportions


def median_r(estimate: pd.DataFrame, truth: pd.DataFrame) -> float:
    truth = truth.loc[estimate.index, estimate.columns]
    return float(np.median([np.corrcoef(estimate[c], truth[c])[0, 1] for c in estimate.columns]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="243,2500,10000", help="comma-separated numbers of locations")
    parser.add_argument(
        "--methods",
        default="nnls,flashdeconv,rctd",
        help="any of nnls, flashdeconv, rctd, tangram_cells, tangram_clusters",
    )
    parser.add_argument("--rctd-q-matrix", default=None, help="RCTD likelihood table (compute_rctd_q.py)")
    parser.add_argument("--tangram-epochs", type=int, default=100, help="Tangram epochs (default: 100)")
    parser.add_argument("--max-size", default="", help="method=N pairs: skip a method above N locations")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--out", required=True, help="TSV to write")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    limits = {k: int(v) for k, v in (p.split("=") for p in args.max_size.split(",") if p)}
    reference = ad.read_h5ad(TEST_DATA / "reference.h5ad")
    warm, _ = tiled_slide(243)
    rows = []
    for method in methods:
        run_method(method, warm, reference, args)  # untimed: imports, JIT
        for n in sizes:
            if n > limits.get(method, n):
                continue
            slide, truth = tiled_slide(n)
            t0 = time.perf_counter()
            props = run_method(method, slide, reference, args)
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "method": method,
                    "locations": n,
                    "wall_s": round(seconds, 2),
                    "median_r": round(median_r(props, truth), 3),
                }
            )
            print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(args.out, sep="\t", index=False)


if __name__ == "__main__":
    main()
