"""Marker-based validation: does each cell type's mapped share follow the score of its marker genes?

Per slide, method (the consensus first) and cell type that has a marker set: Spearman's rank
correlation, over the locations the method estimated, between the type's proportion and its marker
score (:mod:`spatialmap.markers.score`). A type whose correlation is below ``min_rho`` is flagged: the
mapping puts the type where its markers are not raised (or the markers are not the reference's type),
which the report shows rather than hides. The bound is a stated threshold, not tuned: a score that
follows the mapped share ranks locations alike (rho > 0); ``min_rho`` = 0.1 leaves room for the
noise of single locations and flags no correlation and anti-correlation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

DEFAULT_MIN_RHO = 0.1
COLUMNS = ["sample", "method", "cell_type", "spearman", "pvalue", "locations", "agrees"]


def read_marker_scores(path, sample: str, locations: pd.Index) -> pd.DataFrame:
    """The slide's marker scores (``<sample>.marker_scores.csv``): locations x cell types, every one of
    ``locations`` present (refused naming the sample otherwise); the label and domain columns dropped."""
    from spatialmap.markers.score import LABEL

    try:
        table = pd.read_csv(path, index_col="location")
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"sample {sample}: cannot read the marker scores {path}: {err}") from None
    table.index = table.index.astype(str)
    missing = pd.Index(locations).astype(str).difference(table.index)
    if len(missing):
        raise ValueError(
            f"sample {sample}: the marker scores {path} have no row for {len(missing)} locations "
            f"(e.g. {', '.join(missing[:3])}): are they another slide's?"
        )
    scores = table.drop(columns=[c for c in (LABEL, "domain") if c in table.columns])
    return scores.reindex(pd.Index(locations).astype(str)).astype(float)


def marker_agreement(
    sample: str, tables: Mapping[str, pd.DataFrame], scores: pd.DataFrame, min_rho: float = DEFAULT_MIN_RHO
) -> pd.DataFrame:
    """One row per method and cell type in both its table and ``scores`` (:data:`COLUMNS`)."""
    from scipy.stats import spearmanr

    if not -1 <= min_rho <= 1:
        raise ValueError(f"the minimum Spearman correlation must be in [-1, 1], got {min_rho}")
    rows = []
    for method, props in tables.items():
        estimated = props.dropna()
        for cell_type in [t for t in props.columns if t in scores.columns]:
            share = estimated[cell_type].to_numpy(dtype=float)
            score = scores.loc[estimated.index, cell_type].to_numpy(dtype=float)
            constant = len(share) < 3 or np.ptp(share) == 0 or np.ptp(score) == 0
            rho, pvalue = (np.nan, np.nan) if constant else spearmanr(share, score)
            rows.append(
                {
                    "sample": sample,
                    "method": method,
                    "cell_type": cell_type,
                    "spearman": float(rho),
                    "pvalue": float(pvalue),
                    "locations": int(len(share)),
                    "agrees": bool(np.isfinite(rho) and rho >= min_rho),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def agreement_summary(table: pd.DataFrame, min_rho: float) -> dict:
    """The slide's numbers for the report: each method's correlations, and the pairs that disagree."""
    summary = {
        method: {str(t): (round(r, 4) if np.isfinite(r) else None) for t, r in zip(part["cell_type"], part["spearman"])}
        for method, part in table.groupby("method", sort=False)
    }
    flagged = table[~table["agrees"]]
    return {
        "marker_agreement": summary,
        "marker_agreement_min_rho": min_rho,
        "marker_disagreements": [f"{m}: {t}" for m, t in zip(flagged["method"], flagged["cell_type"])],
    }


def plot_agreement(sample: str, table: pd.DataFrame, min_rho: float, path) -> None:
    """Methods x cell types heatmap of the correlations; the flagged ones marked with a cross."""
    import matplotlib.pyplot as plt

    from spatialmap import cli

    wide = table.pivot(index="method", columns="cell_type", values="spearman")
    wide = wide.loc[list(dict.fromkeys(table["method"]))]
    fig, ax = plt.subplots(figsize=(1.5 + 0.5 * wide.shape[1], 1.2 + 0.4 * wide.shape[0]))
    image = ax.imshow(wide.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for i, j in zip(*np.nonzero(~(wide.to_numpy(dtype=float) >= min_rho))):
        ax.text(j, i, "x", ha="center", va="center", color="black", fontsize=9)
    ax.set_xticks(range(wide.shape[1]), wide.columns, rotation=90)
    ax.set_yticks(range(wide.shape[0]), wide.index)
    ax.set_title(f"{sample}: Spearman, mapped share vs marker score (x: below {min_rho})", fontsize=9)
    fig.colorbar(image, ax=ax, label="Spearman rho")
    fig.tight_layout()
    with cli.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
