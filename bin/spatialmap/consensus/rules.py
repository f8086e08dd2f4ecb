"""A per-spot, per-type consensus of several methods' cell-type proportions, and where they disagree.

Every method's table is normalised per spot to proportions and restricted to the spots and
cell types all methods report (rows re-normalised). The consensus rules:

* ``mean``: the mean of the methods' proportions (rows still sum to 1).
* ``median``: the per-type median over methods, re-normalised per spot.
* ``trimmed``: per spot, the method farthest (Jensen-Shannon) from the mean of the others is
  left out and the rest averaged (needs 3 methods; the mean otherwise).
* ``drop_worst``: the method whose map reconstructs the slide's own counts worst
  (:func:`reconstruction_fit`) is left out of the mean (needs 3 methods).
* ``weighted``: the mean weighted by how well each method's map reconstructs the slide's counts,
  ``w_m = exp((score_m - best score) / temperature)``.
* ``geometric``: log-linear pooling with the same weights, ``prod_m (p_m + eps)^(w_m / sum w)``
  re-normalised: a type every good method calls absent stays near 0 (a mean spreads it).
* ``spot_weighted``: the mean weighted per spot by how well each method reconstructs that spot.
* ``spot_geometric`` (the pipeline's default): log-linear pooling with those per-spot weights:
  per spot mostly the method that reconstructs it best, and a type the well-fitting methods
  call absent stays near 0.

The reconstruction-based rules need the slide's counts and per-type expression profiles
(signatures). The score of method ``m`` on spot ``s`` is the Pearson r between the observed
log1p counts per 10,000 and those of ``sum_k p[m, s, k] * signature[k]``.

A spot that some method left out (e.g. RCTD's UMI filter) gets the consensus of the methods
that report it. The disagreement score of a spot is the mean, over the methods that report it,
of the Jensen-Shannon divergence (base 2: 0 = identical, 1 = disjoint) between the method's
proportions and the consensus (missing where a single method reports the spot).
Which rule the pipeline uses, and why, is measured in ``tools/BENCHMARKS.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmap.consensus.agreement import align, method_order, normalise_method_table

log = logging.getLogger("spatialmap.consensus.rules")

RULES = ("mean", "median", "trimmed", "drop_worst", "weighted", "geometric", "spot_weighted", "spot_geometric")
NEEDS_COUNTS = ("drop_worst", "weighted", "geometric", "spot_weighted", "spot_geometric")
PER_SPOT = ("spot_weighted", "spot_geometric")  # rules with one weight per method and spot
DEFAULT_RULE = "spot_geometric"  # measured: tools/BENCHMARKS.md, silver standard
DEFAULT_TEMPERATURE = 0.0025  # measured: tools/BENCHMARKS.md, silver standard
GEOMETRIC_EPS = 1e-3


@dataclass
class Stack:
    """Methods' proportions on the union of their spots, shared types: ``values[m, s, k]``.

    ``present[m, s]`` says whether method ``m`` reported spot ``s``; rows of present spots sum
    to 1, absent ones are 0.
    """

    methods: list[str]
    spots: pd.Index
    types: list[str]
    values: np.ndarray
    present: np.ndarray


@dataclass
class Consensus:
    """Consensus proportions (spots x types), per-spot disagreement, rule and method weights."""

    proportions: pd.DataFrame
    disagreement: pd.DataFrame  # columns: disagreement, n_methods, then jsd_<method> per method
    rule: str
    weights: dict[str, float]  # each method's mean share of the consensus
    scores: dict[str, float] = field(default_factory=dict)  # mean reconstruction r (rules that use it)


def stack(tables: Mapping[str, pd.DataFrame], sample: str) -> Stack:
    """Normalise ``{method: spots x types}`` tables (at least 2 methods) into a :class:`Stack`.

    Spots: every spot any method reports (a spot one method filtered out keeps the others'
    estimates); cell types: those every method reports.
    """
    methods = method_order(tables)
    if len(methods) < 2:
        raise ValueError(f"sample {sample}: a consensus needs at least 2 methods, got {', '.join(methods) or 'none'}")
    props = {m: normalise_method_table(tables[m], sample, m) for m in methods}
    align(props, sample)  # checks that some spots and types are shared, logs what is not
    types = [
        str(t) for t in props[methods[0]].columns if all(str(t) in set(map(str, props[m].columns)) for m in methods)
    ]
    spots = pd.Index(list(dict.fromkeys(s for m in methods for s in props[m].index)))
    present = np.stack([spots.isin(props[m].index) for m in methods])
    values = np.stack([props[m].reindex(index=spots, columns=types).fillna(0.0).to_numpy(dtype=float) for m in methods])
    totals = values.sum(axis=2, keepdims=True)
    values = np.divide(values, totals, out=np.full_like(values, 1.0 / len(types)), where=totals > 0)
    values[~present] = 0.0
    missing = (~present).sum(axis=1)
    for method, n in zip(methods, missing):
        if n:
            log.info("sample %s: %d spots without a %s estimate get the other methods' consensus", sample, n, method)
    return Stack(methods, spots, types, values, present)


def jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between distributions along the last axis."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    m = 0.5 * (p + q)

    def _kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * np.log2(a / np.where(b > 0, b, 1.0)), 0.0)
        return terms.sum(axis=-1)

    return np.clip(0.5 * _kl(p, m) + 0.5 * _kl(q, m), 0.0, 1.0)


def _weighted_mean(values: np.ndarray, w: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per spot, the ``w[m, s]``-weighted mean of the methods (the plain mean where all weights are 0)."""
    w = w * present
    w = np.where(w.sum(axis=0, keepdims=True) > 0, w, present.astype(float))
    return np.einsum("ms,msk->sk", w, values) / w.sum(axis=0)[:, None]


