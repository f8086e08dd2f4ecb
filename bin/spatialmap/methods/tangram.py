"""Map reference cell types onto one Visium slide with Tangram.

The steps, in order:

1. Genes: the genes with at least one count in both the slide and the reference
   ("shared genes"). Training genes are the union of the top ``n_markers`` marker genes
   of every cell type (``scanpy.tl.rank_genes_groups``, t-test, on a log-normalised copy
   of the reference restricted to the shared genes). The other shared genes are held
   out to validate the map. When fewer than ``min_heldout`` genes are left over, a
   seeded fraction of the markers is held out instead (logged).
2. Reference cells: in ``cells`` mode at most ``max_cells_per_type`` cells of each type,
   drawn with the seed; in ``clusters`` mode every cell, averaged per type by Tangram.
3. Tangram (``tangram.map_cells_to_space``) on the training genes, with the chosen
   density prior, seeded (numpy, torch and Tangram's ``random_state``). Reference cells
   are scaled to 10,000 counts each (capture depth differences between cells are noise;
   on the generated test data this raises every type's correlation with the truth by
   0.01-0.03); the slide keeps its raw counts, whose spot totals the ``rna_count_based``
   prior follows (normalising the spots as well lowers the correlations).
4. Results, from the learned map ``M`` (reference cell or type x spot, rows sum to 1):

   * cell-type mass of spot ``j`` and type ``k``: ``sum_i w_i M_ij`` over the cells ``i``
     of type ``k``, with ``w_i = 1 / n_cells`` in ``cells`` mode and ``w_k`` = the type's
     share of the reference cells in ``clusters`` mode. The masses of all spots and types
     sum to 1; their spot sums are the cell density Tangram learned (fitted to the prior).
   * proportions: the mass normalised per spot (``tangram.project_cell_annotations``,
     rows then scaled to sum 1).
   * expected cell counts: the mass times ``cells_per_spot * n_spots``, i.e. the slide
     holds on average ``cells_per_spot`` cells per spot, distributed over spots by the
     learned density (so with the ``rna_count_based`` prior a spot with twice the mean
     UMI count holds about twice the mean number of cells).
   * projected expression ``M^T S`` of every shared gene (what ``tangram.project_genes``
     computes; done here so gene names keep their case), and per gene the Pearson
     correlation and the cosine similarity (Tangram's ``score``) across spots between
     measured and projected expression, both normalised per spot to the same total over
     the shared genes. Held-out genes judge the map; training genes show the fit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmap.device import resolve_accelerator, seed_everything
from spatialmap.methods import base, registry
from spatialmap.reference.genes import expressed, shared_expressed_genes

log = logging.getLogger("spatialmap.tangram")

NAME = "tangram"
LABEL = registry.get(NAME).label  # the registry holds every method's label
REPORT_COLUMNS = {
    "mode": "cells (single cells mapped) or clusters (per-type averages)",
    "device": "device Tangram trained on",
    "n_training_genes": "marker genes Tangram trained on",
    "n_heldout_genes": "shared genes held out of training to validate the map",
    "heldout_median": "median Pearson r of measured and projected expression over the held-out genes",
    "heldout_p90": "90th percentile of the held-out genes' Pearson r",
    "training_score": "mean cosine similarity over the training genes (Tangram's own score)",
    "cells_used": "reference cells mapped",
}
HEADLINE = ("heldout_median", "heldout_p90")

#: fewest genes shared with the reference and expressed in both (the registry's min_genes)
MIN_SHARED_GENES = registry.get(NAME).min_genes

MODES = ("cells", "clusters")
DENSITY_PRIORS = ("rna_count_based", "uniform")


@dataclass
class GeneSplit:
    """Training and held-out genes, and the markers found per cell type."""

    training: list[str]
    heldout: list[str]
    markers: dict[str, list[str]]
    heldout_from_markers: bool  # too few non-marker genes: part of the markers held out


# --------------------------------------------------------------------------- inputs


def _csr(x) -> sp.csr_matrix:
    """``x`` as a float32 ``scipy.sparse.csr_matrix`` (Tangram accepts no sparse arrays)."""
    return sp.csr_matrix(x, dtype=np.float32)


def _normalise_rows(x: sp.csr_matrix, target: float = 1e4) -> sp.csr_matrix:
    """Each row scaled to sum ``target`` (all-zero rows stay zero)."""
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(target, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ x, dtype=np.float32)


shared_genes = shared_expressed_genes  # genes expressed in both (one definition, in genes)


def find_markers(
    reference: ad.AnnData, label_key: str, genes: list[str], n_markers: int = 100, *, sample: str = "slide"
) -> dict[str, list[str]]:
    """Top ``n_markers`` genes of each cell type among ``genes``.

    Ranked with ``scanpy.tl.rank_genes_groups`` (t-test) on a copy of the reference,
    normalised to 10,000 counts per cell over all its genes and log1p-transformed.
    """
    import scanpy as sc

    if n_markers < 1:
        raise ValueError(f"--n-markers must be at least 1, not {n_markers}")
    labels = base.check_labels(reference, label_key, sample, NAME, 2)
    norm = ad.AnnData(
        X=_csr(reference.X),
        obs=pd.DataFrame({label_key: pd.Categorical(labels)}, index=reference.obs_names),
        var=pd.DataFrame(index=reference.var_names),
    )
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    norm = norm[:, genes].copy()
    sc.tl.rank_genes_groups(norm, groupby=label_key, method="t-test", use_raw=False, n_genes=min(n_markers, len(genes)))
    names = norm.uns["rank_genes_groups"]["names"]
    return {str(k): [str(g) for g in names[k]] for k in names.dtype.names}


def split_genes(
    markers: dict[str, list[str]],
    genes: list[str],
    *,
    min_heldout: int = 10,
    heldout_fraction: float = 0.2,
    seed: int = 0,
) -> GeneSplit:
    """Split ``genes`` into training genes (the markers) and held-out genes (the rest).

    When the genes that are not markers are too few (fewer than ``min_heldout`` or than
    ``heldout_fraction`` of ``genes``), ``heldout_fraction`` of the markers, drawn with
    ``seed``, are held out as well, so the map is judged on informative genes it was
    not trained on, not only on the few genes no cell type ranks highly.
    """
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"held-out fraction must be between 0 and 1, not {heldout_fraction}")
    marker_set = {g for gs in markers.values() for g in gs}
    training = [g for g in genes if g in marker_set]
    heldout = [g for g in genes if g not in marker_set]
    from_markers = False
    too_few = max(min_heldout, heldout_fraction * len(genes))
    if len(heldout) < too_few:
        rng = np.random.default_rng(seed)
        n_out = max(1, int(round(heldout_fraction * len(training))))
        if len(training) - n_out < 2:
            raise ValueError(f"only {len(genes)} shared genes: too few to train and validate Tangram")
        out = set(rng.choice(np.array(training, dtype=object), size=n_out, replace=False))
        log.warning(
            "only %d of %d shared genes are not markers (fewer than %d): holding out %d of the "
            "%d markers as well (fraction %.2f, seed %d)",
            len(heldout),
            len(genes),
            math.ceil(too_few),
            n_out,
            len(training),
            heldout_fraction,
            seed,
        )
        heldout = heldout + [g for g in training if g in out]
        training = [g for g in training if g not in out]
        from_markers = True
    return GeneSplit(training=training, heldout=heldout, markers=markers, heldout_from_markers=from_markers)


def cap_cells_per_type(labels: pd.Series, max_cells: int, seed: int = 0) -> np.ndarray:
    """Positions of the cells kept: at most ``max_cells`` per type, drawn with ``seed``.

    Types are visited in sorted order and the positions returned in reference order,
    so the same reference, cap and seed always keep the same cells.
    """
    if max_cells < 1:
        raise ValueError(f"--max-cells-per-type must be at least 1, not {max_cells}")
    rng = np.random.default_rng(seed)
    values = np.asarray(labels)
    keep = []
    for cell_type in sorted(pd.unique(values)):
        idx = np.flatnonzero(values == cell_type)
        if len(idx) > max_cells:
            idx = rng.choice(idx, size=max_cells, replace=False)
        keep.append(idx)
    return np.sort(np.concatenate(keep))


# --------------------------------------------------------------------------- scores


def gene_scores(measured: np.ndarray, projected: np.ndarray, genes: list[str]) -> pd.DataFrame:
    """Per gene: Pearson r and cosine similarity across spots.

    Both matrices (spots x ``genes``) are first normalised per spot to fractions of the
    spot's total over ``genes``. A gene constant over spots in either matrix gets NaN.
    """
    a = base.normalise_rows(np.asarray(measured, dtype=np.float64))
    b = base.normalise_rows(np.asarray(projected, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
        ac = a - a.mean(0)
        bc = b - b.mean(0)
        denom = np.sqrt((ac**2).sum(0) * (bc**2).sum(0))
        pearson = np.where(denom > 0, (ac * bc).sum(0) / np.where(denom > 0, denom, 1), np.nan)
    return pd.DataFrame({"pearson_r": pearson, "cosine": cosine}, index=pd.Index(genes, name="gene"))


# --------------------------------------------------------------------------- mapping


# long: over 80 lines only by its docstring, which documents every setting; the code is 43 lines.
def run(
    slide: ad.AnnData,
    reference: ad.AnnData,
    label_key: str,
    *,
    sample: str | None = None,
    n_markers: int = 100,
    mode: str = "cells",
    density_prior: str = "rna_count_based",
    num_epochs: int = 1000,
    learning_rate: float = 0.1,
    max_cells_per_type: int = 500,
    cells_per_spot: float = 8.0,
    min_heldout: int = 10,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    accelerator: str = "auto",
    threads: int | None = None,
    assignment: bool = False,
) -> base.MethodResult:
    """Map the reference cell types onto ``slide`` with Tangram (the steps: module docstring).

    Parameters
    ----------
    slide
        Spots x genes, raw counts in ``X``; not modified.
    reference
        Cells x genes, raw counts in ``X``, labels in ``obs[label_key]``; not modified.
    label_key
        Column of ``reference.obs`` with the cell types.
    sample
        Name used in messages and the QC summary.
    n_markers
        Markers per cell type used for training.
    mode
        ``cells`` (map single cells) or ``clusters`` (map per-type averages).
    density_prior
        ``rna_count_based`` (cells follow the spot UMI counts) or ``uniform``.
    num_epochs, learning_rate
        Optimiser settings.
    max_cells_per_type
        ``cells`` mode: cap on reference cells per type (seeded draw).
    cells_per_spot
        Mean number of cells per spot, to turn proportions into expected counts.
    min_heldout, heldout_fraction
        Below ``min_heldout`` non-marker genes, hold out this fraction of the markers.
    seed
        Seeds the cell draw, held-out draw, numpy, torch and Tangram.
    accelerator
        ``auto`` (cuda when available), ``gpu`` or ``cpu``.
    threads
        Torch CPU threads (None: torch's default).
    assignment
        ``cells`` mode: also return each cell's most likely spot.

    Returns
    -------
    :class:`~spatialmap.methods.base.MethodResult`: ``proportions`` (every spot),
    ``abundances`` (expected cells per spot), ``extras``: ``projected`` (spots x held-out genes),
    ``gene_scores`` (one row per shared gene: ``pearson_r``, ``cosine``, ``heldout``),
    ``assignment`` (``cells`` mode on request: one row per reference cell, else None) and
    ``mapping`` (Tangram's map).
    """
    name = sample or "slide"
    _check_settings(slide, mode, density_prior, num_epochs, learning_rate, cells_per_spot, name)
    labels = pd.Series(base.check_labels(reference, label_key, name, NAME, 2), index=reference.obs_names)
    device = "cuda" if resolve_accelerator(accelerator, threads) == "gpu" else "cpu"
    genes = _checked_shared_genes(slide, reference, name)
    keep = _reference_cells(labels, mode, max_cells_per_type, seed, reference.n_obs)
    # Each reference cell scaled to 10,000 counts: capture depth differences between cells are
    # noise here. The slide keeps raw counts; the density prior carries its spot depth.
    ref_x = _normalise_rows(_csr(reference.X)[keep])
    genes, ref_gene_pos = _genes_in_kept_cells(ref_x, reference, genes)
    markers = find_markers(reference, label_key, genes, n_markers, sample=name)
    split = split_genes(markers, genes, min_heldout=min_heldout, heldout_fraction=heldout_fraction, seed=seed)
    log.info(
        "training genes: %d (union of the top %d markers of %d cell types); held-out genes: %d%s",
        len(split.training),
        n_markers,
        len(markers),
        len(split.heldout),
        " (including markers)" if split.heldout_from_markers else "",
    )
    sc_ad = ad.AnnData(
        X=ref_x[:, ref_gene_pos],
        obs=pd.DataFrame({label_key: labels.iloc[keep].values}, index=reference.obs_names[keep].astype(str)),
        var=pd.DataFrame(index=pd.Index(genes)),
    )
    sp_ad = _tangram_inputs(slide, sc_ad, genes, split, name)
    mapping, training_score = _map(
        sc_ad, sp_ad, label_key, mode, density_prior, num_epochs, learning_rate, device, seed, threads
    )
    m, row_labels, weights, source = _map_matrix(mapping, sc_ad, label_key, mode)
    result = _results(slide, m, row_labels, weights, source, sp_ad, genes, split, cells_per_spot)
    if assignment and mode != "cells":
        raise ValueError("a cell-to-spot assignment needs --mode cells")
    result.extras["assignment"] = _assignment(m, row_labels, result.proportions.index, mapping) if assignment else None
    result.extras["mapping"] = mapping
    result.sample = name
    result.qc = {
        "sample": name,
        "mode": mode,
        "device": device,
        "density_prior": density_prior,
        "num_epochs": int(num_epochs),
        "learning_rate": float(learning_rate),
        "seed": int(seed),
        "n_markers": int(n_markers),
        "n_shared_genes": len(genes),
        "n_training_genes": len(split.training),
        "n_heldout_genes": len(split.heldout),
        "heldout_from_markers": bool(split.heldout_from_markers),
        "training_score": training_score,
        **result.qc,
        "cells_used": int(len(keep)),
        "max_cells_per_type": int(max_cells_per_type) if mode == "cells" else None,
        "cells_per_spot": float(cells_per_spot),
        "n_spots": int(slide.n_obs),
        "cell_types": list(result.proportions.columns),
    }
    return result


def _check_settings(slide, mode, density_prior, num_epochs, learning_rate, cells_per_spot, name) -> None:
    """ValueError on a setting out of range or a slide without spots."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not '{mode}'")
    if density_prior not in DENSITY_PRIORS:
        raise ValueError(f"density prior must be one of {', '.join(DENSITY_PRIORS)}, not '{density_prior}'")
    if num_epochs < 1:
        raise ValueError(f"the number of epochs must be at least 1, not {num_epochs}")
    if learning_rate <= 0:
        raise ValueError(f"the learning rate must be positive, not {learning_rate}")
    if cells_per_spot <= 0:
        raise ValueError(f"cells per spot must be positive, not {cells_per_spot}")
    if slide.n_obs == 0:
        raise ValueError(f"sample {name}: the slide has no spots")


def _checked_shared_genes(slide: ad.AnnData, reference: ad.AnnData, name: str) -> list[str]:
    """Genes expressed in both; ValueError below :data:`MIN_SHARED_GENES`."""
    genes = shared_genes(slide, reference)
    log.info(
        "sample %s: %d genes are expressed in both the slide (%d genes) and the reference (%d genes)",
        name,
        len(genes),
        slide.n_vars,
        reference.n_vars,
    )
    if len(genes) < MIN_SHARED_GENES:
        raise ValueError(
            f"sample {name}: only {len(genes)} genes are shared with the reference and expressed "
            f"in both (minimum {MIN_SHARED_GENES}); check that both use the same gene naming"
        )
    return genes


def _reference_cells(labels: pd.Series, mode: str, max_cells_per_type: int, seed: int, n_cells: int) -> np.ndarray:
    """Positions of the reference cells mapped: capped per type in ``cells`` mode, all in ``clusters``."""
    if mode == "cells":
        keep = cap_cells_per_type(labels, max_cells_per_type, seed)
        log.info(
            "cells mode: at most %d reference cells per type (seed %d): %d of %d cells kept (%s)",
            max_cells_per_type,
            seed,
            len(keep),
            n_cells,
            ", ".join(f"{k} {v}" for k, v in labels.iloc[keep].value_counts().sort_index().items()),
        )
        return keep
    log.info("clusters mode: all %d reference cells, averaged per type", n_cells)
    return np.arange(n_cells)


def _genes_in_kept_cells(ref_x: sp.csr_matrix, reference: ad.AnnData, genes: list[str]) -> tuple[list[str], np.ndarray]:
    """Genes with no count among the kept cells cannot train or be projected: dropped."""
    ref_gene_pos = pd.Index(reference.var_names).get_indexer(genes)
    expressed_kept = expressed(ref_x[:, ref_gene_pos])
    if not expressed_kept.all():
        log.info("%d shared genes have no count in the kept reference cells: dropped", int((~expressed_kept).sum()))
        genes = [g for g, e in zip(genes, expressed_kept) if e]
        ref_gene_pos = ref_gene_pos[expressed_kept]
    return genes, ref_gene_pos


def _tangram_inputs(slide: ad.AnnData, sc_ad: ad.AnnData, genes: list[str], split: GeneSplit, name: str) -> ad.AnnData:
    """The slide on the shared genes as Tangram expects it; both prepared by ``tangram.pp_adatas``."""
    import tangram as tg

    slide_x = _csr(slide.X)
    sp_ad = ad.AnnData(
        X=slide_x[:, pd.Index(slide.var_names).get_indexer(genes)],
        obs=pd.DataFrame(index=slide.obs_names.astype(str)),
        var=pd.DataFrame(index=pd.Index(genes)),
    )
    tg.pp_adatas(sc_ad, sp_ad, genes=split.training, gene_to_lowercase=False)
    if list(sc_ad.var_names) != genes or list(sp_ad.var_names) != genes:
        raise RuntimeError("tangram.pp_adatas changed the gene list")
    # pp_adatas may reorder genes; train on ours, in our order.
    sc_ad.uns["training_genes"] = sp_ad.uns["training_genes"] = list(split.training)
    # The RNA-count prior follows each spot's total over all its genes, not the shared ones.
    totals = np.asarray(slide_x.sum(axis=1)).ravel().astype(np.float64)
    if totals.sum() <= 0:
        raise ValueError(f"sample {name}: the slide has no counts")
    sp_ad.obs["rna_count_based_density"] = totals / totals.sum()
    return sp_ad


def _map(sc_ad, sp_ad, label_key, mode, density_prior, num_epochs, learning_rate, device, seed, threads):
    """``tangram.map_cells_to_space``, seeded; the map and its training score."""
    import tangram as tg

    seed_everything(seed)
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))  # the marker ranking may have reset it
    log.info(
        "Tangram: mode %s, density prior %s, %d epochs, learning rate %g, device %s, seed %d",
        mode,
        density_prior,
        num_epochs,
        learning_rate,
        device,
        seed,
    )
    mapping = tg.map_cells_to_space(
        sc_ad,
        sp_ad,
        mode=mode,
        cluster_label=label_key if mode == "clusters" else None,
        density_prior=density_prior,
        num_epochs=num_epochs,
        learning_rate=learning_rate,
        device=device,
        random_state=seed,
        verbose=True,
    )
    training_score = float(np.nanmean(mapping.uns["train_genes_df"]["train_score"]))
    log.info("training score (mean cosine over the training genes): %.3f", training_score)
    return mapping, training_score


