"""Deconvolution of spots into reference cell types: RCTD, FlashDeconv and an NNLS baseline.

Every method takes a slide (raw counts in ``X``, spot centres in ``obsm['spatial']``) and the
prepared reference (raw counts in ``X``, labels in ``obs[label_key]``), uses the genes both
express, and returns a :class:`DeconvResult`: cell-type proportions of the spots it fitted
(rows sum to 1), the spots it left out with the reason, and a QC summary.

- :func:`run_rctd`: RCTD (``rctd-py``), modes ``full``, ``doublet`` and ``multi``, or ``auto``
  (:func:`rctd_auto_mode`: the mode rctd-py advises for the slide's kind of location). Its
  Poisson-lognormal likelihood table (the "Q matrices") is computed once by
  :func:`compute_rctd_q_matrix` with the package's own routine and handed to it as a local
  file through the package's ``RCTD_Q_MATRICES`` variable: nothing is downloaded.
- :func:`run_flashdeconv`: FlashDeconv with its spatial k-nearest-neighbour graph of the slide.
- :func:`run_nnls`: non-negative least squares of each spot's counts on the reference's
  per-type mean counts per cell (the baseline; see :func:`run_nnls` for the normalisation).

Checks common to all three (:func:`prepare_inputs`) raise :class:`~spatialmap.cli.InputError`
naming the sample: a missing label column, a cell type with fewer cells than the method's
minimum, no (or too few) genes shared with the reference.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmap import keys
from spatialmap.cli import InputError, atomic_path
from spatialmap.reference import genes as genes_

log = logging.getLogger("spatialmap.methods.deconv")

METHODS = ("rctd", "flashdeconv", "nnls")
RCTD_MODES = ("full", "doublet", "multi")
RCTD_MODE_CHOICES = ("auto", *RCTD_MODES)  # auto: rctd_auto_mode, from the slide's kind of location
#: largest bin side (µm) that ``auto`` fits in doublet mode (larger bins get full mode)
RCTD_DOUBLET_MAX_BIN_UM = 8
RCTD_Q_ENV = "RCTD_Q_MATRICES"  # rctd-py reads its likelihood table from this file when set
MIN_SHARED_GENES = genes_.METHOD_MIN_GENES["rctd"]  # the same for FlashDeconv and NNLS


@dataclass
class DeconvResult:
    """What one deconvolution of one slide gives.

    ``proportions``: fitted spots x cell types, rows sum to 1, index = the slide's obs names.
    ``counts``: expected cells per spot x type where the method gives them (None otherwise).
    ``filtered``: the spots left out, index = obs names, one column ``reason``.
    ``qc``: sample, method, device, genes used, spots fitted / filtered (with reasons),
    convergence, seconds, settings.
    ``extra_obs``: per-spot annotations of fitted spots (e.g. RCTD's doublet class).
    """

    proportions: pd.DataFrame
    counts: pd.DataFrame | None
    qc: dict
    filtered: pd.DataFrame | None = None
    extra_obs: pd.DataFrame | None = None


@dataclass
class Inputs:
    """A slide and reference restricted to their shared genes, checked."""

    sample: str
    genes: list[str]
    counts: sp.csr_matrix  # spots x genes, float64
    ref_counts: sp.csr_matrix  # cells x genes, float64
    labels: np.ndarray  # cell type of each reference cell (str)
    cell_types: list[str]  # sorted


# --------------------------------------------------------------------------- inputs


def sample_name(slide: ad.AnnData, sample: str | None = None) -> str:
    """``sample``, or the slide's single ``obs['sample']`` value, or ``'slide'``."""
    if sample:
        return str(sample)
    if keys.SAMPLE in slide.obs and slide.n_obs:
        names = pd.unique(slide.obs[keys.SAMPLE].astype(str))
        if len(names) == 1:
            return str(names[0])
    return "slide"


def check_labels(reference: ad.AnnData, label_key: str, sample: str, method: str, min_cells: int) -> np.ndarray:
    """Reference labels as strings; InputError on a missing column, NaN or a type too small."""
    if label_key not in reference.obs.columns:
        raise InputError(
            f"sample {sample}: {method}: the reference has no label column '{label_key}' "
            f"(columns: {', '.join(map(str, reference.obs.columns)) or 'none'})"
        )
    labels = reference.obs[label_key]
    if labels.isna().any():
        raise InputError(f"sample {sample}: {method}: {int(labels.isna().sum())} reference cells have no '{label_key}'")
    labels = labels.astype(str).to_numpy()
    sizes = pd.Series(labels).value_counts()
    if len(sizes) < 2:
        raise InputError(f"sample {sample}: {method}: the reference has {len(sizes)} cell type; at least 2 are needed")
    small = sizes[sizes < min_cells].sort_index()
    if len(small):
        listed = ", ".join(f"{k} ({v})" for k, v in small.items())
        raise InputError(
            f"sample {sample}: {method} needs at least {min_cells} reference cells per cell type; "
            f"too few: {listed}. Merge or remove these types, or lower the method's minimum"
        )
    return labels


shared_genes = genes_.shared_expressed_genes  # genes expressed in both (one definition, in genes)


def prepare_inputs(
    slide: ad.AnnData, reference: ad.AnnData, label_key: str, *, sample: str | None, method: str, min_cells: int
) -> Inputs:
    """Check the inputs and restrict both to the shared genes (see the module docstring)."""
    name = sample_name(slide, sample)
    if slide.n_obs == 0:
        raise InputError(f"sample {name}: {method}: the slide has no spots")
    if keys.SPATIAL not in slide.obsm:
        raise InputError(f"sample {name}: {method}: the slide has no spot coordinates (obsm['{keys.SPATIAL}'])")
    labels = check_labels(reference, label_key, name, method, min_cells)
    genes = shared_genes(slide, reference)
    if not genes:
        raise InputError(
            f"sample {name}: {method}: no gene is shared with the reference (and expressed in both); "
            "check that the slide and the reference name genes the same way"
        )
    if len(genes) < MIN_SHARED_GENES:
        raise InputError(
            f"sample {name}: {method}: only {len(genes)} genes are shared with the reference; "
            f"at least {MIN_SHARED_GENES} are needed"
        )
    slide_pos = slide.var_names.get_indexer(genes)
    ref_pos = reference.var_names.get_indexer(genes)
    counts = sp.csr_matrix(slide.X, dtype=np.float64)[:, slide_pos]
    ref_counts = sp.csr_matrix(reference.X, dtype=np.float64)[:, ref_pos]
    log.info(
        "sample %s: %s: %d spots, %d genes shared with the reference (%d cells, %d types)",
        name, method, slide.n_obs, len(genes), reference.n_obs, len(set(labels)),
    )
    return Inputs(name, genes, sp.csr_matrix(counts), sp.csr_matrix(ref_counts), labels, sorted(set(labels)))


def type_means(ref_counts: sp.csr_matrix, labels: np.ndarray, cell_types: list[str]) -> np.ndarray:
    """Types x genes: mean counts per reference cell of each type."""
    onehot = sp.csr_matrix((np.ones(len(labels)), (pd.Index(cell_types).get_indexer(labels), np.arange(len(labels)))))
    sums = np.asarray((onehot @ ref_counts).todense())
    sizes = np.asarray(onehot.sum(axis=1)).ravel()
    return sums / sizes[:, None]


def _frame(values: np.ndarray, index, columns) -> pd.DataFrame:
    return pd.DataFrame(values, index=pd.Index(index, name="barcode"), columns=pd.Index(columns, name="cell_type"))


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    total = x.sum(axis=1, keepdims=True)
    return np.divide(x, total, out=np.zeros_like(x, dtype=np.float64), where=total > 0)


def _filtered_frame(obs_names, reasons: dict[str, np.ndarray]) -> pd.DataFrame:
    """Spots left out: ``{reason: boolean mask}`` -> frame (first reason wins)."""
    obs_names = np.asarray(obs_names)
    taken = np.zeros(len(obs_names), dtype=bool)
    rows = []
    for reason, mask in reasons.items():
        mask = np.asarray(mask, dtype=bool) & ~taken
        taken |= mask
        rows.append(pd.DataFrame({"reason": reason}, index=obs_names[mask]))
    frame = pd.concat(rows) if rows else pd.DataFrame({"reason": []})
    frame.index.name = "barcode"
    return frame


def _log_filtered(sample: str, method: str, filtered: pd.DataFrame, n_spots: int) -> dict[str, int]:
    counts = filtered["reason"].value_counts().to_dict() if len(filtered) else {}
    for reason, n in counts.items():
        log.warning("sample %s: %s left out %d of %d spots: %s", sample, method, n, n_spots, reason)
    return {str(k): int(v) for k, v in counts.items()}


def _base_qc(inp: Inputs, method: str, n_spots: int, filtered: pd.DataFrame, device: str, t0: float) -> dict:
    return {
        "sample": inp.sample,
        "method": method,
        "device": device,
        "genes_shared": len(inp.genes),
        "spots_total": int(n_spots),
        "spots_fitted": int(n_spots - len(filtered)),
        "spots_filtered": int(len(filtered)),
        "spots_filtered_by_reason": _log_filtered(inp.sample, method, filtered, n_spots),
        "cell_types": list(inp.cell_types),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _finish_qc(qc: dict, proportions: pd.DataFrame, t0: float) -> None:
    """Add the mean proportion per type, a scalar convergence figure, and the total seconds."""
    qc["mean_proportions"] = {str(k): float(v) for k, v in proportions.mean(axis=0).items()}
    convergence = qc.get("convergence") or {}
    if "converged_fraction" in convergence:
        qc["converged_fraction"] = convergence["converged_fraction"]
    elif "converged" in convergence:
        qc["converged"] = bool(convergence["converged"])
    qc["seconds"] = round(time.perf_counter() - t0, 3)


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------- NNLS


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
    yy = (np.asarray(counts.multiply(counts).sum(axis=1)).ravel() if sp.issparse(counts)
          else (np.asarray(counts, dtype=np.float64) ** 2).sum(axis=1))
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


def run_nnls(
    slide: ad.AnnData,
    reference: ad.AnnData,
    label_key: str,
    *,
    seed: int = 0,
    sample: str | None = None,
    min_cells: int = 3,
    **kw: Any,
) -> DeconvResult:
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
        raise TypeError(f"run_nnls got unexpected arguments: {', '.join(kw)}")
    t0 = time.perf_counter()
    inp = prepare_inputs(slide, reference, label_key, sample=sample, method="nnls", min_cells=min_cells)
    profiles = type_means(inp.ref_counts, inp.labels, inp.cell_types)
    totals = np.asarray(inp.counts.sum(axis=1)).ravel()
    has_counts = totals > 0
    coef, resid = nnls_batch(profiles, inp.counts[np.flatnonzero(has_counts)])
    full = np.zeros((slide.n_obs, len(inp.cell_types)))
    full[has_counts] = coef
    zero_fit = has_counts & (full.sum(axis=1) <= 0)
    filtered = _filtered_frame(slide.obs_names, {
        "no counts on the genes shared with the reference": ~has_counts,
        "all-zero fit": zero_fit,
    })
    keep = has_counts & ~zero_fit
    proportions = _frame(_normalise_rows(full[keep]), slide.obs_names[keep], inp.cell_types)
    rel = resid / np.sqrt(np.maximum(totals[has_counts], 1.0))
    qc = _base_qc(inp, "nnls", slide.n_obs, filtered, "cpu", t0)
    qc.update({
        "genes_used": len(inp.genes),
        "convergence": {"solver": "scipy.optimize.nnls (exact active set)", "converged_fraction": 1.0},
        "residual_norm_median": float(np.median(resid)) if len(resid) else None,
        "relative_residual_median": float(np.median(rel)) if len(rel) else None,
        "settings": {"min_cells": int(min_cells), "profiles": "mean raw counts per reference cell", "seed": int(seed)},
        "versions": {"scipy": package_version("scipy")},
    })
    _finish_qc(qc, proportions, t0)
    return DeconvResult(proportions=proportions, counts=None, qc=qc, filtered=filtered)


# --------------------------------------------------------------------------- RCTD likelihood table


def rctd_sigma_grid(step: int = 1) -> list[int]:
    """The sigmas (x100) of rctd-py's grid (``rctd._sigma.SIGMA_ALL``), every ``step``-th from 100.

    RCTD starts its sigma search at 100 and looks at the grid points up to 8 positions away,
    so a table on every ``step``-th point (``step`` <= 8) lets the search move, on a coarser
    grid than the full one (``step`` 1, 126 sigmas). ``step`` 0 keeps only 100: a fixed sigma.
    """
    from rctd._sigma import SIGMA_ALL

    if step < 0 or step > 8:
        raise InputError(f"the sigma step must be 0 (sigma 100 only) or 1 to 8, not {step}")
    grid = [int(s) for s in SIGMA_ALL]
    if step == 0:
        return [100]
    start = grid.index(100)
    return [s for i, s in enumerate(grid) if (i - start) % step == 0]


def _q_one(args: tuple[int, np.ndarray, int]) -> tuple[int, np.ndarray]:
    from rctd._likelihood import compute_q_matrix

    sigma, x_vals, k_max = args
    return sigma, compute_q_matrix(sigma / 100.0, x_vals, K_val=k_max)


def compute_rctd_q_matrix(
    path: str | os.PathLike, *, k_max: int = 1000, sigma_step: int = 1, workers: int = 1
) -> Path:
    """Compute rctd-py's likelihood table with its own routine and write it atomically.

    ``rctd._likelihood.compute_q_matrix(sigma / 100, build_x_vals(), K_val=k_max)`` for every
    sigma of :func:`rctd_sigma_grid`, saved as the ``.npz`` layout the package downloads
    (``X_vals`` and ``Q_<sigma>``), so ``rctd._likelihood.load_cached_q_matrices`` reads it
    as its own. ``k_max`` is the largest count the table covers (rctd-py's default 1000;
    larger counts are clamped to it, as in R spacexr). Cost: about 0.14 s per count value
    and sigma on one core, i.e. ~5 CPU-hours for the full default table (126 sigmas, k_max
    1000); ``workers`` processes share the sigmas. A JSON of the settings is written beside it.

    Returns the path written.
    """
    import json
    import multiprocessing

    from rctd._likelihood import build_x_vals

    if k_max < 10:
        raise InputError(f"the table's largest count must be at least 10, not {k_max}")
    path = Path(path)
    sigmas = rctd_sigma_grid(sigma_step)
    x_vals = build_x_vals()
    log.info("RCTD likelihood table: %d sigmas (%d..%d), counts 0..%d, %d worker(s)",
             len(sigmas), sigmas[0], sigmas[-1], k_max, workers)
    t0 = time.perf_counter()
    jobs = [(s, x_vals, int(k_max)) for s in sigmas]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            tables = dict(pool.map(_q_one, jobs, chunksize=1))
    else:
        tables = dict(map(_q_one, jobs))
    seconds = time.perf_counter() - t0
    arrays = {"X_vals": x_vals, **{f"Q_{s}": tables[s] for s in sigmas}}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    info = {"k_max": int(k_max), "sigma_step": int(sigma_step), "sigmas": sigmas, "workers": int(workers),
            "seconds": round(seconds, 1), "rctd-py": package_version("rctd-py")}
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    log.info("RCTD likelihood table written to %s in %.1f s", path, seconds)
    return path


def read_q_table_info(path: str | os.PathLike) -> dict:
    """Sigmas and largest count of a likelihood table, read from the .npz headers only."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"RCTD likelihood table not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
            q_names = [n for n in names if n.startswith("Q_")]
            if "X_vals" not in names or not q_names:
                raise InputError(f"{path} is not an RCTD likelihood table (no X_vals / Q_<sigma> arrays)")
            with archive.open(q_names[0] + ".npy") as member:
                version = np.lib.format.read_magic(member)
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape = reader(member)[0]
    except zipfile.BadZipFile as err:
        raise InputError(f"{path} is not an RCTD likelihood table: {err}") from err
    sigmas = sorted(int(n[2:]) for n in q_names)
    if 100 not in sigmas:
        raise InputError(f"{path}: the RCTD likelihood table lacks sigma 100, where RCTD's search starts")
    return {"path": str(path.resolve()), "sigmas": sigmas, "k_max": int(shape[0]) - 3}  # resolved: the stored file


@contextlib.contextmanager
def rctd_q_table(path: str | os.PathLike) -> Iterator[None]:
    """Point rctd-py at a local likelihood table for the duration of the block.

    rctd-py's ``load_cached_q_matrices`` reads ``$RCTD_Q_MATRICES`` before anything else
    (its public hook for staged tables); with it set to an existing file the package neither
    looks at ``~/.cache/rctd`` nor tries a download. The previous value is restored after.
    """
    old = os.environ.get(RCTD_Q_ENV)
    os.environ[RCTD_Q_ENV] = str(Path(path).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(RCTD_Q_ENV, None)
        else:
            os.environ[RCTD_Q_ENV] = old


# --------------------------------------------------------------------------- RCTD


def _light(adata: ad.AnnData, obs: pd.DataFrame | None = None) -> ad.AnnData:
    """Counts and names only (what rctd-py reads), without copying the rest of the object."""
    return ad.AnnData(
        X=sp.csr_matrix(adata.X, dtype=np.float32),
        obs=obs if obs is not None else pd.DataFrame(index=adata.obs_names.astype(str)),
        var=pd.DataFrame(index=adata.var_names.astype(str)),
    )


#: the column of each spot's counts outside RCTD's gene lists (never a reference gene)
RCTD_OTHER_COUNTS = "__spatialmap_other_counts__"


def rctd_slide_genes(slide: ad.AnnData, reference, config) -> tuple[ad.AnnData, int]:
    """The slide as rctd-py gets it: only the genes it can use, plus one column of the other counts.

    rctd-py densifies its spots x shared-genes matrix (``RCTD._extract_spatial_data``, and copies
    it once more): for a full Visium HD slide of 302,500 bins x 5,000 genes that is 6 GB of
    float32, twice. After that it uses only the genes of its two lists (``gene_list_bulk`` and
    ``gene_list_reg``: chosen gene by gene from the reference profiles and the slide's total count
    of the gene over the spots passing ``UMI_min``/``UMI_max``), while each spot's nUMI is taken
    over all genes. The lists are computed here the same way, from sparse sums, and the slide
    handed over holds those genes and one column :data:`RCTD_OTHER_COUNTS` (not a reference gene)
    with each spot's remaining counts: rctd-py then finds the same nUMI, gene lists, filters and
    fits, with a dense matrix of spots x listed genes only (1,360 of 5,000 genes on that slide).
    When a list is too short (rctd-py then falls back to all shared genes) the slide is left whole.

    Returns
    -------
    The slide for rctd-py (counts and names only) and the number of genes it shares with the reference.
    """
    X = sp.csr_matrix(slide.X, dtype=np.float32)
    names = slide.var_names.astype(str)
    ref_names = [str(g) for g in reference.gene_names]
    if RCTD_OTHER_COUNTS in set(ref_names):
        raise InputError(f"the reference has a gene named {RCTD_OTHER_COUNTS}, which the pipeline reserves")
    position = {g: i for i, g in enumerate(names)}
    common = sorted(set(position) & set(ref_names))
    totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    passing = (totals >= config.UMI_min) & (totals <= config.UMI_max)
    gene_sums = np.asarray(X[np.flatnonzero(passing)].sum(axis=0, dtype=np.float64)).ravel()
    bulk = np.zeros(len(ref_names), dtype=np.float64)
    ref_position = {g: i for i, g in enumerate(ref_names)}
    for gene in common:
        bulk[ref_position[gene]] = gene_sums[position[gene]]
    lists = [
        reference.get_de_genes(spatial_bulk=bulk, fc_thresh=config.fc_cutoff, expr_thresh=config.gene_cutoff,
                               min_obs=config.MIN_OBS),
        reference.get_de_genes(spatial_bulk=bulk, fc_thresh=config.fc_cutoff_reg, expr_thresh=config.gene_cutoff_reg,
                               min_obs=config.MIN_OBS),
    ]  # fmt: skip
    if min(len(genes) for genes in lists) < 10:
        return _light(slide), len(common)
    keep = sorted((set(lists[0]) | set(lists[1])) & set(common))
    columns = np.array([position[g] for g in keep])
    rest = np.ones(X.shape[1], dtype=bool)
    rest[columns] = False
    other = np.asarray(X[:, np.flatnonzero(rest)].sum(axis=1, dtype=np.float64)).ravel().astype(np.float32)
    counts = sp.hstack([X[:, columns], sp.csr_matrix(other[:, None])], format="csr", dtype=np.float32)
    out = ad.AnnData(X=counts, obs=pd.DataFrame(index=slide.obs_names.astype(str)),
                     var=pd.DataFrame(index=[*keep, RCTD_OTHER_COUNTS]))  # fmt: skip
    return out, len(common)


def rctd_auto_mode(slide: ad.AnnData) -> tuple[str, str]:
    """The RCTD mode for the slide's kind of location (``--rctd_mode auto``), and why.

    rctd-py's documentation ("Mode: Best for") advises ``doublet`` (one or two types per
    location) for Visium HD bins and segmented cells (Xenium, MERFISH, CosMx) and ``full``
    (any number of types) for Visium spots and continuous mixtures. The kind of location is
    read from ``uns['spatialmap_platform']`` (written by the slide readers; absent for standard
    Visium, whose locations are 55 µm spots):

    - cells (Xenium, Visium HD cells, a SpatialData cell table): ``doublet``;
    - bins up to :data:`RCTD_DOUBLET_MAX_BIN_UM` (8 µm, about one cell, rarely more than two;
      on the generated HD slide 5% of 8 µm bins hold three types, 0.4% of their counts outside
      the top two): ``doublet``;
    - larger bins (16 µm, 256 µm², several cells: on the generated slide 47% of the 16 µm bins
      hold three or more types, 5% of their counts outside the top two, which doublet mode would
      have to drop) and Visium spots: ``full``. A bin table of unknown size (a SpatialData
      store's ``square_*`` table without its size) counts as 8 µm bins.
    """
    info = dict(slide.uns.get(keys.UNS_PLATFORM, {}) or {})
    unit = str(info.get("unit", "spot"))
    if unit == "cell":
        return "doublet", "auto: cells (one or two types each): doublet"
    if unit == "bin":
        size = info.get("bin_size_um")
        if size is not None and float(size) > RCTD_DOUBLET_MAX_BIN_UM:
            return "full", f"auto: {size:g} µm bins (several cells each): full"
        shown = f"{size:g} µm bins" if size is not None else "bins"
        return "doublet", f"auto: {shown} (one or two types each): doublet"
    return "full", f"auto: {unit}s (several cells each): full"


def _rctd_proportions(result, mode: str, names: list[str]) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Spots x types proportions of the fitted spots, per-spot annotations, convergence."""
    from rctd import SPOT_CLASS_NAMES

    weights = np.clip(np.asarray(result.weights, dtype=np.float64), 0, None)
    props = _normalise_rows(weights)
    extra = pd.DataFrame(index=np.arange(len(weights)))
    if mode == "full":
        converged = np.asarray(result.converged, dtype=bool)
        return props, extra, {"converged_fraction": float(converged.mean()) if len(converged) else None}
    if mode == "doublet":
        spot_class = np.asarray(result.spot_class)
        first, second = np.asarray(result.first_type), np.asarray(result.second_type)
        pair = np.asarray(result.weights_doublet, dtype=np.float64)
        rows = np.arange(len(props))
        called = spot_class != 0  # reject spots keep their full-mode weights
        props[called] = 0.0
        single = spot_class == 1
        props[rows[single], first[single]] = 1.0
        double = spot_class >= 2
        props[rows[double], first[double]] += pair[double, 0]
        props[rows[double], second[double]] += pair[double, 1]
        props = _normalise_rows(props)
        extra[keys.RCTD_SPOT_CLASS] = [SPOT_CLASS_NAMES[c] for c in spot_class]
        extra[keys.RCTD_FIRST_TYPE] = [names[i] for i in first]
        extra[keys.RCTD_SECOND_TYPE] = [names[i] for i in second]
        counts = pd.Series(extra[keys.RCTD_SPOT_CLASS]).value_counts().to_dict()
        return props, extra, {"spot_class_counts": {str(k): int(v) for k, v in counts.items()}}
    sub = np.asarray(result.sub_weights, dtype=np.float64)
    idx = np.asarray(result.cell_type_indices)
    props = np.zeros_like(weights)
    for j in range(idx.shape[1]):
        ok = idx[:, j] >= 0
        props[np.flatnonzero(ok), idx[ok, j]] += sub[ok, j]
    props = _normalise_rows(props)
    extra[keys.RCTD_N_TYPES] = np.asarray(result.n_types, dtype=int)
    counts = pd.Series(extra[keys.RCTD_N_TYPES]).value_counts().sort_index().to_dict()
    return props, extra, {"n_types_counts": {str(k): int(v) for k, v in counts.items()}}


def _rctd_fit(model, mode: str, batch_size):
    from rctd import run_doublet_mode, run_full_mode, run_multi_mode
    from rctd._types import auto_batch_size

    n_genes, n_types = model.norm_profiles.shape
    if batch_size == "auto":
        batch_size = auto_batch_size(n_genes, n_types, 8 if model.config.dtype == "float64" else 4)
    kwargs = dict(
        spatial_counts=model.counts, spatial_numi=model.nUMI, norm_profiles=model.norm_profiles,
        cell_type_names=model.reference.cell_type_names, q_mat=model.q_mat, sq_mat=model.sq_mat,
        x_vals=model.x_vals, batch_size=int(batch_size), device=model.config.device,
        pixel_mask=model._pixel_mask,  # read only: which input spots passed RCTD's filters
    )
    if mode == "full":
        return run_full_mode(**kwargs)
    runner = run_doublet_mode if mode == "doublet" else run_multi_mode
    return runner(**kwargs, config=model.config)


def run_rctd(
    slide: ad.AnnData,
    reference: ad.AnnData,
    label_key: str,
    *,
    mode: str = "auto",
    q_matrix_path: str | os.PathLike | None = None,
    seed: int = 0,
    accelerator: str = "auto",
    sample: str | None = None,
    umi_min: int = 100,
    umi_max: int = 20_000_000,
    counts_min: int = 10,
    umi_min_sigma: int = 300,
    cell_min: int = 25,
    n_max_cells: int = 10_000,
    ref_umi_min: int = 100,
    threads: int | None = None,
    compile: bool = False,
    dtype: str = "float64",
    batch_size: int | str = "auto",
    **kw: Any,
) -> DeconvResult:
    """RCTD (rctd-py) on one slide.

    Parameters
    ----------
    slide, reference, label_key
        Raw counts; reference labels in ``obs[label_key]``. Neither is modified.
    mode
        ``full`` (any number of types per spot; Visium), ``doublet`` (one or two; bins and
        cells), ``multi`` (up to ``MAX_MULTI_TYPES``, 4) or ``auto`` (:func:`rctd_auto_mode`:
        from the slide's kind of location).
    q_matrix_path
        The likelihood table from :func:`compute_rctd_q_matrix` (required: without one
        rctd-py would download it).
    seed
        Seeds torch and numpy (rctd-py's own draws use its fixed seed 42).
    accelerator
        ``auto`` (CUDA when torch sees a GPU), ``gpu`` or ``cpu``.
    umi_min, umi_max, counts_min, umi_min_sigma
        RCTD's spot filters (``UMI_min``, ``UMI_max``, ``counts_MIN``) and the minimum UMIs
        of the spots its sigma estimate samples (``UMI_min_sigma``). Spots filtered out are
        returned in ``filtered`` with the reason.
    cell_min, n_max_cells, ref_umi_min
        Reference: fewest cells per type (fewer stops with an error, where rctd-py would
        drop the type), cells kept per type, fewest UMIs per reference cell.
    threads, compile, dtype, batch_size
        Torch CPU threads; ``torch.compile`` (off: the first compile takes 10-20 min);
        float precision; spots per batch (``auto``: from free GPU memory).
    **kw
        Other ``rctd.RCTDConfig`` fields (e.g. ``DOUBLET_THRESHOLD``).
    """
    from rctd import RCTD, RCTDConfig, Reference

    from spatialmap.device import resolve_accelerator, seed_everything

    t0 = time.perf_counter()
    name = sample_name(slide, sample)
    if mode not in RCTD_MODE_CHOICES:
        raise InputError(f"sample {name}: RCTD mode must be one of {', '.join(RCTD_MODE_CHOICES)}, not '{mode}'")
    requested = mode
    mode, mode_reason = rctd_auto_mode(slide) if mode == "auto" else (mode, "asked for")
    if q_matrix_path is None:
        raise InputError(
            f"sample {name}: rctd: no likelihood table given; compute one with "
            "compute_rctd_q_matrix (rctd-py would otherwise try to download it)"
        )
    table = read_q_table_info(q_matrix_path)
    inp = prepare_inputs(slide, reference, label_key, sample=name, method="rctd", min_cells=cell_min)
    device = "cuda" if resolve_accelerator(accelerator, threads) == "gpu" else "cpu"
    seed_everything(seed)
    config = RCTDConfig(UMI_min=umi_min, UMI_max=umi_max, counts_MIN=counts_min, UMI_min_sigma=umi_min_sigma,
                        K_val=table["k_max"], device=device, compile=compile, dtype=dtype, **kw)
    ref_ad = _light(reference, pd.DataFrame({label_key: inp.labels}, index=reference.obs_names.astype(str)))
    log.info("sample %s: RCTD %s mode (%s) on %s, likelihood table %s (%d sigmas, counts up to %d)",
             name, mode, mode_reason, device, table["path"], len(table["sigmas"]), table["k_max"])
    with rctd_q_table(table["path"]):
        ref = Reference(ref_ad, cell_type_col=label_key, cell_min=cell_min, n_max_cells=n_max_cells, min_UMI=ref_umi_min)
        lost = sorted(set(inp.cell_types) - set(map(str, ref.cell_type_names)))
        if lost:
            raise InputError(
                f"sample {name}: rctd: cell type(s) {', '.join(lost)} keep fewer than {cell_min} reference "
                f"cells with at least {ref_umi_min} UMIs"
            )
        rctd_slide, n_common = rctd_slide_genes(slide, ref, config)
        log.info("sample %s: RCTD gets %d of the %d shared genes (its gene lists) and the other counts in one column",
                 name, rctd_slide.n_vars - (RCTD_OTHER_COUNTS in rctd_slide.var_names), n_common)
        try:
            model = RCTD(rctd_slide, ref, config)
        except ValueError as err:
            raise InputError(f"sample {name}: rctd: {err}") from err
        del rctd_slide
        try:
            model.fit_platform_effects()
        except ValueError as err:  # e.g. no spot above UMI_min_sigma to estimate sigma on (sparse bins, small panels)
            raise InputError(f"sample {name}: rctd: {err}") from err
    result = _rctd_fit(model, mode, batch_size)
    model.genes_shared = n_common
    return _rctd_result(slide, inp, model, result, mode, table, device, t0, locals_settings(
        mode=mode, mode_requested=requested, mode_reason=mode_reason,
        umi_min=umi_min, umi_max=umi_max, counts_min=counts_min, umi_min_sigma=umi_min_sigma,
        cell_min=cell_min, n_max_cells=n_max_cells, ref_umi_min=ref_umi_min, compile=compile, dtype=dtype,
        seed=seed, **kw))


def locals_settings(**settings: Any) -> dict:
    """Settings as JSON-friendly values."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in settings.items()}


def _rctd_result(slide, inp: Inputs, model, result, mode, table, device, t0, settings) -> DeconvResult:
    names = [str(n) for n in model.reference.cell_type_names]
    mask = np.asarray(result.pixel_mask, dtype=bool)
    props, extra, convergence = _rctd_proportions(result, mode, names)
    zero = props.sum(axis=1) <= 0
    totals = np.asarray(sp.csr_matrix(slide.X).sum(axis=1)).ravel()
    fitted_zero = np.zeros(slide.n_obs, dtype=bool)
    fitted_zero[np.flatnonzero(mask)[zero]] = True
    filtered = _filtered_frame(slide.obs_names, {
        f"fewer than {settings['umi_min']} UMIs (RCTD UMI_min)": totals < settings["umi_min"],
        f"more than {settings['umi_max']} UMIs (RCTD UMI_max)": totals > settings["umi_max"],
        f"fewer than {settings['counts_min']} counts on RCTD's bulk genes (RCTD counts_MIN)": ~mask,
        "all-zero fit": fitted_zero,
    })
    index = slide.obs_names[mask][~zero]
    proportions = _frame(props[~zero], index, names).reindex(columns=inp.cell_types)
    proportions.columns.name = "cell_type"
    extra = extra.loc[~zero].set_axis(index) if extra.shape[1] else None
    qc = _base_qc(inp, "rctd", slide.n_obs, filtered, device, t0)
    qc.update({
        "mode": mode,
        "mode_reason": settings["mode_reason"],
        "genes_used": int(model.counts.shape[1]),
        "genes_common": int(getattr(model, "genes_shared", len(model.common_genes))),
        "sigma": model.sigma / 100.0,
        "convergence": convergence,
        "q_matrix": {"path": table["path"], "k_max": table["k_max"], "n_sigmas": len(table["sigmas"])},
        "settings": settings,
        "versions": {"rctd-py": package_version("rctd-py"), "torch": package_version("torch")},
    })
    _finish_qc(qc, proportions, t0)
    return DeconvResult(proportions=proportions, counts=None, qc=qc, filtered=filtered, extra_obs=extra)


# --------------------------------------------------------------------------- FlashDeconv


def run_flashdeconv(
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
) -> DeconvResult:
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
    inp = prepare_inputs(slide, reference, label_key, sample=sample, method="flashdeconv", min_cells=min_cells)
    profiles = type_means(inp.ref_counts, inp.labels, inp.cell_types)
    has_counts = np.asarray(inp.counts.sum(axis=1)).ravel() > 0
    if has_counts.sum() <= k_neighbors:
        raise InputError(f"sample {inp.sample}: flashdeconv: only {int(has_counts.sum())} spots have counts on the shared genes")
    rows = np.flatnonzero(has_counts)
    coords = np.asarray(slide.obsm[keys.SPATIAL], dtype=np.float64)[rows, :2]
    lam = lambda_spatial if lambda_spatial == "auto" else float(lambda_spatial)
    model = FlashDeconv(sketch_dim=int(sketch_dim), lambda_spatial=lam, k_neighbors=int(k_neighbors),
                        random_state=int(seed), **kw)
    try:
        model.fit(inp.counts[rows], profiles, coords, cell_type_names=np.array(inp.cell_types))
    except ValueError as err:
        raise InputError(f"sample {inp.sample}: flashdeconv: {err}") from err
    beta = np.asarray(model.beta_, dtype=np.float64)
    zero = np.zeros(slide.n_obs, dtype=bool)
    zero[rows[beta.sum(axis=1) <= 0]] = True
    filtered = _filtered_frame(slide.obs_names, {
        "no counts on the genes shared with the reference": ~has_counts,
        "all-zero fit": zero,
    })
    keep_in_fit = beta.sum(axis=1) > 0
    proportions = _frame(_normalise_rows(beta[keep_in_fit]), slide.obs_names[rows[keep_in_fit]], inp.cell_types)
    info = model.info_
    qc = _base_qc(inp, "flashdeconv", slide.n_obs, filtered, "cpu", t0)
    qc.update({
        "genes_used": int(len(model.gene_idx_)),
        "lambda_spatial_used": float(model.lambda_used_),
        "convergence": {"converged": bool(info.get("converged", False)), "n_iterations": int(info.get("n_iterations", 0)),
                        "final_objective": float(info.get("final_objective", float("nan")))},
        "settings": locals_settings(sketch_dim=int(sketch_dim), lambda_spatial=lambda_spatial, k_neighbors=int(k_neighbors),
                                    spatial_method=model.spatial_method, preprocess=model.preprocess,
                                    gene_weighting=model.gene_weighting, min_cells=int(min_cells), seed=int(seed), **kw),
        "versions": {"flashdeconv": package_version("flashdeconv")},
    })
    _finish_qc(qc, proportions, t0)
    return DeconvResult(proportions=proportions, counts=None, qc=qc, filtered=filtered)


# --------------------------------------------------------------------------- outputs

LABELS = {"rctd": "RCTD", "flashdeconv": "FlashDeconv", "nnls": "NNLS"}


def json_safe(value):
    """NaN / infinities -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _uns_safe(value):
    """As :func:`json_safe`, without the None values h5ad cannot store."""
    value = json_safe(value)
    if isinstance(value, dict):
        return {k: _uns_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_uns_safe(v) for v in value if v is not None]
    return value


def full_proportions(slide: ad.AnnData, result: DeconvResult) -> pd.DataFrame:
    """Proportions for every spot of ``slide`` (NaN rows for the spots left out)."""
    unknown = result.proportions.index.difference(slide.obs_names)
    if len(unknown):
        raise ValueError(f"{len(unknown)} result spots are not in the slide (e.g. {unknown[0]})")
    frame = result.proportions.reindex(slide.obs_names)
    frame.index.name = "barcode"
    return frame


def annotate_slide(slide: ad.AnnData, result: DeconvResult, method: str) -> ad.AnnData:
    """A copy of ``slide`` with the proportions in ``obsm``, spot status in ``obs``, QC in ``uns``."""
    out = slide.copy()
    frame = full_proportions(slide, result)
    frame.columns = frame.columns.astype(str)
    out.obsm[keys.DECONV_PROPORTIONS[method]] = frame.set_axis(out.obs_names)
    status = pd.Series("fitted", index=out.obs_names, dtype=object)
    if result.filtered is not None and len(result.filtered):
        status.loc[result.filtered.index] = result.filtered["reason"].astype(str).to_numpy()
    out.obs[keys.DECONV_STATUS[method]] = pd.Categorical(status)
    if result.extra_obs is not None:
        for column in result.extra_obs.columns:
            values = result.extra_obs[column].reindex(out.obs_names)
            if values.dtype == object or values.isna().any():
                values = pd.Categorical(values.astype(object).where(values.notna(), "filtered").astype(str))
            out.obs[column] = values
    out.uns[keys.UNS_DECONV[method]] = _uns_safe(result.qc)
    return out


def plot_maps(slide: ad.AnnData, result: DeconvResult, method: str, out_png: str | os.PathLike,
              *, max_spots: int = 20_000, seed: int = 0) -> Path:
    """One map per cell type; above ``max_spots`` spots a seeded sample of them is drawn, larger."""
    from spatialmap.report.plotting import plot_spatial_values

    values = full_proportions(slide, result)
    n = slide.n_obs
    title = (f"{result.qc.get('sample', '')}: {LABELS.get(method, method)} cell-type proportions "
             f"({result.qc.get('spots_fitted', len(result.proportions))} of {n} spots fitted; grey: left out)")
    scale = 1.0
    if n > max_spots:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_spots, replace=False))
        libraries = slide.uns.get(keys.UNS_SPATIAL, {}) or {}
        sized = any((lib.get("scalefactors") or {}).get("spot_diameter_fullres") for lib in libraries.values())
        scale = min(float(np.sqrt(n / max_spots)), 5.0) if sized else 1.0
        slide = slide[keep]
        values = values.iloc[keep]
        title += f"; {max_spots:,} spots drawn"
        log.info("maps: drawing a seeded sample of %d of %d spots", max_spots, n)
    return plot_spatial_values(slide, values, out_png, title, spot_scale=scale)


