"""Fast training and export for cell2location's own model and guide.

cell2location's ``Cell2location.train`` runs pyro's SVI inside scvi-tools' Lightning training
plan: one Lightning epoch (data loader, callbacks, logging) around every SVI step. This module
trains the *same* ``model.module.model`` and ``model.module.guide`` (the package's classes,
priors and AutoNormal guide, untouched) with the same loss (``Trace_ELBO``; its JIT-compiled
form ``JitTrace_ELBO`` for full-batch steps) and the same optimiser (``pyro.optim.Adam`` at the
same learning rate, what scvi's ``PyroTrainingPlan`` builds), in a plain loop with the data
resident on the device, and stops when the ELBO has stopped improving
(:class:`ConvergenceRule`).

The export reads the AutoNormal guide directly: every latent site is a Normal in unconstrained
space pushed through ``biject_to(support)`` (``exp`` for cell2location's Gamma and Exponential
sites), so the posterior mean, SD and quantiles are closed-form, computed in one vectorised
pass, instead of 1,000 Monte Carlo draws of every site. Expected counts for the
reconstruction QC are computed in blocks of spots.

After :func:`train_lean` the scvi-tools model is marked trained and carries ``history_``, so
the package's own ``export_posterior``, ``save`` and plotting still work on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd
from scipy import sparse

log = logging.getLogger("spatialmap.c2l_train")

# Defaults chosen from measurements (tools/BENCHMARKS.md, "cell2location: stopping at convergence").
DEFAULT_MIN_EPOCHS = 1000
DEFAULT_WINDOW = 500
DEFAULT_TOL = 3e-4
DEFAULT_MINIBATCH_ABOVE = 30000
DEFAULT_MINIBATCH_SIZE = 5000
DEFAULT_LR_START = 0.02  # fast engine: first rate, dropped to the package's 0.002 at the first plateau

STOP_CONVERGED = "converged"
STOP_MAX_EPOCHS = "max_epochs"


@dataclass
class ConvergenceRule:
    """Stop when the mean -ELBO of the last ``window`` epochs improved on the window before by
    less than ``tol`` (relative), once at least ``min_epochs`` have run.

    Parameters
    ----------
    min_epochs
        Never stop before this many epochs.
    window
        Epochs per window; the mean loss of a window smooths the per-step noise of the ELBO.
    tol
        Relative improvement between two consecutive windows below which training stops;
        0 never stops early (train to the cap).
    """

    min_epochs: int = DEFAULT_MIN_EPOCHS
    window: int = DEFAULT_WINDOW
    tol: float = DEFAULT_TOL

    def __post_init__(self) -> None:
        if self.min_epochs < 0:
            raise ValueError(f"minimum epochs must be 0 or more, got {self.min_epochs}")
        if self.window < 1:
            raise ValueError(f"convergence window must be at least 1 epoch, got {self.window}")
        if not self.tol >= 0:
            raise ValueError(f"convergence tolerance must be 0 or more, got {self.tol}")

    def improvement(self, losses: np.ndarray) -> float | None:
        """Relative improvement of the last window's mean loss over the window before (None: too few)."""
        w = self.window
        if len(losses) < 2 * w:
            return None
        cur = float(np.mean(losses[-w:]))
        prev = float(np.mean(losses[-2 * w : -w]))
        return (prev - cur) / max(abs(cur), 1e-12)

    def converged(self, losses: np.ndarray) -> bool:
        """True once ``min_epochs`` have run and the last window improved by less than ``tol``."""
        if self.tol <= 0 or len(losses) < max(self.min_epochs, 2 * self.window):
            return False
        rel = self.improvement(losses)
        return rel is not None and rel < self.tol

    def first_stop(self, losses: np.ndarray, every: int = 1) -> int | None:
        """The epoch (1-based) at which this rule would stop on a recorded loss curve (None: never)."""
        losses = np.asarray(losses, dtype=float)
        csum = np.concatenate([[0.0], np.cumsum(losses)])
        w = self.window
        start = max(self.min_epochs, 2 * w)
        for e in range(start, len(losses) + 1):
            if e % every:
                continue
            cur = (csum[e] - csum[e - w]) / w
            prev = (csum[e - w] - csum[e - 2 * w]) / w
            if self.tol > 0 and (prev - cur) / max(abs(cur), 1e-12) < self.tol:
                return e
        return None


