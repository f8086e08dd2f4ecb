"""Spot quality control: per-spot metrics, mitochondrial gene removal, spot filters.

Mitochondrial transcripts mostly report cell stress and damage, not cell type, so the
pipeline takes them out of ``X`` before mapping but keeps their counts in
``obsm['MT']`` (spots x MT genes) for the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from spatialmap import keys
from spatialmap.cli import InputError

log = logging.getLogger(__name__)

QC_COLUMNS = (keys.TOTAL_COUNTS, keys.N_GENES, keys.MT_COUNTS, keys.PCT_MT)
MAX_PLOTTED_SPOTS = 100_000  # QC maps of larger slides (Visium HD bins) draw a seeded sample


def read_gene_list(path: str | Path) -> list[str]:
    """Genes of a text file, one per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the gene list {path} does not exist")
    genes = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            genes.append(line)
    if not genes:
        raise InputError(f"the gene list {path} names no gene")
    return genes


def find_mt_genes(
    var_names: Iterable[str],
    gene_symbols: Iterable[str] | None = None,
    mt_genes: Iterable[str] | None = None,
    *,
    gene_ids: Iterable[str] | None = None,
    prefix: str = "MT-",
) -> np.ndarray:
    """Which genes are mitochondrial.

    Parameters
    ----------
    var_names
        Gene names of the slide (``adata.var_names``).
    gene_symbols
        Gene symbols to test for the prefix when ``var_names`` are not symbols
        (e.g. Ensembl IDs); defaults to ``var_names``.
    mt_genes
        An explicit list of mitochondrial genes. When given, a gene is mitochondrial when
        its name, symbol or ID is in the list (case-insensitive) and the prefix is ignored.
    gene_ids
        Gene IDs (``adata.var['gene_ids']``) also matched against ``mt_genes``.
    prefix
        Case-insensitive symbol prefix: ``MT-`` matches human ``MT-CO1`` and mouse
        ``mt-Co1``. An empty prefix marks no gene.

    Returns
    -------
    numpy.ndarray
        Boolean mask over the genes.
    """
    names = pd.Index([str(v) for v in var_names])
    if mt_genes is not None:
        wanted = {str(g).strip().casefold() for g in mt_genes if str(g).strip()}
        if not wanted:
            raise InputError("the list of mitochondrial genes is empty")
        columns = [names]
        for extra in (gene_symbols, gene_ids):
            if extra is not None:
                extra = pd.Index([str(v) for v in extra])
                if len(extra) != len(names):
                    raise ValueError("gene symbols / IDs must have one entry per gene")
                columns.append(extra)
        mask = np.zeros(len(names), dtype=bool)
        found: set[str] = set()
        for column in columns:
            folded = column.str.casefold()
            hit = folded.isin(wanted)
            mask |= np.asarray(hit)
            found.update(folded[hit])
        absent = sorted(wanted - found)
        if absent:
            log.warning(
                "%d of the %d listed mitochondrial genes are not in the data (e.g. %s)",
                len(absent),
                len(wanted),
                ", ".join(absent[:5]),
            )
        return mask
    symbols = names if gene_symbols is None else pd.Index([str(v) for v in gene_symbols])
    if len(symbols) != len(names):
        raise ValueError("gene symbols must have one entry per gene")
    if not prefix:
        return np.zeros(len(names), dtype=bool)
    return np.asarray(symbols.str.casefold().str.startswith(prefix.casefold()), dtype=bool)


def _row_sums(x) -> np.ndarray:
    return np.asarray(x.sum(axis=1), dtype=np.float64).ravel()


def compute_qc(adata: ad.AnnData, mt_mask: np.ndarray | None = None) -> ad.AnnData:
    """Per-spot QC metrics on all genes, before any gene is removed.

    Parameters
    ----------
    adata
        Slide with raw counts in ``X``; not modified.
    mt_mask
        Boolean mask of the mitochondrial genes; by default genes whose name starts with
        ``MT-`` (any case).

    Returns
    -------
    AnnData
        A copy with ``obs`` columns ``total_counts``, ``n_genes_by_counts``,
        ``total_counts_mt`` and ``pct_counts_mt`` (0 for a spot without counts).
    """
    if mt_mask is None:
        mt_mask = find_mt_genes(adata.var_names)
    mt_mask = _check_mask(adata, mt_mask)
    out = adata.copy()
    x = out.X
    total = _row_sums(x)
    if sparse.issparse(x):
        n_genes = np.asarray((x > 0).sum(axis=1)).ravel()
    else:
        n_genes = (np.asarray(x) > 0).sum(axis=1)
    mt = _row_sums(x[:, mt_mask]) if mt_mask.any() else np.zeros(out.n_obs)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(total > 0, 100.0 * mt / total, 0.0)
    out.obs[keys.TOTAL_COUNTS] = total
    out.obs[keys.N_GENES] = n_genes.astype(np.int64)
    out.obs[keys.MT_COUNTS] = mt
    out.obs[keys.PCT_MT] = pct
    return out


