"""RCTD (``rctd-py``) on one slide, modes ``full``, ``doublet`` and ``multi``, or ``auto``
(:func:`rctd_auto_mode`: the mode rctd-py advises for the slide's kind of location).

Its Poisson-lognormal likelihood table (the "Q matrices") is computed once by
:func:`compute_rctd_q_matrix` (the package's numbers, computed by
:mod:`spatialmap.methods.rctd_table` in seconds) and handed to it as a local file through the
package's ``RCTD_Q_MATRICES`` variable: nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmap import keys
from spatialmap.cli import InputError, atomic_path
from spatialmap.methods import base, registry

log = logging.getLogger("spatialmap.methods.rctd")

NAME = "rctd"
LABEL = registry.get(NAME).label  # the registry holds every method's label
REPORT_COLUMNS = {
    **base.COUNT_METHOD_COLUMNS,
    "mode": "RCTD mode fitted (full, doublet or multi)",
    "mode_reason": "why this mode (asked for, or the auto choice for the kind of location)",
    "genes_used": "genes of RCTD's gene lists it fitted on",
    "genes_common": "genes shared by the slide and RCTD's reference",
    "sigma": "RCTD's platform-effect sigma",
    "converged_fraction": "full mode: share of spots whose fit converged",
    "selection": "why the method ran on this slide",
}
HEADLINE = base.COUNT_METHOD_HEADLINE

MODES = ("full", "doublet", "multi")
MODE_CHOICES = ("auto", *MODES)  # auto: rctd_auto_mode, from the slide's kind of location
#: largest bin side (µm) that ``auto`` fits in doublet mode (larger bins get full mode)
DOUBLET_MAX_BIN_UM = 8
Q_ENV = "RCTD_Q_MATRICES"  # rctd-py reads its likelihood table from this file when set


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


ENGINES = ("fast", "package")  # how compute_rctd_q_matrix computes the table


def _q_one(args: tuple[int, np.ndarray, int]) -> tuple[int, np.ndarray]:
    from rctd._likelihood import compute_q_matrix

    sigma, x_vals, k_max = args
    return sigma, compute_q_matrix(sigma / 100.0, x_vals, K_val=k_max)


def _package_tables(sigmas: list[int], x_vals: np.ndarray, k_max: int, workers: int) -> dict[int, np.ndarray]:
    """The table of every sigma with rctd-py's own ``compute_q_matrix`` (slow: ~0.2 s per count and sigma)."""
    import multiprocessing

    jobs = [(s, x_vals, int(k_max)) for s in sigmas]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            return dict(pool.map(_q_one, jobs, chunksize=1))
    return dict(map(_q_one, jobs))