@dataclass
class TrainResult:
    """What :func:`train_lean` did: epochs run, why it stopped, the last loss and the time."""

    epochs_run: int
    stop_reason: str
    final_loss: float
    train_seconds: float
    batch_size: int | None
    engine: str
    history: np.ndarray = field(repr=False)
    min_epochs: int = 0
    window: int = 0
    tol: float = 0.0
    lr: float | None = None
    lr_start: float | None = None
    lr_drop_epoch: int | None = None  # epoch at which the rate dropped from lr_start to lr

    def as_qc(self) -> dict[str, Any]:
        """QC JSON fields."""
        return {
            "epochs_run": int(self.epochs_run),
            "stop_reason": self.stop_reason,
            "final_loss": float(self.final_loss),
            "train_seconds": round(float(self.train_seconds), 3),
            "training_engine": self.engine,
            "minibatch_size": self.batch_size,
            "convergence": {"min_epochs": self.min_epochs, "window": self.window, "tol": self.tol},
            "learning_rate": {"start": self.lr_start, "final": self.lr, "dropped_at_epoch": self.lr_drop_epoch},
            # flat copies for the report's table (its columns are the JSON's scalar keys)
            "lr_final": self.lr,
            "lr_dropped_at_epoch": self.lr_drop_epoch,
        }


def torch_device(device: str):
    """``'gpu'``/``'cpu'`` (spatialmap.device) -> a torch device."""
    import torch

    return torch.device("cuda" if device == "gpu" else "cpu")


def _registry_data(model):
    """Counts (CSR float32), batch codes (int) from the model's AnnData registry."""
    from scvi import REGISTRY_KEYS

    X = model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    X = sparse.csr_matrix(X, dtype=np.float32)
    batch = np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).reshape(-1).astype(np.int64)
    return X, batch


