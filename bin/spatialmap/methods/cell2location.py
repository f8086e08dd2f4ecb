"""cell2location: map reference cell types onto one or more Visium slides jointly.

Slides of one group are concatenated (``obs['sample']`` is the batch), trained together, then
split back: each slide gets posterior mean / 5% / 95% quantile abundances (cells per spot) of
every cell type in ``obsm`` (keys from :mod:`spatialmap.keys`).

Two engines train the package's own model and guide: ``fast`` (default; :mod:`spatialmap.c2l_train`:
a plain SVI loop that stops at convergence, closed-form export from the guide) and ``package``
(``Cell2location.train`` for ``max_epochs`` + ``export_posterior``, the reference).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from spatialmap import keys
from spatialmap.cli import InputError, atomic_path
from spatialmap.device import resolve_accelerator, seed_everything
from spatialmap.methods import base, c2l_train, registry
from spatialmap.methods.c2l_train import ConvergenceRule, TrainResult
from spatialmap.reference.signatures import hist2d_observed_expected, quiet_trainer_kwargs, save_model_dir

NAME = "cell2location"
LABEL = registry.get(NAME).label  # the registry holds every method's label
REPORT_COLUMNS = {
    "group": "cell2location group the slide was mapped in (one training run per group)",
    "device": "device cell2location trained on",
    "n_spots": "spots of the slide mapped",
    "n_genes_used": "genes shared by the slide and the signatures",
    "epochs_run": "training epochs of the slide's group run",
    "stop_reason": "why training stopped: converged (the mean -ELBO of the last window improved by less than "
    "the tolerance) or max_epochs (the epoch cap was reached first)",
    "final_loss": "-ELBO of the last training epoch",
    "lr_final": "learning rate at the end of training",
    "lr_dropped_at_epoch": "epoch at which the learning rate was lowered (empty: never)",
    "train_seconds": "training time of the group run (seconds)",
    "mean_total_cells_per_spot": "mean total cells per spot (posterior mean)",
    "most_abundant_type": "most abundant cell type on the slide",
    "detection_sensitivity": "mean detection sensitivity per spot",
    "reconstruction_r": "Pearson r of observed vs expected counts",
}
HEADLINE = ("mean_total_cells_per_spot", "most_abundant_type", "reconstruction_r")
ENGINES = ("fast", "package")

log = logging.getLogger("spatialmap.c2l")

DEFAULT_MIN_SHARED_GENES = registry.get(NAME).min_genes
_SEP = "::"  # joins sample and barcode in the combined object's obs names


@dataclass
class MappingResult:
    """Output of :func:`run`: one training run of a group of slides.

    ``results``: ``{sample: MethodResult}``: ``abundances`` = the 5% quantile abundances (cells
    per spot), ``proportions`` = those normalised per spot (spots with any abundance),
    ``qc`` = the slide's QC (:func:`slide_qc` and the training's), ``extras['slide']`` = the
    input slide (all fields kept) with obsm ``C2L_MEAN``/``C2L_Q05``/``C2L_Q95`` (spots x cell
    types) and obs ``C2L_TOTAL_CELLS``/``C2L_DETECTION``. ``combined``: the concatenated object
    the model was trained on (genes used only).
    """

    results: dict[str, base.MethodResult]
    model: Any
    combined: ad.AnnData
    device: str
    genes_used: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    training: TrainResult | None = None
    summaries: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def slides(self) -> dict[str, ad.AnnData]:
        """``{sample: the slide with the abundance tables}``."""
        return {sample: result.extras["slide"] for sample, result in self.results.items()}

    @property
    def qc(self) -> dict[str, dict[str, Any]]:
        """``{sample: QC}``."""
        return {sample: result.qc for sample, result in self.results.items()}

    @property
    def history(self) -> pd.DataFrame:
        return self.model.history_["elbo_train"]


def combine_slides(slides: Mapping[str, ad.AnnData], genes: list[str]) -> ad.AnnData:
    """Stack slides on ``genes`` into one AnnData; obs names ``sample::barcode``, obs['sample']."""
    blocks, names, samples = [], [], []
    for sample, slide in slides.items():
        X = slide[:, genes].X
        blocks.append(sparse.csr_matrix(X, dtype=np.float32))
        names.extend(f"{sample}{_SEP}{b}" for b in slide.obs_names)
        samples.extend([sample] * slide.n_obs)
    obs = pd.DataFrame({keys.SAMPLE: pd.Categorical(samples, categories=list(slides))}, index=names)
    return ad.AnnData(X=sparse.vstack(blocks).tocsr(), obs=obs, var=pd.DataFrame(index=genes))


def shared_genes(
    slides: Mapping[str, ad.AnnData], signatures: pd.DataFrame, min_shared_genes: int = DEFAULT_MIN_SHARED_GENES
) -> list[str]:
    """Genes in the signatures and on every slide, in signature order; InputError below the minimum."""
    genes = pd.Index(signatures.index.astype(str))
    for sample, slide in slides.items():
        n = len(genes.intersection(slide.var_names.astype(str)))
        if n < min_shared_genes:
            raise InputError(
                f"slide {sample}: only {n} of {len(signatures)} signature genes are on the slide "
                f"(minimum {min_shared_genes}); check the gene names (symbols vs IDs)"
            )
        genes = genes.intersection(slide.var_names.astype(str), sort=False)
    if len(genes) < min_shared_genes:
        raise InputError(
            f"only {len(genes)} signature genes are on all slides of the group (minimum {min_shared_genes})"
        )
    order = pd.Index(signatures.index.astype(str))
    return [g for g in order if g in set(genes)]


def _check_inputs(
    slides: Mapping[str, ad.AnnData],
    signatures: pd.DataFrame,
    n_cells_per_location: float,
    detection_alpha: float,
    max_epochs: int,
    num_samples: int,
) -> None:
    if not slides:
        raise InputError("no slides given")
    if signatures.shape[1] < 2:
        raise InputError(f"signatures: need at least 2 cell types, found {signatures.shape[1]}")
    if signatures.isna().any().any() or (signatures.to_numpy() < 0).any():
        raise InputError("signatures: values must be non-negative numbers")
    if not n_cells_per_location > 0:
        raise InputError(f"the expected cells per spot must be positive, got {n_cells_per_location}")
    if not detection_alpha > 0:
        raise InputError(f"detection alpha must be positive, got {detection_alpha}")
    if max_epochs < 1:
        raise InputError(f"max epochs must be at least 1, got {max_epochs}")
    if num_samples < 2:
        raise InputError(f"posterior samples must be at least 2, got {num_samples}")
    for sample, slide in slides.items():
        if slide.n_obs == 0:
            raise InputError(f"slide {sample}: no spots")
        X = slide.X
        values = X.data if sparse.issparse(X) else np.asarray(X).ravel()
        if values.size and (values.min() < 0 or not np.allclose(values, np.round(values))):
            raise InputError(f"slide {sample}: X must hold raw integer counts")


# long: over 80 lines only by its docstring, which documents every setting; the code is 41 lines.
def run(
    slides: Mapping[str, ad.AnnData],
    signatures: pd.DataFrame,
    n_cells_per_location: float = 8,
    detection_alpha: float = 20,
    max_epochs: int = 30000,
    batch_size: int | None = None,
    seed: int = 0,
    accelerator: str = "auto",
    lr: float = 0.002,
    lr_start: float | None = c2l_train.DEFAULT_LR_START,
    num_samples: int = 1000,
    min_shared_genes: int = DEFAULT_MIN_SHARED_GENES,
    threads: int | None = None,
    engine: str = "fast",
    min_epochs: int = c2l_train.DEFAULT_MIN_EPOCHS,
    convergence_window: int = c2l_train.DEFAULT_WINDOW,
    convergence_tol: float = c2l_train.DEFAULT_TOL,
    minibatch_above: int = c2l_train.DEFAULT_MINIBATCH_ABOVE,
) -> MappingResult:
    """Map cell types onto slides jointly with cell2location.

    Parameters
    ----------
    slides
        ``{sample: AnnData}`` with raw counts in X; trained as one model with the sample as batch.
    signatures
        Genes x cell types expected counts (e.g. from :func:`spatialmap.reference.signatures.estimate_signatures`).
    n_cells_per_location
        Prior expected cells per spot (tissue dependent; cell2location's ``N_cells_per_location``).
    detection_alpha
        Regularisation of the per-spot detection efficiency (20 for typical within-slide
        variation, 200 when it is low).
    max_epochs, batch_size, lr
        Training cap, minibatch size (None = all spots every step, or minibatches of
        :data:`c2l_train.DEFAULT_MINIBATCH_SIZE` above ``minibatch_above`` spots) and Adam rate.
    seed
        Seeds python/numpy/torch/pyro.
    accelerator
        ``'auto'`` (GPU when present), ``'cpu'`` or ``'gpu'``.
    num_samples
        Posterior samples drawn by the ``package`` engine's export (the ``fast`` engine's
        summaries are closed-form).
    min_shared_genes
        Raise :class:`InputError` when fewer signature genes are on every slide.
    threads
        torch CPU threads (None = torch's default).
    engine
        ``'fast'``: :func:`spatialmap.c2l_train.train_lean` to convergence + closed-form export;
        ``'package'``: ``Cell2location.train(max_epochs)`` + ``export_posterior(num_samples)``.
    min_epochs, convergence_window, convergence_tol
        ``fast`` engine: stop once the mean -ELBO of the last window improved on the window
        before by less than ``convergence_tol`` (relative), after ``min_epochs``; tol 0 = never.
    minibatch_above
        ``fast`` engine with ``batch_size`` None: groups with more spots train in minibatches.

    Returns
    -------
    :class:`MappingResult`.
    """
    _check_inputs(slides, signatures, n_cells_per_location, detection_alpha, max_epochs, num_samples)
    if engine not in ENGINES:
        raise InputError(f"cell2location engine must be one of {', '.join(ENGINES)}, got '{engine}'")
    try:
        rule = ConvergenceRule(min_epochs=min_epochs, window=convergence_window, tol=convergence_tol)
    except ValueError as err:
        raise InputError(str(err)) from err
    slides = {str(k): v for k, v in slides.items()}
    signatures = signatures.copy()
    signatures.index = signatures.index.astype(str)
    signatures.columns = signatures.columns.astype(str)
    genes = shared_genes(slides, signatures, min_shared_genes)
    combined = _combined(slides, genes, signatures.shape[1])
    device = resolve_accelerator(accelerator, threads)
    seed_everything(seed)
    model = _build_model(combined, signatures.loc[genes], n_cells_per_location, detection_alpha)
    if engine == "fast":
        asked = batch_size
        batch_size = c2l_train.choose_batch_size(combined.n_obs, batch_size, minibatch_above)
        if asked is None and batch_size is not None:
            log.info(
                "cell2location: %d spots > %d: minibatches of %d spots", combined.n_obs, minibatch_above, batch_size
            )
        training, summaries = _fit_fast(model, rule, max_epochs, batch_size, lr, device, seed, threads, lr_start)
    else:
        training, summaries = _fit_package(model, combined, max_epochs, batch_size, lr, device, num_samples)
    c2l_train.set_model_samples(model, summaries)
    uns = {
        "genes_used": len(genes),
        "n_cells_per_location": float(n_cells_per_location),
        "detection_alpha": float(detection_alpha),
        "max_epochs": int(max_epochs),
        "epochs_run": int(training.epochs_run),
        "stop_reason": training.stop_reason,
        "engine": engine,
        "device": device,
        "samples_in_model": list(slides),
    }
    results = _split_results(slides, combined, model, summaries, device, genes, training, uns)
    settings = {
        "n_cells_per_location": n_cells_per_location,
        "detection_alpha": detection_alpha,
        "max_epochs": max_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "lr_start": lr_start,
        "seed": seed,
        "num_samples": num_samples,
        "engine": engine,
        "min_epochs": min_epochs,
        "convergence_window": convergence_window,
        "convergence_tol": convergence_tol,
        "minibatch_above": minibatch_above,
    }
    return MappingResult(results, model, combined, device, genes, settings, training, summaries)


def _combined(slides: dict[str, ad.AnnData], genes: list[str], n_types: int) -> ad.AnnData:
    """The slides stacked on ``genes`` (:func:`combine_slides`); warns of spots without counts."""
    combined = combine_slides(slides, genes)
    totals = np.asarray(combined.X.sum(axis=1)).ravel()
    empty = int((totals == 0).sum())
    if empty:
        log.warning("%d spots have no counts on the %d genes used; they will get low abundances", empty, len(genes))
    log.info(
        "cell2location: %d slides (%s), %d spots, %d genes, %d cell types",
        len(slides),
        ", ".join(slides),
        combined.n_obs,
        len(genes),
        n_types,
    )
    return combined


def _build_model(combined: ad.AnnData, signatures: pd.DataFrame, n_cells_per_location: float, detection_alpha: float):
    """cell2location's model on the combined slides, the sample as batch."""
    from cell2location.models import Cell2location

    Cell2location.setup_anndata(combined, batch_key=keys.SAMPLE)
    return Cell2location(
        combined,
        cell_state_df=signatures,
        N_cells_per_location=n_cells_per_location,
        detection_alpha=detection_alpha,
    )


def _fit_fast(
    model,
    rule: ConvergenceRule,
    max_epochs: int,
    batch_size: int | None,
    lr: float,
    device: str,
    seed: int,
    threads: int | None,
    lr_start: float | None = None,
) -> tuple[TrainResult, dict]:
    """Lean SVI loop to convergence, then the closed-form export from the guide."""
    log.info(
        "cell2location (fast engine): at most %d epochs, %s, lr %s; stop when the mean -ELBO of %d epochs "
        "improves by < %g (relative) after %d epochs",
        max_epochs,
        "full batch" if batch_size is None else f"batch size {batch_size}",
        f"{lr:g}" if lr_start in (None, lr) else f"{lr_start:g} then {lr:g} once the -ELBO stops improving",
        rule.window,
        rule.tol,
        rule.min_epochs,
    )
    training = c2l_train.train_lean(
        model,
        max_epochs=max_epochs,
        lr=lr,
        rule=rule,
        batch_size=batch_size,
        device=device,
        seed=seed,
        lr_start=lr_start,
    )
    start = time.perf_counter()
    summaries = c2l_train.guide_summaries(model)
    log.info("cell2location: closed-form posterior summaries in %.2f s", time.perf_counter() - start)
    return training, summaries


def _fit_package(
    model, combined: ad.AnnData, max_epochs: int, batch_size: int | None, lr: float, device: str, num_samples: int
) -> tuple[TrainResult, dict]:
    """The package's own ``train`` for ``max_epochs`` and ``export_posterior`` (the reference path)."""
    log.info(
        "cell2location (package engine): training %d epochs, %s, lr %g",
        max_epochs,
        "full batch" if batch_size is None else f"batch size {batch_size}",
        lr,
    )
    start = time.perf_counter()
    model.train(
        max_epochs=max_epochs,
        batch_size=batch_size,
        train_size=1,
        lr=lr,
        accelerator=device,
        **quiet_trainer_kwargs(max_epochs, "cell2location training (package engine)"),
    )
    seconds = time.perf_counter() - start
    sample_batch = combined.n_obs if batch_size is None else batch_size
    model.export_posterior(
        combined,
        sample_kwargs={"num_samples": num_samples, "batch_size": sample_batch, "accelerator": device},
    )
    history = np.asarray(model.history_["elbo_train"]).ravel()
    training = TrainResult(
        len(history), c2l_train.STOP_MAX_EPOCHS, float(history[-1]), seconds, batch_size, "package", history
    )
    summaries = {k.replace("post_sample_", ""): v for k, v in model.samples.items()}
    return training, summaries


def _split_results(slides, combined, model, summaries, device, genes, training, uns) -> dict[str, base.MethodResult]:
    """Per slide: the slide with the obsm tables (its ``uns`` the run's ``uns``), proportions, QC."""
    frames = {}
    for summary, key in (("means", keys.C2L_MEAN), ("q05", keys.C2L_Q05), ("q95", keys.C2L_Q95)):
        frames[key] = c2l_train.site_frame(model, summaries, summary).clip(lower=0)
    detection = np.asarray(summaries["means"]["detection_y_s"]).ravel()
    samples_of = combined.obs[keys.SAMPLE].astype(str).to_numpy()
    recon = c2l_train.reconstruction_r_by_group(model, summaries["means"], samples_of)
    out = {}
    for sample, slide in slides.items():
        rows = samples_of == sample
        result = slide.copy()
        for key, df in frames.items():
            part = df.loc[rows].copy()
            part.index = result.obs_names
            result.obsm[key] = part
        result.obs[keys.C2L_TOTAL_CELLS] = result.obsm[keys.C2L_MEAN].sum(axis=1).to_numpy()
        result.obs[keys.C2L_DETECTION] = detection[rows]
        result.uns[keys.UNS_C2L] = dict(uns)
        qc = {**slide_qc(result, recon.get(sample), sample, device, len(genes)), **training.as_qc()}
        out[sample] = slide_result(result, sample, qc)
    return out


def slide_result(slide: ad.AnnData, sample: str, qc: dict) -> base.MethodResult:
    """One slide's :class:`~spatialmap.methods.base.MethodResult`: the 5% quantile abundances and
    their per-spot proportions (spots whose abundances are all zero are left out)."""
    q05 = slide.obsm[keys.C2L_Q05]
    values = q05.to_numpy(dtype=np.float64)
    fitted = values.sum(axis=1) > 0
    proportions = base.proportions_frame(base.normalise_rows(values[fitted]), q05.index[fitted], q05.columns)
    spot_qc = base.spot_status(q05.index, {"all-zero abundance (5% quantile)": ~fitted})
    return base.MethodResult(NAME, sample, proportions, qc, abundances=q05, spot_qc=spot_qc, extras={"slide": slide})


def slide_qc(
    slide: ad.AnnData, reconstruction_r: float | None, sample: str, device: str, n_genes_used: int
) -> dict[str, Any]:
    """Per-slide mapping QC: cells per spot, abundance per type, detection, reconstruction r."""
    q05 = slide.obsm[keys.C2L_Q05]
    mean_q05 = q05.mean(axis=0)
    return {
        "sample": sample,
        "device": device,
        "n_spots": int(slide.n_obs),
        "n_genes_used": int(n_genes_used),
        "mean_total_cells_per_spot": float(slide.obs[keys.C2L_TOTAL_CELLS].mean()),
        "most_abundant_type": str(mean_q05.idxmax()),
        "mean_abundance": {str(k): float(v) for k, v in mean_q05.items()},
        "detection_sensitivity": float(slide.obs[keys.C2L_DETECTION].mean()),
        "reconstruction_r": reconstruction_r,
    }


def plot_reconstruction(result: MappingResult, out_png: str | Path, max_spots: int = 3000, seed: int = 0) -> None:
    """Observed vs expected counts (spots x genes), one panel per slide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = result.model
    means = result.summaries["means"]
    rng = np.random.default_rng(seed)
    samples = list(result.slides)
    fig, axes = plt.subplots(1, len(samples), figsize=(4.8 * len(samples), 4.6), squeeze=False)
    for ax, sample in zip(axes[0], samples):
        rows = np.flatnonzero((result.combined.obs[keys.SAMPLE] == sample).to_numpy())
        if len(rows) > max_spots:
            rows = np.sort(rng.choice(rows, max_spots, replace=False))
        observed = result.combined.X[rows].toarray()
        expected = np.vstack([mu for _, mu in c2l_train.expected_counts_blocks(model, means, rows)])
        hist2d_observed_expected(ax, observed, expected, f"{sample}: reconstruction")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def save_model(result: MappingResult, out_dir: str | Path) -> None:
    """Save the trained model (without data) into ``out_dir``."""
    save_model_dir(result.model, out_dir)


def plot_training_loss(result: MappingResult, out_png: str | Path, title: str) -> None:
    """-ELBO per epoch (all epochs, and from 20% on), with the stop marked and its reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    training = result.training
    loss = np.asarray(training.history, dtype=float)
    epochs = np.arange(1, len(loss) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    tail = len(loss) // 5
    for ax, lo in zip(axes, (0, tail)):
        ax.plot(epochs[lo:], loss[lo:], lw=0.6)
        ax.axvline(training.epochs_run, color="crimson", ls="--", lw=1)
        if training.engine != "package" and training.window and training.epochs_run >= 2 * training.window:
            ax.axvspan(training.epochs_run - training.window, training.epochs_run, color="crimson", alpha=0.08)
        if getattr(training, "lr_drop_epoch", None):
            ax.axvline(training.lr_drop_epoch, color="grey", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("-ELBO loss")
    axes[0].set_title("all epochs")
    axes[1].set_title(f"from epoch {tail + 1}")
    stop = "converged" if training.stop_reason == c2l_train.STOP_CONVERGED else "reached the epoch cap"
    drop = getattr(training, "lr_drop_epoch", None)
    rates = f"; lr {training.lr_start:g} -> {training.lr:g} at epoch {drop} (dotted)" if drop else ""
    fig.suptitle(
        f"{title}\nstopped at epoch {training.epochs_run}: {stop}; final -ELBO {training.final_loss:.5g}{rates}"
    )
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------- outputs (the shared writer's group hooks)


def write_group_outputs(result: MappingResult, group: str, outdir: str | Path, *, seed: int = 0) -> None:
    """The group's files: ``<group>.cell2location_model/``, its training loss and reconstruction figures."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    save_model(result, out / f"{group}.cell2location_model")
    plot_training_loss(
        result,
        out / f"{group}.cell2location_training_loss.png",
        f"cell2location, group {group} (cap {result.settings['max_epochs']} epochs)",
    )
    plot_reconstruction(result, out / f"{group}.cell2location_reconstruction.png", seed=seed)


def write_slide_outputs(
    slide: ad.AnnData, result: base.MethodResult, group: str, outdir: str | Path, *, seed: int = 0
) -> None:
    """One slide's files in ``outdir``: ``S.cell2location.h5ad`` (``slide``, its own gene names kept,
    with the abundance tables), ``S.cell2location_q05.csv``, ``S.cell2location_maps.png`` and
    ``S.cell2location_qc.json`` (with the group)."""
    from spatialmap.report.plotting import plot_spatial_values

    sample, out = result.sample, Path(outdir)
    mapped = result.extras["slide"]
    for key in (keys.C2L_MEAN, keys.C2L_Q05, keys.C2L_Q95):
        slide.obsm[key] = mapped.obsm[key]
    for key in (keys.C2L_TOTAL_CELLS, keys.C2L_DETECTION):
        slide.obs[key] = mapped.obs[key].to_numpy()
    slide.uns[keys.UNS_C2L] = {**mapped.uns[keys.UNS_C2L], "group": group}
    qc = {"sample": sample, "group": group, **{k: v for k, v in result.qc.items() if k != "sample"}}
    log.info(
        "sample %s: %.1f cells per spot on average; most abundant: %s; detection %.3f; reconstruction r %.3f; "
        "%d epochs (%s)",
        sample,
        qc["mean_total_cells_per_spot"],
        qc["most_abundant_type"],
        qc["detection_sensitivity"],
        qc["reconstruction_r"] if qc["reconstruction_r"] is not None else float("nan"),
        qc["epochs_run"],
        qc["stop_reason"],
    )
    plot_spatial_values(
        slide,
        slide.obsm[keys.C2L_Q05],
        out / f"{sample}.cell2location_maps.png",
        f"{sample}: cell2location abundance (cells per spot, 5% quantile)",
        vmax_quantile=0.992,
    )
    with atomic_path(out / f"{sample}.cell2location_q05.csv") as tmp:
        slide.obsm[keys.C2L_Q05].to_csv(tmp, index_label="barcode")
    base.write_qc_json(out / f"{sample}.cell2location_qc.json", base.contract_fields(sys.modules[__name__], result, qc))
    with atomic_path(out / f"{sample}.cell2location.h5ad") as tmp:
        slide.write_h5ad(tmp, compression="gzip")
