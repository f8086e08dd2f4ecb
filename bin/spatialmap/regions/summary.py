"""Region-level summaries of one slide: what each spatial domain is made of, per method, and which
locations no single label fits.

Inputs, per slide: its domains (one domain per location, ``Unassigned`` where the domain method
gave none), every method's proportion table (locations x cell types; cell2location's abundances
normalised per location), the methods' consensus and its per-location disagreement (two or more
methods), and CellTypist's per-cell labels (where it ran). Every table must list every location of
the domains table (a location a method left out is a row without values there: it is left out of
that method's means, not an error).

Outputs (:func:`summarise`):

- the **composition**: per domain, method (``consensus`` first) and cell type, the mean proportion
  over the domain's locations that method estimated, and how many those were;
- the **domain proportions**: locations per domain and their share of the slide;
- the **domain annotation**: each domain's cell type(s) from the same source, by the elbow-gap of a
  one-vs-rest Wilcoxon ranking (:mod:`spatialmap.regions.annotate`; ``Unknown`` where nothing rises),
  and the ranking itself;
- the **locations**: per location its domain, its domain's label, the top and second type of the consensus (or of the
  only method), and whether it is **ambiguous** and why. An ambiguous location keeps its numbers but
  gets no single type as its ``label``: ``ambiguous``, or ``A/B`` where the only reason is that its
  two top types are within the margin.

``Unassigned`` locations stay a domain of their own (last): the tables count every location, the
domain fractions sum to 1, and what the domain method could not place stays visible.

Ambiguity, per location (the thresholds are parameters; defaults in :data:`DEFAULT_DISAGREEMENT`,
:data:`DEFAULT_MIXED_MARGIN`):

- ``methods disagree``: the consensus disagreement (mean Jensen-Shannon divergence, base 2, of the
  methods' proportions to the consensus: :mod:`spatialmap.consensus.rules`) above the threshold;
- ``low CellTypist confidence``: CellTypist's own flag (its label's probability below
  ``--celltypist_min_confidence``);
- ``mixed``: the top two types' shares within the margin (0 turns this off).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from spatialmap.consensus.agreement import strip_c2l_prefix
from spatialmap.io.domains import UNASSIGNED  # the one label of a location without a domain
from spatialmap.methods import registry
from spatialmap.regions import annotate, validation

log = logging.getLogger("spatialmap.regions.summary")

CONSENSUS = "consensus"
AMBIGUOUS = "ambiguous"
#: mean JSD to the consensus above which the methods disagree: two methods putting 80% of a location
#: on different types score 0.073, 90% 0.147, a certain and an undecided one (1, 0) / (0.5, 0.5) 0.093
DEFAULT_DISAGREEMENT = 0.1
#: top two types within this share of each other: a mixed location
DEFAULT_MIXED_MARGIN = 0.1
DISAGREE = "methods disagree"
LOW_CONFIDENCE = "low CellTypist confidence"
MIXED = "mixed"
REASONS = (DISAGREE, LOW_CONFIDENCE, MIXED)
#: the regions QC JSON's count of the locations marked for each reason
REASON_KEYS = {
    DISAGREE: "ambiguous_methods_disagree",
    LOW_CONFIDENCE: "ambiguous_low_confidence",
    MIXED: "ambiguous_mixed",
}
NO_ESTIMATE = "no estimate"

COMPOSITION_COLUMNS = ["sample", "domain", "method", "cell_type", "mean_proportion", "locations"]
DOMAIN_COLUMNS = ["sample", "domain", "locations", "fraction"]
LOCATION_COLUMNS = [
    "location",
    "domain",
    "domain_label",
    "source",
    "top_type",
    "top_share",
    "second_type",
    "second_share",
    "disagreement",
    "celltypist_label",
    "celltypist_confidence",
    "ambiguous",
    "reason",
    "label",
]


@dataclass
class Thresholds:
    """When a location is ambiguous (module docstring)."""

    disagreement: float = DEFAULT_DISAGREEMENT
    mixed_margin: float = DEFAULT_MIXED_MARGIN

    def check(self) -> None:
        for name, value in (("disagreement", self.disagreement), ("mixed margin", self.mixed_margin)):
            if not (np.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"the ambiguity {name} must be between 0 and 1, got {value}")


@dataclass
class Summary:
    """One slide's region summaries (module docstring)."""

    composition: pd.DataFrame  # COMPOSITION_COLUMNS
    domains: pd.DataFrame  # DOMAIN_COLUMNS
    annotation: pd.DataFrame  # sample, domain, label, candidates, enriched, source (annotate.annotate_domains)
    ranking: pd.DataFrame  # sample + annotate.RANKING_COLUMNS
    locations: pd.DataFrame  # LOCATION_COLUMNS
    qc: dict
    wide: dict[str, pd.DataFrame]  # per method (consensus first): domains x cell types, for the heatmap
    agreement: pd.DataFrame | None = None  # validation.COLUMNS: with marker scores


