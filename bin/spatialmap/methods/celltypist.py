"""CellTypist on single cells (Xenium cells, Visium HD cells): a logistic-regression classifier
trained once per run on the prepared reference (:func:`train`), or the user's model
(``--celltypist_model``, a local ``.pkl``), applied to every cell of a slide (:func:`run`).

What it gives per cell (one row of the slide):

- the **proportions**: CellTypist's per-type probabilities (the logistic function of each type's
  one-vs-rest decision score; they need not sum to 1), normalised to sum 1, so that every method's
  table reads alike (the argmax is CellTypist's own best match);
- its **predicted label** (the best match of the cell alone) and **confidence** (that type's
  probability, CellTypist's ``conf_score``);
- **majority voting**: the most predicted type of the cell's cluster (CellTypist's over-clustering,
  Leiden on the cell's expression at its default resolution; or, through ``over_clustering``, any
  obs column of the slide: the hook for spatial domains once the pipeline computes them);
- its **label**: the majority vote (without voting, the prediction), or ``Unassigned`` where the
  cell's own probability of that type is below ``min_confidence`` (0.5: the threshold of
  CellTypist's ``prob match`` mode, under which it leaves a cell unassigned). A cell of low
  confidence is marked, never forced into a type; its probabilities stay in the proportions.

Normalisation: CellTypist wants log1p of counts scaled to 10,000 per cell (it checks). Both sides
are normalised over the same genes: the training reference over the genes it shares with every slide
CellTypist runs on (``normalised_over``, kept in the model), the slide over those genes too; a user's
model (which keeps no such list) gets the slide normalised over all its genes, as CellTypist does.

Nothing is downloaded, ever: :func:`import_celltypist` points CellTypist's model folder at a temporary
one and makes every function of it that would fetch a model or its index raise instead.

Heavy packages (celltypist, scikit-learn, scanpy) are imported inside the functions that use them.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickletools
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.methods import base, registry

log = logging.getLogger("spatialmap.methods.celltypist")

NAME = "celltypist"
LABEL = registry.get(NAME).label  # the registry holds every method's label
REPORT_COLUMNS = {
    "device": "device the method ran on",
    "genes_used": "genes of the model found on the slide (the classifier's inputs)",
    "model_genes": "genes of the model",
    "model_source": "the model: trained on this run's reference, or the file of --celltypist_model",
    "model_cells": "reference cells the model was trained on (a model trained by the pipeline)",
    "spots_total": "cells of the slide",
    "spots_fitted": "cells CellTypist labelled",
    "spots_filtered": "cells left out (see spots_filtered_by_reason)",
    "median_confidence": "median over the cells of CellTypist's confidence (its best type's probability)",
    "cells_low_confidence": "cells whose label's probability is below the minimum (labelled Unassigned)",
    "pct_low_confidence": "% of the labelled cells of low confidence",
    "majority_voting": "majority voting: over which clusters, or why it was skipped",
    "voting_clusters": "clusters majority voting used",
    "pct_changed_by_voting": "% of the labelled cells whose majority vote differs from their own prediction",
    "seconds": "wall time of the annotation (seconds)",
    "selection": "why the method ran on this slide",
}
HEADLINE = ("spots_fitted", "median_confidence", "pct_low_confidence")

TARGET_SUM = 1e4  #: CellTypist's expression scale: log1p of counts per 10,000
UNASSIGNED = "Unassigned"  #: the label of a cell of low confidence (CellTypist's own word)
DEFAULT_MIN_CONFIDENCE = 0.5  #: CellTypist's p_thres: below it, its prob-match mode assigns no type
DEFAULT_MAX_GENES = 5000  #: more shared genes than this: the reference's most variable ones train the model
#: more reference cells than this: mini-batch SGD (CellTypist's advice for large references; below
#: 10,000 cells it warns the batches are too few). Full SGD needed 342 epochs on 20,000 depth-matched
#: cells (149 s on 2,000 genes), mini-batches 12 s at the same accuracy (tools/BENCHMARKS.md)
MINI_BATCH_ABOVE = 10_000
#: fewest cells majority voting runs on (CellTypist skips it at 50 or fewer)
MIN_VOTING_CELLS = 51
#: fewest genes expressed in >= 5 cells for CellTypist's over-clustering (50 principal components)
MIN_VOTING_GENES = 51
#: the model's description key holding what the pipeline knows of its training
MODEL_KEY = "spatialmap"
FOLDER_ENV = "CELLTYPIST_FOLDER"
NO_DOWNLOAD = (
    "spatialmap never downloads CellTypist models: the model is trained on the run's reference, "
    "or given as a local file with --celltypist_model"
)
#: the functions of celltypist.models that fetch a model or the model index
DOWNLOADERS = (
    "download_models",
    "download_model_index",
    "download_if_required",
    "get_all_models",
    "get_models_index",
    "get_default_model",
    "models_description",
)


# --------------------------------------------------------------------------- celltypist, offline


def import_celltypist():
    """``celltypist``, imported so that it cannot download anything.

    Its import creates ``$CELLTYPIST_FOLDER`` (default ``~/.celltypist``): pointed at a temporary
    folder first (removed at exit). Every function of ``celltypist.models`` that would fetch a model
    or the model index (:data:`DOWNLOADERS`) then raises ``RuntimeError`` instead (a model name, or
    ``model=None``, never reaches the network). Its log is quietened to warnings.
    """
    if "celltypist" not in sys.modules:
        folder = tempfile.mkdtemp(prefix="spatialmap-celltypist-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ[FOLDER_ENV] = folder
    import celltypist
    from celltypist import models

    def refuse(*args, **kwargs):
        raise RuntimeError(NO_DOWNLOAD)

    for name in DOWNLOADERS:
        setattr(models, name, refuse)
    logging.getLogger("celltypist.logger").setLevel(logging.WARNING)
    return celltypist


# --------------------------------------------------------------------------- the model file


def check_model_file(path: str | os.PathLike, what: str = "--celltypist_model") -> Path:
    """Check that ``path`` is a CellTypist model (``Model.write``'s pickle) without loading it.

    The pickle's opcodes are read (:mod:`pickletools`: no code runs, no scikit-learn needed, so the
    samplesheet check can do it): it must be a whole pickle naming CellTypist's keys (``Model``,
    ``Scaler_``, ``description``), a scikit-learn linear classifier and its ``StandardScaler``.
    ``InputError`` naming the file and what is wrong otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path}: no such file (a CellTypist model: a .pkl written by celltypist)")
    if path.suffix != ".pkl":
        raise InputError(f"{what} {path}: not a .pkl file (a CellTypist model is a .pkl written by celltypist)")
    if path.stat().st_size == 0:
        raise InputError(f"{what} {path}: the file is empty")
    strings: set[str] = set()
    try:
        with path.open("rb") as handle:
            for opcode, arg, _ in pickletools.genops(handle):
                if isinstance(arg, str):
                    strings.add(arg)
                    strings.update(arg.split())  # protocol 0-1 GLOBAL: "module name"
    except Exception as err:  # pickletools raises ValueError or others on a damaged stream
        raise InputError(f"{what} {path}: not a readable pickle ({type(err).__name__}: {err})") from None
    missing = [k for k in ("Model", "Scaler_", "description", "features", "StandardScaler") if k not in strings]
    if not any(s.startswith("sklearn.linear_model") for s in strings) or not (
        {"LogisticRegression", "SGDClassifier"} & strings
    ):
        missing.append("a scikit-learn LogisticRegression or SGDClassifier")
    if missing:
        raise InputError(
            f"{what} {path}: not a CellTypist model (missing {', '.join(missing)}); give a .pkl written by "
            "celltypist's Model.write (celltypist.train(...).write(path)) or downloaded from CellTypist's models"
        )
    return path


