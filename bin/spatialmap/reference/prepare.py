"""The single-cell reference: loading and checking it, gene names, gene overlap with slides.

Everything here works on raw counts; nothing is normalised in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from spatialmap.cli import InputError
from spatialmap.methods import registry
from spatialmap.reference.genes import expressed

log = logging.getLogger("spatialmap.reference.prepare")

DEFAULT_MIN_CELLS_PER_LABEL = 10


# --------------------------------------------------------------------------------------------
# loading and checking
# --------------------------------------------------------------------------------------------


def check_integer_counts(X, what: str) -> None:
    """Raise :class:`InputError` unless ``X`` holds non-negative whole numbers.

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix.
    what
        How to name the data in the message, e.g. ``"reference"``.
    """
    from spatialmap.qc.checks import raw_count_problem  # the rule, shared with the slides' check (io)

    problem = raw_count_problem(X)
    if problem is None:
        return
    if problem.kind == "dtype":
        raise InputError(f"{what}: the count matrix is not numeric (dtype {problem.dtype})")
    if problem.kind == "nonfinite":
        raise InputError(f"{what}: the count matrix holds NaN or infinite values; give raw counts")
    if problem.kind == "negative":
        raise InputError(f"{what}: the count matrix holds negative values; give raw counts, not scaled data")
    raise InputError(
        f"{what}: X must hold raw integer counts, but {problem.count} values are not whole numbers "
        f"(e.g. {problem.value:.4g}); give the raw counts, not normalised or log-transformed data"
    )


def _as_count_matrix(X) -> sparse.csr_matrix:
    """Counts as float32 CSR (what the models read)."""
    X = sparse.csr_matrix(X) if not sparse.issparse(X) else X.tocsr()
    return X.astype(np.float32)


def load_reference(
    path: str | Path,
    label_key: str,
    batch_key: str | None = None,
    covariate_keys: Sequence[str] = (),
    min_cells_per_label: int = DEFAULT_MIN_CELLS_PER_LABEL,
) -> ad.AnnData:
    """Read a single-cell reference and check that it can train signatures.

    Cells without a label are dropped (logged). The label, batch and covariate columns become
    string categoricals; X becomes float32 CSR raw counts.

    Parameters
    ----------
    path
        ``.h5ad`` file with raw counts in X (or in ``layers['counts']`` when X is normalised).
    label_key
        obs column with the cell type of every cell.
    batch_key, covariate_keys
        Optional obs columns with the batch / technical covariates of every cell.
    min_cells_per_label
        Every label needs at least this many cells.

    Returns
    -------
    The checked AnnData.

    Raises
    ------
    InputError
        With a message naming the column, labels or values at fault.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reference file not found: {path}")
    try:
        adata = ad.read_h5ad(path)
    except OSError as err:
        raise InputError(f"reference {path.name}: cannot be read as .h5ad ({err})") from err
    return check_reference(adata, label_key, batch_key, covariate_keys, min_cells_per_label, name=path.name)


