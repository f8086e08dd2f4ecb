"""Compiled (numba) kernels of :mod:`spatialmap.methods.rctd_batch`: one RCTD IRWLS fit per task.

Each function ports the rctd-py 0.4 function named in its docstring, operation for operation
(the same formulas in the same order, clamps that keep NaN as torch's do), for one location and
its types instead of a batch. Imported only when a batched fit runs (numba compiles on first use
and caches the result beside this file, or in ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

STEP = 0.3
MIN_CHANGE = 0.001
PSD_EPS = 1e-3
KKT_TOL = 1e-10
INF = 1e18


@njit(cache=True)
def _tmax(a, b):
    """torch.maximum: NaN if either is NaN."""
    if a != a or b != b:
        return math.nan
    return a if a > b else b


@njit(cache=True)
def _clamp_min(a, lo):
    """torch.clamp(a, min=lo): NaN stays NaN."""
    return lo if a < lo else a


@njit(cache=True)
def _spline_cell(y, lam, x, mtab, kval, lam_hi):
    """``calc_q_all``'s look-up: the count's row (capped at ``kval``), the grid interval ``m`` of the
    clamped ``lam`` and its distances to the interval's ends."""
    if y > kval:
        y = kval
    lam = _clamp_min(lam, 1e-4)
    if lam > lam_hi:
        lam = lam_hi
    m = mtab[int(math.floor(math.sqrt(lam / 1e-6)))]
    return int(y), m, lam - x[m - 1], x[m] - lam


@njit(cache=True)
def _derivatives(y, lam, terms, x, mtab, kval, lam_hi):
    """``calc_q_all``'s first and second derivative of log P(y | lam) (its d1_vec, d2_vec)."""
    yi, m, diff1, diff2 = _spline_cell(y, lam, x, mtab, kval, lam_hi)
    zdi, zdi1 = terms[yi, m, 2], terms[yi, m, 3]
    d1 = zdi * (diff1 * diff1) / 2.0 - zdi1 * (diff2 * diff2) / 2.0 + terms[yi, m, 0] - terms[yi, m, 1]
    d2 = zdi * diff1 + zdi1 * diff2
    return d1, d2


@njit(cache=True)
def _log_likelihood(y, lam, terms, x, mtab, kval, lam_hi):
    """``calc_q_all``'s d0_vec: log P(y | lam) on the spline."""
    yi, m, diff1, diff2 = _spline_cell(y, lam, x, mtab, kval, lam_hi)
    zdi, zdi1 = terms[yi, m, 2], terms[yi, m, 3]
    cubic = zdi * (diff1 * diff1 * diff1) / 6.0 + zdi1 * (diff2 * diff2 * diff2) / 6.0
    return cubic + terms[yi, m, 0] * diff1 + terms[yi, m, 1] * diff2


@njit(cache=True)
def _psd(h, k):
    """``_psd_batch`` for one matrix: projected in place (eigenvalues >= 1e-3); returns the largest eigenvalue."""
    if k == 1:
        h[0, 0] = _clamp_min(h[0, 0], PSD_EPS)
        return h[0, 0]
    if k == 2:  # _psd_2x2
        a, b, d = h[0, 0], h[0, 1], h[1, 1]
        half_trace = (a + d) * 0.5
        disc = math.sqrt(((a - d) * 0.5) ** 2 + b * b)
        lam1 = _clamp_min(half_trace - disc, PSD_EPS)
        lam2 = _clamp_min(half_trace + disc, PSD_EPS)
        safe = _clamp_min(disc, 1e-30)
        cos2t = (a - d) * 0.5 / safe
        sin2t = b / safe
        hs = (lam1 + lam2) * 0.5
        hd = (lam2 - lam1) * 0.5
        h[0, 0] = hs + hd * cos2t
        h[0, 1] = hd * sin2t
        h[1, 0] = h[0, 1]
        h[1, 1] = hs - hd * cos2t
        return lam2
    if not np.all(np.isfinite(h)):  # rctd-py's CPU guard: a non-finite matrix becomes eps * I
        h[:, :] = 0.0
        for i in range(k):
            h[i, i] = PSD_EPS
    vals, vecs = np.linalg.eigh(h)
    for i in range(k):
        vals[i] = _clamp_min(vals[i], PSD_EPS)
    scaled = vecs * vals.reshape(1, k)  # (V diag(l)) V'
    h[:, :] = scaled @ vecs.T
    return vals[k - 1]


