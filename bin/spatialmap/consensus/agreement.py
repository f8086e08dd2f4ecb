"""Agreement between the cell-type maps of every pair of mapping methods.

Each method's per-slide table (spots x cell types) is normalised per spot to proportions
(cell2location's 5% quantile abundances included). For each slide, each pair of methods and
each cell type both report: the Pearson correlation across the spots both report. Results come
as one long table (``sample, cell_type, method_a, method_b, pearson_r, n_spots``), a wide matrix
(``<sample>: <a> vs <b>`` rows x cell types) for a heatmap, and a methods x methods matrix of
the median r over slides and cell types.

Each table comes named by its method (the pipeline passes sample and method from ``meta``; file
names are never read for them); the methods write them as ``<sample>.<method>_proportions.csv``,
cell2location as ``<sample>.cell2location_q05.csv`` (:func:`table_suffix`). A method the package
does not know is compared like the others; it comes after the registry's methods
(:func:`spatialmap.methods.registry.order`).
"""

from __future__ import annotations

import itertools
import logging
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from spatialmap.methods import registry

log = logging.getLogger("spatialmap.consensus.agreement")

LONG_COLUMNS = ["sample", "cell_type", "method_a", "method_b", "pearson_r", "n_spots"]
#: per-slide table of cell2location (its 5% quantile abundances); every other method's:
#: ``<sample>.<method>_proportions.csv``
C2L_TABLE_SUFFIX = ".cell2location_q05.csv"
PROPORTIONS_SUFFIX = "_proportions.csv"


def table_suffix(method: str) -> str:
    """File name suffix of a method's per-slide table."""
    return C2L_TABLE_SUFFIX if method == "cell2location" else f".{method}{PROPORTIONS_SUFFIX}"


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
            return [c[len(prefix) :] for c in columns]
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


def normalise_method_table(table: pd.DataFrame, sample: str, method: str) -> pd.DataFrame:
    """A method's table as proportions: prefixes stripped, string labels, rows summing to 1."""
    frame = table.copy()
    frame.columns = strip_c2l_prefix(frame.columns)
    frame.index = frame.index.astype(str)
    if not frame.index.is_unique:
        raise ValueError(f"sample {sample}: {method} lists some spots more than once")
    return to_proportions(frame, f"sample {sample}, {method}")


def align(tables: Mapping[str, pd.DataFrame], sample: str) -> tuple[pd.Index, list[str]]:
    """Spots (first method's order) and cell types (first method's order) every method reports.

    ``tables`` are proportions (:func:`normalise_method_table`). What only some methods report
    is logged; nothing shared raises ``ValueError``.
    """
    methods = list(tables)
    first = tables[methods[0]]
    spots = first.index
    types = [str(t) for t in first.columns]
    for method in methods[1:]:
        spots = spots.intersection(tables[method].index, sort=False)
        types = [t for t in types if t in set(map(str, tables[method].columns))]
    if len(spots) == 0:
        raise ValueError(f"sample {sample}: {', '.join(methods)} share no spot barcode")
    if not types:
        raise ValueError(f"sample {sample}: {', '.join(methods)} share no cell type name")
    for method, frame in tables.items():
        extra_spots = len(frame) - len(spots)
        extra_types = [str(t) for t in frame.columns if str(t) not in types]
        if extra_spots:
            log.info("sample %s: %d spots only in %s are not compared", sample, extra_spots, method)
        if extra_types:
            log.warning("sample %s: cell types only in %s, not compared: %s", sample, method, ", ".join(extra_types))
    return spots, types


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


def method_order(methods: Iterable[str]) -> list[str]:
    """Methods in the registry's (report) order, then any other (a method added later) in name order."""
    return registry.order(methods)


