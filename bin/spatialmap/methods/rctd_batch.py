"""rctd-py's per-location fits (full, doublet and multi mode) batched on the CPU with numba.

rctd-py (0.4) batches its fits over locations with torch, but every IRWLS iteration of a batch
walks ~30 temporary arrays of locations x genes through memory (its likelihood spline,
``rctd._likelihood.calc_q_all``, is eager torch on the CPU), and its doublet and multi fits keep
every location of a batch iterating until the slowest has converged (``solve_irwls_batch`` has no
compaction). On a CPU that costs ~0.1 s per 8 µm bin in doublet mode. Here each fit (one location
and its types) runs its whole IRWLS in one compiled loop over the genes, the fits of a step in
parallel over the task's cores, each stopping when it has converged.

It is the same fit, ported line by line from the installed package (which stays the reference;
``tests/unit/test_rctd_batch.py`` and ``tools/benchmark_rctd_batch.py`` compare the two):

- the likelihood: rctd-py's table (``q_mat``) and spline (``sq_mat``), interpolated with the
  formulas of ``calc_q_all`` (its grid index ``m`` read from a table computed with its own torch
  expression, float32 rounding included);
- the IRWLS of ``solve_irwls_batch`` (doublet and multi scoring, 25 iterations; final weights, 50)
  and ``solve_irwls_batch_shared`` (full mode, 50): start 1/k, clamp, prediction floor
  ``max(1e-4, nUMI 1e-7)`` in float32 as rctd-py computes it, PSD projection (closed form for 1 and
  2 types, ``eigh`` above), the box-constrained step (its closed form for 2 types, Gauss-Seidel
  with its KKT check and active-set finish above), step 0.3, L1 change <= 0.001;
- the candidate rules, pair and singlet scores, ``check_pairs_type`` and the four-branch spot
  class of ``run_doublet_mode``; the forward selection, confidence check and final weights of
  ``run_multi_mode``.

What differs is the order of floating-point sums (a loop here, BLAS there): scores and weights
agree to ~1e-12, and a location can only change where a score difference or an L1 change sits
on a threshold to that precision. Platform effects and sigma are rctd-py's own (unchanged).
Float64 only; on a GPU rctd-py's own batches are fast, so ``engine="auto"`` keeps them there.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import numpy as np

log = logging.getLogger("spatialmap.methods.rctd_batch")

#: ``batched``: the fits here; ``package``: rctd-py's own loop; ``auto``: batched on the CPU in float64
ENGINES = ("auto", "batched", "package")
MODES = ("full", "doublet", "multi")
#: fits per compiled call: a progress line (done, rate, ETA) is logged about once a minute between calls
CHUNK = 20_000
PROGRESS_SECONDS = 60.0

# rctd-py's fixed settings (rctd._doublet, rctd._multi, rctd._irwls)
WEIGHT_THRESHOLD = 0.01  # candidate types: full-mode weight above this
SCORE_ITER = 25  # IRWLS iterations of a pair / singlet / multi score
FINAL_ITER = 50  # IRWLS iterations of full mode and of the final weights
MIN_CHANGE = 0.001
STEP = 0.3
PSD_EPS = 1e-3
KKT_TOL = 1e-10  # rctd._irwls._kkt_tol in float64
INF = 1e18


def choose_engine(engine: str, device: str, dtype: str) -> tuple[bool, str]:
    """Whether the batched fit runs, and why (``engine`` as asked; ``auto``: CPU and float64)."""
    if engine not in ENGINES:
        raise ValueError(f"RCTD engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    if engine == "package":
        return False, "package: rctd-py's own loop (asked for)"
    if engine == "batched":
        if dtype != "float64":
            raise ValueError("the batched RCTD fit computes in float64; use --dtype float64 or the package engine")
        return True, "batched: spatialmap's batched CPU fit (asked for)"
    if device != "cpu":
        return False, "auto: rctd-py's own batches on the GPU"
    if dtype != "float64":
        return False, "auto: rctd-py's own loop (float32 asked for)"
    return True, "auto: spatialmap's batched CPU fit (the same fit as rctd-py's, in float64)"


# --------------------------------------------------------------------------- the likelihood


@functools.cache
def grid_index_table() -> np.ndarray:
    """rctd-py's spline interval ``m`` for every ``l = floor(sqrt(lambda / 1e-6))`` (0..40,000).

    Computed with the torch expression of ``rctd._likelihood._calc_q_all_impl`` itself, so the
    float32 step in it (``l.float() - 48.7499``) rounds exactly as it does there.
    """
    import torch

    ell = torch.arange(0, 40_001, dtype=torch.long)
    m = torch.clamp(ell - 9, max=40) + torch.clamp(
        torch.ceil(torch.sqrt(torch.clamp(ell.float() - 48.7499, min=0.0) * 4.0)).long() - 2,
        min=0,
    )
    return m.numpy().astype(np.int64)


def spline_terms(q_mat: np.ndarray, sq_mat: np.ndarray, x_vals: np.ndarray) -> np.ndarray:
    """Per count and grid interval ``m``, the four terms of ``calc_q_all`` that do not depend on lambda.

    ``[diff3, diff4, zi / hi, zi1 / hi]`` with the same operations as rctd-py (so the same values),
    computed once instead of for every gene of every iteration. Shape ``(counts, intervals, 4)``.
    """
    q = np.asarray(q_mat, dtype=np.float64)
    sq = np.asarray(sq_mat, dtype=np.float64)
    x = np.asarray(x_vals, dtype=np.float64)
    out = np.zeros((q.shape[0], q.shape[1], 4))
    hi = x[1:] - x[:-1]  # interval m (1-based in rctd-py's indexing): x[m] - x[m - 1]
    fti, fti1, zi, zi1 = q[:, 1:], q[:, :-1], sq[:, 1:], sq[:, :-1]
    out[:, 1:, 0] = fti / hi - zi * hi / 6.0
    out[:, 1:, 1] = fti1 / hi - zi1 * hi / 6.0
    out[:, 1:, 2] = zi / hi
    out[:, 1:, 3] = zi1 / hi
    return out


def _kernels():
    """The compiled kernels (numba is imported, and they are compiled or loaded from its cache, on first use)."""
    global _KERNELS
    if _KERNELS is None:
        from spatialmap.methods import rctd_batch_kernels

        _KERNELS = rctd_batch_kernels
    return _KERNELS


_KERNELS = None


class Model:
    """What every fit reads: counts, nUMI, profiles and the likelihood's spline terms, as the kernels want them."""

    def __init__(self, counts, numi, norm_profiles, terms: np.ndarray, x_vals):
        self.Y = np.ascontiguousarray(counts, dtype=np.float64)
        self.numi = np.asarray(numi, dtype=np.float32)  # rctd-py keeps nUMI in float32
        self.PT = np.ascontiguousarray(np.asarray(norm_profiles, dtype=np.float64).T)  # types x genes
        self.terms = terms
        self.x = np.ascontiguousarray(x_vals, dtype=np.float64)
        self.mtab = grid_index_table()
        self.kval = int(terms.shape[0] - 3)  # the table's largest count (rctd-py: Q_mat.shape[0] - 3)
        self.lam_hi = float(self.x[-1] - 1e-4)
        self.n, self.g = self.Y.shape
        self.k = self.PT.shape[0]

    @classmethod
    def from_tables(cls, counts, numi, norm_profiles, q_mat, sq_mat, x_vals) -> Model:
        """From rctd-py's likelihood table and spline of one sigma."""
        return cls(counts, numi, norm_profiles, spline_terms(q_mat, sq_mat, x_vals), x_vals)