@njit(cache=True)
def _box_qp_1(dm, dv, lb):
    """``_solve_box_qp_batch_adaptive_jit`` for one variable (rctd-py's path for singlet fits)."""
    x = _tmax(dv / dm, lb)
    for sweep in range(50):
        prev = x
        res = dv - dm * x + dm * x
        x = _tmax(res / dm, lb)
        if (sweep + 1) % 5 == 0 and abs(x - prev) < 1e-4:
            break
    return x


@njit(cache=True)
def _box_qp_2(dm, dv, lb, out):
    """``_solve_box_qp_2``: Cramer's rule, clamp, one correction sweep."""
    d00, d01, d11 = dm[0, 0], dm[0, 1], dm[1, 1]
    det = d00 * d11 - d01 * d01
    sign = 1.0 if det > 0 else (-1.0 if det < 0 else (0.0 if det == 0 else math.nan))
    det = _clamp_min(abs(det), 1e-30) * sign
    x0 = (d11 * dv[0] - d01 * dv[1]) / det
    x1 = (d00 * dv[1] - d01 * dv[0]) / det
    x0 = _tmax(x0, lb[0])
    x1 = _tmax(x1, lb[1])
    x0 = _tmax((dv[0] - d01 * x1) / d00, lb[0])
    x1 = _tmax((dv[1] - d01 * x0) / d11, lb[1])
    out[0] = x0
    out[1] = x1


@njit(cache=True)
def _gauss_seidel(dm, dv, lb, k, x):
    """``_solve_box_qp_batch_adaptive_jit`` for one problem (its batch-wide early stop taken per problem)."""
    for i in range(k):
        x[i] = _tmax(dv[i] / dm[i, i], lb[i])
    prev = np.empty(k)
    for sweep in range(50):
        prev[:] = x
        for i in range(k):
            dx = 0.0
            for j in range(k):
                dx += dm[i, j] * x[j]
            res = dv[i] - dx + dm[i, i] * x[i]
            x[i] = _tmax(res / dm[i, i], lb[i])
        if (sweep + 1) % 5 == 0:
            change = 0.0
            for i in range(k):
                change = max(change, abs(x[i] - prev[i]))
            if change < 1e-4:
                break


@njit(cache=True)
def _lu_solve(a, b, k):
    """Solve a x = b by Gaussian elimination with partial pivoting; (x, ok) (ok False: singular)."""
    a = a.copy()
    x = b.copy()
    for c in range(k):
        p = c
        for r in range(c + 1, k):
            if abs(a[r, c]) > abs(a[p, c]):
                p = r
        if a[p, c] == 0.0 or not math.isfinite(a[p, c]):
            return x, False
        if p != c:
            for j in range(k):
                a[c, j], a[p, j] = a[p, j], a[c, j]
            x[c], x[p] = x[p], x[c]
        for r in range(c + 1, k):
            f = a[r, c] / a[c, c]
            for j in range(c, k):
                a[r, j] -= f * a[c, j]
            x[r] -= f * x[c]
    for c in range(k - 1, -1, -1):
        s = x[c]
        for j in range(c + 1, k):
            s -= a[c, j] * x[j]
        x[c] = s / a[c, c]
    for c in range(k):
        if not math.isfinite(x[c]):
            return x, False
    return x, True