def load_model(path: str | os.PathLike, what: str = "--celltypist_model"):
    """A CellTypist ``Model`` from a local ``.pkl`` (:func:`check_model_file` first; never a download)."""
    path = check_model_file(path, what).resolve()
    celltypist = import_celltypist()
    try:
        # a path with a '/' is loaded as a file: celltypist looks names without one up in its index
        model = celltypist.models.Model.load(str(path))
    except Exception as err:  # celltypist wraps every unpickling error in a bare Exception
        raise InputError(f"{what} {path}: CellTypist cannot load it: {err}") from None
    features = np.asarray(getattr(model.classifier, "features", []))
    if features.size == 0 or len(model.cell_types) < 2:
        raise InputError(f"{what} {path}: the model has {features.size} genes and {len(model.cell_types)} cell types")
    return model


def model_info(model) -> dict:
    """What the pipeline wrote into a model it trained (``description['spatialmap']``), or ``{}``."""
    info = (model.description or {}).get(MODEL_KEY)
    return dict(info) if isinstance(info, dict) else {}


# --------------------------------------------------------------------------- normalisation


#: rows of a sparse matrix changed at once (bounds the temporary arrays of :func:`lognormalise` and
#: :func:`match_depth` on large references)
ROW_CHUNK = 10_000


def _row_values(matrix: sp.csr_matrix, per_row: np.ndarray):
    """``(slice of matrix.data, per_row repeated over its values)`` for each chunk of rows."""
    for start in range(0, matrix.shape[0], ROW_CHUNK):
        stop = min(start + ROW_CHUNK, matrix.shape[0])
        a, b = matrix.indptr[start], matrix.indptr[stop]
        yield slice(a, b), np.repeat(per_row[start:stop], np.diff(matrix.indptr[start : stop + 1]))


