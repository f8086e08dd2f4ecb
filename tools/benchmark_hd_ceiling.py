#!/usr/bin/env python3
"""The per-bin ceiling of the generated full Visium HD slide: how well can any method that looks at
one bin's counts at a time recover the bins' true type shares?

The big slide (``make_hd_test_data.py --big-hd-side``, ``synth_hd.simulate_big_hd_bins``) draws each
bin's ~150 UMIs multinomially over the 8 types of smooth fields and then over each type's genes.
The efficient per-bin estimate under that exact model is the maximum-likelihood mixture of the
types' mean profiles, fitted to the bin's gene counts by EM. Its per-type Pearson r against the
truth (median over types, as ``benchmark_hd.py`` reports methods) is the ceiling per bin; the
same fit shrunk toward the slide's mean composition shows what a prior can add.

    ~/.cache/spatialmap/env/bin/python tools/benchmark_hd_ceiling.py --workdir /tmp/hdfull --n-bins 30000

``--workdir``: the folder ``benchmark_hd.py`` generated (``data/hdbig``, ``data/reference.h5ad``,
``data/truth``). Prints the per-type r of the smooth fields' shares (what pooling neighbours could
approach), of the per-bin fit and of the shrunk fits.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from testdata import synth, synth_hd

log = logging.getLogger("benchmark_hd_ceiling")


def mean_profiles(reference: ad.AnnData, types: list[str], label_key: str = "cell_type") -> np.ndarray:
    """genes x types: each type's summed counts (+0.5) as a distribution over genes."""
    labels = reference.obs[label_key].astype(str).to_numpy()
    counts = sp.csr_matrix(reference.X)
    sums = np.column_stack([np.asarray(counts[labels == t].sum(axis=0)).ravel() for t in types]) + 0.5
    return sums / sums.sum(axis=0)


def mixture_mle(counts: sp.coo_matrix, profiles: np.ndarray, iters: int = 200, tol: float = 1e-6) -> np.ndarray:
    """Each row's multinomial-mixture weights over the profiles' columns, EM from uniform weights."""
    n, k = counts.shape[0], profiles.shape[1]
    rows, genes, c = counts.row, counts.col, counts.data.astype(float)
    totals = np.bincount(rows, weights=c, minlength=n)
    w = np.full((n, k), 1.0 / k)
    start = time.perf_counter()
    for it in range(1, iters + 1):
        resp = w[rows] * profiles[genes]
        resp /= resp.sum(axis=1, keepdims=True)
        new = np.column_stack([np.bincount(rows, weights=c * resp[:, j], minlength=n) for j in range(k)])
        new /= np.maximum(totals, 1)[:, None]
        change, w = float(np.abs(new - w).max()), new
        if it % 20 == 0:
            rate = it / (time.perf_counter() - start)
            log.info("EM: %d of at most %d iterations, %.2f it/s, largest change %.1e", it, iters, rate, change)
        if change < tol:
            break
    return w


def field_shares(seed: int, n_side: int, n_types: int) -> np.ndarray:
    """bins x types: the smooth fields' shares the generator drew each bin's types from
    (``simulate_big_hd_bins``' first draws, re-made from its seed; no count is drawn)."""
    rng = np.random.default_rng([seed, synth_hd._STREAM_HD + 1])
    rows, cols = np.divmod(np.arange(n_side * n_side), n_side)
    nx, ny = cols / n_side - 0.5, rows / n_side - 0.5
    layouts = synth.make_type_layouts(rng, nx, ny, n_types)
    fields = synth.TypeFields.anchored(layouts, nx, ny, synth_hd.TYPE_CONTRAST, synth_hd.TYPE_BACKGROUND)
    return fields.composition(nx, ny)


def per_type_r(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(estimate[:, k], truth[:, k])[0, 1] for k in range(truth.shape[1])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="benchmark_hd.py's work folder")
    parser.add_argument("--n-bins", type=int, default=30000, help="random bins fitted (default 30000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bins drawn (default 0)")
    parser.add_argument("--slide-seed", type=int, default=0, help="the slide's generator seed (default 0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    data = args.workdir / "data"
    truth = pd.read_csv(data / "truth" / "hdbig_bins_008um_proportions.csv", index_col=0)
    types = list(truth.columns)
    reference = ad.read_h5ad(data / "reference.h5ad")
    slide = sc.read_10x_h5(next((data / "hdbig" / "outs").rglob("filtered_feature_bc_matrix.h5")))
    slide.var_names_make_unique()
    slide = slide[truth.index]
    in_ref = pd.Index(reference.var_names).get_indexer(slide.var_names)
    keep = np.flatnonzero(in_ref >= 0)
    profiles = mean_profiles(reference, types)[in_ref[keep]]
    profiles /= profiles.sum(axis=0)

    n_side = int(round(np.sqrt(truth.shape[0])))
    smooth = per_type_r(field_shares(args.slide_seed, n_side, len(types)), truth.to_numpy())
    print(f"the smooth fields' shares against the realised ones (all bins): median r {np.median(smooth):.3f}")
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(slide.n_obs, min(args.n_bins, slide.n_obs), replace=False))
    counts = sp.csr_matrix(slide.X)[pick][:, keep].tocoo()
    true = truth.to_numpy()[pick]
    fit = mixture_mle(counts, profiles)
    r = per_type_r(fit, true)
    print(
        f"per-bin maximum likelihood ({len(pick)} bins): per-type r {np.round(r, 3).tolist()}, median {np.median(r):.3f}"
    )
    umis = np.asarray(counts.tocsr().sum(axis=1)).ravel()[:, None]
    mean = fit.mean(axis=0)
    for prior in (2, 8, 32, 128):
        shrunk = (umis * fit + prior * mean) / (umis + prior)
        print(
            f"  shrunk toward the slide mean (prior of {prior} UMIs): median r {np.median(per_type_r(shrunk, true)):.3f}"
        )


if __name__ == "__main__":
    main()