def choose_batch_size(n_obs: int, batch_size: int | None, minibatch_above: int) -> int | None:
    """Minibatch size for a group of ``n_obs`` spots: the one asked for, else
    :data:`DEFAULT_MINIBATCH_SIZE` above ``minibatch_above`` spots; None = full batch."""
    if batch_size is None and n_obs > minibatch_above:
        batch_size = DEFAULT_MINIBATCH_SIZE
    return None if batch_size is None or batch_size >= n_obs else int(batch_size)


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index blocks of one epoch (as the package's data loader draws them)."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield np.sort(order[start : start + batch_size])


def _block_args(X, rows: np.ndarray, batch_t, dev) -> tuple:
    """Model arguments ``(counts, indices, batch)`` of one block of spots, on the device."""
    import torch

    idx = torch.as_tensor(rows, device=dev)
    return torch.as_tensor(X[rows].toarray(), device=dev), idx, batch_t[idx]


def _guide_params(module, args: tuple) -> list:
    """The guide's unconstrained parameters, created by one guide run (as SVI's param capture finds them)."""
    from pyro import poutine

    with poutine.trace(param_only=True) as capture:
        with poutine.block(hide_fn=lambda msg: msg["type"] == "sample"):
            module.guide(*args)
    params = {id(site["value"].unconstrained()): site["value"].unconstrained() for site in capture.trace.nodes.values()}
    if not params:
        raise RuntimeError("the cell2location guide has no parameters")
    return list(params.values())


def _train_loop(
    epoch_loss,
    optimiser,
    max_epochs: int,
    rule: ConvergenceRule,
    lr: float,
    rate: float,
    boosted: bool,
    log_every: int | None,
) -> tuple[np.ndarray, str, int | None]:
    """Epochs of ``epoch_loss()`` until ``rule`` stops them or ``max_epochs``; the optimiser's rate
    drops from ``rate`` to ``lr`` once the loss stops improving at it. Returns the loss history,
    the stop reason and the epoch of the drop (None: none)."""
    from spatialmap.progress import Progress

    phase = 0  # first epoch at the current rate
    plateau = ConvergenceRule(min_epochs=0, window=rule.window, tol=rule.tol)
    lr_drop_epoch = None
    # a line about once a minute (epochs, rate, -ELBO, time left); log_every adds one every so many epochs
    progress = Progress("cell2location training", max_epochs, "epochs", objective="-ELBO", cap=rule.tol > 0)
    history = np.empty(max_epochs, dtype=np.float64)
    stop = STOP_MAX_EPOCHS
    check_every = max(1, min(rule.window // 10, 100))
    epoch = 0
    while epoch < max_epochs:
        loss = epoch_loss()
        history[epoch] = loss
        epoch += 1
        progress.update(epoch, loss, note=f"lr {rate:g}")
        if log_every and epoch % log_every == 0:
            log.info("epoch %d/%d: -ELBO %.6g", epoch, max_epochs, loss)
        if epoch % check_every:
            continue
        if rate != lr:
            if plateau.converged(history[phase:epoch]):
                log.info("epoch %d: -ELBO stopped improving at lr %g; lr %g from here", epoch, rate, lr)
                rate, phase, lr_drop_epoch = lr, epoch, epoch
                for group in optimiser.param_groups:
                    group["lr"] = lr
        elif rule.converged(history[:epoch]) and (not boosted or plateau.converged(history[phase:epoch])):
            stop = STOP_CONVERGED
            break
    return history[:epoch], stop, lr_drop_epoch


# long: over 80 lines only by its docstring, which documents every setting; the code is 49 lines.
def train_lean(
    model,
    max_epochs: int = 30000,
    lr: float = 0.002,
    rule: ConvergenceRule | None = None,
    lr_start: float | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    jit: bool = True,
    log_every: int | None = None,
) -> TrainResult:
    """Train a ``cell2location.models.Cell2location`` with pyro SVI in a plain loop.

    Parameters
    ----------
    model
        A freshly built ``Cell2location`` (its ``module.model`` and ``module.guide`` are trained).
    max_epochs
        Cap on the epochs (one epoch = one pass over all spots).
    lr
        Adam learning rate (the package's default optimiser and rate: ``pyro.optim.Adam``, 0.002);
        training always ends at this rate.
    rule
        Convergence rule; None trains to ``max_epochs``.
    lr_start
        Start at this (higher) rate and drop to ``lr`` when the ELBO stops improving at it (the
        rule's window and tolerance, without its minimum epochs), then train at ``lr`` until
        the rule stops training (at least two windows at ``lr``). None or ``lr``: ``lr``
        throughout. The optimum is the same; a larger first rate gets near it in fewer steps
        (measured in tools/BENCHMARKS.md). Ignored when the rule never stops (``tol`` 0).
    batch_size
        None: every spot in every step (data on the device, JIT-compiled ELBO); else minibatches
        of this many spots, shuffled every epoch (only one block of dense counts on the device).
    device
        ``'cpu'`` or ``'gpu'``.
    seed
        Seeds the minibatch order (pyro/torch are seeded by the caller).
    jit
        Use ``JitTrace_ELBO`` for full-batch steps.
    log_every
        Also log the loss every so many epochs (default: only the progress lines, about one a
        minute: epochs done, rate, -ELBO, time left to the epoch cap; :mod:`spatialmap.progress`).

    Returns
    -------
    :class:`TrainResult`; the model's ``history_['elbo_train']`` and ``is_trained_`` are set.
    """
    import torch
    from pyro.infer import JitTrace_ELBO, Trace_ELBO

    if max_epochs < 1:
        raise ValueError(f"max epochs must be at least 1, got {max_epochs}")
    if not lr > 0 or (lr_start is not None and not lr_start > 0):
        raise ValueError(f"learning rates must be positive, got {lr} and {lr_start}")
    rule = rule or ConvergenceRule(min_epochs=max_epochs, window=1, tol=0.0)
    boosted = lr_start is not None and lr_start != lr and rule.tol > 0
    dev = torch_device(device)
    X, batch = _registry_data(model)
    n = X.shape[0]
    full = batch_size is None or batch_size >= n
    module = model.module.to(dev)
    batch_t = torch.as_tensor(batch, device=dev).reshape(-1, 1)
    full_args = (torch.as_tensor(X.toarray(), device=dev), torch.arange(n, device=dev), batch_t) if full else None
    use_jit = full and jit
    loss_fn = JitTrace_ELBO(ignore_jit_warnings=True) if use_jit else Trace_ELBO()
    params = _guide_params(module, full_args if full else _block_args(X, np.arange(min(n, 2)), batch_t, dev))
    rate = lr_start if boosted else lr
    optimiser = torch.optim.Adam(params, lr=rate, foreach=True)  # = pyro.optim.Adam({'lr': lr}), one call per step
    rng = np.random.default_rng(seed)

    def step(args) -> float:
        loss = loss_fn.differentiable_loss(module.model, module.guide, *args)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        return float(loss.detach())

    def epoch_loss() -> float:
        if full:
            return step(full_args)
        losses = [step(_block_args(X, rows, batch_t, dev)) for rows in _batches(n, int(batch_size), rng)]
        return float(np.mean(losses))  # as Lightning logs it: mean of the epoch's step losses

    module.train()
    start = time.perf_counter()
    history, stop, lr_drop_epoch = _train_loop(epoch_loss, optimiser, max_epochs, rule, lr, rate, boosted, log_every)
    epoch = len(history)
    seconds = time.perf_counter() - start
    module.eval()
    model.history_ = {"elbo_train": pd.DataFrame({"elbo_train": history}, index=pd.RangeIndex(epoch, name="epoch"))}
    model.is_trained_ = True
    log.info(
        "cell2location: %s after %d epochs (%.1f s); final -ELBO %.6g",
        stop.replace("_", " "),
        epoch,
        seconds,
        history[-1],
    )
    return TrainResult(
        epoch,
        stop,
        float(history[-1]),
        seconds,
        None if full else int(batch_size),
        "lean-jit" if use_jit else "lean",
        history,
        rule.min_epochs,
        rule.window,
        rule.tol,
        lr,
        lr_start if boosted else lr,
        lr_drop_epoch,
    )


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def _unwrap(transform):
    """The elementwise transform inside ``IndependentTransform`` wrappers (``.to_event()``)."""
    from torch.distributions.transforms import IndependentTransform

    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return transform


def _exp_affine(transform) -> tuple[float, float] | None:
    """``(a, b)`` when ``transform(u) = a + b * exp(u)`` with b > 0 (torch's ``biject_to(positive)``
    is ``Compose(Exp, Affine(0, 1))``), else None."""
    from torch.distributions.transforms import AffineTransform, ComposeTransform, ExpTransform

    transform = _unwrap(transform)
    parts = list(transform.parts) if isinstance(transform, ComposeTransform) else [transform]
    parts = [_unwrap(p) for p in parts]
    if not parts or not isinstance(parts[0], ExpTransform):
        return None
    shift, factor = 0.0, 1.0
    for part in parts[1:]:
        if not isinstance(part, AffineTransform) or not (np.ndim(part.loc) == 0 and np.ndim(part.scale) == 0):
            return None
        scale_ = float(part.scale)
        if scale_ <= 0:
            return None
        shift, factor = float(part.loc) + scale_ * shift, scale_ * factor
    return shift, factor


def guide_summaries(
    model, quantiles: tuple[float, ...] = (0.05, 0.95), num_samples: int = 1000, seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """Posterior mean, SD and quantiles of every latent site from the AutoNormal guide.

    For sites whose support maps through ``exp`` (all of cell2location's: Gamma, Exponential)
    they are closed-form (log-normal); other transforms use ``num_samples`` draws. Returns
    ``{'means': {site: array}, 'stds': ..., 'q05': ..., 'q95': ...}`` in the shapes of the
    package's ``model.samples['post_sample_*']``.
    """
    import torch
    from torch.distributions import biject_to
    from torch.distributions.transforms import identity_transform

    guide = model.module.guide
    if not hasattr(guide, "_get_loc_and_scale"):
        raise ValueError("guide_summaries needs the package's non-amortised AutoNormal guide")
    out: dict[str, dict[str, np.ndarray]] = {"means": {}, "stds": {}}
    names = {q: f"q{round(q * 100):02d}" for q in quantiles}
    for q in quantiles:
        out[names[q]] = {}
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, site in guide.prototype_trace.iter_stochastic_nodes():
            loc, scale = (t.detach().cpu().double() for t in guide._get_loc_and_scale(name))
            transform = biject_to(site["fn"].support)
            affine = _exp_affine(transform)
            if affine is not None:  # value = a + b * exp(u), u ~ Normal(loc, scale): shifted log-normal
                shift, factor = affine
                var = scale**2
                mean = shift + factor * torch.exp(loc + var / 2)
                sd = factor * torch.exp(loc + var / 2) * torch.sqrt(torch.expm1(var))
            elif _unwrap(transform) is identity_transform:
                mean, sd = loc.clone(), scale.clone()
            else:
                draws = transform(loc + scale * torch.randn((num_samples, *loc.shape), generator=gen, dtype=loc.dtype))
                mean, sd = draws.mean(0), draws.std(0)
            out["means"][name] = mean.numpy()
            out["stds"][name] = sd.numpy()
            for q in quantiles:
                out[names[q]][name] = transform(loc + scale * _z(q)).numpy()
    return out


def set_model_samples(model, summaries: dict[str, dict[str, np.ndarray]]) -> None:
    """Store summaries where the package keeps them (``model.samples['post_sample_means']`` ...)."""
    model.samples = {f"post_sample_{k}": v for k, v in summaries.items()}


def site_frame(model, summaries: dict, summary: str, site: str = "w_sf") -> pd.DataFrame:
    """Spots x cell types DataFrame of one summary of ``w_sf`` (columns = factor names)."""
    values = np.asarray(summaries[summary][site], dtype=np.float64)
    return pd.DataFrame(values, index=model.adata.obs_names, columns=[str(f) for f in model.factor_names_])


def expected_counts_blocks(
    model, means: dict[str, np.ndarray], rows: np.ndarray | None = None, block_size: int = 2000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(rows, mu)`` blocks of the model's expected counts (spots x genes) from posterior means.

    Uses the package's ``compute_expected`` on ``block_size`` spots at a time, so memory is
    ``block_size x genes`` whatever the slide size.
    """
    n = model.adata.n_obs
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=int)
    for start in range(0, len(rows), block_size):
        block = rows[start : start + block_size]
        mu = model.module.model.compute_expected(means, model.adata_manager, ind_x=block)["mu"]
        yield block, np.asarray(mu, dtype=np.float64)


@dataclass
class _PearsonSums:
    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
        self.n += x.size
        self.sx += float(x.sum())
        self.sy += float(y.sum())
        self.sxx += float(x @ x)
        self.syy += float(y @ y)
        self.sxy += float(x @ y)

    def r(self) -> float | None:
        if self.n < 2:
            return None
        cov = self.sxy - self.sx * self.sy / self.n
        vx = self.sxx - self.sx**2 / self.n
        vy = self.syy - self.sy**2 / self.n
        return float(cov / np.sqrt(vx * vy)) if vx > 0 and vy > 0 else None


def reconstruction_r_by_group(
    model, means: dict[str, np.ndarray], groups: np.ndarray, block_size: int = 2000
) -> dict[Any, float | None]:
    """Pearson r of observed vs expected counts over all spots x genes of each group, in blocks."""
    X, _ = _registry_data(model)
    groups = np.asarray(groups)
    sums = {g: _PearsonSums() for g in pd.unique(groups)}
    for rows, mu in expected_counts_blocks(model, means, block_size=block_size):
        observed = X[rows].toarray()
        for g in pd.unique(groups[rows]):
            sel = groups[rows] == g
            sums[g].add(observed[sel], mu[sel])
    return {g: s.r() for g, s in sums.items()}