def _check_mask(adata: ad.AnnData, mask) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (adata.n_vars,):
        raise ValueError(f"the gene mask must be {adata.n_vars} booleans, got {mask.dtype} of shape {mask.shape}")
    return mask


def remove_mt_genes(adata: ad.AnnData, mask: np.ndarray) -> ad.AnnData:
    """Move the mitochondrial genes out of ``X``.

    Parameters
    ----------
    adata
        Slide; not modified.
    mask
        Boolean mask of the genes to move (see :func:`find_mt_genes`).

    Returns
    -------
    AnnData
        A new object without those genes; their counts are in ``obsm['MT']``, a
        DataFrame of spots x removed genes (columns named by gene). Everything else,
        including the counts of the other genes, is unchanged.
    """
    mask = _check_mask(adata, mask)
    mt_names = adata.var_names[mask]
    x_mt = adata.X[:, mask]
    x_mt = x_mt.toarray() if sparse.issparse(x_mt) else np.asarray(x_mt)
    out = adata[:, ~mask].copy()
    out.obsm[keys.MT] = pd.DataFrame(x_mt, index=out.obs_names.copy(), columns=pd.Index(mt_names, dtype=str))
    return out


def filter_spots(
    adata: ad.AnnData,
    min_counts: float | None = None,
    min_genes: int | None = None,
    max_pct_mt: float | None = None,
) -> ad.AnnData:
    """Keep the spots that pass the QC thresholds; all genes are kept.

    Uses the ``obs`` columns of :func:`compute_qc` (counted on all genes, MT included).

    Parameters
    ----------
    adata
        Slide after :func:`compute_qc`; not modified.
    min_counts
        Minimum UMIs per spot; 0 or None: off.
    min_genes
        Minimum detected genes per spot; 0 or None: off.
    max_pct_mt
        Maximum % of counts in mitochondrial genes; None or 100: off.

    Returns
    -------
    AnnData
        A copy holding the passing spots.

    Raises
    ------
    InputError
        When a threshold is out of range or no spot passes.
    """
    keep = spots_passing(adata, min_counts, min_genes, max_pct_mt)
    if not keep.any():
        sample = _sample_of(adata)
        raise InputError(
            f"sample {sample}: no spot passes the QC filters ({_describe_filters(min_counts, min_genes, max_pct_mt)}; "
            f"{adata.n_obs} spots in tissue, median {np.median(adata.obs[keys.TOTAL_COUNTS]):.0f} UMIs, "
            f"{np.median(adata.obs[keys.N_GENES]):.0f} genes, {np.median(adata.obs[keys.PCT_MT]):.1f}% MT per spot)"
        )
    return adata[keep].copy()


def spots_passing(
    adata: ad.AnnData,
    min_counts: float | None = None,
    min_genes: int | None = None,
    max_pct_mt: float | None = None,
) -> np.ndarray:
    """Boolean mask of the spots passing the thresholds of :func:`filter_spots`."""
    missing = [c for c in QC_COLUMNS if c not in adata.obs]
    if missing:
        raise ValueError(f"the QC metrics {', '.join(missing)} are missing; run compute_qc first")
    for name, value in (("min_counts", min_counts), ("min_genes", min_genes)):
        if value is not None and (not np.isfinite(value) or value < 0):
            raise InputError(f"{name} must be 0 or more, got {value}")
    if max_pct_mt is not None and not 0 <= max_pct_mt <= 100:
        raise InputError(f"max_pct_mt must be between 0 and 100, got {max_pct_mt}")
    keep = np.ones(adata.n_obs, dtype=bool)
    if min_counts:
        keep &= adata.obs[keys.TOTAL_COUNTS].to_numpy() >= min_counts
    if min_genes:
        keep &= adata.obs[keys.N_GENES].to_numpy() >= min_genes
    if max_pct_mt is not None and max_pct_mt < 100:
        keep &= adata.obs[keys.PCT_MT].to_numpy() <= max_pct_mt
    return keep


def _describe_filters(min_counts, min_genes, max_pct_mt) -> str:
    parts = [f"min_counts={min_counts or 0:g}", f"min_genes={min_genes or 0:g}"]
    parts.append(f"max_pct_mt={100 if max_pct_mt is None else max_pct_mt:g}")
    return ", ".join(parts)


def _sample_of(adata: ad.AnnData) -> str:
    if keys.SAMPLE in adata.obs and adata.n_obs:
        values = pd.unique(adata.obs[keys.SAMPLE].astype(str))
        return ", ".join(values[:3])
    return "?"


