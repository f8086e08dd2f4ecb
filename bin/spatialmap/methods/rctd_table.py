"""RCTD's likelihood table ("Q matrices") at the speed of its arithmetic.

rctd-py's ``rctd._likelihood.compute_q_matrix(sigma, x_vals, K_val)`` fills, for every count
``k`` in ``0..K_val+2`` and grid point ``x`` of ``build_x_vals()``::

    Q[k, x] = log(max(step * sum_j p_j * exp(-x e^{Y_j}) (x e^{Y_j})^k / k!, 1e-300))

over the 10,001 quadrature points ``Y_j`` (``j * step``, ``step`` 0.004, ``|j| <= 5000``) with
``p_j`` the package's heavy-tailed density at ``Y_j / sigma`` (``_ht_pdf_norm``), one count at a
time: 4.4 million exponentials per count and sigma. This module computes the same sums with

- **shared exponentials**: with ``lam_j = x e^{Y_j}``, term ``(k+1, j)`` is term ``(k, j)`` times
  ``lam_j / (k+1)``: one exponential per quadrature point and grid point, at the first count
  where its term matters, then one multiply and one add per count;
- **only the terms that count**: term ``(k, j)`` is summed only while it is within
  ``exp(-TAIL)`` of the largest term of count ``k``. The largest term of every count comes from
  the upper envelope of the lines ``log term(k, j) = a_j + k b_j - log k!`` (a convex hull over
  ``j``); each point's log-term minus that envelope is concave in ``k``, so the counts where a
  point matters are one interval, found by walking from its peak. Dropped terms are each below
  ``exp(-TAIL)`` (``TAIL`` 40: ``4e-18``) of the largest of their count, at most 10,001 of them:
  the sum moves by less than ``5e-14`` relative, ``5e-14`` on the log scale.

The work, for the default table (126 sigmas, counts 0..1,002, 439 grid points: 55.5 million
entries): 1.63e10 terms that matter (about 290,000 per sigma and grid point, counted over the
whole table), each one multiply-add, and 3.4e8 exponentials, where the package evaluates 5.55e11
exponentials. The summing loop is vectorised by llvm; see tools/BENCHMARKS.md ("RCTD's likelihood
table") for the time against the arithmetic floor.

The grid points (``build_x_vals``) and the density (``_ht_pdf_norm``) are the package's own
functions, called at run time; the quadrature grid's size and step are local variables of the
package's ``_get_q_single`` and are repeated here as :data:`N_Y` and :data:`Y_STEP`, so every
table ``rctd.compute_rctd_q_matrix`` writes is checked against the package's own function on a
few entries (:func:`check_against_package`), and ``tests/unit/test_rctd_table.py`` compares a
committed sample of the package's numbers and calls it live.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np

log = logging.getLogger("spatialmap.methods.rctd_table")

#: rctd-py's quadrature grid: ``Y = np.arange(-N_Y, N_Y + 1) * Y_STEP`` (``_get_q_single``)
N_Y = 5000
Y_STEP = 4e-3
#: terms below ``exp(-TAIL)`` of their count's largest term are left out (see the module docstring)
TAIL = 40.0
#: largest absolute difference on the log scale from the package's function that is accepted
TOLERANCE = 1e-8
#: the floor of the package's ``log(max(., 1e-300))``
LOG_FLOOR = math.log(1e-300)


def quadrature_grid() -> np.ndarray:
    """The package's quadrature points ``Y`` (``_get_q_single``: ``np.arange(-N_Y, N_Y + 1) * Y_STEP``)."""
    return np.arange(-N_Y, N_Y + 1) * Y_STEP


def log_density(sigma: float, y: np.ndarray) -> np.ndarray:
    """``log p_j``: the package's heavy-tailed density at ``Y / sigma``, as ``_get_q_single`` takes it."""
    from rctd._likelihood import _ht_pdf_norm

    return np.log(np.maximum(_ht_pdf_norm(y / sigma) / sigma, 1e-300))


