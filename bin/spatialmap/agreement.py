"""Agreement between the cell-type maps of cell2location and Tangram.

For each slide and cell type: the Pearson correlation across spots between
cell2location's 5% quantile abundance, normalised per spot to proportions, and Tangram's
proportions, on the spots and cell types both methods report. Results come as one long
table (``sample, cell_type, pearson_r, n_spots``) and a wide matrix (samples x cell
types) for a heatmap.
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
import pandas as pd

log = logging.getLogger("spatialmap.agreement")

LONG_COLUMNS = ["sample", "cell_type", "pearson_r", "n_spots"]
# Column prefixes cell2location's export_posterior puts before the cell-type names.
C2L_PREFIXES = (
    "q05cell_abundance_w_sf_",
    "q95cell_abundance_w_sf_",
    "meanscell_abundance_w_sf_",
    "q05_cell_abundance_w_sf_",
    "means_cell_abundance_w_sf_",
)


def strip_c2l_prefix(columns: Iterable[str]) -> list[str]:
    """Cell-type names without cell2location's column prefix (when every column has it)."""
    columns = [str(c) for c in columns]
    for prefix in C2L_PREFIXES:
        if columns and all(c.startswith(prefix) for c in columns):
            return [c[len(prefix):] for c in columns]
    return columns


def to_proportions(values: pd.DataFrame, what: str = "values") -> pd.DataFrame:
    """Rows scaled to sum 1.

    Spots whose total is zero or not finite cannot be normalised: they are dropped and
    logged. Negative or missing values raise ``ValueError``.
    """
    if not isinstance(values, pd.DataFrame):
        raise ValueError(f"{what}: expected a table of spots x cell types")
    frame = values.apply(pd.to_numeric, errors="coerce").astype(float)
    if frame.isna().any().any():
        raise ValueError(f"{what}: {int(frame.isna().sum().sum())} missing or non-numeric values")
    if (frame < 0).any().any():
        raise ValueError(f"{what}: negative abundances or proportions")
    totals = frame.sum(axis=1)
    empty = ~(np.isfinite(totals) & (totals > 0))
    if empty.any():
        log.warning("%s: %d spots with a total of zero are left out", what, int(empty.sum()))
        frame, totals = frame.loc[~empty], totals.loc[~empty]
    return frame.div(totals, axis=0)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when fewer than 2 points or either vector is constant."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"vectors of different lengths: {x.size} and {y.size}")
    if x.size < 2 or _constant(x) or _constant(y):
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.clip((xc * yc).sum() / np.sqrt((xc**2).sum() * (yc**2).sum()), -1.0, 1.0))


def _constant(x: np.ndarray) -> bool:
    """Constant up to rounding (e.g. 1/3 computed two ways), or not all finite."""
    if not np.isfinite(x).all():
        return True
    return bool(np.ptp(x) <= 1e-12 * max(np.abs(x).max(), 1e-300))


def slide_agreement(c2l_q05: pd.DataFrame, tangram: pd.DataFrame, sample: str) -> pd.DataFrame:
    """Per cell type, Pearson r between cell2location and Tangram proportions on one slide.

    Parameters
    ----------
    c2l_q05
        Spots x cell types, cell2location's 5% quantile abundance (normalised here to
        proportions per spot).
    tangram
        Spots x cell types, Tangram's proportions (re-normalised per spot).
    sample
        Slide name, written in the ``sample`` column.

    Returns
    -------
    DataFrame
        One row per cell type both methods report: ``sample, cell_type, pearson_r,
        n_spots``. ``pearson_r`` is NaN (logged) when a type is constant over the shared
        spots in either method.
    """
    c2l = c2l_q05.copy()
    c2l.columns = strip_c2l_prefix(c2l.columns)
    c2l = to_proportions(c2l, f"sample {sample}, cell2location")
    tg = to_proportions(tangram, f"sample {sample}, Tangram")
    for name, frame in (("cell2location", c2l), ("Tangram", tg)):
        if not frame.index.is_unique:
            raise ValueError(f"sample {sample}: {name} lists some spots more than once")
    tg.columns = [str(c) for c in tg.columns]

    spots = c2l.index.intersection(tg.index, sort=False)
    if len(spots) == 0:
        raise ValueError(f"sample {sample}: cell2location and Tangram share no spot barcode")
    only = (len(c2l) - len(spots), len(tg) - len(spots))
    if any(only):
        log.info(
            "sample %s: %d spots in both methods (%d only in cell2location, %d only in Tangram)",
            sample, len(spots), *only,
        )
    types = [t for t in c2l.columns if t in set(tg.columns)]
    if not types:
        raise ValueError(f"sample {sample}: cell2location and Tangram share no cell type name")
    for name, frame in (("cell2location", c2l), ("Tangram", tg)):
        missing = [t for t in frame.columns if t not in types]
        if missing:
            log.warning("sample %s: cell types only in %s, not compared: %s", sample, name, ", ".join(missing))

    rows = []
    for cell_type in types:
        r = pearson(c2l.loc[spots, cell_type].to_numpy(), tg.loc[spots, cell_type].to_numpy())
        if np.isnan(r):
            log.warning("sample %s, %s: constant in one method over the %d shared spots: r = NaN", sample, cell_type, len(spots))
        rows.append({"sample": sample, "cell_type": cell_type, "pearson_r": r, "n_spots": len(spots)})
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def combine(tables: Iterable[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One long table from per-slide tables, and the samples x cell types matrix of r."""
    tables = [t for t in tables if len(t)]
    if not tables:
        raise ValueError("no slide has both a cell2location and a Tangram map to compare")
    long = pd.concat(tables, ignore_index=True)[LONG_COLUMNS]
    return long, agreement_matrix(long)


def agreement_matrix(long: pd.DataFrame) -> pd.DataFrame:
    """Samples x cell types matrix of ``pearson_r`` (first-seen order; NaN where absent)."""
    samples = list(dict.fromkeys(long["sample"]))
    types = list(dict.fromkeys(long["cell_type"]))
    wide = long.pivot(index="sample", columns="cell_type", values="pearson_r")
    wide = wide.reindex(index=samples, columns=types)
    wide.index.name = "sample"
    wide.columns.name = None
    return wide


def compare_slides(
    c2l: dict[str, pd.DataFrame], tangram: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Agreement for every slide both methods mapped; a slide in only one is skipped (logged)."""
    tables = []
    for sample in list(dict.fromkeys([*c2l, *tangram])):
        if sample not in c2l or sample not in tangram:
            log.warning(
                "sample %s: mapped only by %s; skipped", sample, "cell2location" if sample in c2l else "Tangram"
            )
            continue
        tables.append(slide_agreement(c2l[sample], tangram[sample], sample))
    long, wide = combine(tables)
    log.info(
        "agreement over %d slides and %d cell types: median r %.3f",
        wide.shape[0], wide.shape[1], float(np.nanmedian(long["pearson_r"])) if long["pearson_r"].notna().any() else float("nan"),
    )
    return long, wide