def check_reference(
    adata: ad.AnnData,
    label_key: str,
    batch_key: str | None = None,
    covariate_keys: Sequence[str] = (),
    min_cells_per_label: int = DEFAULT_MIN_CELLS_PER_LABEL,
    name: str = "reference",
) -> ad.AnnData:
    """Check an in-memory reference; see :func:`load_reference`. Returns a checked copy."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"{name}: empty ({adata.n_obs} cells x {adata.n_vars} genes)")
    columns = [label_key] + ([batch_key] if batch_key else []) + list(covariate_keys)
    missing = [c for c in columns if c not in adata.obs.columns]
    if missing:
        raise InputError(
            f"{name}: column(s) {', '.join(repr(c) for c in missing)} not in the cell annotation (obs); "
            f"available: {', '.join(map(str, adata.obs.columns)) or 'none'}"
        )
    if len(set(columns)) != len(columns):
        raise InputError(f"{name}: the label, batch and covariate columns must differ; got {columns}")

    adata = adata.copy()
    # counts: X, or layers['counts'] when X holds something else
    try:
        check_integer_counts(adata.X, name)
    except InputError:
        if "counts" not in adata.layers:
            raise
        check_integer_counts(adata.layers["counts"], f"{name} layers['counts']")
        log.info("%s: X is not raw counts; using layers['counts']", name)
        adata.X = adata.layers["counts"]
    adata.X = _as_count_matrix(adata.X)
    adata.layers.clear()
    adata.raw = None

    labels = adata.obs[label_key]
    unlabelled = labels.isna() | (labels.astype(str).str.strip() == "")
    if unlabelled.all():
        raise InputError(f"{name}: no cell has a label in column '{label_key}'")
    if unlabelled.any():
        log.warning("%s: dropping %d cells without a label in '%s'", name, int(unlabelled.sum()), label_key)
        adata = adata[~unlabelled.to_numpy()].copy()

    for col in columns:
        values = adata.obs[col]
        if col != label_key and values.isna().any():
            raise InputError(f"{name}: column '{col}' is empty for {int(values.isna().sum())} cells")
        adata.obs[col] = pd.Categorical(values.astype(str))
        adata.obs[col] = adata.obs[col].cat.remove_unused_categories()

    counts = adata.obs[label_key].value_counts().sort_index()
    if len(counts) < 2:
        raise InputError(f"{name}: column '{label_key}' has only one label ({counts.index[0]}); need at least 2")
    small = counts[counts < min_cells_per_label]
    if len(small):
        listed = ", ".join(f"{label} ({n})" for label, n in small.items())
        raise InputError(
            f"{name}: {len(small)} label(s) in '{label_key}' have fewer than {min_cells_per_label} cells: {listed}; "
            "merge or remove them, or lower the minimum"
        )
    empty_cells = np.asarray(adata.X.sum(axis=1)).ravel() == 0
    if empty_cells.any():
        log.warning("%s: dropping %d cells with no counts", name, int(empty_cells.sum()))
        adata = adata[~empty_cells].copy()
    log.info(
        "%s: %d cells x %d genes, %d labels (%d to %d cells each)",
        name,
        adata.n_obs,
        adata.n_vars,
        len(counts),
        counts.min(),
        counts.max(),
    )
    return adata


def use_gene_column(adata: ad.AnnData, column: str | None, what: str = "reference") -> ad.AnnData:
    """Name genes by a var column (e.g. Ensembl IDs instead of symbols); None keeps the names.

    The old names are kept in ``var['original_name']``; duplicates get a ``-1``, ``-2`` suffix.
    Genes with an empty value keep their old name.
    """
    if column is None or column == "":
        return adata
    if column not in adata.var.columns:
        raise InputError(
            f"{what}: gene column '{column}' not in the gene annotation (var); "
            f"available: {', '.join(map(str, adata.var.columns)) or 'none (only the gene names)'}"
        )
    adata = adata.copy()
    new = adata.var[column].astype(object)
    empty = new.isna() | (new.astype(str).str.strip() == "")
    if empty.all():
        raise InputError(f"{what}: gene column '{column}' is empty")
    if empty.any():
        log.warning("%s: %d genes have no '%s'; they keep their name", what, int(empty.sum()), column)
    adata.var["original_name"] = adata.var_names.astype(str)
    adata.var_names = pd.Index(np.where(empty, adata.var_names.astype(str), new.astype(str)))
    if not adata.var_names.is_unique:
        log.info("%s: '%s' is not unique; making gene names unique", what, column)
        adata.var_names_make_unique()
    return adata


def remove_mt_genes(
    adata: ad.AnnData,
    prefix: str = "MT-",
    mt_genes: Iterable[str] | None = None,
    gene_symbols: str | None = None,
    what: str = "reference",
) -> tuple[ad.AnnData, list[str]]:
    """Drop mitochondrial genes: symbols starting with ``prefix`` (any case), or a given list.

    Parameters
    ----------
    prefix
        Symbol prefix (``MT-`` also matches mouse ``mt-``); empty removes nothing.
    mt_genes
        Explicit gene list (names, symbols or ``var['gene_ids']``); replaces the prefix rule.
    gene_symbols
        var column holding symbols when var_names are IDs; None tests var_names.

    Returns
    -------
    (AnnData without the genes, names of the removed genes)
    """
    from spatialmap import keys
    from spatialmap.qc.slide import find_mt_genes

    symbols = None
    if gene_symbols:
        if gene_symbols not in adata.var.columns:
            raise InputError(f"{what}: gene symbol column '{gene_symbols}' not in var")
        symbols = adata.var[gene_symbols].astype(str).tolist()
    ids = adata.var[keys.GENE_IDS].astype(str).tolist() if keys.GENE_IDS in adata.var.columns else None
    mask = np.asarray(
        find_mt_genes(
            adata.var_names,
            gene_symbols=symbols,
            mt_genes=list(mt_genes) if mt_genes is not None else None,
            gene_ids=ids,
            prefix=prefix or "",
        ),
        dtype=bool,
    )
    removed = adata.var_names[mask].tolist()
    log.info(
        "%s: removing %d mitochondrial genes%s",
        what,
        len(removed),
        f" ({', '.join(removed[:5])}{', ...' if len(removed) > 5 else ''})" if removed else "",
    )
    if not removed:
        return adata, removed
    if mask.all():
        raise InputError(f"{what}: every gene is mitochondrial by the given rule; check the prefix or list")
    return adata[:, ~mask].copy(), removed


def reference_summary(adata: ad.AnnData, label_key: str, batch_key: str | None = None) -> dict:
    """Numbers a user checks about a prepared reference (JSON-ready)."""
    counts = adata.obs[label_key].value_counts().sort_index()
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    summary = {
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "label_key": label_key,
        "n_labels": int(len(counts)),
        "cells_per_label": {str(k): int(v) for k, v in counts.items()},
        "median_counts_per_cell": float(np.median(totals)),
    }
    if batch_key:
        summary["batch_key"] = batch_key
        summary["cells_per_batch"] = {
            str(k): int(v) for k, v in adata.obs[batch_key].value_counts().sort_index().items()
        }
    return summary


# --------------------------------------------------------------------------------------------
# gene overlap with the slides
# --------------------------------------------------------------------------------------------


def label_log_means(reference: ad.AnnData, label_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, means, rest)``: per label (sorted names) the mean of log1p(counts per 10,000) of every
    gene in its cells, and that in all the other cells (labels x genes each)."""
    X = reference.X.tocsr() if sparse.issparse(reference.X) else sparse.csr_matrix(reference.X)
    totals = np.asarray(X.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    Xn = sparse.diags(1e4 / totals) @ X
    Xn = Xn.tocsr()
    Xn.data = np.log1p(Xn.data)
    labels = reference.obs[label_key].astype(str).to_numpy()
    names = np.unique(labels)
    ind = sparse.csr_matrix((np.ones(len(labels)), (np.searchsorted(names, labels), np.arange(len(labels)))))
    sums = np.asarray((ind @ Xn).todense())  # labels x genes
    n = np.asarray(ind.sum(axis=1)).ravel()
    total = sums.sum(axis=0)
    means = sums / n[:, None]
    rest = (total[None, :] - sums) / np.maximum(len(labels) - n, 1)[:, None]
    return names, means, rest


def rank_markers(reference: ad.AnnData, label_key: str, n_markers: int = 50) -> dict[str, list[str]]:
    """Top ``n_markers`` genes per label by log fold change (label vs all other cells).

    Counts are scaled to 10,000 per cell and log1p-transformed; the score is the mean in the
    label minus the mean in the other cells. Only genes with a positive score are kept, so a
    label can have fewer than ``n_markers`` markers. Ties are broken by gene name.
    """
    if n_markers < 1:
        raise InputError(f"the number of markers must be at least 1, got {n_markers}")
    names, means, rest = label_log_means(reference, label_key)
    genes = reference.var_names.to_numpy().astype(str)
    markers = {}
    for i, name in enumerate(names):
        score = means[i] - rest[i]
        order = np.lexsort((genes, -score))
        order = order[score[order] > 0][:n_markers]
        markers[str(name)] = genes[order].tolist()
    return markers


@dataclass
class GeneOverlap:
    """Gene overlap of a reference with each slide.

    ``table``: one row per slide (index = sample): ``shared_genes``, ``reference_genes``,
    ``slide_genes``, ``shared_fraction`` (of the reference genes) and one ``markers:<label>``
    column per label holding ``"k/N"`` (k of the label's N top markers found on the slide).
    """

    table: pd.DataFrame
    markers: dict[str, list[str]]
    missing_markers: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    n_markers: int = 50
    min_shared_genes: int = 0

    def to_json(self) -> dict:
        slides = {}
        for sample, row in self.table.iterrows():
            slides[str(sample)] = {
                "shared_genes": int(row["shared_genes"]),
                "reference_genes": int(row["reference_genes"]),
                "slide_genes": int(row["slide_genes"]),
                "shared_fraction": float(row["shared_fraction"]),
                "markers": {
                    label: {
                        "shared": len(genes) - len(self.missing_markers[sample][label]),
                        "total": len(genes),
                        "missing": self.missing_markers[sample][label],
                    }
                    for label, genes in self.markers.items()
                },
            }
        return {
            "n_markers": self.n_markers,
            "min_shared_genes": self.min_shared_genes,
            "markers": self.markers,
            "slides": slides,
        }


def gene_overlap(
    reference: ad.AnnData,
    slides: Mapping[str, ad.AnnData],
    label_key: str,
    n_markers: int = 50,
    min_shared_genes: int = 100,
    methods: Sequence[str] | Mapping[str, Sequence[str]] = (),
    reference_name: str = "the reference",
) -> GeneOverlap:
    """How many genes, and how many top markers of each label, each slide shares with the reference.

    Parameters
    ----------
    reference
        Reference with raw counts and ``obs[label_key]``.
    slides
        ``{sample: AnnData}``; genes are compared by ``var_names``.
    n_markers
        Top markers per label (see :func:`rank_markers`).
    min_shared_genes
        Raise :class:`InputError` naming every slide that shares fewer genes.
    methods
        The mapping methods that will run, on every slide or ``{sample: methods}`` (each slide's
        plan): a slide must also share, expressed in both, at least the registry's ``min_genes``
        genes for each of them (:mod:`spatialmap.methods.registry`).
    reference_name
        The reference as the user named it (its file name), for the messages.
    """
    if not slides:
        raise InputError("no slides given")
    if label_key not in reference.obs.columns:
        raise InputError(f"reference {reference_name}: label column '{label_key}' not in obs")
    markers = rank_markers(reference, label_key, n_markers)
    ref_genes = pd.Index(reference.var_names.astype(str))
    rows, missing = [], {}
    for sample, slide in slides.items():
        slide_genes = pd.Index(slide.var_names.astype(str))
        shared = ref_genes.intersection(slide_genes)
        in_slide = set(slide_genes)
        row = {
            "sample": str(sample),
            "shared_genes": len(shared),
            "reference_genes": len(ref_genes),
            "slide_genes": len(slide_genes),
            "shared_fraction": round(len(shared) / max(len(ref_genes), 1), 4),
        }
        missing[str(sample)] = {}
        for label, genes in markers.items():
            absent = [g for g in genes if g not in in_slide]
            missing[str(sample)][label] = absent
            row[f"markers:{label}"] = f"{len(genes) - len(absent)}/{len(genes)}"
        rows.append(row)
        log.info("slide %s: %d of %d reference genes shared", sample, len(shared), len(ref_genes))
    table = pd.DataFrame(rows).set_index("sample")
    check_overlap_minimums(reference, slides, table, min_shared_genes, methods, reference_name)
    return GeneOverlap(table, markers, missing, n_markers, min_shared_genes)


def _examples(names: Sequence[str], n: int = 3) -> str:
    """A few names, and how many more."""
    names = list(names)
    shown = ", ".join(map(str, names[:n])) or "none"
    return f"{shown} and {len(names) - n} more" if len(names) > n else shown


def check_overlap_minimums(
    reference: ad.AnnData,
    slides: Mapping[str, ad.AnnData],
    table: pd.DataFrame,
    min_shared_genes: int,
    methods: Sequence[str] | Mapping[str, Sequence[str]],
    reference_name: str,
) -> None:
    """Raise :class:`InputError` for every slide below ``min_shared_genes`` shared genes, or
    below a method's own minimum of genes expressed in both (what the method will train on).

    The message names the reference, each slide, its overlap and a few gene names of each
    side, so a naming mismatch (symbols vs IDs, species, prefixes) shows at a glance.
    """
    problems = []
    ref_names = reference.var_names.astype(str)
    ref_expressed = set(ref_names[expressed(reference.X)])
    for sample, slide in slides.items():
        n_shared = int(table.loc[str(sample), "shared_genes"])
        slide_names = slide.var_names.astype(str)
        in_slide, in_ref = set(slide_names), set(ref_names)
        examples = (
            f"reference genes not on the slide: {_examples([g for g in ref_names if g not in in_slide])}; "
            f"slide genes not in the reference: {_examples([g for g in slide_names if g not in in_ref])}"
        )
        if n_shared < min_shared_genes:
            problems.append(
                f"reference {reference_name} and slide {sample} share {n_shared} genes "
                f"(minimum {min_shared_genes}, --min_shared_genes): {examples}"
            )
            continue
        n_expressed = sum(1 for g in slide_names[expressed(slide.X)] if g in ref_expressed)
        planned = methods.get(str(sample), ()) if isinstance(methods, Mapping) else methods
        short = {m: n for m in planned if n_expressed < (n := registry.get(m).min_genes)}
        if short:
            needs = ", ".join(f"{m} needs {n}" for m, n in short.items())
            problems.append(
                f"reference {reference_name} and slide {sample} share {n_shared} genes, {n_expressed} of them "
                f"expressed in both: too few for {', '.join(short)} ({needs}): {examples}"
            )
    if problems:
        raise InputError(
            "; ".join(problems) + ". Check that slides and reference name genes the same way (symbols vs "
            "Ensembl IDs: --ref_gene_column / --slide_gene_column) and are of the same species"
        )


# --------------------------------------------------------------------------------------------
# gene filter before signature estimation
# --------------------------------------------------------------------------------------------


def permissive_gene_filter(
    adata: ad.AnnData,
    cell_count_cutoff: float = 5,
    cell_percentage_cutoff2: float = 0.03,
    nonz_mean_cutoff: float = 1.12,
    out_png: str | Path | None = None,
    min_genes: int = 10,
) -> ad.AnnData:
    """Keep the genes cell2location's permissive filter keeps; save its 2D figure.

    A gene is kept when it is detected in more than ``cell_percentage_cutoff2`` of the cells,
    or in more than ``cell_count_cutoff`` cells with a mean non-zero count above
    ``nonz_mean_cutoff`` (:func:`cell2location.utils.filtering.filter_genes`).
    Genes never detected are dropped first.

    Returns
    -------
    A copy of ``adata`` with the kept genes; ``var`` gains ``n_cells`` and ``nonz_mean``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cell2location.utils.filtering import filter_genes

    for name, value in (
        ("cell count cutoff", cell_count_cutoff),
        ("cell percentage cutoff", cell_percentage_cutoff2),
        ("non-zero mean cutoff", nonz_mean_cutoff),
    ):
        if not value > 0:
            raise InputError(f"gene filter: the {name} must be positive, got {value}")
    detected = np.asarray((adata.X > 0).sum(axis=0)).ravel() > 0
    work = adata[:, detected].copy()
    plt.close("all")
    with np.errstate(divide="ignore", invalid="ignore"):
        selected = filter_genes(
            work,
            cell_count_cutoff=cell_count_cutoff,
            cell_percentage_cutoff2=cell_percentage_cutoff2,
            nonz_mean_cutoff=nonz_mean_cutoff,
        )
    fig = plt.gcf()
    if out_png is not None:
        from spatialmap.cli import atomic_path

        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    log.info(
        "gene filter: kept %d of %d genes (%d never detected)", len(selected), adata.n_vars, int((~detected).sum())
    )
    if len(selected) < min_genes:
        raise InputError(
            f"gene filter: only {len(selected)} genes pass (minimum {min_genes}); lower the cutoffs "
            f"(cell count {cell_count_cutoff}, percentage {cell_percentage_cutoff2}, non-zero mean {nonz_mean_cutoff})"
        )
    return work[:, selected].copy()