def lognormalise(counts, target_sum: float = TARGET_SUM, copy: bool = True) -> sp.csr_matrix:
    """log1p of each row scaled to ``target_sum`` (rows of zero stay zero), float32 CSR; ``copy``
    False: a float32 CSR ``counts`` is changed in place (no second matrix of a large reference)."""
    counts = sp.csr_matrix(counts, dtype=np.float32, copy=copy)
    totals = np.asarray(counts.sum(axis=1, dtype=np.float64)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    for values, factor in _row_values(counts, scale):
        counts.data[values] = np.log1p(counts.data[values] * factor)
    return counts


def _columns(adata: ad.AnnData, genes: Sequence[str]) -> sp.csr_matrix:
    return sp.csr_matrix(adata.X)[:, adata.var_names.get_indexer(list(genes))]


# --------------------------------------------------------------------------- training


def training_genes(reference: ad.AnnData, slides: Sequence[ad.AnnData] = ()) -> list[str]:
    """Genes expressed in the reference (reference order) and present on every slide given."""
    from spatialmap.reference.genes import expressed

    genes = reference.var_names[expressed(reference.X)].astype(str)
    for slide in slides:
        genes = genes[genes.isin(slide.var_names.astype(str))]
    return list(genes)


def slide_depths(slides: Sequence[ad.AnnData], genes: Sequence[str]) -> np.ndarray:
    """Counts per cell on ``genes`` of every cell (with any) of the slides."""
    totals = [np.asarray(_columns(s, genes).sum(axis=1)).ravel() for s in slides]
    totals = np.concatenate(totals) if totals else np.zeros(0)
    return totals[totals > 0]


def match_depth(counts, depths: np.ndarray, seed: int, copy: bool = True) -> tuple[sp.csr_matrix, dict]:
    """The reference's counts thinned to the slides' depth: each cell's counts kept each with probability
    ``min(1, d / its total)``, ``d`` drawn from the slides' counts per cell (``depths``), seeded.

    A reference cell shallower than its draw is kept whole (counts are never invented). What the
    classifier then learns looks like the slide's cells: as sparse (a Xenium or Visium HD cell holds a
    tenth or less of a single-cell profile's counts on the same genes), with the same zeros; trained on
    the full counts, CellTypist's one-vs-rest probabilities on the sparse cells fall below 0.5 for types
    it still ranks first (the test Xenium cells: tools/BENCHMARKS.md). ``copy`` False: a float32 CSR
    ``counts`` is thinned in place.
    """
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(counts, dtype=np.float32, copy=copy)
    totals = np.asarray(counts.sum(axis=1, dtype=np.float64)).ravel()
    target = rng.choice(depths, size=counts.shape[0], replace=True)
    keep = np.minimum(1.0, np.divide(target, totals, out=np.ones_like(totals), where=totals > 0))
    for values, p in _row_values(counts, keep):
        counts.data[values] = rng.binomial(np.rint(counts.data[values]).astype(np.int64), p)
    counts.eliminate_zeros()
    after = np.asarray(counts.sum(axis=1, dtype=np.float64)).ravel()
    summary = {
        "slide_median_counts": float(np.median(depths)),
        "reference_median_counts": float(np.median(totals)),
        "reference_median_counts_matched": float(np.median(after)),
        "reference_cells_thinned": int((keep < 1).sum()),
    }
    return counts, summary


def most_variable(lognorm: sp.csr_matrix, genes: Sequence[str], n: int) -> list[str]:
    """The ``n`` most variable genes (scanpy's ``seurat`` flavour on the log-normalised data), in
    the order given; all of them when there are ``n`` or fewer."""
    if len(genes) <= n:
        return list(genes)
    import scanpy as sc

    data = ad.AnnData(X=lognorm, var=pd.DataFrame(index=pd.Index(list(genes))))
    table = sc.pp.highly_variable_genes(data, flavor="seurat", n_top_genes=n, inplace=False)
    keep = np.asarray(table["highly_variable"], dtype=bool)
    return [g for g, k in zip(genes, keep) if k]


@dataclass
class TrainingData:
    """The reference as the classifier sees it (:func:`training_data`)."""

    dense: np.ndarray  #: cells x ``features``: log1p of counts per 10,000 over ``genes``, float32
    labels: np.ndarray  #: the cells' types (str)
    features: list[str]  #: the classifier's inputs
    genes: list[str]  #: the genes the counts were normalised over
    summary: dict  #: cells left out, types, depth matching


def _check_reference(reference: ad.AnnData, label_key: str) -> pd.Series:
    if label_key not in reference.obs.columns:
        raise InputError(
            f"celltypist: the reference has no label column '{label_key}' "
            f"(columns: {', '.join(map(str, reference.obs.columns)) or 'none'})"
        )
    labels = reference.obs[label_key]
    if labels.isna().any():
        raise InputError(f"celltypist: {int(labels.isna().sum())} reference cells have no '{label_key}'")
    if not reference.var_names.is_unique:
        raise InputError("celltypist: the reference's gene names are not unique")
    return labels.astype(str)


def training_data(
    reference: ad.AnnData,
    label_key: str,
    slides: Sequence[ad.AnnData] = (),
    *,
    depth_matching: bool = True,
    max_genes: int = DEFAULT_MAX_GENES,
    seed: int = 0,
) -> TrainingData:
    """The reference's cells on the genes of every slide, depth-matched, log-normalised, the most
    variable genes kept (see :func:`train`)."""
    labels = _check_reference(reference, label_key)
    genes = training_genes(reference, slides)
    minimum = registry.get(NAME).min_genes
    if len(genes) < minimum:
        raise InputError(
            f"celltypist: only {len(genes)} genes are expressed in the reference and present on every slide "
            f"CellTypist labels; at least {minimum} are needed"
        )
    counts = _columns(reference, genes)
    summary: dict[str, Any] = {"depth_matching": False}
    if depth_matching and slides:
        depths = slide_depths(slides, genes)
        if depths.size == 0:
            raise InputError(f"celltypist: no cell of the slides has counts on the {len(genes)} genes")
        counts, matched = match_depth(counts, depths, seed, copy=False)  # counts: this function's own copy
        summary = {"depth_matching": True, **matched}
        log.info(
            "celltypist: reference thinned to the slides' depth: median %.0f counts per cell on the genes (slides: %.0f)",
            matched["reference_median_counts_matched"],
            matched["slide_median_counts"],
        )
    has_counts = np.asarray(counts.sum(axis=1)).ravel() > 0
    if not has_counts.all():
        log.warning(
            "celltypist: %d reference cells have no counts on the %d genes: left out", (~has_counts).sum(), len(genes)
        )
    if not has_counts.all():
        counts = counts[np.flatnonzero(has_counts)]
    lognorm = lognormalise(counts, copy=False)
    del counts
    labels = labels.to_numpy()[has_counts]
    sizes = pd.Series(labels).value_counts().sort_index()
    if len(sizes) < 2:
        raise InputError(f"celltypist: the reference has {len(sizes)} cell type; at least 2 are needed")
    # genes the (thinned) reference no longer expresses are no inputs (celltypist.train drops them too)
    candidates = list(genes)
    kept = np.flatnonzero(np.bincount(lognorm.indices, minlength=len(genes)) > 0)
    if len(kept) < len(genes):
        lognorm, candidates = lognorm[:, kept], [genes[i] for i in kept]
    features = most_variable(lognorm, candidates, max_genes)
    summary.update(
        {
            "cells": int(has_counts.sum()),
            "cells_left_out": int((~has_counts).sum()),
            "cell_types": {str(k): int(v) for k, v in sizes.items()},
        }
    )
    if len(features) < len(candidates):
        lognorm = lognorm[:, pd.Index(candidates).get_indexer(features)]
    dense = lognorm.toarray()
    del lognorm
    log.info(
        "celltypist: training on %d reference cells, %d types, %d genes (%s; normalised over %d genes)",
        len(labels),
        len(sizes),
        len(features),
        f"the {max_genes} most variable" if len(features) < len(candidates) else "all those expressed",
        len(genes),
    )
    return TrainingData(dense, labels, features, list(genes), summary)


def train(
    reference: ad.AnnData,
    label_key: str,
    *,
    slides: Sequence[ad.AnnData] = (),
    depth_matching: bool = True,
    max_genes: int = DEFAULT_MAX_GENES,
    feature_selection: bool = False,
    top_genes: int = 300,
    alpha: float = 1e-4,
    max_iter: int | None = None,
    mini_batch: bool | None = None,
    seed: int = 0,
    threads: int = 1,
):
    """A CellTypist model trained on ``reference`` (raw counts in X) to predict ``label_key``.

    Genes: those expressed in the reference and present on every slide of ``slides`` (raw counts:
    the slides CellTypist will label), so that every slide is read on the genes the model learnt.
    ``depth_matching`` (with slides): the reference's counts on those genes are first thinned to
    the slides' counts per cell (:func:`match_depth`, seeded). The reference is normalised over the
    genes (log1p of counts per 10,000; cells without counts on them are left out), then, above
    ``max_genes``, the most variable of them are kept (the classifier's inputs).

    The classifier: CellTypist's SGD logistic regression (``use_SGD=True``: its default trainer
    passes ``multi_class``, which scikit-learn 1.8 removed), seeded with ``seed``;
    ``feature_selection`` and ``top_genes``: CellTypist's two-pass training, the second on the
    ``top_genes`` genes of largest weight per type (skipped, and said so, with ``top_genes`` genes or
    fewer); ``alpha``, ``max_iter``: the SGD classifier's; ``mini_batch``: CellTypist's mini-batch
    SGD (10 epochs of 100 batches of 1,000 cells drawn from the reference: a cost that stops growing
    with the reference), None: above :data:`MINI_BATCH_ABOVE` cells; ``threads``: CellTypist's
    ``n_jobs`` (its one-vs-rest fits run in parallel).

    Returns the ``Model``; ``model.description['spatialmap']`` holds what :func:`run` and the report
    need (the normalisation genes, cells, types, settings, seconds, the accuracy on the training cells).
    """
    t0 = time.perf_counter()
    data = training_data(reference, label_key, slides, depth_matching=depth_matching, max_genes=max_genes, seed=seed)
    if feature_selection and len(data.features) <= top_genes:
        log.warning(
            "celltypist: %d genes, not more than top_genes %d: no feature selection", len(data.features), top_genes
        )
        feature_selection = False
    if mini_batch is None:
        mini_batch = len(data.labels) > MINI_BATCH_ABOVE
    model, accuracy = fit_model(
        data,
        alpha=alpha,
        max_iter=max_iter,
        mini_batch=bool(mini_batch),
        feature_selection=feature_selection,
        top_genes=top_genes,
        seed=seed,
        threads=threads,
    )
    settings = {
        "trainer": f"{'mini-batch ' if mini_batch else ''}SGD logistic regression (CellTypist's, use_SGD=True)",
        "mini_batch": bool(mini_batch),
        **{"max_genes": max_genes, "depth_matching": depth_matching, "feature_selection": feature_selection},
        **{"top_genes": top_genes, "alpha": alpha, "max_iter": max_iter, "seed": seed, "threads": threads},
    }
    seconds = time.perf_counter() - t0
    model.description[MODEL_KEY] = {
        **{"label_key": label_key, "normalised_over": data.genes, "model_genes": len(model.features)},
        **data.summary,
        **{"training_accuracy": accuracy, "seconds": round(seconds, 3), "settings": settings},
        "versions": {p: base.package_version(p) for p in ("celltypist", "scikit-learn")},
    }
    log.info(
        "celltypist: %d types, %d genes, %.1f s; accuracy on its training cells %.3f",
        len(model.cell_types),
        len(model.features),
        seconds,
        accuracy,
    )
    return model


def fit_model(
    data: TrainingData,
    *,
    alpha: float = 1e-4,
    max_iter: int | None = None,
    mini_batch: bool = False,
    feature_selection: bool = False,
    top_genes: int = 300,
    seed: int = 0,
    threads: int = 1,
):
    """CellTypist's model of ``data``: what ``celltypist.train(data.dense, use_SGD=True, ...)`` fits,
    in a quarter of its memory; returns the ``Model`` and its accuracy on the training cells.

    ``celltypist.train``'s steps, in its order, with its own classifier function
    (``celltypist.train._SGDClassifier``: one-vs-rest SGD logistic regression, optionally in
    mini-batches, and the second pass of its feature selection): a ``StandardScaler`` (centred), values
    above 10 clipped, the default ``max_iter`` by cell count. Only the scaling differs: fitted and
    applied in place, by chunks of rows, where ``StandardScaler.fit_transform`` takes a float64 copy
    and a scaled copy of the whole matrix (100,000 cells x 5,000 genes: 11.2 GB at its peak, against
    about 4 here). ``data.dense`` is scaled in place. The unit tests check the two give one model.
    """
    celltypist = import_celltypist()
    from celltypist.train import _SGDClassifier
    from sklearn.preprocessing import StandardScaler

    dense, labels, features = data.dense, data.labels, np.asarray(data.features)
    scaler = StandardScaler(with_mean=True)
    for start in range(0, dense.shape[0], ROW_CHUNK):
        scaler.partial_fit(dense[start : start + ROW_CHUNK])
    for start in range(0, dense.shape[0], ROW_CHUNK):
        dense[start : start + ROW_CHUNK] = np.minimum(scaler.transform(dense[start : start + ROW_CHUNK]), 10)
    if max_iter is None:  # celltypist.train's defaults
        max_iter = 1000 if len(labels) < 50_000 else 500 if len(labels) < 500_000 else 200
    sgd = dict(alpha=alpha, max_iter=max_iter, n_jobs=threads, mini_batch=mini_batch, random_state=seed)
    sgd.update(batch_number=100, batch_size=1000, epochs=10, balance_cell_type=False)
    np.random.seed(seed)  # CellTypist's mini-batches draw from numpy's global generator
    classifier = _SGDClassifier(indata=dense, labels=labels, **sgd)
    columns = np.arange(len(features))
    if feature_selection:  # celltypist.train's second pass, on the top_genes genes of largest weight per type
        columns = np.unique(np.argpartition(np.abs(classifier.coef_), -top_genes, axis=1)[:, -top_genes:])
        classifier = _SGDClassifier(indata=dense[:, columns], labels=labels, **sgd)
        for name in ("mean_", "var_", "scale_"):
            setattr(scaler, name, getattr(scaler, name)[columns])
        scaler.n_features_in_ = len(columns)
    classifier.features = features[columns]
    classifier.n_features_in_ = len(columns)
    description = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "details": "trained by spatialmap (TRAIN_CELLTYPIST) on the run's prepared reference",
        "url": "",
        "source": "spatialmap",
        "version": "",
        "number_celltypes": len(classifier.classes_),
    }
    predicted = np.concatenate(
        [
            np.asarray(classifier.predict(dense[start : start + ROW_CHUNK][:, columns])).astype(str)
            for start in range(0, dense.shape[0], ROW_CHUNK)
        ]
    )
    return celltypist.models.Model(classifier, scaler, description), float(np.mean(predicted == labels))