@njit(cache=True)
def _active_set(dm, dv, lb, k, x0):
    """``_active_set_box_qp`` (Lawson-Hanson, Gram form) for one problem, warm-started from ``x0``."""
    c = dv - dm @ lb
    y = np.maximum(x0 - lb, 0.0)
    free = y > 0
    for _ in range(3 * k + 10):
        mask = free.astype(np.float64)
        mm = dm * np.outer(mask, mask)
        for i in range(k):
            mm[i, i] += 1.0 - mask[i]
        s, ok = _lu_solve(mm, c * mask, k)
        if not ok:
            return x0.copy()
        alpha = math.inf
        back = False
        for i in range(k):
            if free[i] and s[i] <= 0:
                back = True
                alpha = min(alpha, y[i] / max(y[i] - s[i], 1e-300))
        if back:
            alpha = min(alpha, 1.0)
            y = y + alpha * (s - y)
            for i in range(k):
                free[i] = free[i] and y[i] > 1e-14
        else:
            y = s.copy()
        for i in range(k):
            if not free[i]:
                y[i] = 0.0
        if back:
            continue
        w = c - dm @ y
        best, j = -math.inf, -1
        for i in range(k):
            if not free[i] and w[i] > KKT_TOL and w[i] > best:
                best, j = w[i], i
        if j < 0:
            break
        free[j] = True
    return y + lb


@njit(cache=True)
def _box_qp(dm, dv, lb, k, out):
    """``_solve_box_qp_batch``: min 0.5 x'Dx - d'x with x >= lb."""
    if k == 1:
        out[0] = _box_qp_1(dm[0, 0], dv[0], lb[0])
        return
    if k == 2:
        _box_qp_2(dm, dv, lb, out)
        return
    _gauss_seidel(dm, dv, lb, k, out)
    g = dm @ out - dv  # _finish_box_qp: exact (active set) unless the KKT conditions hold to 1e-10
    viol = 0.0
    for i in range(k):
        v = abs(g[i]) if out[i] > lb[i] else max(-g[i], 0.0)
        if v != v:
            return
        viol = max(viol, v)
    if viol > KKT_TOL:
        out[:] = _active_set(dm, dv, lb, k, out.copy())


#: fastmath flags of the sums over genes only: vectorised and reassociated, as BLAS sums in rctd-py
SUMS = {"reassoc", "contract"}


@njit(cache=True, fastmath=SUMS)
def _dot(a, b):
    """sum_g a[g] b[g]."""
    total = 0.0
    for g in range(a.shape[0]):
        total += a[g] * b[g]
    return total


@njit(cache=True, fastmath=SUMS)
def _dot3(a, b, c):
    """sum_g (a[g] b[g]) c[g]."""
    total = 0.0
    for g in range(a.shape[0]):
        total += (a[g] * b[g]) * c[g]
    return total


@njit(cache=True)
def _design(numi_d, pt, types, shared):
    """Rows of the task's design: P[:, t] (``shared``, rctd-py's full mode) or S = nUMI P[:, t]."""
    k, n_genes = types.shape[0], pt.shape[1]
    rows = np.empty((k, n_genes))
    for j in range(k):
        for g in range(n_genes):
            rows[j, g] = pt[types[j], g] if shared else numi_d * pt[types[j], g]
    return rows


@njit(cache=True)
def _prediction(rows, sol, numi_d, shared, thr, out):
    """``|S w|`` (or ``|nUMI (P w)|``), at least the threshold: rctd-py's prediction of every gene."""
    k, n_genes = rows.shape
    out[:] = 0.0
    for j in range(k):
        for g in range(n_genes):
            out[g] += rows[j, g] * sol[j]
    for g in range(n_genes):
        pred = abs(numi_d * out[g]) if shared else abs(out[g])
        out[g] = _clamp_min(pred, thr)


