#!/usr/bin/env python3
"""CellTypist's training and labelling at scale, on generated data (tools/BENCHMARKS.md, "CellTypist").

Three steps, each its own process so that each one's peak memory is its own:

    benchmark_celltypist.py make     --outdir D --cells 100000 --genes 5000 --types 30 --query-cells 100000
    benchmark_celltypist.py train    --outdir D [--threads 2]
    benchmark_celltypist.py annotate --outdir D [--no-voting]

``make`` writes a reference (the test data's generator, ``tools/testdata/synth.py``: signatures with
fine-grained pairs, NB counts, drawn in chunks of 10,000 cells, each chunk its own batch effect) and a
query of cells drawn from the same signatures, thinned to a Xenium-like depth (lognormal around
``--query-depth`` counts per cell, with a per-gene platform effect); ``train`` runs
:func:`spatialmap.methods.celltypist.train` as TRAIN_CELLTYPIST does, ``annotate``
:func:`spatialmap.methods.celltypist.run` as CELLTYPIST does. Each step prints one JSON line:
its seconds, peak RSS (GB) and, for ``annotate``, the accuracy against the query's true types.
Run it with the task's cores (``taskset``/``nice`` as the machine needs).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

CHUNK = 10_000


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def make(args: argparse.Namespace) -> dict:
    from testdata import synth

    rng = np.random.default_rng(args.seed)
    signatures = synth.make_signatures(rng, args.genes, args.types)
    types = list(signatures.columns)
    per_chunk = max(2, CHUNK // len(types))
    parts, drawn = [], 0
    while drawn < args.cells + args.query_cells:
        part = synth.make_reference(rng, signatures, per_chunk)
        part = part[:, ~part.var_names.str.startswith("MT-")].copy()
        part.obs_names = [f"c{drawn + i}" for i in range(part.n_obs)]
        part.obs["batch"] = f"batch{len(parts)}"
        parts.append(part)
        drawn += part.n_obs
    cells = ad.concat(parts, merge="first")
    order = rng.permutation(cells.n_obs)
    reference = cells[order[: args.cells]].copy()
    query = cells[order[args.cells : args.cells + args.query_cells]].copy()
    # Xenium-like: each cell thinned to a lognormal depth, with a per-gene platform effect
    counts = sp.csr_matrix(query.X, dtype=np.float64)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    target = rng.lognormal(np.log(args.query_depth), 0.4, query.n_obs)
    gene = rng.lognormal(0.0, 0.2, query.n_vars)
    keep = np.minimum(
        1.0, (target / totals)[np.repeat(np.arange(query.n_obs), np.diff(counts.indptr))] * gene[counts.indices]
    )
    counts.data = rng.binomial(counts.data.astype(np.int64), keep).astype(np.float32)
    counts.eliminate_zeros()
    query.X = sp.csr_matrix(counts, dtype=np.float32)
    query.obsm["spatial"] = rng.uniform(0, 10_000, (query.n_obs, 2))
    query.obs["sample"] = "query"
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    reference.write_h5ad(out / "reference.h5ad")
    query.write_h5ad(out / "query.h5ad")
    return {
        "reference_cells": reference.n_obs,
        "query_cells": query.n_obs,
        "genes": reference.n_vars,
        "types": len(types),
        "reference_median_counts": float(np.median(np.asarray(reference.X.sum(axis=1)).ravel())),
        "query_median_counts": float(np.median(np.asarray(query.X.sum(axis=1)).ravel())),
    }


def train(args: argparse.Namespace) -> dict:
    from spatialmap.methods import celltypist as ct

    out = Path(args.outdir)
    reference, query = ad.read_h5ad(out / "reference.h5ad"), ad.read_h5ad(out / "query.h5ad")
    t0 = time.perf_counter()
    model = ct.train(
        reference,
        "cell_type",
        slides=[query],
        max_genes=args.max_genes,
        feature_selection=args.feature_selection,
        seed=0,
        threads=args.threads,
    )
    seconds = time.perf_counter() - t0
    model.write(str(out / "model.pkl"))
    info = ct.model_info(model)
    return {
        "train_seconds": round(seconds, 1),
        "peak_rss_gb": round(peak_gb(), 2),
        "model_genes": info["model_genes"],
        "cells": info["cells"],
        "training_accuracy": round(info["training_accuracy"], 4),
        "threads": args.threads,
        "max_genes": args.max_genes,
        "feature_selection": args.feature_selection,
    }


def annotate(args: argparse.Namespace) -> dict:
    from spatialmap.methods import celltypist as ct

    out = Path(args.outdir)
    query = ad.read_h5ad(out / "query.h5ad")
    truth = query.obs["cell_type"].astype(str)
    slide = ad.AnnData(X=query.X, obs=pd.DataFrame({"sample": "query"}, index=query.obs_names), var=query.var[[]])
    slide.obsm["spatial"] = query.obsm["spatial"]
    t0 = time.perf_counter()
    result = ct.run(slide, out / "model.pkl", sample="query", majority_voting=not args.no_voting)
    seconds = time.perf_counter() - t0
    cells = result.spot_qc
    fitted = cells["status"] == "fitted"
    row = {
        "annotate_seconds": round(seconds, 1),
        "peak_rss_gb": round(peak_gb(), 2),
        "cells": int(fitted.sum()),
        "accuracy_predicted": round(
            float((cells.loc[fitted, "celltypist_predicted_label"] == truth[fitted]).mean()), 4
        ),
        "median_confidence": round(result.qc["median_confidence"], 4),
        "pct_low_confidence": result.qc["pct_low_confidence"],
        "majority_voting": result.qc["majority_voting"],
    }
    if not args.no_voting and "celltypist_majority_voting" in cells:
        row["accuracy_voted"] = round(
            float((cells.loc[fitted, "celltypist_majority_voting"] == truth[fitted]).mean()), 4
        )
        row["voting_clusters"] = result.qc["voting_clusters"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("make", "train", "annotate"))
    parser.add_argument("--outdir", required=True, help="folder of the generated data and the model")
    parser.add_argument("--cells", type=int, default=100_000, help="reference cells (make)")
    parser.add_argument("--query-cells", type=int, default=100_000, help="cells to label (make)")
    parser.add_argument("--genes", type=int, default=5000, help="genes (make)")
    parser.add_argument("--types", type=int, default=30, help="cell types (make)")
    parser.add_argument("--query-depth", type=float, default=300, help="median counts per query cell (make)")
    parser.add_argument("--seed", type=int, default=0, help="seed (make)")
    parser.add_argument("--threads", type=int, default=2, help="CellTypist's n_jobs (train)")
    parser.add_argument("--max-genes", type=int, default=5000, help="--celltypist_max_genes (train)")
    parser.add_argument("--feature-selection", action="store_true", help="--celltypist_feature_selection (train)")
    parser.add_argument("--no-voting", action="store_true", help="no majority voting (annotate)")
    args = parser.parse_args()
    row = {"make": make, "train": train, "annotate": annotate}[args.step](args)
    print(json.dumps({"step": args.step, **row}), flush=True)


if __name__ == "__main__":
    main()