def compute_rctd_q_matrix(
    path: str | os.PathLike, *, k_max: int = 1000, sigma_step: int = 1, workers: int = 1, engine: str = "fast"
) -> Path:
    """Compute rctd-py's likelihood table and write it atomically.

    The numbers of ``rctd._likelihood.compute_q_matrix(sigma / 100, build_x_vals(), K_val=k_max)``
    for every sigma of :func:`rctd_sigma_grid`, saved as the ``.npz`` layout the package downloads
    (``X_vals`` and ``Q_<sigma>``), so ``rctd._likelihood.load_cached_q_matrices`` reads it as its
    own. ``k_max`` is the largest count the table covers (rctd-py's default 1000; larger counts
    are clamped to it, as in R spacexr). ``engine``:

    - ``fast`` (default): :func:`spatialmap.methods.rctd_table.compute_q_tables`, the same sums
      with shared exponentials over only the terms that count (each entry within 1e-8 of the
      package's on the log scale, checked on a few entries against the package every time): the
      full default table (126 sigmas, counts 0..1,000) in about 12 CPU-seconds;
    - ``package``: the package's own ``compute_q_matrix`` per sigma, ~0.2 s per count value and
      sigma on one core (5-10 CPU-hours for the full default table).

    ``workers`` threads (``fast``) or processes (``package``) share the work. A JSON of the
    settings is written beside the table. Returns the path written.
    """
    import json

    from rctd._likelihood import build_x_vals

    from spatialmap.methods import rctd_table

    if k_max < 10:
        raise InputError(f"the table's largest count must be at least 10, not {k_max}")
    if engine not in ENGINES:
        raise InputError(f"the table's engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    path = Path(path)
    sigmas = rctd_sigma_grid(sigma_step)
    x_vals = build_x_vals()
    log.info(
        "RCTD likelihood table (%s engine): %d sigmas (%d..%d), counts 0..%d, %d worker(s)",
        engine,
        len(sigmas),
        sigmas[0],
        sigmas[-1],
        k_max,
        workers,
    )
    t0 = time.perf_counter()
    check = None
    if engine == "fast":
        stacked = rctd_table.compute_q_tables(sigmas, int(k_max), threads=workers)
        check = rctd_table.check_against_package(stacked, sigmas, int(k_max))
        tables = dict(zip(sigmas, stacked))
    else:
        tables = _package_tables(sigmas, x_vals, int(k_max), workers)
    seconds = time.perf_counter() - t0
    arrays = {"X_vals": x_vals, **{f"Q_{s}": tables[s] for s in sigmas}}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    info = {
        "k_max": int(k_max),
        "sigma_step": int(sigma_step),
        "sigmas": sigmas,
        "engine": engine,
        "max_abs_diff_checked": check,  # fast engine: largest difference from the package on the entries checked
        "workers": int(workers),
        "seconds": round(seconds, 1),
        "rctd-py": base.package_version("rctd-py"),
    }
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    log.info("RCTD likelihood table written to %s (computed in %.1f s)", path, seconds)
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
                reader = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
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
    old = os.environ.get(Q_ENV)
    os.environ[Q_ENV] = str(Path(path).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(Q_ENV, None)
        else:
            os.environ[Q_ENV] = old


# --------------------------------------------------------------------------- RCTD


#: rows of the bulk counts summed at a time by :func:`bulk_sums_in_blocks` (x ~1,400 genes x 16 bytes: ~0.4 GB)
BULK_SUM_ROWS = 16_384


def _longdouble_sum_in_blocks(t, dim: int, rows: int | None = None):
    """``rctd._normalize._longdouble_sum`` a block of rows at a time: the same long-double sums.

    The package converts the whole matrix to ``np.longdouble`` before summing, a 16-byte copy of
    every value at once (5.2 GB for the 239,886 x 1,360 bulk counts of a full Visium HD slide). Here each
    block of ``rows`` is converted and summed into a long-double accumulator. Counts are whole
    numbers, and whole numbers below 2**64 add exactly in long double in any order, so the sums,
    and everything rctd-py derives from them, are the package's to the bit (unit test).
    """
    import torch

    rows = rows or BULK_SUM_ROWS
    arr = t.detach().cpu().numpy()
    if arr.ndim != 2 or dim != 0 or arr.shape[0] <= rows:
        return torch.tensor(arr.astype(np.longdouble).sum(axis=dim).astype(np.float64), dtype=t.dtype, device=t.device)
    total = np.zeros(arr.shape[1], dtype=np.longdouble)
    for start in range(0, arr.shape[0], rows):
        total += arr[start : start + rows].astype(np.longdouble).sum(axis=0)
    return torch.tensor(total.astype(np.float64), dtype=t.dtype, device=t.device)


@contextlib.contextmanager
def bulk_sums_in_blocks() -> Iterator[None]:
    """rctd-py's platform-effect step (``fit_bulk``) with its long-double sums taken in blocks.

    Swaps the package's ``_longdouble_sum`` (looked up in ``rctd._normalize`` at each call) for
    :func:`_longdouble_sum_in_blocks` for the duration of the block; restored after.
    """
    from rctd import _normalize

    original = _normalize._longdouble_sum
    _normalize._longdouble_sum = _longdouble_sum_in_blocks
    try:
        yield
    finally:
        _normalize._longdouble_sum = original


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
    - bins up to :data:`DOUBLET_MAX_BIN_UM` (8 µm, about one cell, rarely more than two;
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
        if size is not None and float(size) > DOUBLET_MAX_BIN_UM:
            return "full", f"auto: {size:g} µm bins (several cells each): full"
        shown = f"{size:g} µm bins" if size is not None else "bins"
        return "doublet", f"auto: {shown} (one or two types each): doublet"
    return "full", f"auto: {unit}s (several cells each): full"


def _rctd_proportions(result, mode: str, names: list[str]) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """Spots x types proportions of the fitted spots, per-spot annotations, convergence."""
    from rctd import SPOT_CLASS_NAMES

    weights = np.clip(np.asarray(result.weights, dtype=np.float64), 0, None)
    props = base.normalise_rows(weights)
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
        props = base.normalise_rows(props)
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
    props = base.normalise_rows(props)
    extra[keys.RCTD_N_TYPES] = np.asarray(result.n_types, dtype=int)
    counts = pd.Series(extra[keys.RCTD_N_TYPES]).value_counts().sort_index().to_dict()
    return props, extra, {"n_types_counts": {str(k): int(v) for k, v in counts.items()}}


#: rctd-py's doublet mode: a location's candidate types are those above this full-mode weight
DOUBLET_CANDIDATE_WEIGHT = 0.01


def _doublet_fits(weights: np.ndarray) -> int:
    """The IRWLS fits rctd-py's doublet mode runs after its full fit: the pairs and single types of
    every location's candidates, and one final fit per location (for the time left in progress lines)."""
    k = weights.shape[1]
    n = (np.asarray(weights) > DOUBLET_CANDIDATE_WEIGHT).sum(axis=1)
    n = np.where(n == 0, min(3, k), np.where(n == 1, 2, n))  # rctd-py's fallbacks for 0 and 1 candidates
    return int((n * (n - 1) // 2).sum() + n.sum() + len(n))


@contextlib.contextmanager
def _fit_progress(n_locations: int, mode: str) -> Iterator[None]:
    """Progress lines while rctd-py fits, about one a minute (:class:`spatialmap.progress.Progress`):
    locations of its full fit, then doublet mode's pair and singlet fits or multi mode's type-set fits.

    Logging only: rctd-py's batch solvers (``rctd._full.solve_irwls_batch_shared``,
    ``rctd._doublet.solve_irwls_batch``, ``rctd._multi.solve_irwls_batch``) are wrapped for the
    block to count the locations or fits of each call (same arguments, same results returned), and
    put back after.
    """
    import rctd._doublet as doublet_mod
    import rctd._full as full_mod
    import rctd._multi as multi_mod

    from spatialmap.progress import Progress

    stages = {"full": Progress(f"RCTD {mode} mode, full fit", n_locations, "locations")}
    later = "pair and singlet fits" if mode == "doublet" else "type-set fits"
    originals = {
        (full_mod, "solve_irwls_batch_shared"): full_mod.solve_irwls_batch_shared,
        (doublet_mod, "solve_irwls_batch"): doublet_mod.solve_irwls_batch,
        (multi_mod, "solve_irwls_batch"): multi_mod.solve_irwls_batch,
        (doublet_mod, "run_full_mode"): doublet_mod.run_full_mode,
    }

    def counted(original, stage: str):
        def solver(*args, **kwargs):
            result = original(*args, **kwargs)
            converged = result[1] if isinstance(result, tuple) and len(result) == 2 else None
            if converged is None or not hasattr(converged, "float"):  # another rctd-py: no lines, same fit
                return result
            if stage not in stages:  # the later fits start now (their rate from here)
                stages[stage] = Progress(f"RCTD {mode} mode, {later}", stages.get("total"), "fits")
            done = float(converged.float().mean()) if len(converged) else 1.0
            stages[stage].advance(len(converged), note=f"{100 * done:.0f}% of the last batch converged")
            return result

        return solver

    def full_fit_then_count(*args, **kwargs):
        result = originals[(doublet_mod, "run_full_mode")](*args, **kwargs)
        weights = getattr(result, "weights", None)
        if weights is not None and np.ndim(weights) == 2:
            stages["total"] = _doublet_fits(weights)
        return result

    full_mod.solve_irwls_batch_shared = counted(full_mod.solve_irwls_batch_shared, "full")
    doublet_mod.solve_irwls_batch = counted(doublet_mod.solve_irwls_batch, "later")
    multi_mod.solve_irwls_batch = counted(multi_mod.solve_irwls_batch, "later")
    doublet_mod.run_full_mode = full_fit_then_count
    try:
        yield
    finally:
        for (module, name), original in originals.items():
            setattr(module, name, original)
        for stage in ("full", "later"):
            if stage in stages:
                stages[stage].finish()


def _rctd_fit(model, mode: str, batch_size, batched: bool = False):
    from rctd import run_doublet_mode, run_full_mode, run_multi_mode
    from rctd._types import auto_batch_size

    # --- hook: the batched CPU fit (spatialmap.methods.rctd_batch), the same fit as the package's loop below
    if batched:
        from spatialmap.methods import rctd_batch

        return rctd_batch.fit(model, mode)
    # --- end of hook
    n_genes, n_types = model.norm_profiles.shape
    if batch_size == "auto":
        batch_size = auto_batch_size(n_genes, n_types, 8 if model.config.dtype == "float64" else 4)
    kwargs = dict(
        spatial_counts=model.counts,
        spatial_numi=model.nUMI,
        norm_profiles=model.norm_profiles,
        cell_type_names=model.reference.cell_type_names,
        q_mat=model.q_mat,
        sq_mat=model.sq_mat,
        x_vals=model.x_vals,
        batch_size=int(batch_size),
        device=model.config.device,
        pixel_mask=model._pixel_mask,  # read only: which input spots passed RCTD's filters
    )
    if mode == "full":
        return run_full_mode(**kwargs)
    runner = run_doublet_mode if mode == "doublet" else run_multi_mode
    return runner(**kwargs, config=model.config)


# long: over 80 lines only by its docstring, which documents every setting; the code is 29 lines.
def run(
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
    engine: str = "auto",
    **kw: Any,
) -> base.MethodResult:
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
        of the spots its sigma estimate samples (``UMI_min_sigma``). Spots filtered out get
        the reason in ``spot_qc``.
    cell_min, n_max_cells, ref_umi_min
        Reference: fewest cells per type (fewer stops with an error, where rctd-py would
        drop the type), cells kept per type, fewest UMIs per reference cell.
    threads, compile, dtype, batch_size
        Torch CPU threads; ``torch.compile`` (off: the first compile takes 10-20 min);
        float precision; spots per batch (``auto``: from free GPU memory).
    engine
        ``auto`` (the batched CPU fit of :mod:`spatialmap.methods.rctd_batch` on the CPU in
        float64, rctd-py's own loop on a GPU), ``batched`` or ``package`` (rctd-py's own loop).
    **kw
        Other ``rctd.RCTDConfig`` fields (e.g. ``DOUBLET_THRESHOLD``).
    """
    from rctd import RCTDConfig

    from spatialmap.device import resolve_accelerator, seed_everything

    t0 = time.perf_counter()
    name = base.sample_name(slide, sample)
    requested = mode
    mode, mode_reason = _choose_mode(slide, mode, name)
    if q_matrix_path is None:
        raise InputError(
            f"sample {name}: rctd: no likelihood table given; compute one with "
            "compute_rctd_q_matrix (rctd-py would otherwise try to download it)"
        )
    table = read_q_table_info(q_matrix_path)
    inp = base.prepare_inputs(slide, reference, label_key, sample=name, method=NAME, min_cells=cell_min)
    device = "cuda" if resolve_accelerator(accelerator, threads) == "gpu" else "cpu"
    batched, engine_reason = _choose_engine(engine, device, dtype, name)
    seed_everything(seed)
    config = RCTDConfig(
        UMI_min=umi_min,
        UMI_max=umi_max,
        counts_MIN=counts_min,
        UMI_min_sigma=umi_min_sigma,
        K_val=table["k_max"],
        device=device,
        compile=compile,
        dtype=dtype,
        **kw,
    )
    log.info(
        "sample %s: RCTD %s mode (%s) on %s, likelihood table %s (%d sigmas, counts up to %d)",
        name,
        mode,
        mode_reason,
        device,
        table["path"],
        len(table["sigmas"]),
        table["k_max"],
    )
    model = _rctd_model(
        slide,
        reference,
        label_key,
        inp,
        config,
        table,
        dict(cell_min=cell_min, n_max_cells=n_max_cells, min_UMI=ref_umi_min),
        batched,
    )
    log.info("sample %s: RCTD fit engine %s", name, engine_reason)
    with _fit_progress(int(model.counts.shape[0]), mode):  # progress lines only (of rctd-py's own solvers)
        result = _rctd_fit(model, mode, batch_size, batched)
    return _rctd_result(
        slide,
        inp,
        model,
        result,
        mode,
        table,
        device,
        t0,
        base.settings_dict(
            mode=mode,
            mode_requested=requested,
            mode_reason=mode_reason,
            umi_min=umi_min,
            umi_max=umi_max,
            counts_min=counts_min,
            umi_min_sigma=umi_min_sigma,
            cell_min=cell_min,
            n_max_cells=n_max_cells,
            ref_umi_min=ref_umi_min,
            compile=compile,
            dtype=dtype,
            seed=seed,
            engine=engine,
            engine_used=engine_reason,
            **kw,
        ),
    )


def _choose_engine(engine: str, device: str, dtype: str, name: str) -> tuple[bool, str]:
    """Whether the batched CPU fit runs (:func:`spatialmap.methods.rctd_batch.choose_engine`), and why."""
    from spatialmap.methods import rctd_batch

    try:
        return rctd_batch.choose_engine(engine, device, dtype)
    except ValueError as err:
        raise InputError(f"sample {name}: rctd: {err}") from err


def _choose_mode(slide: ad.AnnData, mode: str, name: str) -> tuple[str, str]:
    """The mode to fit and why; InputError on an unknown mode."""
    if mode not in MODE_CHOICES:
        raise InputError(f"sample {name}: RCTD mode must be one of {', '.join(MODE_CHOICES)}, not '{mode}'")
    return rctd_auto_mode(slide) if mode == "auto" else (mode, "asked for")


def _rctd_model(
    slide: ad.AnnData,
    reference: ad.AnnData,
    label_key: str,
    inp: base.Inputs,
    config,
    table: dict,
    ref_settings: dict,
    batched: bool = False,
):
    """rctd-py's reference and RCTD object, its platform effects fitted (reads the local table)."""
    from rctd import RCTD, Reference

    name = inp.sample
    ref_ad = _light(reference, pd.DataFrame({label_key: inp.labels}, index=reference.obs_names.astype(str)))
    with rctd_q_table(table["path"]):
        ref = Reference(ref_ad, cell_type_col=label_key, **ref_settings)
        lost = sorted(set(inp.cell_types) - set(map(str, ref.cell_type_names)))
        if lost:
            raise InputError(
                f"sample {name}: rctd: cell type(s) {', '.join(lost)} keep fewer than {ref_settings['cell_min']} "
                f"reference cells with at least {ref_settings['min_UMI']} UMIs"
            )
        rctd_slide, n_common = rctd_slide_genes(slide, ref, config)
        log.info(
            "sample %s: RCTD gets %d of the %d shared genes (its gene lists) and the other counts in one column",
            name,
            rctd_slide.n_vars - (RCTD_OTHER_COUNTS in rctd_slide.var_names),
            n_common,
        )
        try:
            model = RCTD(rctd_slide, ref, config)
        except ValueError as err:
            raise InputError(f"sample {name}: rctd: {err}") from err
        del rctd_slide
        try:
            with bulk_sums_in_blocks():  # the package's sums without its 16-byte copy of the counts
                _fit_platform_effects(model, batched)
        except ValueError as err:  # e.g. no spot above UMI_min_sigma to estimate sigma on (sparse bins, small panels)
            raise InputError(f"sample {name}: rctd: {err}") from err
    model.genes_shared = n_common
    return model


def _fit_platform_effects(model, batched: bool) -> None:
    """rctd-py's platform effects and sigma; with ``batched``, its sigma search batched
    (:func:`spatialmap.methods.rctd_batch.fit_platform_effects`, the same search)."""
    if batched:
        from spatialmap.methods import rctd_batch

        rctd_batch.fit_platform_effects(model)
    else:
        model.fit_platform_effects()


def _rctd_result(slide, inp: base.Inputs, model, result, mode, table, device, t0, settings) -> base.MethodResult:
    """Proportions, per-spot status and annotations, and QC of an RCTD fit."""
    names = [str(n) for n in model.reference.cell_type_names]
    mask = np.asarray(result.pixel_mask, dtype=bool)
    props, extra, convergence = _rctd_proportions(result, mode, names)
    zero = props.sum(axis=1) <= 0
    totals = np.asarray(sp.csr_matrix(slide.X).sum(axis=1)).ravel()
    fitted_zero = np.zeros(slide.n_obs, dtype=bool)
    fitted_zero[np.flatnonzero(mask)[zero]] = True
    spot_qc = base.spot_status(
        slide.obs_names,
        {
            f"fewer than {settings['umi_min']} UMIs (RCTD UMI_min)": totals < settings["umi_min"],
            f"more than {settings['umi_max']} UMIs (RCTD UMI_max)": totals > settings["umi_max"],
            f"fewer than {settings['counts_min']} counts on RCTD's bulk genes (RCTD counts_MIN)": ~mask,
            "all-zero fit": fitted_zero,
        },
    )
    index = slide.obs_names[mask][~zero]
    proportions = base.proportions_frame(props[~zero], index, names).reindex(columns=inp.cell_types)
    proportions.columns.name = "cell_type"
    if extra.shape[1]:
        spot_qc = spot_qc.join(extra.loc[~zero].set_axis(index).reindex(spot_qc.index))
    qc = base.base_qc(inp, NAME, spot_qc, device, t0)
    qc.update(
        {
            "mode": mode,
            "mode_reason": settings["mode_reason"],
            "genes_used": int(model.counts.shape[1]),
            "genes_common": int(getattr(model, "genes_shared", len(model.common_genes))),
            "sigma": model.sigma / 100.0,
            "convergence": convergence,
            "q_matrix": {"path": table["path"], "k_max": table["k_max"], "n_sigmas": len(table["sigmas"])},
            "settings": settings,
            "versions": {"rctd-py": base.package_version("rctd-py"), "torch": base.package_version("torch")},
        }
    )
    base.finish_qc(qc, proportions, t0)
    return base.MethodResult(NAME, inp.sample, proportions, qc, spot_qc=spot_qc)


def fitted_model(slide, reference, label_key: str, q_matrix_path, *, threads: int = 1, umi_min: int = 100, **kw):
    """rctd-py's ``RCTD`` object of a slide with its platform effects and sigma fitted, as ``rctd.run`` builds it.

    For comparing the engines on the same inputs (``tests/unit/test_rctd_batch.py``,
    ``tools/benchmark_rctd_batch.py``): fit it once, then :func:`spatialmap.methods.rctd_batch.fit` and :func:`package_fit`.
    """
    from rctd import RCTDConfig

    from spatialmap.device import resolve_accelerator
    from spatialmap.methods import base

    table = read_q_table_info(q_matrix_path)
    inp = base.prepare_inputs(slide, reference, label_key, sample=None, method="rctd", min_cells=25)
    resolve_accelerator("cpu", threads)
    config = RCTDConfig(UMI_min=umi_min, K_val=table["k_max"], device="cpu", compile=False, dtype="float64", **kw)
    ref_settings = dict(cell_min=25, n_max_cells=10_000, min_UMI=100)
    return _rctd_model(slide, reference, label_key, inp, config, table, ref_settings)


def package_fit(rctd_model, mode: str, batch_size: int = 10_000):
    """rctd-py's own ``run_<mode>_mode`` on a fitted ``RCTD`` object (what ``--rctd_engine package`` runs)."""
    return _rctd_fit(rctd_model, mode, batch_size, batched=False)