# long: one IRWLS fit, rctd-py's iteration written out (prediction, derivatives, gradient and Hessian, step)
@njit(cache=True)
def irwls(yrow, numi, pt, types, shared, max_iter, terms, x, mtab, kval, lam_hi, w):
    """One location's IRWLS over ``types``: ``solve_irwls_batch`` (``shared`` False) or ``_shared``.

    ``w`` receives the weights; returns (converged, iterations). ``numi`` is rctd-py's float32 nUMI.
    """
    k = types.shape[0]
    n_genes = yrow.shape[0]
    numi32 = np.float32(numi)
    thr = float(_clamp_min(np.float32(numi32 * np.float32(1e-7)), np.float32(1e-4)))
    numi_d = float(numi32)
    numi2 = float(np.float32(numi32 * numi32))
    rows = _design(numi_d, pt, types, shared)
    pairs = np.empty((k * (k + 1) // 2, n_genes))  # shared: P_i P_j (rctd-py's P_outer)
    if shared:
        c = 0
        for i in range(k):
            for j in range(i, k):
                for g in range(n_genes):
                    pairs[c, g] = rows[i, g] * rows[j, g]
                c += 1
    pred = np.empty(n_genes)
    d1s = np.empty(n_genes)
    d2s = np.empty(n_genes)
    sol = np.empty(k)
    hess = np.empty((k, k))
    dm = np.empty((k, k))
    dv = np.empty(k)
    lb = np.empty(k)
    delta = np.empty(k)
    for j in range(k):
        w[j] = 1.0 / k
    for it in range(max_iter):
        for j in range(k):
            sol[j] = _clamp_min(w[j], 0.0)
        _prediction(rows, sol, numi_d, shared, thr, pred)
        for g in range(n_genes):
            d1, d2 = _derivatives(yrow[g], pred[g], terms, x, mtab, kval, lam_hi)
            d1s[g] = d1 * numi_d if shared else d1  # shared: grad = -(d1 nUMI) @ P
            d2s[g] = (-d2) * numi2 if shared else -d2  # shared: hess = ((-d2) nUMI^2) @ P_outer
        c = 0
        for i in range(k):
            dv[i] = _dot(d1s, rows[i])  # = -grad
            for j in range(i, k):
                hess[i, j] = _dot(d2s, pairs[c]) if shared else _dot3(rows[i], d2s, rows[j])
                hess[j, i] = hess[i, j]
                c += 1
        norm = _clamp_min(_psd(hess, k), 1e-10)
        for i in range(k):
            for j in range(k):
                dm[i, j] = hess[i, j] / norm + (1e-7 if i == j else 0.0)
            dv[i] = dv[i] / norm  # -grad / norm
            lb[i] = -sol[i]
        _box_qp(dm, dv, lb, k, delta)
        change = 0.0
        for j in range(k):
            new = sol[j] + STEP * delta[j]
            change += abs(new - w[j])
            w[j] = new
        if change <= MIN_CHANGE:
            return True, it + 1
    return False, max_iter


@njit(cache=True)
def score(yrow, numi, pt, types, w, terms, x, mtab, kval, lam_hi):
    """``calc_log_likelihood_batch`` of a fit: -sum log P(y | max(S w, 1e-4)), S = nUMI * P."""
    rows = _design(float(np.float32(numi)), pt, types, False)
    expected = np.empty(yrow.shape[0])
    _prediction(rows, w, 1.0, False, 1e-4, expected)  # sum_j S_j w_j, at least 1e-4 (w >= 0 after a step)
    for g in range(yrow.shape[0]):
        expected[g] = _log_likelihood(yrow[g], expected[g], terms, x, mtab, kval, lam_hi)
    return -_sum(expected)


@njit(cache=True, parallel=True)
def neg_log_likelihood(observed, prediction, terms, x, mtab, kval, lam_hi):
    """-sum log P(observed | prediction) on the spline (``-torch.sum(calc_q_all(...)[0])``), in parallel."""
    total = 0.0
    for i in prange(observed.shape[0]):
        total += _log_likelihood(observed[i], prediction[i], terms, x, mtab, kval, lam_hi)
    return -total


@njit(cache=True, fastmath=SUMS)
def _sum(a):
    total = 0.0
    for g in range(a.shape[0]):
        total += a[g]
    return total


@njit(cache=True, parallel=True)
def fit_many(Y, numi, pt, pix, types, shared, max_iter, want_score, terms, x, mtab, kval, lam_hi, w_out, conv_out,
             score_out):  # fmt: skip
    """Every task's fit (and score), in parallel over the tasks."""
    for i in prange(pix.shape[0]):
        p = pix[i]
        w = np.empty(types.shape[1])
        conv, _ = irwls(Y[p], numi[p], pt, types[i], shared, max_iter, terms, x, mtab, kval, lam_hi, w)
        w_out[i, :] = w
        conv_out[i] = conv
        if want_score:
            score_out[i] = score(Y[p], numi[p], pt, types[i], w, terms, x, mtab, kval, lam_hi)


# long: run_doublet_mode's step 5 (check_pairs_type and the four-branch spot class), one location per loop
@njit(cache=True)
def classify_doublets(starts, pair_types, pair_scores, singles, class_of, confidence, doublet):
    """``run_doublet_mode`` step 5 for every location: spot class, first and second type, flags, scores.

    ``starts``: location i's pairs are ``starts[i]:starts[i + 1]`` of ``pair_types`` / ``pair_scores``
    (candidate order); ``singles``: locations x types singlet scores (1e18 where not a candidate).
    """
    n = starts.shape[0] - 1
    spot_class = np.zeros(n, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    second = np.zeros(n, dtype=np.int64)
    first_class = np.zeros(n, dtype=np.bool_)
    second_class = np.zeros(n, dtype=np.bool_)
    min_score = np.zeros(n)
    singlet_score = np.zeros(n)
    for p in range(n):
        a, b = starts[p], starts[p + 1]
        best = INF
        t1, t2 = pair_types[a, 0], pair_types[a, 1]
        for i in range(a, b):
            if pair_scores[i] < best:
                best = pair_scores[i]
                t1, t2 = pair_types[i, 0], pair_types[i, 1]
        p1, c1, s1 = _check_pairs_type(t1, a, b, pair_types, pair_scores, best, singles[p], class_of, confidence)
        p2, c2, s2 = _check_pairs_type(t2, a, b, pair_types, pair_scores, best, singles[p], class_of, confidence)
        if not c1 and not c2:
            cls, s_score, f_cl, s_cl = 0, best + 2 * doublet, False, False
        elif c1 and not c2:
            cls, s_score, f_cl, s_cl = 3, s1, not p1, False
        elif not c1 and c2:
            t1, t2 = t2, t1
            cls, s_score, f_cl, s_cl = 3, s2, not p2, False
        else:
            cls, s_score, f_cl, s_cl = 2, min(s1, s2), not p1, not p2
            if s2 < s1:
                t1, t2 = t2, t1
                f_cl, s_cl = not p2, not p1
        if s_score - best < doublet:
            cls = 1
        spot_class[p], first[p], second[p] = cls, t1, t2
        first_class[p], second_class[p] = f_cl, s_cl
        min_score[p], singlet_score[p] = best, s_score
    return spot_class, first, second, first_class, second_class, min_score, singlet_score


@njit(cache=True)
def _check_pairs_type(my_type, a, b, pair_types, pair_scores, best, singles, class_of, confidence):
    """``check_pairs_type`` of ``run_doublet_mode``: (all_pairs, all_pairs_class, singlet_score)."""
    all_pairs = True
    all_class = True
    my_class = class_of[my_type]
    others = np.zeros(class_of.shape[0], dtype=np.bool_)  # other types of my class met in a near-best pair
    for i in range(a, b):
        if pair_scores[i] < best + confidence:
            u, v = pair_types[i, 0], pair_types[i, 1]
            if u != my_type and v != my_type:
                all_pairs = False
            u_same = class_of[u] == my_class
            v_same = class_of[v] == my_class
            if not u_same and not v_same:
                all_class = False
            if u_same and u != my_type:
                others[u] = True
            if v_same and v != my_type:
                others[v] = True
    sing = singles[my_type]
    if all_class and not all_pairs:
        for t in range(class_of.shape[0]):
            if others[t]:
                sing = min(sing, singles[t])
    return all_pairs, all_class, sing