@nb.njit(cache=True, nogil=True)
def _envelope(a, b, n_rows, hull, env):
    """env[k] = max_j (a_j + k b_j) for k < n_rows (b increasing): upper hull, then a pointer."""
    n = 0
    for j in range(a.shape[0]):
        while n >= 2:
            i1 = hull[n - 2]
            i2 = hull[n - 1]
            if (b[i2] - b[i1]) * (a[j] - a[i1]) - (a[i2] - a[i1]) * (b[j] - b[i1]) >= 0.0:
                n -= 1
            else:
                break
        hull[n] = j
        n += 1
    h = 0
    for k in range(n_rows):
        while h + 1 < n and a[hull[h + 1]] + k * b[hull[h + 1]] >= a[hull[h]] + k * b[hull[h]]:
            h += 1
        env[k] = a[hull[h]] + k * b[hull[h]]


@nb.njit(cache=True, nogil=True)
def _intervals(a, b, env, n_rows, tail, klo, khi):
    """Per point j, the counts [klo_j, khi_j] where a_j + k b_j >= env[k] - tail (klo > khi: none)."""
    kp = 0
    lo = 0
    hi = 0
    last = n_rows - 1
    for j in range(a.shape[0]):
        # the count where point j's log-term is closest to the envelope: the envelope's slope passes b_j
        while kp < last and env[kp + 1] - env[kp] < b[j]:
            kp += 1
        if a[j] + kp * b[j] < env[kp] - tail:
            klo[j] = 1
            khi[j] = 0
            continue
        lo = min(max(lo, 0), kp)
        if a[j] + lo * b[j] >= env[lo] - tail:
            while lo > 0 and a[j] + (lo - 1) * b[j] >= env[lo - 1] - tail:
                lo -= 1
        else:
            while a[j] + lo * b[j] < env[lo] - tail:
                lo += 1
        hi = min(max(hi, kp), last)
        if a[j] + hi * b[j] >= env[hi] - tail:
            while hi < last and a[j] + (hi + 1) * b[j] >= env[hi + 1] - tail:
                hi += 1
        else:
            while a[j] + hi * b[j] < env[hi] - tail:
                hi -= 1
        klo[j] = lo
        khi[j] = hi


@nb.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _sweep(a, b, lam, lgam, inv, klo, khi, n_rows, log_step, t, starts, order, wlo, whi, out):
    """out[k] = log(max(step * sum_j term(k, j), 1e-300)), terms started by exp at klo_j, then recurred."""
    n = a.shape[0]
    starts[:] = 0
    for k in range(n_rows + 1):
        wlo[k] = n
        whi[k] = -1
    for j in range(n):
        if klo[j] <= khi[j]:
            starts[klo[j] + 1] += 1
            if j > whi[klo[j]]:
                whi[klo[j]] = j
            if j < wlo[khi[j]]:
                wlo[khi[j]] = j
    for k in range(1, n_rows):
        whi[k] = max(whi[k], whi[k - 1])  # highest point started by count k
    for k in range(n_rows - 2, -1, -1):
        wlo[k] = min(wlo[k], wlo[k + 1])  # lowest point still mattering at count k
    for k in range(n_rows):
        starts[k + 1] += starts[k]
    fill = starts[:n_rows].copy()
    for j in range(n):
        if klo[j] <= khi[j]:
            order[fill[klo[j]]] = j
            fill[klo[j]] += 1
    for k in range(n_rows):
        for s in range(starts[k], starts[k + 1]):
            j = order[s]
            t[j] = math.exp(a[j] + k * b[j] - lgam[k])
        total = 0.0
        step = inv[k + 1]
        tk = t[wlo[k] : whi[k] + 1]
        lk = lam[wlo[k] : whi[k] + 1]
        for m in range(tk.shape[0]):  # from 0: no negative-index check, so llvm vectorises it
            total += tk[m]
            tk[m] *= lk[m] * step
        out[k] = max(math.log(total) + log_step, LOG_FLOOR) if total > 0.0 else LOG_FLOOR