def _map_matrix(mapping: ad.AnnData, sc_ad: ad.AnnData, label_key: str, mode: str):
    """The map (rows: cells or types; columns: spots), row labels, row weights, row expression."""
    import tangram as tg

    m = np.asarray(mapping.X, dtype=np.float64)
    row_labels = mapping.obs[label_key].astype(str).to_numpy()
    if mode == "cells":
        return m, row_labels, np.full(m.shape[0], 1.0 / m.shape[0]), sc_ad.X
    weights = mapping.obs["cluster_density"].to_numpy(dtype=np.float64)
    # Per-type summed expression, as Tangram built it for training.
    clusters = tg.mapping_utils.adata_to_cluster_expression(sc_ad, label_key, scale=True, add_density=True)
    if list(clusters.obs[label_key].astype(str)) != list(row_labels):
        raise RuntimeError("Tangram's cluster order changed between mapping and projection")
    return m, row_labels, weights, clusters.X


def _results(slide, m, row_labels, weights, source, sp_ad, genes, split, cells_per_spot) -> base.MethodResult:
    """Proportions, expected counts, projected expression and gene scores (QC: the score summary)."""
    cell_types = sorted(pd.unique(row_labels))
    onehot = pd.get_dummies(pd.Categorical(row_labels, categories=cell_types)).to_numpy(dtype=np.float64)
    mass = m.T @ (onehot * weights[:, None])  # spots x types; sums to 1 overall
    index = pd.Index(slide.obs_names.astype(str), name="barcode")
    proportions = pd.DataFrame(base.normalise_rows(mass), index=index, columns=cell_types)
    counts = pd.DataFrame(mass * cells_per_spot * slide.n_obs, index=index, columns=cell_types)
    source = source.toarray() if sp.issparse(source) else np.asarray(source)
    projected_all = m.T @ np.asarray(source, dtype=np.float64)  # spots x genes
    measured = sp_ad.X.toarray() if sp.issparse(sp_ad.X) else np.asarray(sp_ad.X)
    scores = gene_scores(measured, projected_all, genes)
    scores["heldout"] = ~scores.index.isin(split.training)
    summary = _score_summary(scores)
    heldout_pos = [genes.index(g) for g in split.heldout]
    projected = pd.DataFrame(projected_all[:, heldout_pos], index=index, columns=pd.Index(split.heldout, name="gene"))
    spot_qc = base.spot_status(index, {})
    return base.MethodResult(
        NAME,
        "",
        proportions,
        summary,
        abundances=counts,
        spot_qc=spot_qc,
        extras={"projected": projected, "gene_scores": scores},
    )


