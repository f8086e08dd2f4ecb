"""The one interface every mapping method follows, and what the methods share.

A method is one module of :mod:`spatialmap.methods` that defines

- ``NAME``: its id (``"nnls"``): file names ``<sample>.<NAME>*``, the QC JSON's ``method``;
- ``LABEL``: its display name (``"NNLS"``);
- ``REPORT_COLUMNS``: ``{qc key: description}``, ordered: the scalar QC keys the report's table
  of the method shows (those present in a slide's QC JSON are written into it);
- ``HEADLINE``: one to three of those keys, for the report's general statistics;
- ``run(slide(s), reference or signatures, ..., **settings)``: returns a :class:`MethodResult`
  per slide (cell2location, which maps the slides of a group jointly: one per slide of the group).

Its entry in :mod:`spatialmap.methods.registry` says the rest (label, scope, image, gene minimum,
kinds of location, size limits). Its ``bin/map_<name>.py`` has one shape
(:mod:`spatialmap.methods.script`): the common options, its own, ``run``, then the shared writer
(:func:`write_outputs`, with optional hooks ``annotate_slide``, ``map_title``, ``extra_tables``); a
group method defines ``write_group_outputs`` and ``write_slide_outputs`` instead.

Heavy packages (torch, pyro, rctd, flashdeconv, tangram) are imported inside the functions that
use them, so this module and every method's constants import in the light environment.

The QC JSON of every method and slide (``<sample>.<method>_qc.json``) holds the method's own
numbers plus the fields of :func:`contract_fields`: ``method``, ``sample``, ``label``,
``report_columns``, ``headline`` and ``mean_proportions``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import anndata as ad
import numpy as np
import pandas as pd

from spatialmap import keys
from spatialmap.cli import InputError, atomic_path

log = logging.getLogger("spatialmap.methods")

#: what every method module defines (see the module docstring)
PROTOCOL = ("NAME", "LABEL", "REPORT_COLUMNS", "HEADLINE", "run")
#: ``spot_qc`` status of a location the method fitted (other values: why it was left out)
FITTED = "fitted"


@dataclass
class MethodResult:
    """What one method gives for one slide.

    ``proportions``: fitted locations x cell types, rows sum to 1, index = the slide's obs names
    (``barcode``). ``abundances``: cells per location x type where the method estimates them
    (cell2location: 5% quantile; Tangram: expected cells), else None. ``spot_qc``: every
    location of the slide (slide order), column ``status`` (:data:`FITTED` or why the location
    was left out; a categorical whose categories list the reasons in the order they were
    checked) and any per-location annotation of the method (e.g. RCTD's spot class).
    ``qc``: the method's QC dict (the QC JSON). ``extras``: method-specific outputs (Tangram's
    projected expression and gene scores; cell2location's per-slide AnnData).
    """

    method: str
    sample: str
    proportions: pd.DataFrame
    qc: dict
    abundances: pd.DataFrame | None = None
    spot_qc: pd.DataFrame | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def filtered(self) -> pd.DataFrame:
        """The locations left out, one column ``reason``, in the order the reasons were checked."""
        if self.spot_qc is None:
            return pd.DataFrame({"reason": []}, index=pd.Index([], name="barcode"))
        status = self.spot_qc["status"]
        left = status[status.astype(str) != FITTED]
        if isinstance(status.dtype, pd.CategoricalDtype):
            left = left.iloc[np.argsort(left.cat.codes.to_numpy(), kind="stable")]
        frame = pd.DataFrame({"reason": left.astype(str).to_numpy()}, index=left.index)
        frame.index.name = "barcode"
        return frame


# --------------------------------------------------------------------------- input checks


def sample_name(slide: ad.AnnData, sample: str | None = None) -> str:
    """``sample``, or the slide's single ``obs['sample']`` value, or ``'slide'``."""
    if sample:
        return str(sample)
    if keys.SAMPLE in slide.obs and slide.n_obs:
        names = pd.unique(slide.obs[keys.SAMPLE].astype(str))
        if len(names) == 1:
            return str(names[0])
    return "slide"


def check_labels(reference: ad.AnnData, label_key: str, sample: str, method: str, min_cells: int) -> np.ndarray:
    """Reference labels as strings; InputError on a missing column, NaN, one type or a type too small."""
    if label_key not in reference.obs.columns:
        raise InputError(
            f"sample {sample}: {method}: the reference has no label column '{label_key}' "
            f"(columns: {', '.join(map(str, reference.obs.columns)) or 'none'})"
        )
    labels = reference.obs[label_key]
    if labels.isna().any():
        raise InputError(f"sample {sample}: {method}: {int(labels.isna().sum())} reference cells have no '{label_key}'")
    labels = labels.astype(str).to_numpy()
    sizes = pd.Series(labels).value_counts()
    if len(sizes) < 2:
        raise InputError(f"sample {sample}: {method}: the reference has {len(sizes)} cell type; at least 2 are needed")
    small = sizes[sizes < min_cells].sort_index()
    if len(small):
        listed = ", ".join(f"{k} ({v})" for k, v in small.items())
        raise InputError(
            f"sample {sample}: {method} needs at least {min_cells} reference cells per cell type; "
            f"too few: {listed}. Merge or remove these types, or lower the method's minimum"
        )
    return labels


# --------------------------------------------------------------------------- result helpers


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to sum 1 (all-zero rows stay zero)."""
    total = x.sum(axis=1, keepdims=True)
    return np.divide(x, total, out=np.zeros_like(x, dtype=np.float64), where=total > 0)


def proportions_frame(values: np.ndarray, index, columns) -> pd.DataFrame:
    """Locations x cell types, index named ``barcode``, columns ``cell_type``."""
    return pd.DataFrame(values, index=pd.Index(index, name="barcode"), columns=pd.Index(columns, name="cell_type"))


def spot_status(obs_names, reasons: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """``spot_qc`` of a slide: ``{reason: boolean mask}`` -> status per location (first reason wins).

    The status is a categorical: :data:`FITTED`, then the reasons in the order given.
    """
    obs_names = np.asarray(obs_names)
    status = np.full(len(obs_names), FITTED, dtype=object)
    taken = np.zeros(len(obs_names), dtype=bool)
    for reason, mask in reasons.items():
        mask = np.asarray(mask, dtype=bool) & ~taken
        taken |= mask
        status[mask] = reason
    categories = [FITTED, *[r for r in reasons if r != FITTED]]
    frame = pd.DataFrame({"status": pd.Categorical(status, categories=categories)}, index=obs_names)
    frame.index.name = "barcode"
    return frame


def left_out_by_reason(sample: str, method: str, filtered: pd.DataFrame, n_spots: int) -> dict[str, int]:
    """``{reason: locations}`` of the locations left out, each logged as a warning."""
    counts = filtered["reason"].value_counts().to_dict() if len(filtered) else {}
    for reason, n in counts.items():
        log.warning("sample %s: %s left out %d of %d spots: %s", sample, method, n, n_spots, reason)
    return {str(k): int(v) for k, v in counts.items()}


def package_version(name: str) -> str:
    """Installed version of a distribution, or ``'not installed'``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def settings_dict(**settings: Any) -> dict:
    """Settings as JSON-friendly values."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in settings.items()}


# --------------------------------------------------------------------------- QC JSON


def json_safe(value):
    """NaN / infinities -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def uns_safe(value):
    """As :func:`json_safe`, without the None values h5ad cannot store."""
    value = json_safe(value)
    if isinstance(value, dict):
        return {k: uns_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [uns_safe(v) for v in value if v is not None]
    return value


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def mean_proportions(proportions: pd.DataFrame) -> dict[str, float]:
    """``{cell type: mean proportion over the fitted locations}``."""
    return {str(k): float(v) for k, v in proportions.mean(axis=0).items()}


def contract_fields(method: ModuleType, result: MethodResult, qc: dict | None = None) -> dict:
    """``qc`` (default ``result.qc``) with the fields every method's QC JSON holds.

    ``method``, ``sample``, ``label``, ``report_columns`` (the method's ``REPORT_COLUMNS`` whose
    key ``qc`` holds as a scalar, in order), ``headline`` (its ``HEADLINE``) and
    ``mean_proportions`` (kept where the method already set it). Keys already present keep
    their place and value (``method`` and ``sample`` are checked).
    """
    qc = dict(result.qc if qc is None else qc)
    for key, value in (("method", method.NAME), ("sample", result.sample)):
        if key in qc and str(qc[key]) != str(value):
            raise ValueError(f"QC {key} '{qc[key]}' is not the result's '{value}'")
        qc.setdefault(key, value)
    qc.setdefault("mean_proportions", mean_proportions(result.proportions))
    qc["label"] = method.LABEL
    qc["report_columns"] = {k: d for k, d in method.REPORT_COLUMNS.items() if k in qc and _scalar(qc[k])}
    qc["headline"] = list(method.HEADLINE)
    return qc


def write_qc_json(path: str | os.PathLike, qc: dict) -> Path:
    """Write a QC dict as JSON (NaN as null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(qc), indent=2) + "\n")
    return Path(path)


# --------------------------------------------------------------------------- per-slide outputs


def full_proportions(slide: ad.AnnData, result: MethodResult) -> pd.DataFrame:
    """Proportions for every location of ``slide`` (NaN rows for the locations left out)."""
    unknown = result.proportions.index.difference(slide.obs_names)
    if len(unknown):
        raise ValueError(f"{len(unknown)} result spots are not in the slide (e.g. {unknown[0]})")
    frame = result.proportions.reindex(slide.obs_names)
    frame.index.name = "barcode"
    return frame


def annotate_slide(slide: ad.AnnData, result: MethodResult) -> ad.AnnData:
    """A copy of ``slide`` with the proportions in ``obsm``, location status in ``obs``, QC in ``uns``."""
    method = result.method
    out = slide.copy()
    frame = full_proportions(slide, result)
    frame.columns = frame.columns.astype(str)
    # the methods keys.py names; a method added later gets the same pattern without an entry there
    out.obsm[keys.DECONV_PROPORTIONS.get(method, f"{method}_proportions")] = frame.set_axis(out.obs_names)
    spot_qc = result.spot_qc if result.spot_qc is not None else spot_status(out.obs_names, {})
    spot_qc = spot_qc.reindex(out.obs_names)
    out.obs[keys.DECONV_STATUS.get(method, f"{method}_status")] = pd.Categorical(
        spot_qc["status"].astype(str).to_numpy()
    )
    for column in spot_qc.columns.drop("status"):
        values = spot_qc[column]
        if values.dtype == object or values.isna().any():
            values = pd.Categorical(values.astype(object).where(values.notna(), "filtered").astype(str))
        out.obs[column] = values
    out.uns[keys.UNS_DECONV.get(method, method)] = uns_safe(result.qc)
    return out


def plot_maps(
    slide: ad.AnnData,
    result: MethodResult,
    label: str,
    out_png: str | os.PathLike,
    *,
    max_spots: int = 20_000,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """One map per cell type; above ``max_spots`` locations a seeded sample of them is drawn, larger."""
    from spatialmap.report.plotting import plot_spatial_values

    values = full_proportions(slide, result)
    n = slide.n_obs
    title = title or (
        f"{result.qc.get('sample', '')}: {label} cell-type proportions "
        f"({result.qc.get('spots_fitted', len(result.proportions))} of {n} spots fitted; grey: left out)"
    )
    scale = 1.0
    if n > max_spots:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_spots, replace=False))
        libraries = slide.uns.get(keys.UNS_SPATIAL, {}) or {}
        sized = any((lib.get("scalefactors") or {}).get("spot_diameter_fullres") for lib in libraries.values())
        scale = min(float(np.sqrt(n / max_spots)), 5.0) if sized else 1.0
        slide = slide[keep]
        values = values.iloc[keep]
        title += f"; {max_spots:,} spots drawn"
        log.info("maps: drawing a seeded sample of %d of %d spots", max_spots, n)
    return plot_spatial_values(slide, values, out_png, title, spot_scale=scale)


def write_outputs(
    slide: ad.AnnData,
    result: MethodResult,
    method: ModuleType,
    prefix: str,
    *,
    outdir: str | os.PathLike = ".",
    max_plot_spots: int = 20_000,
    seed: int = 0,
) -> dict[str, Path]:
    """Write ``<prefix>.<NAME>.h5ad``, ``_proportions.csv``, ``_filtered_spots.csv``, ``_maps.png``
    and ``_qc.json`` into ``outdir``; return their paths by kind. The h5ad's ``uns`` holds the
    method's own QC; the JSON adds :func:`contract_fields`.

    A method module may define hooks: ``annotate_slide(slide, result)`` (its own h5ad, instead of
    :func:`annotate_slide`), ``map_title(result)`` (its maps' title) and ``extra_tables(result)``
    (``{suffix: table}``: more ``<prefix>.<NAME><suffix>`` CSVs, e.g. Tangram's expected counts).
    """
    name = method.NAME
    outdir = Path(outdir)
    paths = {
        kind: outdir / f"{prefix}.{name}{suffix}"
        for kind, suffix in (
            ("h5ad", ".h5ad"),
            ("csv", "_proportions.csv"),
            ("filtered", "_filtered_spots.csv"),
            ("png", "_maps.png"),
            ("json", "_qc.json"),
        )
    }
    with atomic_path(paths["csv"]) as tmp:
        result.proportions.rename_axis("barcode").to_csv(tmp, float_format="%.6g")
    with atomic_path(paths["filtered"]) as tmp:
        result.filtered().rename_axis("barcode").to_csv(tmp)
    extra = getattr(method, "extra_tables", None)
    for suffix, table in (extra(result) if extra else {}).items():
        paths[suffix] = outdir / f"{prefix}.{name}{suffix}"
        with atomic_path(paths[suffix]) as tmp:
            table.to_csv(tmp, float_format="%.6g")
    write_qc_json(paths["json"], contract_fields(method, result))
    title = method.map_title(result) if hasattr(method, "map_title") else None
    plot_maps(slide, result, method.LABEL, paths["png"], max_spots=max_plot_spots, seed=seed, title=title)
    annotated = getattr(method, "annotate_slide", annotate_slide)(slide, result)
    with atomic_path(paths["h5ad"]) as tmp:
        annotated.write_h5ad(tmp)
    return paths


# --------------------------------------------------------------------------- slide + reference counts


@dataclass
class Inputs:
    """A slide and reference restricted to their shared genes, checked (RCTD, FlashDeconv, NNLS)."""

    sample: str
    genes: list[str]
    counts: Any  # scipy.sparse.csr_matrix, spots x genes, float64
    ref_counts: Any  # scipy.sparse.csr_matrix, cells x genes, float64
    labels: np.ndarray  # cell type of each reference cell (str)
    cell_types: list[str]  # sorted


def prepare_inputs(
    slide: ad.AnnData, reference: ad.AnnData, label_key: str, *, sample: str | None, method: str, min_cells: int
) -> Inputs:
    """Check the inputs and restrict both to the genes expressed in both.

    InputError naming the sample: no spots or coordinates, unusable labels (:func:`check_labels`),
    no (or fewer than the method's minimum, the registry's ``min_genes``) shared genes.
    """
    import scipy.sparse as sp

    from spatialmap.methods import registry
    from spatialmap.reference import genes as genes_

    name = sample_name(slide, sample)
    if slide.n_obs == 0:
        raise InputError(f"sample {name}: {method}: the slide has no spots")
    if keys.SPATIAL not in slide.obsm:
        raise InputError(f"sample {name}: {method}: the slide has no spot coordinates (obsm['{keys.SPATIAL}'])")
    labels = check_labels(reference, label_key, name, method, min_cells)
    genes = genes_.shared_expressed_genes(slide, reference)
    if not genes:
        raise InputError(
            f"sample {name}: {method}: no gene is shared with the reference (and expressed in both); "
            "check that the slide and the reference name genes the same way"
        )
    minimum = registry.get(method).min_genes
    if len(genes) < minimum:
        raise InputError(
            f"sample {name}: {method}: only {len(genes)} genes are shared with the reference; "
            f"at least {minimum} are needed"
        )
    counts = sp.csr_matrix(slide.X, dtype=np.float64)[:, slide.var_names.get_indexer(genes)]
    ref_counts = sp.csr_matrix(reference.X, dtype=np.float64)[:, reference.var_names.get_indexer(genes)]
    log.info(
        "sample %s: %s: %d spots, %d genes shared with the reference (%d cells, %d types)",
        name,
        method,
        slide.n_obs,
        len(genes),
        reference.n_obs,
        len(set(labels)),
    )
    return Inputs(name, genes, sp.csr_matrix(counts), sp.csr_matrix(ref_counts), labels, sorted(set(labels)))


def type_means(ref_counts, labels: np.ndarray, cell_types: list[str]) -> np.ndarray:
    """Types x genes: mean counts per reference cell of each type."""
    import scipy.sparse as sp

    onehot = sp.csr_matrix((np.ones(len(labels)), (pd.Index(cell_types).get_indexer(labels), np.arange(len(labels)))))
    sums = np.asarray((onehot @ ref_counts).todense())
    sizes = np.asarray(onehot.sum(axis=1)).ravel()
    return sums / sizes[:, None]


def base_qc(inp: Inputs, method: str, spot_qc: pd.DataFrame, device: str, t0: float) -> dict:
    """The QC fields RCTD, FlashDeconv and NNLS share (spots fitted / left out, genes, device)."""
    import time

    n_spots = len(spot_qc)
    filtered = MethodResult(method, inp.sample, pd.DataFrame(), {}, spot_qc=spot_qc).filtered()
    return {
        "sample": inp.sample,
        "method": method,
        "device": device,
        "genes_shared": len(inp.genes),
        "spots_total": int(n_spots),
        "spots_fitted": int(n_spots - len(filtered)),
        "spots_filtered": int(len(filtered)),
        "spots_filtered_by_reason": left_out_by_reason(inp.sample, method, filtered, n_spots),
        "cell_types": list(inp.cell_types),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def finish_qc(qc: dict, proportions: pd.DataFrame, t0: float) -> None:
    """Add the mean proportion per type, a scalar convergence figure, and the total seconds."""
    import time

    qc["mean_proportions"] = mean_proportions(proportions)
    convergence = qc.get("convergence") or {}
    if "converged_fraction" in convergence:
        qc["converged_fraction"] = convergence["converged_fraction"]
    elif "converged" in convergence:
        qc["converged"] = bool(convergence["converged"])
    qc["seconds"] = round(time.perf_counter() - t0, 3)


#: the QC columns the report shows for RCTD, FlashDeconv and NNLS (each adds its own)
COUNT_METHOD_COLUMNS = {
    "device": "device the method ran on",
    "genes_shared": "genes expressed in both the slide and the reference",
    "spots_total": "locations of the slide",
    "spots_fitted": "locations the method fitted",
    "spots_filtered": "locations left out (see spots_filtered_by_reason)",
    "seconds": "wall time of the fit (seconds)",
}
COUNT_METHOD_HEADLINE = ("spots_fitted", "genes_used", "seconds")