# --------------------------------------------------------------------------- running the fits


def fit_tasks(model: Model, pix: np.ndarray, types: np.ndarray, *, shared: bool, max_iter: int, score: bool,
              what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """IRWLS of every task (location ``pix[i]``, types ``types[i]``): weights, converged, score.

    ``shared``: rctd-py's full-mode arithmetic (``solve_irwls_batch_shared``), else that of
    ``solve_irwls_batch``. ``score``: also the negative log-likelihood of the fitted prediction
    (rctd-py's ``calc_log_likelihood_batch``). Runs in chunks of :data:`CHUNK`, logging progress
    about once a minute.
    """
    kern = _kernels()
    pix = np.ascontiguousarray(pix, dtype=np.int64)
    types = np.ascontiguousarray(types, dtype=np.int64)
    m, k = types.shape
    weights = np.zeros((m, k))
    converged = np.zeros(m, dtype=np.bool_)
    scores = np.zeros(m)
    t0 = last = time.perf_counter()
    for start in range(0, m, CHUNK):
        end = min(start + CHUNK, m)
        kern.fit_many(model.Y, model.numi, model.PT, pix[start:end], types[start:end], shared, max_iter, score,
                      model.terms, model.x, model.mtab, model.kval, model.lam_hi,
                      weights[start:end], converged[start:end], scores[start:end])  # fmt: skip
        now = time.perf_counter()
        if now - last >= PROGRESS_SECONDS and end < m:
            rate = end / (now - t0)
            log.info("RCTD %s: %d of %d fits, %.0f fits/s, about %.0f s left", what, end, m, rate, (m - end) / rate)
            last = now
    log.info("RCTD %s: %d fits of %d type(s) in %.1f s", what, m, k, time.perf_counter() - t0)
    return weights, converged, scores


def full_weights(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Full mode: every location's weights over all types (``run_full_mode``), and convergence."""
    pix = np.arange(model.n, dtype=np.int64)
    types = np.broadcast_to(np.arange(model.k, dtype=np.int64), (model.n, model.k))
    w, conv, _ = fit_tasks(model, pix, types, shared=True, max_iter=FINAL_ITER, score=False, what="full-mode fit")
    return w, conv


def run_full(model: Model, cell_type_names, pixel_mask):
    """rctd-py's ``FullResult`` of full mode."""
    from rctd._types import FullResult

    weights, converged = full_weights(model)
    return FullResult(weights=weights, cell_type_names=cell_type_names, converged=converged, pixel_mask=pixel_mask)


def doublet_candidates(w_full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate types of every location, as ``run_doublet_mode`` picks them.

    Types whose full-mode weight is above 0.01, in type order; none: the first three types;
    one: that type and type 0 (type 1 when it is type 0). Returns a boolean locations x types
    mask and, for the one-candidate case, nothing more: the mask says it all.
    """
    n, k = w_full.shape
    cand = w_full > WEIGHT_THRESHOLD
    count = cand.sum(axis=1)
    cand[count == 0, : min(3, k)] = True
    one = np.flatnonzero(count == 1)
    if len(one):
        only = cand[one].argmax(axis=1)
        cand[one, np.where(only == 0, 1, 0)] = True
    return cand, cand.sum(axis=1)


def _pairs(cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (location, t1 < t2) pair of candidates, locations in order, pairs in rctd-py's order."""
    n, k = cand.shape
    rows, firsts, seconds = [], [], []
    for t1 in range(k):
        for t2 in range(t1 + 1, k):
            both = np.flatnonzero(cand[:, t1] & cand[:, t2])
            rows.append(both)
            firsts.append(np.full(len(both), t1))
            seconds.append(np.full(len(both), t2))
    pix = np.concatenate(rows)
    types = np.column_stack([np.concatenate(firsts), np.concatenate(seconds)])
    order = np.lexsort((types[:, 1], types[:, 0], pix))
    return pix[order], types[order]


def run_doublet(model: Model, cell_type_names, pixel_mask, config):
    """rctd-py's ``DoubletResult`` of doublet mode, every step batched."""
    from rctd._types import DoubletResult

    t0 = time.perf_counter()
    names = list(cell_type_names)
    class_of, user_classes = _classes(names, config)
    w_full, _ = full_weights(model)
    cand, n_cand = doublet_candidates(w_full)
    pair_pix, pair_types = _pairs(cand)
    log.info("RCTD doublet: %d locations, %d candidate pairs, %d singles", model.n, len(pair_pix), int(n_cand.sum()))
    _, _, pair_scores = fit_tasks(model, pair_pix, pair_types, shared=False, max_iter=SCORE_ITER, score=True,
                                  what="pair scores")  # fmt: skip
    single_pix, single_t = np.nonzero(cand)
    _, _, single_scores = fit_tasks(model, single_pix, single_t[:, None], shared=False, max_iter=SCORE_ITER,
                                    score=True, what="singlet scores")  # fmt: skip
    singles = np.full(cand.shape, INF)
    singles[single_pix, single_t] = single_scores
    starts = np.searchsorted(pair_pix, np.arange(model.n + 1))
    out = _kernels().classify_doublets(starts, pair_types, pair_scores, singles, class_of,
                                       float(config.CONFIDENCE_THRESHOLD), float(config.DOUBLET_THRESHOLD))  # fmt: skip
    spot_class, first, second, first_class, second_class, min_score, singlet_score = out
    final_types = np.column_stack([first, second]).astype(np.int64)
    w_final, _, _ = fit_tasks(model, np.arange(model.n), final_types, shared=False, max_iter=FINAL_ITER, score=False,
                              what="final doublet weights")  # fmt: skip
    weights_doublet = w_final / np.maximum(w_final.sum(axis=1, keepdims=True), 1e-10)
    log.info("RCTD doublet mode: %d locations in %.1f s", model.n, time.perf_counter() - t0)
    names_arr = np.array([user_classes[c] for c in names]) if user_classes is not None else None
    return DoubletResult(
        weights=w_full, weights_doublet=weights_doublet, spot_class=spot_class.astype(np.int32),
        first_type=first.astype(np.int32), second_type=second.astype(np.int32), first_class=first_class,
        second_class=second_class, min_score=min_score.astype(np.float32),
        singlet_score=singlet_score.astype(np.float32), cell_type_names=cell_type_names, pixel_mask=pixel_mask,
        first_class_name=names_arr[first] if names_arr is not None else None,
        second_class_name=names_arr[second] if names_arr is not None else None,
    )  # fmt: skip


def _first_per_location(pix: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Index of each location's lowest score (the first in task order on a tie, as rctd-py's strict ``<``)."""
    order = np.lexsort((np.arange(len(pix)), scores, pix))
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = pix[order][1:] != pix[order][:-1]
    return order[keep]


def _forward_selection(model: Model, cand: np.ndarray, config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``run_multi_mode``'s forward selection: each location's types, how many, and its score.

    Round k scores every active location's list plus each remaining candidate (``k`` types,
    25 iterations); the best is added when it lowers the score by more than ``DOUBLET_THRESHOLD``
    (the first type always), else the location stops.
    """
    n, most = model.n, int(config.MAX_MULTI_TYPES)
    types = np.full((n, most), -1, dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    current = np.full(n, INF)
    active = np.ones(n, dtype=bool)
    for k in range(1, most + 1):
        pix, new = np.nonzero(cand & active[:, None])
        if not len(pix):
            break
        task_types = np.column_stack([types[pix, : k - 1], new])
        _, _, scores = fit_tasks(model, pix, task_types, shared=False, max_iter=SCORE_ITER, score=True,
                                 what=f"multi scores, {k} type(s)")  # fmt: skip
        best = _first_per_location(pix, scores)
        where, chosen, score = pix[best], new[best], scores[best]
        gains = ~(score > current[where] - config.DOUBLET_THRESHOLD)
        add = gains | (count[where] == 0)
        types[where[add], k - 1] = chosen[add]
        count[where[add]] += 1
        current[where[add]] = score[add]
        cand[where[add], chosen[add]] = False
        active[:] = False
        active[where[gains]] = True
    return types, count, current


def _confidence(model: Model, cand: np.ndarray, types: np.ndarray, count: np.ndarray, current: np.ndarray, config):
    """``run_multi_mode``'s confidence: a type is unsure when swapping it for a remaining candidate scores
    within ``CONFIDENCE_THRESHOLD`` of the chosen set."""
    conf = np.zeros(types.shape, dtype=bool)
    for k in range(1, types.shape[1] + 1):
        rows = np.flatnonzero(count == k)
        conf[rows, :k] = True
        for i in range(k):
            local, new = np.nonzero(cand[rows])
            if not len(local):
                continue
            pix = rows[local]
            keep = [j for j in range(k) if j != i]
            task_types = np.column_stack([types[pix][:, keep], new])
            _, _, scores = fit_tasks(model, pix, task_types, shared=False, max_iter=SCORE_ITER, score=True,
                                     what=f"multi confidence, {k} type(s)")  # fmt: skip
            unsure = np.unique(pix[scores < current[pix] + config.CONFIDENCE_THRESHOLD])
            conf[unsure, i] = False
    return conf


def run_multi(model: Model, cell_type_names, pixel_mask, config):
    """rctd-py's ``MultiResult`` of multi mode, every step batched."""
    from rctd._types import MultiResult

    t0 = time.perf_counter()
    w_full, _ = full_weights(model)
    cand = w_full > WEIGHT_THRESHOLD
    none = np.flatnonzero(~cand.any(axis=1))
    cand[none, w_full[none].argmax(axis=1)] = True
    types, count, current = _forward_selection(model, cand, config)
    conf = _confidence(model, cand, types, count, current, config)
    sub = np.zeros(types.shape, dtype=np.float32)
    for k in range(1, types.shape[1] + 1):
        rows = np.flatnonzero(count == k)
        if not len(rows):
            continue
        w, _, _ = fit_tasks(model, rows, types[rows, :k], shared=False, max_iter=FINAL_ITER, score=False,
                            what=f"multi final weights, {k} type(s)")  # fmt: skip
        total = w.sum(axis=1, keepdims=True)
        sub[rows, :k] = np.where(total > 0, w / np.where(total > 0, total, 1.0), w)
    log.info("RCTD multi mode: %d locations in %.1f s", model.n, time.perf_counter() - t0)
    return MultiResult(
        weights=w_full, sub_weights=sub, cell_type_indices=types.astype(np.int32), n_types=count.astype(np.int32),
        conf_list=conf, min_score=current.astype(np.float32), cell_type_names=cell_type_names, pixel_mask=pixel_mask,
    )  # fmt: skip


def _classes(names: list[str], config) -> tuple[np.ndarray, dict | None]:
    """Class id of every type (``config.class_df``; None: each type its own class), checked as rctd-py checks it."""
    user = config.class_df
    if user is None:
        return np.arange(len(names), dtype=np.int64), None
    missing = [ct for ct in names if ct not in user]
    if missing:
        raise ValueError(
            f"class_df is missing entries for cell types: {missing}. "
            "Every cell type in the reference must be mapped to a class."
        )
    bad = [k for k, v in user.items() if v is None or (isinstance(v, float) and math.isnan(v))]
    if bad:
        raise ValueError(f"class_df has None/NaN class values for keys: {bad}")
    labels = {c: i for i, c in enumerate(dict.fromkeys(str(user[ct]) for ct in names))}
    return np.array([labels[str(user[ct])] for ct in names], dtype=np.int64), user


def _set_threads() -> int:
    """Numba's threads: torch's (the task's CPUs, set by ``resolve_accelerator``), at most numba's pool."""
    import numba
    import torch

    threads = max(1, min(int(torch.get_num_threads()), int(numba.config.NUMBA_NUM_THREADS)))
    numba.set_num_threads(threads)
    return threads


def fit(rctd_model, mode: str):
    """The result rctd-py's ``run_<mode>_mode`` gives for a fitted ``rctd.RCTD`` object, batched."""
    if mode not in MODES:
        raise ValueError(f"RCTD mode must be one of {', '.join(MODES)}, not '{mode}'")
    if rctd_model.config.dtype != "float64":
        raise ValueError("the batched RCTD fit computes in float64")
    threads = _set_threads()
    log.info("RCTD %s mode: batched fit of %d locations on %d thread(s)", mode, len(rctd_model.nUMI), threads)
    model = Model.from_tables(rctd_model.counts, rctd_model.nUMI, rctd_model.norm_profiles, rctd_model.q_mat,
                              rctd_model.sq_mat, rctd_model.x_vals)  # fmt: skip
    names = rctd_model.reference.cell_type_names
    mask = rctd_model._pixel_mask  # read only: which input spots passed RCTD's filters
    if mode == "full":
        return run_full(model, names, mask)
    if mode == "doublet":
        return run_doublet(model, names, mask, rctd_model.config)
    return run_multi(model, names, mask, rctd_model.config)


def parity(batched, package, mode: str) -> dict:
    """How far a batched result is from rctd-py's own on the same fitted ``rctd.RCTD`` (numbers, not verdicts).

    Every mode: ``locations`` and ``weights_max_diff`` (full-mode weights). Doublet: the share of
    locations with the same ``first_type``, ``second_type`` and ``spot_class``, and the largest
    differences of ``weights_doublet`` and of the pair / singlet scores. Multi: the share with the
    same number of types, the same types (in order), the same first type and confidence flags,
    and the largest ``sub_weights`` difference. Full: the share with the same convergence flag.
    """

    def share(a, b) -> float:
        a, b = np.asarray(a), np.asarray(b)
        same = (a == b) if a.ndim == 1 else (a == b).all(axis=1)
        return float(same.mean()) if len(same) else 1.0

    def diff(a, b) -> float:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return float(np.abs(a - b).max()) if a.size else 0.0

    out = {"locations": int(len(batched.weights)), "weights_max_diff": diff(batched.weights, package.weights)}
    if mode == "full":
        out["converged_same"] = share(batched.converged, package.converged)
    elif mode == "doublet":
        out.update(
            first_type_same=share(batched.first_type, package.first_type),
            second_type_same=share(batched.second_type, package.second_type),
            spot_class_same=share(batched.spot_class, package.spot_class),
            weights_doublet_max_diff=diff(batched.weights_doublet, package.weights_doublet),
            min_score_max_diff=diff(batched.min_score, package.min_score),
            singlet_score_max_diff=diff(batched.singlet_score, package.singlet_score),
        )
    else:
        out.update(
            n_types_same=share(batched.n_types, package.n_types),
            types_same=share(batched.cell_type_indices, package.cell_type_indices),
            first_type_same=share(batched.cell_type_indices[:, 0], package.cell_type_indices[:, 0]),
            conf_same=share(batched.conf_list, package.conf_list),
            sub_weights_max_diff=diff(batched.sub_weights, package.sub_weights),
            min_score_max_diff=diff(batched.min_score, package.min_score),
        )
    return out


SIGMA_START = 100  # rctd-py's choose_sigma starts here (its sigma_init)


def fit_platform_effects(rctd_model) -> None:
    """``rctd.RCTD.fit_platform_effects`` with its sigma search (``rctd._sigma.choose_sigma``) batched.

    rctd-py's own method runs first with ``sigma_override=100`` (every step but the search: gene
    lists, counts_MIN filter, bulk fit, profiles; sigma 100 is in every table the pipeline uses),
    then :func:`choose_sigma` searches as the package does and the table of the sigma chosen is
    set as the package sets it. The search's IRWLS fits (1,000 locations, up to 8 epochs) and its
    likelihood sums (17 sigmas x 5 scale factors over the sampled counts) are the costly part of
    the package's method on a large slide: eager torch there, the batched kernels here.
    """
    from rctd._likelihood import compute_spline_coefficients, load_cached_q_matrices

    if rctd_model.is_normalized:
        return
    rctd_model.fit_platform_effects(sigma_override=SIGMA_START)
    t0 = time.perf_counter()
    cache = load_cached_q_matrices()
    x_vals = cache.pop("X_vals")
    tables = {k.replace("Q_", ""): v for k, v in cache.items()}
    sigma = choose_sigma(
        rctd_model.counts, rctd_model.nUMI, rctd_model.norm_profiles, tables, x_vals, rctd_model.config
    )
    key = str(sigma) if str(sigma) in tables else str(min((int(k) for k in tables), key=lambda s: abs(s - sigma)))
    target = np.float32 if rctd_model.config.dtype == "float32" else np.float64
    rctd_model.sigma = sigma
    rctd_model.q_mat = tables[key].astype(target)
    rctd_model.sq_mat = compute_spline_coefficients(tables[key], x_vals).astype(target)
    log.info(
        "RCTD sigma (batched search, as rctd-py's choose_sigma): %.2f in %.1f s", sigma / 100, time.perf_counter() - t0
    )


# long: rctd._sigma.choose_sigma step by step (its random draws, epochs, window and float32 scores)
def choose_sigma(counts, numi, norm_profiles, tables: dict, x_vals, config) -> int:
    """rctd-py's ``choose_sigma``: the sigma (x100) of its search, with the batched fits and sums.

    Seeded as the package (42): ``N_fit`` locations above ``UMI_min_sigma`` UMIs; each epoch fits
    them in full mode at the current sigma, then scores the fixed prediction (x 0.8..1.2) under the
    sigmas within 8 grid steps, keeping each sigma's best factor; the lowest score moves the search,
    which stops when it stays. Scores are rounded to float32, as the package stores them.
    """
    from rctd._likelihood import compute_spline_coefficients
    from rctd._sigma import SIGMA_ALL

    rng = np.random.default_rng(42)
    numi = np.asarray(numi)
    valid = np.where(numi > config.UMI_min_sigma)[0]
    if len(valid) == 0:
        raise ValueError(f"No pixels found with UMI > {config.UMI_min_sigma}. Try decreasing min_umi.")
    fit_idx = rng.choice(valid, size=min(config.N_fit, len(valid)), replace=False)
    counts = np.asarray(counts[fit_idx], dtype=np.float64)
    profiles = np.asarray(norm_profiles, dtype=np.float64)
    x = np.asarray(x_vals, dtype=np.float64)
    splines: dict[str, np.ndarray] = {}

    def terms(key: str) -> np.ndarray:
        if key not in splines:
            splines[key] = spline_terms(tables[key], compute_spline_coefficients(tables[key], x_vals), x)
        return splines[key]

    mtab, kval, lam_hi = grid_index_table(), int(config.K_val), float(x[-1] - 1e-4)  # K_val: as the package passes it
    factors = np.arange(8, 13, dtype=np.float64) / 10.0
    sigma = SIGMA_START
    for _ in range(config.N_epoch):
        if str(sigma) not in tables:
            sigma = int(SIGMA_ALL[np.argmin(np.abs(SIGMA_ALL - sigma))])
        sub = Model(counts, numi[fit_idx], profiles, terms(str(sigma)), x)
        weights, _ = full_weights(sub)
        prediction = np.maximum((np.clip(weights, 0.0, None) @ profiles.T) * sub.numi[:, None], 1e-4).reshape(-1)
        observed = counts.reshape(-1)
        if prediction.shape[0] > 1_000_000:
            pick = rng.choice(prediction.shape[0], size=1_000_000, replace=False)
            prediction, observed = prediction[pick], observed[pick]
        where = np.flatnonzero(SIGMA_ALL == round(sigma))
        at = int(where[0]) if len(where) else int(np.argmin(np.abs(SIGMA_ALL - round(sigma))))
        candidates = [int(s) for s in SIGMA_ALL[max(0, at - 8) : min(len(SIGMA_ALL), at + 9)] if str(s) in tables]
        if not candidates:
            break
        scores = np.array([min(np.float32(_kernels().neg_log_likelihood(observed, prediction * f, terms(str(s)), x,
                                                                         mtab, kval, lam_hi)) for f in factors)
                           for s in candidates], dtype=np.float32)  # fmt: skip
        previous, sigma = sigma, candidates[int(np.argmin(scores))]
        if sigma == previous:
            break
    return sigma