@nb.njit(cache=True, nogil=True)
def _tables(log_p, exp_y, y, x_vals, n_rows, tail, log_step, out, first, stride):
    """out[s, k, i] for the (sigma s, grid point i) tasks first, first + stride, ... (one thread's share)."""
    n_x = x_vals.shape[0]
    n = y.shape[0]
    lgam = np.empty(n_rows)
    inv = np.empty(n_rows + 1)
    for k in range(n_rows):
        lgam[k] = math.lgamma(k + 1.0)
        inv[k + 1] = 1.0 / (k + 1.0)
    inv[0] = 0.0
    a = np.empty(n)
    b = np.empty(n)
    lam = np.empty(n)
    t = np.zeros(n)
    hull = np.empty(n, dtype=np.int64)
    klo = np.empty(n, dtype=np.int64)
    khi = np.empty(n, dtype=np.int64)
    order = np.empty(n, dtype=np.int64)
    starts = np.empty(n_rows + 1, dtype=np.int64)
    wlo = np.empty(n_rows + 1, dtype=np.int64)
    whi = np.empty(n_rows + 1, dtype=np.int64)
    env = np.empty(n_rows)
    row = np.empty(n_rows)
    for task in range(first, log_p.shape[0] * n_x, stride):
        s = task // n_x
        i = task % n_x
        x = x_vals[i]
        log_x = math.log(x)
        for j in range(n):
            lam[j] = exp_y[j] * x
            a[j] = log_p[s, j] - lam[j]
            b[j] = y[j] + log_x
            t[j] = 0.0
        _envelope(a, b, n_rows, hull, env)
        _intervals(a, b, env, n_rows, tail, klo, khi)
        _sweep(a, b, lam, lgam, inv, klo, khi, n_rows, log_step, t, starts, order, wlo, whi, row)
        for k in range(n_rows):
            out[s, k, i] = row[k]


def compute_q_tables(
    sigmas: list[int], k_max: int, *, threads: int = 1, tail: float = TAIL, grid: np.ndarray | None = None
) -> np.ndarray:
    """The likelihood table of every sigma: ``compute_q_matrix(sigma / 100, build_x_vals(), K_val=k_max)``.

    Parameters
    ----------
    sigmas
        Sigmas x100, as rctd-py names its tables (``Q_100`` is sigma 1.0).
    k_max
        rctd-py's ``K_val``: rows for counts ``0..k_max + 2``.
    threads
        Threads sharing the sigmas and grid points.
    tail
        Terms below ``exp(-tail)`` of their count's largest are left out.
    grid
        Indices of the grid points to compute (default: all of ``build_x_vals()``).

    Returns
    -------
    Array ``(len(sigmas), k_max + 3, number of grid points)`` of log-probabilities.
    """
    from rctd._likelihood import build_x_vals

    if k_max < 0:
        raise ValueError(f"the table's largest count must be 0 or more, not {k_max}")
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"sigmas must be positive, not {sigmas}")
    x_vals = build_x_vals() if grid is None else build_x_vals()[np.asarray(grid)]
    y = quadrature_grid()
    log_p = np.stack([log_density(s / 100.0, y) for s in sigmas])
    out = np.empty((len(sigmas), int(k_max) + 3, len(x_vals)))
    args = (log_p, np.exp(y), y, x_vals, int(k_max) + 3, float(tail), math.log(Y_STEP), out)
    threads = max(1, int(threads))
    if threads == 1:
        _tables(*args, 0, 1)
    else:  # the kernel releases the GIL: threads share the (sigma, grid point) tasks
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda first: _tables(*args, first, threads), range(threads)))
    return out


#: entries compared with the package's own function on every table computed: (count, grid point)
CHECK_ENTRIES = ((0, 0), (1, 219), (2, 438), (50, 100), (-1, 0), (-1, 438))


def check_against_package(table: np.ndarray, sigmas: list[int], k_max: int) -> float:
    """Largest difference of a few entries from the package's ``_get_q_single``; ValueError over :data:`TOLERANCE`.

    Cheap (a few of the package's sums): it guards against the package changing its grid or density
    under this module. The entries are counts 0, 1, 2, 50 and the last, at both ends of the grid
    and between, of the smallest and the largest sigma.
    """
    from rctd._likelihood import _get_q_single, build_x_vals

    x_vals = build_x_vals()
    worst = 0.0
    for s_index in sorted({0, len(sigmas) - 1}):
        for k, i in CHECK_ENTRIES:
            k = k % (k_max + 3)
            ref = float(np.log(np.maximum(_get_q_single(x_vals[i : i + 1], k, sigmas[s_index] / 100.0)[0], 1e-300)))
            worst = max(worst, abs(ref - float(table[s_index, k, i])))
    if worst > TOLERANCE:
        raise ValueError(
            f"the RCTD likelihood table differs from rctd-py's compute_q_matrix by {worst:.3g} on the log scale "
            f"(accepted: {TOLERANCE:g}); has rctd-py changed its quadrature? compute it with --engine package"
        )
    return worst
