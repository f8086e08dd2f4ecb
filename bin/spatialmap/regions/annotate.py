"""Each spatial domain's cell type(s): a one-vs-rest ranking per domain and the "elbow-gap" cut.

The annotation rule of the Visium HD workflow the pipeline follows: the locations' scores (here a
cell type's estimated share at each location; marker-gene scores take the same path) are ranked
per domain against the rest of the slide with decoupler's ``rankby_group(method="wilcoxon")`` (a
rank-sum test per score: its mean change, domain minus rest, and the BH-adjusted p-value within the
domain). A domain's candidates are the scores that rise in it (mean change > 0) significantly
(``padj < alpha``); sorted by mean change, they are cut at the largest drop between consecutive
ones, and the domain is named by those above the cut, joined by ``/`` (``Bcell/Plasma``):

- no candidate: ``Unknown`` (nothing is enriched: the domain is not forced into a type);
- one: that one; two: only the first (their one drop is the largest), so a mixture needs three.

``Unassigned`` locations (no domain) are part of every domain's "rest" and get no label.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from spatialmap.io.domains import UNASSIGNED  # the one label of a location without a domain

log = logging.getLogger("spatialmap.regions.annotate")

UNKNOWN = "Unknown"
DEFAULT_ALPHA = 0.05
RANKING_COLUMNS = ["domain", "cell_type", "stat", "meanchange", "pval", "padj"]


def rank_domains(scores: pd.DataFrame, domains: pd.Series) -> pd.DataFrame:
    """decoupler's one-vs-rest Wilcoxon ranking of every score in every domain (``Unassigned`` aside).

    ``scores``: locations x features (no missing value: leave out the locations a method did not
    estimate first); ``domains``: each location's domain. Columns: :data:`RANKING_COLUMNS`.
    """
    import anndata as ad
    import decoupler as dc

    domains = domains.reindex(scores.index).astype(str)
    if not np.isfinite(scores.to_numpy(dtype=float)).all():
        raise ValueError("the scores to rank have missing values: leave out the locations without an estimate")
    named = domains[domains != UNASSIGNED].unique()
    if len(named) < 2:
        return pd.DataFrame(columns=RANKING_COLUMNS)
    data = ad.AnnData(
        X=scores.to_numpy(dtype=float),
        obs=pd.DataFrame({"domain": domains.to_numpy()}, index=scores.index.astype(str)),
        var=pd.DataFrame(index=scores.columns.astype(str)),
    )
    ranked = dc.tl.rankby_group(data, groupby="domain", reference="rest", method="wilcoxon")
    ranked = ranked[ranked["group"].astype(str) != UNASSIGNED]
    ranked = ranked.rename(columns={"group": "domain", "name": "cell_type"})
    ranked["domain"] = ranked["domain"].astype(str)
    return ranked[RANKING_COLUMNS].reset_index(drop=True)


def elbow_gap(meanchange: pd.Series, padj: pd.Series, alpha: float = DEFAULT_ALPHA) -> list[str]:
    """The names above the largest drop of the significant rises (module docstring), best first."""
    keep = (meanchange > 0) & (padj < alpha)
    ordered = meanchange[keep].sort_values(ascending=False, kind="stable")
    if ordered.size < 2:
        return list(ordered.index)
    drops = -np.diff(ordered.to_numpy())
    return list(ordered.index[: int(np.argmax(drops)) + 1])


def annotate_domains(ranking: pd.DataFrame, alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """One row per ranked domain: ``domain``, ``label`` (elbow-gap; ``Unknown``), ``candidates``
    (how many scores rose significantly), ``enriched`` (the candidates with their mean change)."""
    if not 0 < alpha <= 1:
        raise ValueError(f"the significance level must be in (0, 1], got {alpha}")
    rows = []
    for domain, part in ranking.groupby("domain", sort=False):
        part = part.set_index("cell_type")
        chosen = elbow_gap(part["meanchange"], part["padj"], alpha)
        rising = part[(part["meanchange"] > 0) & (part["padj"] < alpha)].sort_values("meanchange", ascending=False)
        rows.append(
            {
                "domain": str(domain),
                "label": "/".join(chosen) if chosen else UNKNOWN,
                "candidates": int(len(rising)),
                "enriched": "; ".join(f"{name} +{value:.3g}" for name, value in rising["meanchange"].items()),
            }
        )
    return pd.DataFrame(rows, columns=["domain", "label", "candidates", "enriched"])
