"""Silver-standard slides: real cells of a labelled reference summed into pseudo-spots.

As in the Spotless benchmark (Sang-aram et al. 2024, synthspot's "artificial regions"):

1. The reference is split per cell type, with the seed, into *spot cells* (``spot_fraction``
   of each type) and *reference cells* (the rest). Only the reference cells are given to the
   methods: no cell of a pseudo-spot is ever in the reference a method sees.
2. A grid of ``rows x cols`` spots is divided into ``n_regions`` smooth regions (Gaussian
   kernels around random centres, ``region_width`` wide, in grid units); each region has a
   composition dominated by ``1..max_dominant`` cell types (Dirichlet draws; the other types
   share ``background`` of it). A spot's expected composition is the kernel-weighted mix of
   the regions' compositions, so compositions change smoothly over the slide.
3. Each spot gets ``min_cells..max_cells`` cells (uniform), split over types by a multinomial
   draw from its composition; each cell is drawn (with replacement) from the spot cells of its
   type, and the spot's counts are the sum of its cells' counts (optionally binomially thinned
   by ``capture`` to mimic the lower capture of a spot).

The truth is the number of cells of every type per spot, and its proportions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

log = logging.getLogger("testdata.silver")

SPOT_SPACING = 100.0  # distance between neighbouring spot centres in obsm['spatial'] (pixels)


@dataclass
class SilverStandard:
    """A silver-standard slide and the reference to give the methods.

    Attributes
    ----------
    slide
        Pseudo-spots x genes, integer counts in ``X`` (CSR), ``obsm['spatial']`` (x, y),
        ``obs['array_row']``, ``obs['array_col']``, ``obs['n_cells']``, ``obs['region']``.
    reference
        The reference cells NOT used in any spot (all of the input's obs and var).
    abundance
        Spots x cell types: true number of cells.
    proportions
        Spots x cell types: ``abundance`` normalised per spot.
    spot_cells
        ``obs_names`` of the input cells held out for the spots.
    """

    slide: ad.AnnData
    reference: ad.AnnData
    abundance: pd.DataFrame
    proportions: pd.DataFrame
    spot_cells: list[str]


def split_cells(
    labels: pd.Series, spot_fraction: float, rng: np.random.Generator, min_reference_cells: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(spot, reference)`` splitting each type's cells, seeded.

    Each type gives ``round(spot_fraction * n)`` cells to the spots, at least 1, keeping at least
    ``min_reference_cells`` in the reference; a type too small for both raises ``ValueError``.
    """
    if not 0 < spot_fraction < 1:
        raise ValueError(f"spot_fraction must be between 0 and 1, got {spot_fraction}")
    labels = labels.astype(str).to_numpy()
    spot = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        idx = np.flatnonzero(labels == label)
        n_spot = min(max(1, int(round(spot_fraction * len(idx)))), len(idx) - min_reference_cells)
        if n_spot < 1:
            raise ValueError(
                f"cell type '{label}' has {len(idx)} cells: too few to hold cells out for the spots "
                f"and keep {min_reference_cells} in the reference"
            )
        spot[rng.permutation(idx)[:n_spot]] = True
    return spot, ~spot


def region_compositions(
    rng: np.random.Generator, n_regions: int, n_types: int, max_dominant: int, background: float
) -> np.ndarray:
    """``(n_regions, n_types)`` compositions, each dominated by 1..max_dominant types."""
    comps = np.zeros((n_regions, n_types))
    for r in range(n_regions):
        n_dom = int(rng.integers(1, min(max_dominant, n_types) + 1))
        dominant = rng.choice(n_types, n_dom, replace=False)
        comps[r] = background * rng.dirichlet(np.ones(n_types))
        comps[r, dominant] += (1.0 - background) * rng.dirichlet(np.full(n_dom, 2.0))
    return comps


def grid_compositions(
    rng: np.random.Generator, rows: int, cols: int, comps: np.ndarray, region_width: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid coordinates ``(row, col)`` and each spot's expected composition and main region."""
    row, col = np.divmod(np.arange(rows * cols), cols)
    centres = np.column_stack([rng.uniform(0, rows, len(comps)), rng.uniform(0, cols, len(comps))])
    d2 = (row[:, None] - centres[None, :, 0]) ** 2 + (col[:, None] - centres[None, :, 1]) ** 2
    logits = -d2 / (2.0 * region_width**2)
    kernel = np.exp(logits - logits.max(axis=1, keepdims=True))
    kernel /= kernel.sum(axis=1, keepdims=True)
    return row, col, kernel @ comps, kernel.argmax(axis=1)


def _check(
    reference: ad.AnnData, label_key: str, rows: int, cols: int, min_cells: int, max_cells: int, capture: float
) -> None:
    if label_key not in reference.obs:
        raise ValueError(f"reference: no label column '{label_key}' in obs")
    if reference.obs[label_key].isna().any():
        raise ValueError(f"reference: some cells have no '{label_key}' label")
    if rows < 2 or cols < 2:
        raise ValueError(f"the grid must be at least 2 x 2 spots, got {rows} x {cols}")
    if not 1 <= min_cells <= max_cells:
        raise ValueError(f"need 1 <= min_cells <= max_cells, got {min_cells} and {max_cells}")
    if not 0 < capture <= 1:
        raise ValueError(f"capture must be in (0, 1], got {capture}")
    X = reference.X
    values = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if values.size and (values.min() < 0 or not np.allclose(values, np.round(values))):
        raise ValueError("reference: X must hold raw integer counts")


def make_silver(
    reference: ad.AnnData,
    label_key: str = "cell_type",
    *,
    rows: int = 20,
    cols: int = 20,
    n_regions: int = 5,
    max_dominant: int = 3,
    background: float = 0.1,
    region_width: float = 3.0,
    min_cells: int = 2,
    max_cells: int = 15,
    spot_fraction: float = 0.5,
    capture: float = 1.0,
    seed: int = 0,
) -> SilverStandard:
    """Sum held-out real cells into a grid of pseudo-spots with known, spatially smooth composition.

    Parameters are described in the module docstring; ``seed`` fixes every draw (the same
    inputs and seed give identical outputs).
    """
    _check(reference, label_key, rows, cols, min_cells, max_cells, capture)
    rng = np.random.default_rng([seed, 7])
    labels = reference.obs[label_key].astype(str)
    spot_mask, ref_mask = split_cells(labels, spot_fraction, rng)
    types = sorted(labels.unique())
    comps = region_compositions(rng, n_regions, len(types), max_dominant, background)
    row, col, expected, region = grid_compositions(rng, rows, cols, comps, region_width)

    n_cells = rng.integers(min_cells, max_cells + 1, size=len(row))
    abundance = np.vstack([rng.multinomial(n, p / p.sum()) for n, p in zip(n_cells, expected)])
    pools = {k: np.flatnonzero(spot_mask & (labels.to_numpy() == t)) for k, t in enumerate(types)}
    membership = _draw_cells(rng, abundance, pools, reference.n_obs)
    X = sp.csr_matrix(reference.X, dtype=np.float64)
    counts = (membership @ X).tocsr()
    if capture < 1:
        counts.data = rng.binomial(counts.data.astype(np.int64), capture).astype(np.float64)
        counts.eliminate_zeros()
    return _assemble(reference, labels, types, spot_mask, ref_mask, row, col, region, abundance, counts)


def _draw_cells(rng: np.random.Generator, abundance: np.ndarray, pools: dict, n_obs: int) -> sp.csr_matrix:
    """Spots x reference cells matrix: how many times each spot holds each cell."""
    rows, cols = [], []
    for s, spot in enumerate(abundance):
        for k, n in enumerate(spot):
            if n:
                cols.extend(rng.choice(pools[k], int(n), replace=True))
                rows.extend([s] * int(n))
    data = np.ones(len(rows))
    return sp.csr_matrix((data, (rows, cols)), shape=(len(abundance), n_obs))


def _assemble(reference, labels, types, spot_mask, ref_mask, row, col, region, abundance, counts) -> SilverStandard:
    names = [f"spot_r{r:03d}_c{c:03d}" for r, c in zip(row, col)]
    truth = pd.DataFrame(abundance.astype(float), index=pd.Index(names, name="spot"), columns=types)
    obs = pd.DataFrame(
        {
            "array_row": row,
            "array_col": col,
            "n_cells": abundance.sum(axis=1),
            "region": pd.Categorical([f"region{r + 1}" for r in region]),
        },
        index=truth.index,
    )
    x = col * SPOT_SPACING + (row % 2) * SPOT_SPACING / 2  # hexagonal offset, as on Visium
    y = row * SPOT_SPACING * np.sqrt(3) / 2
    slide = ad.AnnData(
        X=sp.csr_matrix(counts, dtype=np.float32), obs=obs, var=pd.DataFrame(index=reference.var_names.copy())
    )
    slide.obsm["spatial"] = np.column_stack([x, y]).astype(float)
    held_out = reference[ref_mask].copy()
    log.info(
        "silver standard: %d spots (%d-%d cells) from %d held-out cells; reference keeps %d cells of %d types",
        len(names),
        abundance.sum(axis=1).min(),
        abundance.sum(axis=1).max(),
        int(spot_mask.sum()),
        held_out.n_obs,
        len(types),
    )
    return SilverStandard(
        slide, held_out, truth, truth.div(truth.sum(axis=1), axis=0), list(reference.obs_names[spot_mask].astype(str))
    )


def counts_from_log_normalised(lognorm, tolerance: float = 0.25) -> sp.csr_matrix:
    """Raw integer counts back from ``log1p`` of per-cell normalised counts (a processed reference).

    A cell normalised to a total ``t`` holds ``log1p(c * t / n)`` for a gene of ``c`` counts out of
    ``n``: ``expm1`` of it is ``c`` times the cell's unit ``t / n``. Taking the cell's smallest
    non-zero ``expm1`` value as one count recovers ``c`` exactly when the cell has a gene counted
    once (true of any droplet cell of a few hundred UMIs or more). The values must land within
    ``tolerance`` of integers (the float32 rounding of the stored logs), else ``ValueError``: the
    input was not ``log1p`` of normalised counts (e.g. scaled, or no gene counted once).

    Parameters
    ----------
    lognorm
        Cells x genes, ``log1p`` of normalised counts (dense or sparse; e.g. scanpy's ``adata.raw.X``).
    tolerance
        Largest distance to an integer accepted.
    """
    x = sp.csr_matrix(lognorm, dtype=np.float64)
    if x.nnz and x.data.min() < 0:
        raise ValueError("log-normalised values must be non-negative")
    x.data = np.expm1(x.data)
    units = np.array(
        [
            x.data[x.indptr[i] : x.indptr[i + 1]].min() if x.indptr[i + 1] > x.indptr[i] else 1.0
            for i in range(x.shape[0])
        ]
    )
    counts = sp.diags(1.0 / units) @ x
    counts = sp.csr_matrix(counts)
    off = np.abs(counts.data - np.round(counts.data)).max() if counts.nnz else 0.0
    if off > tolerance:
        raise ValueError(f"not log1p of normalised counts: values lie up to {off:.2f} from an integer count")
    counts.data = np.round(counts.data)
    return counts