def _trimmed(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per spot with 3+ methods, the mean without the method farthest from the others' mean."""
    count = present.sum(axis=0)
    total = values.sum(axis=0, keepdims=True)
    others = (total - values) / np.maximum(count - 1, 1)[None, :, None]
    distance = np.where(present, jsd(values, others), -np.inf)
    keep = present.copy()
    trim = count >= 3
    keep[distance.argmax(axis=0)[trim], np.flatnonzero(trim)] = False
    return _weighted_mean(values, np.ones_like(present, dtype=float), keep)


def combine(
    values: np.ndarray, rule: str = "mean", weights: np.ndarray | None = None, present: np.ndarray | None = None
) -> np.ndarray:
    """Consensus ``(spots, types)`` of ``values[m, s, k]`` with ``rule`` (see the module docstring).

    ``present[m, s]`` marks the spots each method reported (default: all). ``weights`` are
    non-negative, one per method (``weighted``, ``geometric``, ``drop_worst``: the method with the
    smallest weight is left out) or one per method and spot (``spot_weighted``, ``spot_geometric``).
    """
    if rule not in RULES:
        raise ValueError(f"unknown consensus rule '{rule}'; choose from {', '.join(RULES)}")
    n_methods = values.shape[0]
    present = np.ones(values.shape[:2], dtype=bool) if present is None else np.asarray(present, dtype=bool)
    ones = np.ones(present.shape)
    if rule == "mean" or (rule in ("trimmed", "drop_worst") and n_methods < 3):
        return _weighted_mean(values, ones, present)
    if rule == "median":
        masked = np.where(present[:, :, None], values, np.nan)
        return _renormalise(np.nanmedian(masked, axis=0), _weighted_mean(values, ones, present))
    if rule == "trimmed":
        return _trimmed(values, present)
    w = _check_weights(weights, rule, present.shape)
    if rule == "drop_worst":
        w = np.where(np.arange(n_methods) == w[:, 0].argmin(), 0.0, 1.0)[:, None] * ones
    if rule in ("geometric", "spot_geometric"):
        pooled = np.exp(_weighted_mean(np.log(values + GEOMETRIC_EPS), w, present))
        return pooled / pooled.sum(axis=1, keepdims=True)
    return _weighted_mean(values, w, present)


def _check_weights(weights, rule: str, shape: tuple[int, int]) -> np.ndarray:
    """Weights as a ``(methods, spots)`` array; ``ValueError`` when unusable."""
    if weights is None:
        raise ValueError(f"the '{rule}' consensus needs weights from the slide's counts")
    w = np.asarray(weights, dtype=float)
    if w.ndim == 1:
        if w.shape != shape[:1] or w.sum() <= 0:
            raise ValueError(f"consensus weights must be {shape[0]} non-negative numbers, not all zero")
        w = np.broadcast_to(w[:, None], shape)
    if w.shape != shape or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"consensus weights must be non-negative numbers, {shape[0]} per spot")
    return w  # a spot whose weights are all 0 gets the plain mean (_weighted_mean)