def training_summary(model) -> dict:
    """The training's summary for its JSON (:func:`model_info` without the normalisation genes)."""
    info = model_info(model)
    genes = info.pop("normalised_over", [])
    return {
        **info,
        "normalised_over_genes": len(genes),
        "model_cell_types": [str(c) for c in model.cell_types],
        "description": {k: str(v) for k, v in model.description.items() if k != MODEL_KEY},
    }


# --------------------------------------------------------------------------- annotation


def _voting_clusters(query: ad.AnnData, over_clustering: str | None, obs: pd.DataFrame) -> tuple[Any, str]:
    """What majority voting runs over (None: CellTypist's over-clustering) and how to say so; or
    ``(False, why)`` where it cannot run."""
    if query.n_obs < MIN_VOTING_CELLS:
        return False, f"skipped: {query.n_obs} cells (CellTypist votes over more than 50)"
    if over_clustering:
        if over_clustering not in obs.columns:
            raise InputError(
                f"celltypist: majority voting over '{over_clustering}': the slide has no such column "
                f"(obs: {', '.join(map(str, obs.columns)) or 'none'})"
            )
        clusters = obs.loc[query.obs_names, over_clustering]
        if clusters.isna().any():
            clusters = clusters.astype(object).where(clusters.notna(), "none")
        return clusters.astype(str).to_numpy(), f"over the slide's '{over_clustering}'"
    genes = int((np.asarray((query.X > 0).sum(axis=0)).ravel() >= 5).sum())
    if genes < MIN_VOTING_GENES:
        return (
            False,
            f"skipped: {genes} genes are expressed in 5 or more cells (its over-clustering needs {MIN_VOTING_GENES})",
        )
    return None, "over CellTypist's over-clustering (Leiden on the cells' expression)"


