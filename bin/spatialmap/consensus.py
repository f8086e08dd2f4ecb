"""A per-spot, per-type consensus of several methods' cell-type proportions, and where they disagree.

Every method's table is normalised per spot to proportions and restricted to the spots and
cell types all methods report (rows re-normalised). The consensus rules:

* ``mean``: the mean of the methods' proportions (rows still sum to 1).
* ``median``: the per-type median over methods, re-normalised per spot.
* ``trimmed``: per spot, the method farthest (Jensen-Shannon) from the mean of the others is
  left out and the rest averaged (needs 3 methods; the mean otherwise).
* ``drop_worst``: the method whose map reconstructs the slide's own counts worst
  (:func:`reconstruction_scores`) is left out of the mean (needs 3 methods and the counts).
* ``weighted``: the mean weighted by how well each method's map reconstructs the slide's counts
  (:func:`reconstruction_weights`).

A spot that some method left out (e.g. RCTD's UMI filter) gets the consensus of the methods
that report it. The disagreement score of a spot is the mean, over the methods that report it,
of the Jensen-Shannon divergence (base 2: 0 = identical, 1 = disjoint) between the method's
proportions and the consensus (missing where a single method reports the spot).
Which rule the pipeline uses, and why, is measured in ``tools/BENCHMARKS.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .agreement import align, method_order, normalise_method_table

log = logging.getLogger("spatialmap.consensus")

RULES = ("mean", "median", "trimmed", "drop_worst", "weighted")
NEEDS_COUNTS = ("drop_worst", "weighted")


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
    weights: dict[str, float]


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
    types = [str(t) for t in props[methods[0]].columns if all(str(t) in set(map(str, props[m].columns)) for m in methods)]
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


def combine(values: np.ndarray, rule: str = "mean", weights: np.ndarray | None = None,
            present: np.ndarray | None = None) -> np.ndarray:
    """Consensus ``(spots, types)`` of ``values[m, s, k]`` with ``rule`` (see the module docstring).

    ``present[m, s]`` marks the spots each method reported (default: all). ``weights`` (one per
    method, non-negative) are used by ``weighted`` and ``drop_worst`` (the method with the
    smallest weight is left out where another method reported the spot).
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
    if weights is None:
        raise ValueError(f"the '{rule}' consensus needs one weight per method")
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (n_methods,) or (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"consensus weights must be {n_methods} non-negative numbers, not all zero")
    if rule == "drop_worst":
        weights = np.where(np.arange(n_methods) == weights.argmin(), 0.0, 1.0)
    return _weighted_mean(values, weights[:, None] * ones, present)


def _renormalise(values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    totals = values.sum(axis=-1, keepdims=True)
    return np.where(totals > 0, values / np.where(totals > 0, totals, 1.0), fallback)


def disagreement(values: np.ndarray, consensus: np.ndarray) -> np.ndarray:
    """``(methods, spots)`` Jensen-Shannon divergence of each method's proportions to the consensus."""
    return jsd(values, consensus[None, :, :])


def reconstruction_scores(st: Stack, counts, genes: list[str], signatures: pd.DataFrame) -> dict[str, float]:
    """How well each method's map reconstructs the slide's own counts.

    For method ``m``, the expected expression of spot ``s`` is ``sum_k p[m, s, k] * signature[k]``
    (signatures: expected counts per cell of each type); the score is the mean over spots of the
    Pearson r between the observed and expected log1p counts per 10,000, on the shared genes.

    Parameters
    ----------
    st
        The methods' proportions (:func:`stack`).
    counts
        Spots (``st.spots`` order) x ``genes`` raw counts, dense or sparse; each method is scored
        on the spots it reported.
    genes
        Gene names of the columns of ``counts``.
    signatures
        Genes x cell types expected counts per cell (``st.types`` among its columns).
    """
    shared = [g for g in genes if g in set(signatures.index.astype(str))]
    if len(shared) < 10:
        raise ValueError(f"only {len(shared)} genes are shared by the slide and the signatures")
    columns = pd.Index(genes).get_indexer(shared)
    x = counts[:, columns]
    x = np.asarray(x.todense() if sp.issparse(x) else x, dtype=float)
    sig = signatures.loc[shared, st.types].to_numpy(dtype=float).T  # (k, g)
    observed = _log_cp10k(x)
    return {m: _mean_row_pearson(observed[st.present[i]], _log_cp10k(st.values[i, st.present[i]] @ sig))
            for i, m in enumerate(st.methods)}


def reconstruction_weights(scores: Mapping[str, float], methods: list[str], temperature: float = 0.02) -> np.ndarray:
    """Weights ``exp((score - best) / temperature)``: the best-reconstructing method weighs 1."""
    values = np.array([scores[m] for m in methods], dtype=float)
    values = np.where(np.isfinite(values), values, np.nanmin(values) if np.isfinite(values).any() else 0.0)
    return np.exp((values - values.max()) / temperature)


def _log_cp10k(x: np.ndarray) -> np.ndarray:
    totals = x.sum(axis=1, keepdims=True)
    return np.log1p(np.divide(x, totals, out=np.zeros_like(x), where=totals > 0) * 1e4)


def _mean_row_pearson(a: np.ndarray, b: np.ndarray) -> float:
    ac = a - a.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((ac**2).sum(axis=1) * (bc**2).sum(axis=1))
    r = np.divide((ac * bc).sum(axis=1), denom, out=np.full(len(a), np.nan), where=denom > 0)
    return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


def slide_consensus(tables: Mapping[str, pd.DataFrame], sample: str, rule: str = "mean",
                    scores: Mapping[str, float] | None = None) -> Consensus:
    """Consensus and disagreement of one slide.

    Parameters
    ----------
    tables
        ``{method: spots x cell types}`` (abundances or proportions; normalised here).
    sample
        Slide name (for messages).
    rule
        One of :data:`RULES`; ``drop_worst`` and ``weighted`` need ``scores``.
    scores
        ``{method: reconstruction score}`` (:func:`reconstruction_scores`).
    """
    st = stack(tables, sample)
    weights = None
    if rule in NEEDS_COUNTS:
        if scores is None:
            raise ValueError(f"sample {sample}: the '{rule}' consensus needs the slide's counts and the signatures")
        weights = reconstruction_weights(scores, st.methods)
    values = combine(st.values, rule, weights, st.present)
    per_method = np.where(st.present, disagreement(st.values, values), np.nan)
    count = st.present.sum(axis=0)
    proportions = pd.DataFrame(values, index=st.spots, columns=st.types)
    score = np.where(count >= 2, np.nansum(per_method, axis=0) / np.maximum(count, 1), np.nan)
    table = pd.DataFrame({"disagreement": score, "n_methods": count}, index=st.spots)
    for i, method in enumerate(st.methods):
        table[f"jsd_{method}"] = per_method[i]
    used = (weights / weights.sum()) if weights is not None and rule == "weighted" else None
    if rule == "drop_worst" and weights is not None and len(st.methods) >= 3:
        used = np.where(np.arange(len(st.methods)) == weights.argmin(), 0.0, 1.0 / (len(st.methods) - 1))
    if used is None:
        used = np.full(len(st.methods), 1.0 / len(st.methods))
    log.info("sample %s: %s consensus of %s over %d spots; mean disagreement %.3f", sample, rule,
             ", ".join(st.methods), len(st.spots), float(table["disagreement"].mean()))
    return Consensus(proportions, table, rule, {m: float(w) for m, w in zip(st.methods, used)})


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
        "most_divergent_method": str(mean_jsd.idxmax())[len("jsd_"):],
        "top_type": str(result.proportions.mean().idxmax()),
    }
