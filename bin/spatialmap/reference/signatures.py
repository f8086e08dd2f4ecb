"""Reference expression signatures: average counts of every gene in every cell type.

Two ways: cell2location's negative-binomial ``RegressionModel`` (accounts for batches and
technical covariates), or plain per-type means of the raw counts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from spatialmap.cli import InputError, atomic_path
from spatialmap.device import resolve_accelerator, seed_everything

log = logging.getLogger("spatialmap.reference.signatures")

METHODS = ("regression", "means")


# --------------------------------------------------------------------------------------------
# shared training plumbing (also used by c2l.py)
# --------------------------------------------------------------------------------------------


def quiet_trainer_kwargs(max_epochs: int, what: str = "training") -> dict[str, Any]:
    """Trainer options: no progress bar; a progress line about once a minute instead (epochs, rate,
    -ELBO, time left: :class:`spatialmap.progress.Progress`), and the last epoch's -ELBO."""
    from lightning.pytorch.callbacks import Callback

    from spatialmap.progress import Progress

    class _LogLoss(Callback):
        def __init__(self) -> None:
            self.progress = None

        def on_train_start(self, trainer, pl_module):
            self.progress = Progress(what, max_epochs, "epochs", objective="-ELBO")

        def on_train_epoch_end(self, trainer, pl_module):
            epoch = trainer.current_epoch + 1
            loss = trainer.callback_metrics.get("elbo_train")
            value = None if loss is None else float(loss)
            if self.progress is not None:
                self.progress.update(epoch, value)
            if epoch == max_epochs and value is not None:
                log.info("epoch %d/%d: -ELBO %.4g", epoch, max_epochs, value)

    return {"enable_progress_bar": False, "callbacks": [_LogLoss()], "enable_model_summary": False}