def qc_summary(
    adata_before: ad.AnnData,
    adata_after: ad.AnnData,
    filters: dict | None = None,
) -> dict:
    """Numbers for the report, as plain Python values (JSON- and h5ad-ready).

    Parameters
    ----------
    adata_before
        In-tissue slide after :func:`compute_qc`, all genes.
    adata_after
        Slide after :func:`remove_mt_genes` and :func:`filter_spots`.
    filters
        Optional thresholds used (``min_counts``, ``min_genes``, ``max_pct_mt``); when
        given they are reported with the number of spots each one removes.

    Returns
    -------
    dict
        ``spots_in_tissue``, ``spots_kept``, ``median_umis`` and ``median_genes`` (per
        in-tissue spot, all genes counted as Space Ranger reports them), ``pct_mt`` (% of
        all counts in mitochondrial genes), ``n_mt_genes_removed``, ``mt_genes_removed``,
        ``genes`` (genes kept in ``X``); plus ``filters`` and ``spots_removed_by`` when
        ``filters`` is given.
    """
    missing = [c for c in QC_COLUMNS if c not in adata_before.obs]
    if missing:
        raise ValueError(f"the QC metrics {', '.join(missing)} are missing; run compute_qc first")
    obs = adata_before.obs
    total = float(obs[keys.TOTAL_COUNTS].sum())
    if keys.MT in adata_after.obsm:
        mt_names = [str(c) for c in adata_after.obsm[keys.MT].columns]
    else:
        mt_names = [str(g) for g in adata_before.var_names.difference(adata_after.var_names)]
    summary = {
        "spots_in_tissue": int(adata_before.n_obs),
        "spots_kept": int(adata_after.n_obs),
        "median_umis": float(np.median(obs[keys.TOTAL_COUNTS])),
        "median_genes": float(np.median(obs[keys.N_GENES])),
        "pct_mt": round(100.0 * float(obs[keys.MT_COUNTS].sum()) / total, 4) if total > 0 else 0.0,
        "n_mt_genes_removed": len(mt_names),
        "mt_genes_removed": mt_names,
        "genes": int(adata_after.n_vars),
    }
    if filters is not None:
        values = {
            "min_counts": float(filters.get("min_counts") or 0),
            "min_genes": int(filters.get("min_genes") or 0),
            "max_pct_mt": float(100 if filters.get("max_pct_mt") is None else filters["max_pct_mt"]),
        }
        summary["filters"] = values
        summary["spots_removed_by"] = {
            "min_counts": int((~spots_passing(adata_before, min_counts=values["min_counts"])).sum()),
            "min_genes": int((~spots_passing(adata_before, min_genes=values["min_genes"])).sum()),
            "max_pct_mt": int((~spots_passing(adata_before, max_pct_mt=values["max_pct_mt"])).sum()),
        }
    return summary


def plot_qc_maps(
    adata: ad.AnnData, out_png: str | Path, kept: np.ndarray | None = None, title: str | None = None
) -> None:
    """Spatial maps of UMIs per spot and % mitochondrial counts, over the tissue image.

    Parameters
    ----------
    adata
        In-tissue slide after :func:`compute_qc` (before spot filtering).
    out_png
        PNG file to write.
    kept
        Optional boolean mask of the spots passing the filters; when some spots fail, a
        third panel shows which.
    title
        Figure title; defaults to the sample name.
    """
    from spatialmap.report import plotting

    missing = [c for c in QC_COLUMNS if c not in adata.obs]
    if missing:
        raise ValueError(f"the QC metrics {', '.join(missing)} are missing; run compute_qc first")
    values = pd.DataFrame(
        {
            "UMIs per spot": adata.obs[keys.TOTAL_COUNTS].to_numpy(),
            "genes per spot": adata.obs[keys.N_GENES].to_numpy(),
            "% mitochondrial counts": adata.obs[keys.PCT_MT].to_numpy(),
        },
        index=adata.obs_names,
    )
    if kept is not None:
        kept = np.asarray(kept, dtype=bool)
        if kept.shape != (adata.n_obs,):
            raise ValueError("kept must have one boolean per spot")
        if not kept.all():
            values["QC filters"] = pd.Categorical(np.where(kept, "kept", "removed"), categories=["kept", "removed"])
    if title is None:
        title = f"{_sample_of(adata)}: spot QC ({adata.n_obs} spots in tissue)"
    view = adata
    if adata.n_obs > MAX_PLOTTED_SPOTS:  # full-slide Visium HD: draw a seeded sample of the bins
        pick = np.sort(np.random.default_rng(0).choice(adata.n_obs, MAX_PLOTTED_SPOTS, replace=False))
        view, values = adata[pick], values.iloc[pick]
        title += f", {MAX_PLOTTED_SPOTS:,} drawn"
    plotting.plot_spatial_values(
        view,
        values,
        out_png,
        title=title,
        ncols=len(values.columns),
        palette={"kept": "#d9d9d9", "removed": "#111111"},
    )