#: from this many cells scanpy's neighbours use pynndescent (euclidean; below, exact distances)
PYNNDESCENT_FROM = 8192


def neighbour_graph(query: ad.AnnData) -> None:
    """CellTypist's over-clustering graph of ``query`` (log-normalised), put in its ``obsp``, where
    ``celltypist.annotate`` finds it and runs its Leiden over-clustering on it.

    The steps of CellTypist's own ``Classifier._construct_neighbor_graph``: genes in >= 5 cells, the
    2,500 most variable, scaled (max 10; in float32, half the memory: 100,000 cells 3.6 GB at the
    peak, against 6.4), 50 principal components, 10 neighbours. Done here because
    scanpy 1.11.5 cannot take pynndescent 0.7.0's neighbours under scipy 1.17 (a ``csr_array``, which
    has no ``getnnz``: ``sc.pp.neighbors`` fails from 8,192 cells): the same pynndescent search, with
    scanpy's settings for it, is handed over as a ``csr_matrix``.
    """
    import scanpy as sc

    data = query.copy()
    sc.pp.filter_genes(data, min_cells=5)
    sc.pp.highly_variable_genes(data, n_top_genes=min(2500, data.n_vars))
    data = data[:, data.var["highly_variable"].to_numpy()].copy()
    data.X = data.X.toarray()  # dense float32: scanpy would scale (and PCA copy) a float64 one, twice the memory
    sc.pp.scale(data, max_value=10)
    n_pcs = min(50, data.n_vars - 1, data.n_obs - 1)
    sc.pp.pca(data, n_comps=n_pcs)
    transformer = None
    if data.n_obs >= PYNNDESCENT_FROM:
        transformer = _csr_matrix_nndescent(data.n_obs, n_neighbors=10)
    sc.pp.neighbors(data, n_neighbors=10, n_pcs=n_pcs, transformer=transformer)
    query.obsm["X_pca"] = data.obsm["X_pca"]
    query.obsp["connectivities"] = data.obsp["connectivities"]
    query.obsp["distances"] = data.obsp["distances"]
    query.uns["neighbors"] = data.uns["neighbors"]