# --------------------------------------------------------------------------- inputs


def domain_order(domains: pd.Series) -> list[str]:
    """Domain names in natural order (``D2`` before ``D10``), ``Unassigned`` last."""

    def key(name: str):
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]

    names = sorted({str(d) for d in domains if str(d) != UNASSIGNED}, key=key)
    return names + ([UNASSIGNED] if (domains.astype(str) == UNASSIGNED).any() else [])


def read_domains(frame: pd.DataFrame, sample: str, what: str) -> pd.Series:
    """``location -> domain`` (strings; missing -> ``Unassigned``) of a domains table read with its
    first column (``location``) as the index."""
    if frame.index.name != "location" or "domain" not in frame.columns:
        raise ValueError(
            f"sample {sample}: {what} must have the columns location, domain (got {frame.index.name}, ...)"
        )
    if "sample" in frame.columns and frame["sample"].notna().any() and set(frame["sample"].astype(str)) != {sample}:
        other = ", ".join(sorted(set(frame["sample"].astype(str))))
        raise ValueError(f"sample {sample}: {what} is the domains table of {other}, not of this slide")
    domains = frame["domain"].astype("string").fillna(UNASSIGNED).str.strip().replace("", UNASSIGNED)
    domains.index = frame.index.astype(str)
    if domains.index.has_duplicates:
        raise ValueError(f"sample {sample}: {what} lists some locations more than once")
    if len(domains) == 0:
        raise ValueError(f"sample {sample}: {what} has no location")
    return domains.astype(str).rename("domain")


def check_covers(index: pd.Index, locations: pd.Index, sample: str, what: str) -> None:
    """``what`` (a table indexed by location) is of the slide of the domains table: it shares locations
    with it and names none it lacks. A location it does not list is one it left out (RCTD's UMI
    filter, a cell CellTypist could not label): a row without values, not an error."""
    shared = locations.isin(index)
    if not shared.any():
        raise ValueError(
            f"sample {sample}: {what} shares no location with the domains table: are they the same slide's?"
        )
    extra = index[~index.isin(locations)]
    if len(extra):
        raise ValueError(
            f"sample {sample}: {what} names {len(extra)} locations the domains table of the slide's "
            f"{len(locations)} lacks (e.g. {', '.join(map(str, extra[:3]))}): are they the same slide's?"
        )


def proportions_of(table: pd.DataFrame, locations: pd.Index, sample: str, what: str) -> pd.DataFrame:
    """``table`` (locations x types; abundances or proportions) as proportions on ``locations``: a row
    summing to 0 or without values (the method left it out) becomes a row of NaN."""
    frame = table.copy()
    frame.index = frame.index.astype(str)
    frame.columns = strip_c2l_prefix(frame.columns)
    if frame.shape[1] == 0:
        raise ValueError(f"sample {sample}: {what} has no cell-type column")
    if frame.index.has_duplicates:
        raise ValueError(f"sample {sample}: {what} lists some locations more than once")
    check_covers(frame.index, locations, sample, what)
    frame = frame.reindex(locations).apply(pd.to_numeric, errors="coerce").astype(float)
    if (frame < 0).any().any():
        raise ValueError(f"sample {sample}: {what} has negative values")
    partial = frame.isna().any(axis=1) & frame.notna().any(axis=1)
    if partial.any():
        raise ValueError(f"sample {sample}: {what} has {int(partial.sum())} locations with some values missing")
    totals = frame.sum(axis=1, min_count=1)
    return frame.div(totals.where(totals > 0), axis=0)


