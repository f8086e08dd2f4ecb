"""FlashDeconv on one slide, with its spatial k-nearest-neighbour graph of the slide's spots."""

from __future__ import annotations

import time
from typing import Any

import anndata as ad
import numpy as np

from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.methods import base, registry

NAME = "flashdeconv"
LABEL = registry.get(NAME).label  # the registry holds every method's label
REPORT_COLUMNS = {
    **base.COUNT_METHOD_COLUMNS,
    "genes_used": "genes FlashDeconv used",
    "lambda_spatial_used": "spatial regularisation FlashDeconv used",
    "converged": "whether FlashDeconv's solver converged",
    "selection": "why the method ran on this slide",
}
HEADLINE = base.COUNT_METHOD_HEADLINE


def run(
    slide: ad.AnnData,
    reference: ad.AnnData,
    label_key: str,
    *,
    seed: int = 0,
    sketch_dim: int = 512,
    lambda_spatial: float | str = "auto",
    k_neighbors: int = 6,
    sample: str | None = None,
    min_cells: int = 3,
    **kw: Any,
) -> base.MethodResult:
    """FlashDeconv on one slide, with its k-nearest-neighbour graph of the slide's spots.

    The reference enters as the per-type mean counts per cell over the shared genes (what
    ``flashdeconv.tl.deconvolve`` builds); the slide's raw counts and ``obsm['spatial']``
    go to ``flashdeconv.FlashDeconv.fit`` unchanged. ``sketch_dim`` and ``lambda_spatial``
    (``"auto"`` or a number) are FlashDeconv's own, with its defaults; ``**kw`` passes other
    ``FlashDeconv`` arguments (e.g. ``rho_sparsity``, ``n_hvg``). Spots without counts on the
    shared genes are left out before the graph is built; spots whose abundances are all zero
    (FlashDeconv would give them uniform proportions) are left out after.
    """
    from flashdeconv import FlashDeconv

    t0 = time.perf_counter()
    inp = base.prepare_inputs(slide, reference, label_key, sample=sample, method=NAME, min_cells=min_cells)
    profiles = base.type_means(inp.ref_counts, inp.labels, inp.cell_types)
    has_counts = np.asarray(inp.counts.sum(axis=1)).ravel() > 0
    if has_counts.sum() <= k_neighbors:
        raise InputError(
            f"sample {inp.sample}: flashdeconv: only {int(has_counts.sum())} spots have counts on the shared genes"
        )
    rows = np.flatnonzero(has_counts)
    coords = np.asarray(slide.obsm[keys.SPATIAL], dtype=np.float64)[rows, :2]
    lam = lambda_spatial if lambda_spatial == "auto" else float(lambda_spatial)
    model = FlashDeconv(
        sketch_dim=int(sketch_dim), lambda_spatial=lam, k_neighbors=int(k_neighbors), random_state=int(seed), **kw
    )
    try:
        model.fit(inp.counts[rows], profiles, coords, cell_type_names=np.array(inp.cell_types))
    except ValueError as err:
        raise InputError(f"sample {inp.sample}: flashdeconv: {err}") from err
    beta = np.asarray(model.beta_, dtype=np.float64)
    zero = np.zeros(slide.n_obs, dtype=bool)
    zero[rows[beta.sum(axis=1) <= 0]] = True
    spot_qc = base.spot_status(
        slide.obs_names,
        {
            "no counts on the genes shared with the reference": ~has_counts,
            "all-zero fit": zero,
        },
    )
    keep_in_fit = beta.sum(axis=1) > 0
    proportions = base.proportions_frame(
        base.normalise_rows(beta[keep_in_fit]), slide.obs_names[rows[keep_in_fit]], inp.cell_types
    )
    qc = base.base_qc(inp, NAME, spot_qc, "cpu", t0)
    qc.update(
        _fit_qc(
            model,
            dict(
                sketch_dim=int(sketch_dim),
                lambda_spatial=lambda_spatial,
                k_neighbors=int(k_neighbors),
                min_cells=int(min_cells),
                seed=int(seed),
            ),
            kw,
        )
    )
    base.finish_qc(qc, proportions, t0)
    return base.MethodResult(NAME, inp.sample, proportions, qc, spot_qc=spot_qc)


def _fit_qc(model, settings: dict, kw: dict) -> dict:
    """FlashDeconv's own QC fields: genes, lambda, convergence, settings, version."""
    info = model.info_
    return {
        "genes_used": int(len(model.gene_idx_)),
        "lambda_spatial_used": float(model.lambda_used_),
        "convergence": {
            "converged": bool(info.get("converged", False)),
            "n_iterations": int(info.get("n_iterations", 0)),
            "final_objective": float(info.get("final_objective", float("nan"))),
        },
        "settings": base.settings_dict(
            sketch_dim=settings["sketch_dim"],
            lambda_spatial=settings["lambda_spatial"],
            k_neighbors=settings["k_neighbors"],
            spatial_method=model.spatial_method,
            preprocess=model.preprocess,
            gene_weighting=model.gene_weighting,
            min_cells=settings["min_cells"],
            seed=settings["seed"],
            **kw,
        ),
        "versions": {"flashdeconv": base.package_version("flashdeconv")},
    }