def _csr_matrix_nndescent(n_obs: int, n_neighbors: int):
    """pynndescent's kNN transformer with scanpy's default settings for it, giving a ``csr_matrix``."""
    import scanpy as sc
    from pynndescent import PyNNDescentTransformer

    class CSRMatrixNNDescent(PyNNDescentTransformer):
        def fit_transform(self, X, y=None, **kwargs):
            return sp.csr_matrix(super().fit_transform(X, y, **kwargs))

        def transform(self, X, y=None):
            return sp.csr_matrix(super().transform(X, y))

    return CSRMatrixNNDescent(
        n_neighbors=n_neighbors,
        metric="euclidean",
        random_state=0,
        n_jobs=sc.settings.n_jobs,
        n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
        n_iters=max(5, round(np.log2(n_obs))),
    )


def _model_genes(slide: ad.AnnData, model, name: str) -> tuple[list[str], list[str]]:
    """The model's genes on the slide (the classifier's inputs) and the genes to normalise the slide
    over (the model's normalisation genes on the slide; a user's model: all the slide's genes)."""
    features = pd.Index(np.asarray(model.features).astype(str))
    slide_genes = slide.var_names.astype(str)
    feature_set, slide_set = set(features), set(slide_genes)
    used = [g for g in slide_genes if g in feature_set]
    minimum = registry.get(NAME).min_genes
    if len(used) < minimum:
        raise InputError(
            f"sample {name}: celltypist: the slide has {len(used)} of the model's {len(features)} genes "
            f"(at least {minimum} are needed; model genes e.g. {', '.join(features[:3])}; slide genes e.g. "
            f"{', '.join(slide_genes[:3])}): check that both name genes the same way (--slide_gene_column)"
        )
    if len(used) < 0.5 * len(features):
        log.warning(
            "sample %s: celltypist: the slide has only %d of the model's %d genes; its predictions rest on those",
            name,
            len(used),
            len(features),
        )
    norm_genes = model_info(model).get("normalised_over")
    if not norm_genes:
        return used, list(slide_genes)
    present = [g for g in norm_genes if g in slide_set]
    if len(present) < len(norm_genes):
        log.warning(
            "sample %s: celltypist: %d of the %d genes the model was normalised over are not on the slide",
            name,
            len(norm_genes) - len(present),
            len(norm_genes),
        )
    return used, present


def _query(slide: ad.AnnData, used: list[str], norm_genes: list[str], name: str) -> tuple[ad.AnnData, pd.DataFrame]:
    """The cells with counts on the model's genes, log-normalised over ``norm_genes`` (what
    ``celltypist.annotate`` reads), and every cell's status."""
    on_model = np.asarray(_columns(slide, used).sum(axis=1)).ravel() > 0
    spot_qc = base.spot_status(slide.obs_names, {"no counts on the model's genes": ~on_model})
    rows = np.flatnonzero(on_model)
    if rows.size == 0:
        raise InputError(f"sample {name}: celltypist: no cell has counts on the model's {len(used)} genes")
    query = ad.AnnData(
        X=lognormalise(_columns(slide, norm_genes)[rows]),
        obs=pd.DataFrame(index=pd.Index(slide.obs_names[rows].astype(str))),
        var=pd.DataFrame(index=pd.Index(norm_genes)),
    )
    return query, spot_qc


@dataclass
class CellLabels:
    """CellTypist's answer per labelled cell (:func:`cell_labels`)."""

    probability: pd.DataFrame  #: cells x types: CellTypist's probabilities (do not sum to 1)
    predicted: pd.Series  #: the best match of the cell alone
    confidence: pd.Series  #: its probability (CellTypist's conf_score)
    label: pd.Series  #: the majority vote, or without one the best match
    over_clustering: pd.Series | None  #: the cluster the vote was over (None: no vote)
    low: np.ndarray  #: the label's probability is below the minimum
    final: pd.Series  #: the label, or Unassigned where ``low``