def check_methods(methods: list[str], sample: str) -> list[str]:
    """The methods in registry order; unknown or repeated names raise ``ValueError`` naming the sample."""
    if not methods:
        raise ValueError(f"sample {sample}: no method's table was given")
    for method in methods:
        if method not in registry.BY_NAME:
            raise ValueError(f"sample {sample}: unknown method '{method}'; known: {', '.join(registry.NAMES)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"sample {sample}: a method is given twice ({', '.join(methods)})")
    return registry.order(methods)


def celltypist_flags(labels: pd.DataFrame, locations: pd.Index, sample: str) -> pd.DataFrame:
    """CellTypist's ``label``, ``confidence`` and ``low_confidence`` (bool; False where it left a cell
    out) on ``locations``, from its ``<sample>.celltypist_labels.csv`` (read with its index)."""
    needed = ["label", "confidence", "low_confidence"]
    absent = [c for c in needed if c not in labels.columns]
    if absent:
        raise ValueError(f"sample {sample}: CellTypist's labels lack the columns {', '.join(absent)}")
    frame = labels.copy()
    frame.index = frame.index.astype(str)
    check_covers(frame.index, locations, sample, "CellTypist's labels")
    frame = frame.reindex(locations)[needed]
    low = frame["low_confidence"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
    return pd.DataFrame(
        {
            "celltypist_label": frame["label"].astype("string"),
            "celltypist_confidence": pd.to_numeric(frame["confidence"], errors="coerce").astype(float),
            "low_confidence": low.astype(bool),
        },
        index=locations,
    )


# --------------------------------------------------------------------------- summaries


def domain_proportions(sample: str, domains: pd.Series) -> pd.DataFrame:
    """Locations per domain and their share of the slide's locations (:data:`DOMAIN_COLUMNS`)."""
    order = domain_order(domains)
    counts = domains.value_counts().reindex(order, fill_value=0)
    return pd.DataFrame(
        {
            "sample": sample,
            "domain": order,
            "locations": counts.to_numpy(dtype=int),
            "fraction": counts.to_numpy(dtype=float) / len(domains),
        },
        columns=DOMAIN_COLUMNS,
    )


def domain_means(props: pd.DataFrame, domains: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """Domains x types mean proportions over the locations with an estimate, and their count per domain."""
    order = domain_order(domains)
    estimated = props.notna().all(axis=1)
    means = props.groupby(domains, sort=False).mean().reindex(order)
    counts = estimated.groupby(domains, sort=False).sum().reindex(order, fill_value=0).astype(int)
    return means, counts


def composition(sample: str, domains: pd.Series, tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
    """Long table (:data:`COMPOSITION_COLUMNS`) of every table's per-domain means, in the order of
    ``tables``, and ``{method: domains x types}`` of the same numbers."""
    parts, wide = [], {}
    for method, props in tables.items():
        means, counts = domain_means(props, domains)
        wide[method] = means
        long = means.rename_axis(index="domain", columns="cell_type").stack(future_stack=True).rename("mean_proportion")
        long = long.reset_index()
        long.insert(0, "sample", sample)
        long.insert(2, "method", method)
        long["locations"] = long["domain"].map(counts).astype(int)
        parts.append(long)
    return pd.concat(parts, ignore_index=True)[COMPOSITION_COLUMNS], wide


def top_two(props: pd.DataFrame) -> pd.DataFrame:
    """Per location: the top and second type and their shares (NaN where there is no estimate)."""
    values = props.to_numpy(dtype=float)
    ok = np.isfinite(values).all(axis=1)
    filled = np.where(ok[:, None], values, -1.0)
    order = np.argsort(-filled, axis=1, kind="stable")
    types = np.asarray(props.columns, dtype=object)
    rows = np.arange(len(values))
    second_ok = ok & (values.shape[1] > 1)
    second = order[:, 1] if values.shape[1] > 1 else order[:, 0]
    return pd.DataFrame(
        {
            "top_type": np.where(ok, types[order[:, 0]], None),
            "top_share": np.where(ok, filled[rows, order[:, 0]], np.nan),
            "second_type": np.where(second_ok, types[second], None),
            "second_share": np.where(second_ok, filled[rows, second], np.nan),
        },
        index=props.index,
    )


def domain_annotation(
    sample: str, domains: pd.Series, props: pd.DataFrame, source: str, alpha: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the ranking, the labels) of the domains from ``source``'s proportions, over the locations it
    estimated (:mod:`spatialmap.regions.annotate`); a domain none of whose locations was estimated
    is ``Unknown``."""
    estimated = props.dropna()
    ranking = annotate.rank_domains(estimated, domains.reindex(estimated.index))
    named = annotate.annotate_domains(ranking, alpha)
    known = [d for d in domain_order(domains) if d != UNASSIGNED]
    named = named.set_index("domain").reindex(known)
    named["label"] = named["label"].fillna(annotate.UNKNOWN)
    named["candidates"] = named["candidates"].fillna(0).astype(int)
    named["enriched"] = named["enriched"].fillna("")
    named = named.rename_axis("domain").reset_index().assign(source=source)
    named.insert(0, "sample", sample)
    ranking.insert(0, "sample", sample)
    return ranking, named


def location_table(
    domains: pd.Series,
    source: str,
    props: pd.DataFrame,
    disagreement: pd.Series | None,
    celltypist: pd.DataFrame | None,
    thresholds: Thresholds,
    domain_labels: pd.Series | None = None,
) -> pd.DataFrame:
    """Per location (:data:`LOCATION_COLUMNS`): its domain and the domain's label (``domain_labels``;
    none for Unassigned), the top types of ``source``, and whether it is ambiguous, why, and its label
    (the top type, or never one type where it is ambiguous)."""
    labels = domain_labels if domain_labels is not None else pd.Series(dtype=object)
    table = pd.DataFrame(
        {"domain": domains, "domain_label": domains.map(labels), "source": source}, index=domains.index
    )
    table = table.join(top_two(props))
    table["disagreement"] = disagreement.astype(float) if disagreement is not None else np.nan
    flags = {
        DISAGREE: (table["disagreement"] > thresholds.disagreement).to_numpy(),
        LOW_CONFIDENCE: np.zeros(len(table), dtype=bool),
        MIXED: ((table["top_share"] - table["second_share"]) < thresholds.mixed_margin).to_numpy(),
    }
    if celltypist is not None:
        table["celltypist_label"] = celltypist["celltypist_label"]
        table["celltypist_confidence"] = celltypist["celltypist_confidence"]
        flags[LOW_CONFIDENCE] = celltypist["low_confidence"].to_numpy(dtype=bool)
    else:
        table["celltypist_label"], table["celltypist_confidence"] = pd.NA, np.nan
    estimated = table["top_type"].notna().to_numpy()
    flags[MIXED] &= estimated
    reasons = ["; ".join(r for r in REASONS if flags[r][i]) for i in range(len(table))]
    table["ambiguous"] = [bool(r) for r in reasons]
    table["reason"] = [r if r else ("" if ok else NO_ESTIMATE) for r, ok in zip(reasons, estimated)]
    only_mixed = np.asarray(reasons, dtype=object) == MIXED
    label = np.where(table["ambiguous"], AMBIGUOUS, table["top_type"].astype(object))
    both = table["top_type"].astype(str) + "/" + table["second_type"].astype(str)
    table["label"] = np.where(only_mixed, both, label)
    table.loc[~estimated & ~table["ambiguous"], "label"] = None
    table.index.name = "location"
    return table.reset_index()[LOCATION_COLUMNS]


def qc_summary(sample: str, source: str, methods: list[str], locations: pd.DataFrame, thresholds: Thresholds) -> dict:
    """The slide's counts for the report: locations, domains, ambiguous locations and why."""
    n = len(locations)
    domains = locations["domain"]
    ambiguous = locations["ambiguous"].astype(bool)
    reasons = locations["reason"].astype(str)
    qc = {
        "sample": sample,
        "locations": n,
        "domains": int(domains[domains != UNASSIGNED].nunique()),
        "unassigned_locations": int((domains == UNASSIGNED).sum()),
        "source": source,
        "methods": ", ".join(methods),
        "ambiguous_locations": int(ambiguous.sum()),
        "pct_ambiguous": round(100.0 * float(ambiguous.mean()), 2) if n else 0.0,
    }
    for reason, key in REASON_KEYS.items():
        qc[key] = int(reasons.str.contains(reason, regex=False).sum())
    qc["locations_without_estimate"] = int((reasons == NO_ESTIMATE).sum())
    qc["disagreement_threshold"] = thresholds.disagreement
    qc["mixed_margin"] = thresholds.mixed_margin
    counts = domains.value_counts()
    qc["domain_locations"] = {d: int(counts.get(d, 0)) for d in domain_order(domains)}
    return qc


def summarise(
    sample: str,
    domains: pd.Series,
    tables: Mapping[str, pd.DataFrame],
    *,
    consensus: pd.DataFrame | None = None,
    disagreement: pd.Series | None = None,
    celltypist: pd.DataFrame | None = None,
    thresholds: Thresholds | None = None,
    alpha: float = annotate.DEFAULT_ALPHA,
    marker_scores: pd.DataFrame | None = None,
    min_rho: float = validation.DEFAULT_MIN_RHO,
) -> Summary:
    """One slide's region summaries.

    Parameters
    ----------
    sample
        The slide's name (in the tables and messages).
    domains
        ``location -> domain`` (:func:`read_domains`).
    tables
        ``{method: locations x types proportions}`` on ``domains``' locations (:func:`proportions_of`).
    consensus, disagreement
        The methods' consensus (the same shape) and its per-location disagreement; needed with two
        or more methods.
    celltypist
        :func:`celltypist_flags`, where CellTypist ran.
    thresholds
        When a location is ambiguous.
    alpha
        The adjusted p-value under which a type rises in a domain (the domain annotation).
    marker_scores, min_rho
        The slide's marker scores (locations x types), where marker genes were scored: each method's
        shares are checked against them (:mod:`spatialmap.regions.validation`), flagged below ``min_rho``.
    """
    thresholds = thresholds or Thresholds()
    thresholds.check()
    methods = check_methods(list(tables), sample)
    if len(methods) >= 2 and consensus is None:
        raise ValueError(f"sample {sample}: {len(methods)} methods but no consensus of them")
    ordered = ({CONSENSUS: consensus} if consensus is not None else {}) | {m: tables[m] for m in methods}
    long, wide = composition(sample, domains, ordered)
    source = CONSENSUS if consensus is not None else methods[0]
    ranking, named = domain_annotation(sample, domains, ordered[source], source, alpha)
    labels = named.set_index("domain")["label"]
    locations = location_table(domains, source, ordered[source], disagreement, celltypist, thresholds, labels)
    qc = qc_summary(sample, source, methods, locations, thresholds)
    qc["domain_labels"] = dict(zip(named["domain"], named["label"]))
    qc["domain_label_alpha"] = alpha
    agreement = None
    if marker_scores is not None:
        agreement = validation.marker_agreement(sample, ordered, marker_scores, min_rho)
        qc.update(validation.agreement_summary(agreement, min_rho))
    log.info(
        "sample %s: %d domains over %d locations; %d ambiguous (%s)",
        sample,
        qc["domains"],
        qc["locations"],
        qc["ambiguous_locations"],
        ", ".join(f"{k} {v}" for k, v in qc.items() if k.startswith("ambiguous_") and k != "ambiguous_locations"),
    )
    return Summary(long, domain_proportions(sample, domains), named, ranking, locations, qc, wide, agreement)