def _renormalise(values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    totals = values.sum(axis=-1, keepdims=True)
    return np.where(totals > 0, values / np.where(totals > 0, totals, 1.0), fallback)


def disagreement(values: np.ndarray, consensus: np.ndarray) -> np.ndarray:
    """``(methods, spots)`` Jensen-Shannon divergence of each method's proportions to the consensus."""
    return jsd(values, consensus[None, :, :])


def reconstruction_fit(st: Stack, slide, signatures: pd.DataFrame, block: int = 5000) -> np.ndarray:
    """``(methods, spots)``: how well each method's map reconstructs each spot's own counts.

    For method ``m`` the expected expression of spot ``s`` is ``sum_k p[m, s, k] * signature[k]``;
    the score is the Pearson r, over the genes the slide shares with the signatures, between the
    observed and the expected log1p counts per 10,000 (NaN where ``m`` did not report ``s``).

    Parameters
    ----------
    st
        The methods' proportions (:func:`stack`).
    slide
        AnnData with raw counts in ``X`` holding every spot of ``st.spots``.
    signatures
        Genes x cell types expected counts per cell (``st.types`` among its columns).
    block
        Spots densified at a time.
    """
    missing = [t for t in st.types if t not in set(map(str, signatures.columns))]
    if missing:
        raise ValueError(f"the signatures lack the cell types {', '.join(missing)}")
    absent = st.spots.difference(slide.obs_names)
    if len(absent):
        raise ValueError(f"{len(absent)} mapped spots are not on the slide (e.g. {absent[0]})")
    known = set(signatures.index.astype(str))
    shared = [str(g) for g in slide.var_names if str(g) in known]
    if len(shared) < 10:
        raise ValueError(f"only {len(shared)} genes are shared by the slide and the signatures")
    sub = slide[st.spots, shared]
    sig = signatures.loc[shared, st.types].to_numpy(dtype=float).T  # (k, g)
    fit = np.full(st.present.shape, np.nan)
    for start in range(0, len(st.spots), block):  # dense blocks bound memory on large slides
        rows = slice(start, start + block)
        x = sub.X[rows]
        observed = _log_cp10k(np.asarray(x.todense() if sp.issparse(x) else x, dtype=float))
        for i in range(len(st.methods)):
            fit[i, rows] = _row_pearson(observed, _log_cp10k(st.values[i, rows] @ sig))
    return np.where(st.present, fit, np.nan)


def fit_weights(fit: np.ndarray, rule: str, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Weights from :func:`reconstruction_fit`: ``exp((score - best) / temperature)``.

    Per method (mean score over its spots) for ``weighted``, ``geometric`` and ``drop_worst``;
    per method and spot for ``spot_weighted`` and ``spot_geometric``. The best method (or, per spot, the best of the
    spot's methods) weighs 1; absent and unscorable entries weigh 0.
    """
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    if rule in PER_SPOT:
        score = np.where(np.isfinite(fit), fit, -np.inf)
        best = score.max(axis=0, keepdims=True)
        return np.where(np.isfinite(score) & np.isfinite(best), np.exp((score - best) / temperature), 0.0)
    with np.errstate(invalid="ignore"):
        score = np.nanmean(np.where(np.isfinite(fit), fit, np.nan), axis=1)
    score = np.where(np.isfinite(score), score, np.nanmin(score) if np.isfinite(score).any() else 0.0)
    return np.exp((score - score.max()) / temperature)


def method_scores(fit: np.ndarray, methods: list[str]) -> dict[str, float]:
    """Mean reconstruction score of each method over the spots it reported."""
    with np.errstate(invalid="ignore"):
        return {m: float(np.nanmean(row)) if np.isfinite(row).any() else float("nan") for m, row in zip(methods, fit)}


def _log_cp10k(x: np.ndarray) -> np.ndarray:
    totals = x.sum(axis=1, keepdims=True)
    return np.log1p(np.divide(x, totals, out=np.zeros_like(x), where=totals > 0) * 1e4)


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((ac**2).sum(axis=1) * (bc**2).sum(axis=1))
    return np.divide((ac * bc).sum(axis=1), denom, out=np.full(len(a), np.nan), where=denom > 0)


def slide_consensus(
    tables: Mapping[str, pd.DataFrame],
    sample: str,
    rule: str = "mean",
    *,
    slide=None,
    signatures: pd.DataFrame | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
) -> Consensus:
    """Consensus and disagreement of one slide.

    Parameters
    ----------
    tables
        ``{method: spots x cell types}`` (abundances or proportions; normalised here).
    sample
        Slide name (for messages).
    rule
        One of :data:`RULES`; those in :data:`NEEDS_COUNTS` need ``slide`` and ``signatures``.
    slide, signatures
        The slide's raw counts (AnnData) and genes x types expected counts per cell.
    temperature
        Of the reconstruction weights (:func:`fit_weights`).
    """
    st = stack(tables, sample)
    weights, scores = None, {}
    if rule in NEEDS_COUNTS:
        if slide is None or signatures is None:
            raise ValueError(f"sample {sample}: the '{rule}' consensus needs the slide's counts and the signatures")
        try:
            fit = reconstruction_fit(st, slide, signatures)
        except ValueError as err:
            raise ValueError(f"sample {sample}: {err}") from None
        weights, scores = fit_weights(fit, rule, temperature), method_scores(fit, st.methods)
        log.info("sample %s: reconstruction r per method %s", sample, {m: round(v, 4) for m, v in scores.items()})
    values = combine(st.values, rule, weights, st.present)
    per_method = np.where(st.present, disagreement(st.values, values), np.nan)
    count = st.present.sum(axis=0)
    proportions = pd.DataFrame(values, index=st.spots, columns=st.types)
    score = np.where(count >= 2, np.nansum(per_method, axis=0) / np.maximum(count, 1), np.nan)
    table = pd.DataFrame({"disagreement": score, "n_methods": count}, index=st.spots)
    for i, method in enumerate(st.methods):
        table[f"jsd_{method}"] = per_method[i]
    log.info(
        "sample %s: %s consensus of %s over %d spots; mean disagreement %.3f",
        sample,
        rule,
        ", ".join(st.methods),
        len(st.spots),
        float(np.nanmean(score)) if np.isfinite(score).any() else float("nan"),
    )
    return Consensus(proportions, table, rule, _used_weights(rule, weights, st), scores)


def _used_weights(rule: str, weights, st: Stack) -> dict[str, float]:
    """Each method's share of the consensus, averaged over spots."""
    if rule in NEEDS_COUNTS:
        w = combine_weights = np.asarray(weights, dtype=float)
        if rule == "drop_worst":
            w = (
                np.where(np.arange(len(st.methods)) == combine_weights.argmin(), 0.0, 1.0)
                if len(st.methods) >= 3
                else np.ones(len(st.methods))
            )
        w = np.broadcast_to(w[:, None], st.present.shape) if w.ndim == 1 else w
        w = w * st.present
    else:
        w = st.present.astype(float)
    share = w / np.where(w.sum(axis=0) > 0, w.sum(axis=0), 1.0)
    return {m: float(v) for m, v in zip(st.methods, share.mean(axis=1))}


def summary(sample: str, result: Consensus) -> dict:
    """One row of the consensus summary table."""
    score = result.disagreement["disagreement"]
    jsd_cols = [c for c in result.disagreement.columns if c.startswith("jsd_")]
    mean_jsd = result.disagreement[jsd_cols].mean()
    return {
        "sample": sample,
        "rule": result.rule,
        "methods": ",".join(result.weights),
        "n_methods": len(result.weights),
        "n_spots": int(len(score)),
        "mean_disagreement": float(score.mean()),
        "p90_disagreement": float(score.quantile(0.9)),
        "most_divergent_method": str(mean_jsd.idxmax())[len("jsd_") :],
        "top_type": str(result.proportions.mean().idxmax()),
        "weights": ", ".join(f"{m} {w:.2f}" for m, w in result.weights.items()),
        **{f"reconstruction_r_{m}": v for m, v in result.scores.items()},
    }