#: cells CellTypist scores at once: its scaling makes the cells x genes matrix dense (float64), 10,000
#: cells x 5,000 genes 0.4 GB; the whole of 100,000 cells at once took 9.7 GB (tools/BENCHMARKS.md)
PREDICT_CHUNK = 10_000


def annotate(query: ad.AnnData, model, clusters=None, chunk: int = PREDICT_CHUNK):
    """``celltypist.annotate`` of ``query`` (log-normalised) in chunks of ``chunk`` cells, then its
    majority voting over ``clusters`` (an array, one cluster per cell; None: CellTypist's
    over-clustering, on :func:`neighbour_graph`; False: no voting). The same steps and numbers as
    ``celltypist.annotate(query, model, majority_voting=True, over_clustering=clusters)``, without
    its dense matrix of every cell at once."""
    celltypist = import_celltypist()
    from celltypist.classifier import AnnotationResult, Classifier

    parts = [
        celltypist.annotate(query[start : start + chunk].copy(), model=model, mode="best match")
        for start in range(0, query.n_obs, chunk)
    ]
    result = AnnotationResult(
        pd.concat([p.predicted_labels.astype(str) for p in parts]),
        pd.concat([p.decision_matrix for p in parts]),
        pd.concat([p.probability_matrix for p in parts]),
        query,
    )
    if clusters is False:
        return result
    if clusters is None:
        neighbour_graph(query)  # CellTypist's over-clustering runs on it
        clusters = Classifier(filename=query, model=model).over_cluster()
    return Classifier.majority_vote(result, np.asarray(clusters), min_prop=0)


def cell_labels(result, min_confidence: float) -> CellLabels:
    """The labels of a ``celltypist.annotate`` result, the cells of low confidence marked Unassigned.

    A cell's confidence in its label is its probability of that type (CellTypist's conf_score by
    majority voting; without a vote, its best match's)."""
    prob = result.probability_matrix
    prob.columns = prob.columns.astype(str)
    table = result.predicted_labels
    predicted = table["predicted_labels"].astype(str)
    confidence = prob.max(axis=1)
    voted = "majority_voting" in table.columns
    label = table["majority_voting"].astype(str) if voted else predicted
    over = table["over_clustering"].astype(str) if voted else None
    column = prob.columns.get_indexer(label)
    label_prob = np.where(column >= 0, prob.to_numpy()[np.arange(len(prob)), np.maximum(column, 0)], confidence)
    low = label_prob < min_confidence
    return CellLabels(prob, predicted, confidence, label, over, low, label.where(~low, UNASSIGNED))


def _add_cells(spot_qc: pd.DataFrame, cells: CellLabels) -> pd.DataFrame:
    """``spot_qc`` with the per-cell columns (NaN for the cells left out; no cluster nor vote without a vote)."""
    index = spot_qc.index
    spot_qc[keys.CELLTYPIST_PREDICTED] = cells.predicted.reindex(index)
    spot_qc[keys.CELLTYPIST_CONFIDENCE] = cells.confidence.reindex(index)
    if cells.over_clustering is not None:
        spot_qc[keys.CELLTYPIST_OVER_CLUSTERING] = cells.over_clustering.reindex(index)
        spot_qc[keys.CELLTYPIST_MAJORITY] = cells.label.reindex(index)
    spot_qc[keys.CELLTYPIST_LABEL] = cells.final.reindex(index)
    spot_qc[keys.CELLTYPIST_LOW_CONFIDENCE] = pd.Series(cells.low, index=cells.final.index).reindex(index)
    return spot_qc


def _qc(name, n_cells, n_labelled, used, norm_genes, model, source, cells: CellLabels, voting, spot_qc, proportions):
    """The QC of one slide's labels (its JSON; the report's columns, :data:`REPORT_COLUMNS`)."""
    info = model_info(model)
    voted = cells.over_clustering is not None
    filtered = base.MethodResult(NAME, name, proportions, {}, spot_qc=spot_qc).filtered()
    return {
        "sample": name,
        "method": NAME,
        "device": "cpu",
        "genes_used": len(used),
        "model_genes": len(model.features),
        "model_source": source,
        "model_cells": info.get("cells"),
        "genes_normalised_over": len(norm_genes),
        "spots_total": int(n_cells),
        "spots_fitted": int(n_labelled),
        "spots_filtered": int(len(filtered)),
        "spots_filtered_by_reason": base.left_out_by_reason(name, NAME, filtered, n_cells),
        "cell_types": [str(t) for t in cells.probability.columns],
        "median_confidence": float(np.median(cells.confidence)),
        "cells_low_confidence": int(cells.low.sum()),
        "pct_low_confidence": round(100.0 * float(cells.low.mean()), 2),
        "majority_voting": voting,
        "voting_clusters": int(cells.over_clustering.nunique()) if voted else None,
        "pct_changed_by_voting": round(100.0 * float((cells.label != cells.predicted).mean()), 2) if voted else None,
        "labels": {str(k): int(v) for k, v in cells.final.value_counts().sort_index().items()},
        "training": {k: v for k, v in info.items() if k != "normalised_over"},
        "versions": {p: base.package_version(p) for p in ("celltypist", "scikit-learn", "scanpy")},
    }