def _score_summary(scores: pd.DataFrame) -> dict:
    """Median / 90th percentile of the held-out genes' r and cosine, median r of the training genes."""
    heldout_scores = scores.loc[scores["heldout"]]
    n_nan = int(heldout_scores["pearson_r"].isna().sum())
    if n_nan:
        log.warning("%d held-out genes are constant over spots: no correlation (NaN)", n_nan)
    summary = {
        "heldout_median": _nan_stat(heldout_scores["pearson_r"], 50),
        "heldout_p90": _nan_stat(heldout_scores["pearson_r"], 90),
        "heldout_cosine_median": _nan_stat(heldout_scores["cosine"], 50),
        "heldout_cosine_p90": _nan_stat(heldout_scores["cosine"], 90),
        "training_median": _nan_stat(scores.loc[~scores["heldout"], "pearson_r"], 50),
    }
    log.info(
        "held-out genes (%d): Pearson r median %.3f, 90th percentile %.3f; cosine median %.3f",
        len(heldout_scores),
        summary["heldout_median"],
        summary["heldout_p90"],
        summary["heldout_cosine_median"],
    )
    return summary


def _assignment(m: np.ndarray, row_labels: np.ndarray, index: pd.Index, mapping: ad.AnnData) -> pd.DataFrame:
    """Each reference cell's most likely spot and its probability (``cells`` mode)."""
    best = m.argmax(axis=1)
    return pd.DataFrame(
        {"cell_type": row_labels, "barcode": index.to_numpy()[best], "probability": m[np.arange(m.shape[0]), best]},
        index=pd.Index(mapping.obs_names, name="cell"),
    )