def save_model_dir(model, out_dir: str | Path) -> None:
    """Save a scvi-tools model into ``out_dir`` (replaced whole; nothing half-written remains)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save(str(tmp), overwrite=True, save_anndata=False)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def plot_training_loss(history: pd.DataFrame | pd.Series, out_png: str | Path, title: str) -> None:
    """-ELBO per epoch: all epochs, and the last 80% (where convergence shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = pd.Series(np.asarray(history).ravel(), index=np.asarray(getattr(history, "index", range(len(history)))))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(loss.index, loss.values)
    axes[0].set_title("all epochs")
    tail = loss.iloc[len(loss) // 5 :]
    axes[1].plot(tail.index, tail.values)
    axes[1].set_title(f"from epoch {tail.index[0] if len(tail) else 0}")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.set_ylabel("-ELBO loss")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def hist2d_observed_expected(ax, observed: np.ndarray, expected: np.ndarray, title: str) -> float:
    """log10(x+1) 2D histogram of observed vs expected counts; returns their Pearson r (counts)."""
    import matplotlib.colors

    observed = np.asarray(observed, dtype=float).ravel()
    expected = np.asarray(expected, dtype=float).ravel()
    r = float(np.corrcoef(observed, expected)[0, 1]) if observed.std() > 0 and expected.std() > 0 else float("nan")
    lo, hi = np.log10(observed + 1), np.log10(expected + 1)
    top = max(lo.max(), hi.max(), 0.1)
    ax.hist2d(lo, hi, bins=50, range=[[0, top], [0, top]], norm=matplotlib.colors.LogNorm(), cmap="viridis")
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("observed count, log10(x+1)")
    ax.set_ylabel("expected count, log10(x+1)")
    ax.set_title(f"{title}\nPearson r (counts) = {r:.3f}")
    return r


# --------------------------------------------------------------------------------------------
# signatures
# --------------------------------------------------------------------------------------------


def cluster_means(reference: ad.AnnData, label_key: str) -> pd.DataFrame:
    """Average raw count of every gene in every label: genes x labels (labels sorted)."""
    labels = reference.obs[label_key].astype(str).to_numpy()
    names = np.unique(labels)
    codes = np.searchsorted(names, labels)
    n = np.bincount(codes, minlength=len(names)).astype(float)
    ind = sparse.csr_matrix((1.0 / n[codes], (codes, np.arange(len(labels)))), shape=(len(names), len(labels)))
    X = reference.X if sparse.issparse(reference.X) else sparse.csr_matrix(reference.X)
    means = np.asarray((ind @ X).todense(), dtype=float)
    return pd.DataFrame(means.T, index=reference.var_names.astype(str), columns=names)


@dataclass
class SignatureResult:
    """Signatures (genes x cell types) and what produced them.

    ``model`` is the trained ``RegressionModel`` (None for ``means``); ``reference`` is the
    AnnData the model was set up on (None for ``means``).
    """

    signatures: pd.DataFrame
    method: str
    device: str
    model: Any = None
    reference: ad.AnnData | None = None
    label_key: str = "cell_type"

    @property
    def history(self) -> pd.DataFrame | None:
        return None if self.model is None else self.model.history_["elbo_train"]


def estimate_signatures(
    reference: ad.AnnData,
    method: str = "regression",
    label_key: str = "cell_type",
    batch_key: str | None = None,
    covariate_keys: Sequence[str] = (),
    max_epochs: int = 250,
    batch_size: int | None = 2500,
    lr: float = 0.002,
    seed: int = 0,
    accelerator: str = "auto",
    num_samples: int = 1000,
    threads: int | None = None,
) -> SignatureResult:
    """Estimate the expression signature of every cell type.

    Parameters
    ----------
    reference
        Raw counts (genes already filtered), ``obs[label_key]``, optional batch/covariates.
    method
        ``'regression'``: cell2location ``RegressionModel``; signatures are the posterior means
        of ``per_cluster_mu_fg`` scaled by the average detection (``varm['means_per_cluster_mu_fg']``).
        ``'means'``: per-type average counts (no training; batches ignored).
    max_epochs, batch_size, lr
        Training of the regression model (``batch_size`` None = whole data per step).
    seed
        Seeds python/numpy/torch/pyro.
    accelerator
        ``'auto'`` (GPU when present), ``'cpu'`` or ``'gpu'``.
    num_samples
        Posterior samples drawn to summarise the regression model.
    threads
        torch CPU threads (None = torch's default).

    Returns
    -------
    :class:`SignatureResult`; ``.signatures`` is a genes x cell types DataFrame of non-negative
    expected counts, columns = the labels.
    """
    if method not in METHODS:
        raise InputError(f"signature method must be one of {', '.join(METHODS)}, got '{method}'")
    for col in [label_key] + ([batch_key] if batch_key else []) + list(covariate_keys):
        if col not in reference.obs.columns:
            raise InputError(f"reference: column '{col}' not in obs")
    if method == "means":
        log.info("signatures: per cell type mean counts (%d cells x %d genes)", reference.n_obs, reference.n_vars)
        return SignatureResult(cluster_means(reference, label_key), "means", "cpu", label_key=label_key)

    if max_epochs < 1:
        raise InputError(f"max epochs must be at least 1, got {max_epochs}")
    model, adata, device = _train_regression(
        reference, label_key, batch_key, covariate_keys, max_epochs, batch_size, lr, seed, accelerator, threads
    )
    sample_batch = adata.n_obs if batch_size is None else batch_size
    adata = model.export_posterior(
        adata, sample_kwargs={"num_samples": num_samples, "batch_size": sample_batch, "accelerator": device}
    )
    sig = _regression_signatures(adata)
    return SignatureResult(sig, "regression", device, model=model, reference=adata, label_key=label_key)


def _train_regression(
    reference: ad.AnnData,
    label_key: str,
    batch_key: str | None,
    covariate_keys: Sequence[str],
    max_epochs: int,
    batch_size: int | None,
    lr: float,
    seed: int,
    accelerator: str,
    threads: int | None,
):
    """cell2location's ``RegressionModel`` set up on a copy of ``reference`` and trained (seeded);
    returns the model, the copy it was set up on and the device it ran on."""
    from cell2location.models import RegressionModel

    device = resolve_accelerator(accelerator, threads)
    seed_everything(seed)
    adata = reference.copy()
    RegressionModel.setup_anndata(
        adata,
        batch_key=batch_key or None,
        labels_key=label_key,
        categorical_covariate_keys=list(covariate_keys) or None,
    )
    model = RegressionModel(adata)
    log.info(
        "signatures: RegressionModel on %d cells x %d genes, %d labels, %s, %d epochs, batch size %s, lr %g",
        adata.n_obs,
        adata.n_vars,
        adata.obs[label_key].nunique(),
        f"batches from '{batch_key}'" if batch_key else "one batch",
        max_epochs,
        batch_size,
        lr,
    )
    model.train(
        max_epochs=max_epochs,
        batch_size=batch_size,
        train_size=1,
        lr=lr,
        accelerator=device,
        **quiet_trainer_kwargs(max_epochs, "reference signatures (regression model) training"),
    )
    return model, adata, device


def _regression_signatures(adata: ad.AnnData) -> pd.DataFrame:
    """Genes x cell types from the exported posterior: ``means_per_cluster_mu_fg_<type>`` (``varm``
    when present, else ``var``), columns named by the cell types."""
    names = list(adata.uns["mod"]["factor_names"])
    columns = [f"means_per_cluster_mu_fg_{n}" for n in names]
    if "means_per_cluster_mu_fg" in adata.varm:
        sig = adata.varm["means_per_cluster_mu_fg"][columns].copy()
    else:
        sig = adata.var[columns].copy()
    sig.columns = [str(n) for n in names]
    sig.index = adata.var_names.astype(str)
    return sig.astype(float)


def plot_reconstruction(
    result: SignatureResult, reference: ad.AnnData, out_png: str | Path, max_cells: int = 2000, seed: int = 0
) -> float:
    """Observed vs expected counts per cell and gene; for regression also signature vs cell-type mean.

    Expected counts: the regression model's mean (with batch and covariate effects), or the
    cell's type mean for ``means``. Up to ``max_cells`` random cells are used.

    Returns
    -------
    Pearson r of observed vs expected counts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scvi import REGISTRY_KEYS

    rng = np.random.default_rng(seed)
    if result.model is not None:
        model = result.model
        n = model.adata.n_obs
        ind = np.sort(rng.choice(n, min(n, max_cells), replace=False))
        expected = model.module.model.compute_expected(
            model.samples["post_sample_means"], model.adata_manager, ind_x=ind
        )["mu"]
        observed = model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)[ind, :]
        observed = observed.toarray() if sparse.issparse(observed) else np.asarray(observed)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
        r = hist2d_observed_expected(axes[0], observed, expected, "reconstruction (cells x genes)")
        aver = cluster_means(model.adata, result.label_key)[result.signatures.columns]
        sig = result.signatures.loc[aver.index]
        hist2d_observed_expected(axes[1], aver.values, sig.values, "signature vs cell type mean")
        axes[1].set_xlabel("mean count in the cell type, log10(x+1)")
        axes[1].set_ylabel("estimated signature, log10(x+1)")
    else:
        n = reference.n_obs
        ind = np.sort(rng.choice(n, min(n, max_cells), replace=False))
        sub = reference[ind]
        labels = sub.obs[result.label_key].astype(str).to_numpy()
        sig = result.signatures.loc[sub.var_names.astype(str)]
        expected = sig[labels].to_numpy().T
        observed = sub.X.toarray() if sparse.issparse(sub.X) else np.asarray(sub.X)
        fig, axes = plt.subplots(1, 1, figsize=(5.2, 4.6))
        r = hist2d_observed_expected(axes, observed, expected, "reconstruction: counts vs cell type mean")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return r


# --------------------------------------------------------------------------------------------
# user-given signatures
# --------------------------------------------------------------------------------------------


def load_signatures_csv(path: str | Path, min_genes: int = 10) -> pd.DataFrame:
    """Read signatures from a CSV: first column genes, one column per cell type, non-negative numbers.

    Raises
    ------
    InputError
        Naming the column or gene at fault.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"signatures file not found: {path}")
    try:
        df = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"signatures {path.name}: cannot be read as CSV ({err})") from err
    name = f"signatures {path.name}"
    if df.shape[1] < 2:
        raise InputError(f"{name}: need at least 2 cell type columns, found {df.shape[1]}")
    df.columns = df.columns.astype(str)
    if df.columns.duplicated().any():
        raise InputError(f"{name}: duplicated cell type columns: {sorted(set(df.columns[df.columns.duplicated()]))}")
    df.index = df.index.astype(str)
    if df.index.duplicated().any():
        dup = df.index[df.index.duplicated()]
        raise InputError(f"{name}: {len(dup)} duplicated genes, e.g. {dup[0]}")
    for col in df.columns:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            raise InputError(f"{name}: column '{col}' has a non-numeric value for gene {df.index[bad][0]}")
        if values.isna().any():
            raise InputError(f"{name}: column '{col}' is empty for gene {df.index[values.isna()][0]}")
        if not np.isfinite(values).all():
            raise InputError(f"{name}: column '{col}' has an infinite value")
        if (values < 0).any():
            raise InputError(f"{name}: column '{col}' has a negative value for gene {df.index[values < 0][0]}")
        df[col] = values.astype(float)
    if len(df) < min_genes:
        raise InputError(f"{name}: only {len(df)} genes (minimum {min_genes})")
    zero = df.columns[(df.sum(axis=0) == 0).to_numpy()]
    if len(zero):
        raise InputError(f"{name}: cell type(s) with all-zero signatures: {', '.join(zero)}")
    return df