def run(
    slide: ad.AnnData,
    model,
    *,
    sample: str | None = None,
    seed: int = 0,
    majority_voting: bool = True,
    over_clustering: str | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    **kw: Any,
) -> base.MethodResult:
    """CellTypist on every cell of ``slide`` (raw counts in X) with ``model`` (a ``Model`` or a ``.pkl``).

    The slide is normalised over the model's normalisation genes (:func:`train`; a user's model: all
    the slide's genes), cells without counts on the model's genes are left out, the others labelled
    (``celltypist.annotate``, ``mode='best match'``). ``majority_voting``: over CellTypist's
    over-clustering, or over the slide's obs column ``over_clustering`` (e.g. spatial domains);
    skipped, and said so in the QC, on 50 cells or fewer, or with too few expressed genes for the
    over-clustering. ``min_confidence``: a cell whose probability of its label is below it is
    labelled ``Unassigned`` (and flagged), its probabilities kept. ``seed`` is accepted for a uniform
    interface: CellTypist's prediction is deterministic and its over-clustering seeded (0) by scanpy.
    """
    if kw:
        raise TypeError(f"celltypist.run got unexpected arguments: {', '.join(kw)}")
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be between 0 and 1, got {min_confidence}")
    t0 = time.perf_counter()
    name = base.sample_name(slide, sample)
    if slide.n_obs == 0:
        raise InputError(f"sample {name}: celltypist: the slide has no cells")
    if not slide.var_names.is_unique:
        raise InputError(f"sample {name}: celltypist: the slide's gene names are not unique")
    source = "model given"
    if not hasattr(model, "classifier"):
        source, model = str(model), load_model(model)
    info = model_info(model)
    if info:
        source = f"trained on the run's reference ({info.get('cells', '?')} cells)"
    used, norm_genes = _model_genes(slide, model, name)
    query, spot_qc = _query(slide, used, norm_genes, name)
    clusters, voting = (False, "off (--celltypist_majority_voting false)")
    if majority_voting:
        clusters, voting = _voting_clusters(query, over_clustering, slide.obs)
    result = annotate(query, model, clusters)
    cells = cell_labels(result, min_confidence)
    proportions = base.proportions_frame(
        base.normalise_rows(cells.probability.to_numpy()), cells.probability.index, cells.probability.columns
    )
    spot_qc = _add_cells(spot_qc, cells)
    qc = _qc(name, slide.n_obs, query.n_obs, used, norm_genes, model, source, cells, voting, spot_qc, proportions)
    qc["settings"] = {
        "majority_voting": bool(majority_voting),
        "over_clustering": over_clustering or "celltypist",
        "min_confidence": float(min_confidence),
        "mode": "best match",
        "seed": int(seed),
    }
    base.finish_qc(qc, proportions, t0)
    log.info(
        "sample %s: celltypist: %d of %d cells labelled on %d genes; median confidence %.3f; %d of low confidence "
        "(< %g); majority voting %s",
        name,
        query.n_obs,
        slide.n_obs,
        len(used),
        qc["median_confidence"],
        qc["cells_low_confidence"],
        min_confidence,
        voting,
    )
    return base.MethodResult(NAME, name, proportions, qc, spot_qc=spot_qc)


# --------------------------------------------------------------------------- the writer's hooks

#: the per-cell columns of ``<sample>.celltypist_labels.csv`` and the mapped h5ad's obs
CELL_COLUMNS = (
    keys.CELLTYPIST_PREDICTED,
    keys.CELLTYPIST_CONFIDENCE,
    keys.CELLTYPIST_OVER_CLUSTERING,
    keys.CELLTYPIST_MAJORITY,
    keys.CELLTYPIST_LABEL,
    keys.CELLTYPIST_LOW_CONFIDENCE,
)


def annotate_slide(slide: ad.AnnData, result: base.MethodResult) -> ad.AnnData:
    """:func:`base.annotate_slide`, with the confidence kept a number (NaN for the cells left out)
    and the low-confidence flag a boolean (False for them)."""
    out = base.annotate_slide(slide, result)
    cells = result.spot_qc.reindex(out.obs_names)
    out.obs[keys.CELLTYPIST_CONFIDENCE] = cells[keys.CELLTYPIST_CONFIDENCE].astype(float).to_numpy()
    out.obs[keys.CELLTYPIST_LOW_CONFIDENCE] = (
        cells[keys.CELLTYPIST_LOW_CONFIDENCE].fillna(False).astype(bool).to_numpy()
    )
    return out


def extra_tables(result: base.MethodResult) -> dict[str, pd.DataFrame]:
    """``<sample>.celltypist_labels.csv``: every cell's status, prediction, confidence, cluster, vote, label."""
    table = result.spot_qc.reindex(columns=["status", *CELL_COLUMNS])
    table.columns = ["status", *(c.removeprefix(f"{NAME}_") for c in CELL_COLUMNS)]
    table.index.name = "barcode"
    return {"_labels.csv": table}


def map_title(result: base.MethodResult) -> str:
    qc = result.qc
    return (
        f"{qc.get('sample', '')}: CellTypist type probabilities, normalised per cell "
        f"({qc.get('spots_fitted')} of {qc.get('spots_total')} cells labelled; grey: left out)"
    )


def write_training_json(path: str | os.PathLike, model) -> Path:
    """The training's summary (:func:`training_summary`) as JSON."""
    return base.write_qc_json(path, training_summary(model))