def _nan_stat(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(np.percentile(values, q)) if len(values) else float("nan")


def annotate_slide(slide: ad.AnnData, result: base.MethodResult) -> ad.AnnData:
    """A copy of ``slide`` with the Tangram results in ``obsm`` and a summary in ``uns``."""
    from spatialmap import keys

    out = slide.copy()
    if list(result.proportions.index) != list(out.obs_names.astype(str)):
        raise ValueError("the Tangram results do not match the slide's spots")
    for key, frame in (
        (keys.TANGRAM_PROPORTIONS, result.proportions),
        (keys.TANGRAM_COUNTS, result.abundances),
        (keys.TANGRAM_PROJECTED, result.extras["projected"]),
    ):
        frame = frame.copy()
        frame.index = out.obs_names
        frame.columns = frame.columns.astype(str)
        out.obsm[key] = frame
    out.uns[keys.UNS_TANGRAM] = {k: v for k, v in result.qc.items() if v is not None}
    return out


def map_title(result: base.MethodResult) -> str:
    """Title of the Tangram maps (the shared writer's hook): the mode and the held-out genes' median r."""
    qc = result.qc
    return (
        f"{qc['sample']}: Tangram cell-type proportions ({qc['mode']} mode; held-out genes "
        f"median r {qc['heldout_median']:.2f})"
    )


def extra_tables(result: base.MethodResult) -> dict[str, pd.DataFrame]:
    """Tangram's tables beside the proportions (the shared writer's hook): expected cells per spot
    (``_counts.csv``), each shared gene's held-out score (``_heldout_genes.csv``) and, with
    ``--assignment``, each reference cell's most likely spot (``_assignment.csv``)."""
    scores = result.extras["gene_scores"].sort_values(["heldout", "pearson_r"], ascending=[False, False])
    tables = {"_counts.csv": result.abundances, "_heldout_genes.csv": scores}
    if result.extras.get("assignment") is not None:
        tables["_assignment.csv"] = result.extras["assignment"]
    return tables
