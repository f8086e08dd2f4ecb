"""NNLS baseline: non-negative least squares of each spot's counts on the reference's per-type
mean counts per cell (see :func:`run` for the normalisation)."""

from __future__ import annotations

import logging
import time
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from spatialmap.methods import base, registry

log = logging.getLogger("spatialmap.methods.nnls")

NAME = "nnls"
LABEL = registry.get(NAME).label  # the registry holds every method's label
REPORT_COLUMNS = {
    **base.COUNT_METHOD_COLUMNS,
    "genes_used": "genes the fit used",
    "residual_norm_median": "median over spots of the fit's residual norm (counts)",
    "relative_residual_median": "median over spots of the residual norm / sqrt(spot total)",
    "converged_fraction": "share of spots whose solver converged (exact active set: always 1)",
    "selection": "why the method ran on this slide",
}
HEADLINE = base.COUNT_METHOD_HEADLINE


def nnls_batch(profiles: np.ndarray, counts: sp.csr_matrix | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``min ||profiles.T @ c - y||, c >= 0`` for every row ``y`` of ``counts``.

    Each spot's problem is reduced exactly to a K x K one through the Cholesky factor
    ``R`` of the Gram matrix ``G = P P^T`` (``||P^T c - y||^2 = ||R c - z||^2 + const``
    with ``z = R^-T P y``), then solved by ``scipy.optimize.nnls`` (Lawson-Hanson). The
    answer is the one ``nnls(P.T, y)`` gives; only the genes-sized product ``P y`` is
    computed for all spots at once. Collinear profiles (singular ``G``) fall back to the
    full problem per spot.

    Returns the coefficients (spots x types) and the residual norms (spots,).
    """
    from scipy.optimize import nnls

    profiles = np.asarray(profiles, dtype=np.float64)
    gram = profiles @ profiles.T
    py = np.asarray(counts @ profiles.T) if sp.issparse(counts) else np.asarray(counts, dtype=np.float64) @ profiles.T
    yy = (
        np.asarray(counts.multiply(counts).sum(axis=1)).ravel()
        if sp.issparse(counts)
        else (np.asarray(counts, dtype=np.float64) ** 2).sum(axis=1)
    )
    coef = np.zeros((py.shape[0], profiles.shape[0]))
    try:
        upper = np.linalg.cholesky(gram).T  # G = U^T U
    except np.linalg.LinAlgError:
        log.warning("NNLS: the cell-type profiles are collinear; solving each spot on all genes")
        dense = counts.toarray() if sp.issparse(counts) else np.asarray(counts, dtype=np.float64)
        for i, y in enumerate(dense):
            coef[i] = nnls(profiles.T, y)[0]
    else:
        z = np.linalg.solve(upper.T, py.T).T
        for i in range(len(z)):
            coef[i] = nnls(upper, z[i])[0]
    fitted = coef @ gram
    resid2 = yy - 2 * (coef * py).sum(axis=1) + (fitted * coef).sum(axis=1)
    return coef, np.sqrt(np.clip(resid2, 0, None))


def run(
    slide: ad.AnnData,
    reference: ad.AnnData,
    label_key: str,
    *,
    seed: int = 0,
    sample: str | None = None,
    min_cells: int = 3,
    **kw: Any,
) -> base.MethodResult:
    """NNLS of each spot's counts on the reference's per-type mean counts per cell.

    Normalisation: none beyond the choice of profiles. Each spot's raw counts over the
    shared genes are fitted as a non-negative mix of the types' mean raw counts per cell,
    so a coefficient is "reference cells of that type" (times the slide's capture
    efficiency relative to the reference, which is unknown: they are not reported as cell
    counts); proportions are the coefficients normalised per spot. Spots without counts on
    the shared genes, or whose fit is all zero, are left out.

    ``seed`` is accepted for a uniform interface; the solver is deterministic.
    """
    if kw:
        raise TypeError(f"nnls.run got unexpected arguments: {', '.join(kw)}")
    t0 = time.perf_counter()
    inp = base.prepare_inputs(slide, reference, label_key, sample=sample, method=NAME, min_cells=min_cells)
    profiles = base.type_means(inp.ref_counts, inp.labels, inp.cell_types)
    totals = np.asarray(inp.counts.sum(axis=1)).ravel()
    has_counts = totals > 0
    coef, resid = nnls_batch(profiles, inp.counts[np.flatnonzero(has_counts)])
    full = np.zeros((slide.n_obs, len(inp.cell_types)))
    full[has_counts] = coef
    zero_fit = has_counts & (full.sum(axis=1) <= 0)
    spot_qc = base.spot_status(
        slide.obs_names,
        {
            "no counts on the genes shared with the reference": ~has_counts,
            "all-zero fit": zero_fit,
        },
    )
    keep = has_counts & ~zero_fit
    proportions = base.proportions_frame(base.normalise_rows(full[keep]), slide.obs_names[keep], inp.cell_types)
    rel = resid / np.sqrt(np.maximum(totals[has_counts], 1.0))
    qc = base.base_qc(inp, NAME, spot_qc, "cpu", t0)
    qc.update(
        {
            "genes_used": len(inp.genes),
            "convergence": {"solver": "scipy.optimize.nnls (exact active set)", "converged_fraction": 1.0},
            "residual_norm_median": float(np.median(resid)) if len(resid) else None,
            "relative_residual_median": float(np.median(rel)) if len(rel) else None,
            "settings": {
                "min_cells": int(min_cells),
                "profiles": "mean raw counts per reference cell",
                "seed": int(seed),
            },
            "versions": {"scipy": base.package_version("scipy")},
        }
    )
    base.finish_qc(qc, proportions, t0)
    return base.MethodResult(NAME, inp.sample, proportions, qc, spot_qc=spot_qc)