def write_outputs(slide: ad.AnnData, result: DeconvResult, method: str, prefix: str,
                  *, outdir: str | os.PathLike = ".", max_plot_spots: int = 20_000, seed: int = 0) -> dict[str, Path]:
    """Write ``<prefix>.<method>.h5ad``, ``_proportions.csv``, ``_filtered_spots.csv``,
    ``_maps.png`` and ``_qc.json`` into ``outdir``; return their paths by kind."""
    import json

    outdir = Path(outdir)
    paths = {kind: outdir / f"{prefix}.{method}{suffix}" for kind, suffix in (
        ("h5ad", ".h5ad"), ("csv", "_proportions.csv"), ("filtered", "_filtered_spots.csv"),
        ("png", "_maps.png"), ("json", "_qc.json"))}
    with atomic_path(paths["csv"]) as tmp:
        result.proportions.rename_axis("barcode").to_csv(tmp, float_format="%.6g")
    filtered = result.filtered if result.filtered is not None else pd.DataFrame({"reason": []})
    with atomic_path(paths["filtered"]) as tmp:
        filtered.rename_axis("barcode").to_csv(tmp)
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(json_safe(result.qc), indent=2) + "\n")
    plot_maps(slide, result, method, paths["png"], max_spots=max_plot_spots, seed=seed)
    annotated = annotate_slide(slide, result, method)
    with atomic_path(paths["h5ad"]) as tmp:
        annotated.write_h5ad(tmp)
    return paths