def pair_agreement(a: pd.DataFrame, b: pd.DataFrame, sample: str, method_a: str, method_b: str) -> pd.DataFrame:
    """Per cell type, Pearson r between two methods' proportions on one slide.

    Parameters
    ----------
    a, b
        Spots x cell types of ``method_a`` and ``method_b``, raw (normalised here per spot).
    sample
        Slide name, written in the ``sample`` column.
    method_a, method_b
        Method names, written in the ``method_a`` and ``method_b`` columns.

    Returns
    -------
    DataFrame
        One row per cell type both report, columns :data:`LONG_COLUMNS`; ``pearson_r`` is NaN
        (logged) when a type is constant over the shared spots in either method.
    """
    tables = {
        method_a: normalise_method_table(a, sample, method_a),
        method_b: normalise_method_table(b, sample, method_b),
    }
    spots, types = align(tables, sample)
    rows = []
    for cell_type in types:
        r = pearson(
            tables[method_a].loc[spots, cell_type].to_numpy(), tables[method_b].loc[spots, cell_type].to_numpy()
        )
        if np.isnan(r):
            log.warning(
                "sample %s, %s vs %s, %s: constant in one method over the %d shared spots: r = NaN",
                sample,
                method_a,
                method_b,
                cell_type,
                len(spots),
            )
        rows.append(
            {
                "sample": sample,
                "cell_type": cell_type,
                "method_a": method_a,
                "method_b": method_b,
                "pearson_r": r,
                "n_spots": len(spots),
            }
        )
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def slide_agreement(tables: Mapping[str, pd.DataFrame], sample: str) -> pd.DataFrame:
    """Agreement of every pair of methods on one slide (``{method: table}``, at least 2)."""
    methods = method_order(tables)
    if len(methods) < 2:
        raise ValueError(f"sample {sample}: agreement needs at least 2 methods, got {', '.join(methods) or 'none'}")
    pairs = [pair_agreement(tables[a], tables[b], sample, a, b) for a, b in itertools.combinations(methods, 2)]
    return pd.concat(pairs, ignore_index=True)[LONG_COLUMNS]


def agreement_matrix(long: pd.DataFrame) -> pd.DataFrame:
    """``<sample>: <a> vs <b>`` rows x cell types matrix of ``pearson_r`` (first-seen order)."""
    labels = long["sample"].astype(str) + ": " + long["method_a"] + " vs " + long["method_b"]
    frame = long.assign(slide_pair=labels)
    rows = list(dict.fromkeys(labels))
    types = list(dict.fromkeys(long["cell_type"]))
    wide = frame.pivot(index="slide_pair", columns="cell_type", values="pearson_r").reindex(index=rows, columns=types)
    wide.index.name = "slide_pair"
    wide.columns.name = None
    return wide


def pair_matrix(long: pd.DataFrame) -> pd.DataFrame:
    """Methods x methods: median r over slides and cell types (1 on the diagonal, symmetric)."""
    methods = method_order([*long["method_a"], *long["method_b"]])
    matrix = pd.DataFrame(np.eye(len(methods)), index=methods, columns=methods)
    for (a, b), group in long.groupby(["method_a", "method_b"], sort=False):
        r = group["pearson_r"].dropna()
        matrix.loc[a, b] = matrix.loc[b, a] = float(r.median()) if len(r) else np.nan
    matrix.index.name = "method"
    return matrix


def compare_slides(tables: Mapping[str, Mapping[str, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Agreement of every pair of methods on every slide that two or more methods mapped.

    Parameters
    ----------
    tables
        ``{sample: {method: spots x cell types}}``; a slide with a single method is skipped (logged).

    Returns
    -------
    ``(long, matrix, pairs)``: see :func:`slide_agreement`, :func:`agreement_matrix`, :func:`pair_matrix`.
    """
    parts = []
    for sample, by_method in tables.items():
        if len(by_method) < 2:
            log.warning("sample %s: mapped only by %s; skipped", sample, ", ".join(by_method) or "no method")
            continue
        parts.append(slide_agreement(by_method, sample))
    if not parts:
        raise ValueError("no slide was mapped by two or more methods: nothing to compare")
    long = pd.concat(parts, ignore_index=True)[LONG_COLUMNS]
    r = long["pearson_r"]
    log.info(
        "agreement over %d slides, %d method pairs: median r %.3f",
        long["sample"].nunique(),
        long[["method_a", "method_b"]].drop_duplicates().shape[0],
        float(r.median()) if r.notna().any() else float("nan"),
    )
    return long, agreement_matrix(long), pair_matrix(long)
