"""Novae domains of a group's slides: one model over all of them, domains at several levels.

Novae (Blampey et al. 2025) takes a list of slides natively: one model, one set of prototypes and
one hierarchy of domains for the whole group, with a queue of prototypes per slide against batch
effects. Each slide is handed over as a new AnnData (its counts copied: Novae log-normalises ``X``
in place) with its coordinates in µm and its neighbourhood graph (:mod:`.common`).

Training, unless ``model`` names a pretrained one: on at most ``train_locations`` locations of the
group (whole square tiles of each slide, shared in proportion to the slides' sizes: neighbourhoods
stay whole), for at most ``max_epochs`` epochs (Novae's early stopping may end it before), then the
representations of **every** location are computed. Each location's leaf (its prototype) is cut
into ``level`` domains by Novae's hierarchy of prototypes; a level may give fewer domains than its
number. Locations without a valid neighbourhood get no domain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from spatialmap.cli import InputError
from spatialmap.domains import common
from spatialmap.progress import Progress

log = logging.getLogger(__name__)

MIN_PROTOTYPES = 32
MAX_PROTOTYPES = 512  # Novae's default
LOCATIONS_PER_PROTOTYPE = 20  # fewer prototypes on small training sets (512 for 10,240 locations and more)
MAX_BATCH = 256  # Novae's default mini-batch; smaller sets get batches of an eighth of them (16 at least)


def num_prototypes(n_train: int) -> int:
    """Prototypes for ``n_train`` training locations: Novae's 512, fewer for small sets."""
    return int(np.clip(n_train // LOCATIONS_PER_PROTOTYPE, MIN_PROTOTYPES, MAX_PROTOTYPES))


def batch_size(n_train: int) -> int:
    """Mini-batch size: Novae's 256, or an eighth of a small training set (its last partial batch is dropped)."""
    return int(np.clip(n_train // 8, 16, MAX_BATCH))


def novae_input(adata: ad.AnnData, sample: str, xy_um: np.ndarray) -> ad.AnnData:
    """A new AnnData Novae may change: the counts copied, the coordinates in µm, nothing else."""
    x = adata.X.copy()
    obs = pd.DataFrame(index=pd.Index(adata.obs_names.astype(str), name=None))
    var = pd.DataFrame(index=pd.Index(adata.var_names.astype(str), name=None))
    out = ad.AnnData(X=x, obs=obs, var=var)
    out.obsm["spatial"] = np.asarray(xy_um, dtype=np.float64).copy()
    out.uns["sample"] = sample
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, numpy, torch and Lightning's workers from ``seed``."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        import lightning

        lightning.seed_everything(seed, workers=True, verbose=False)
    except (ImportError, TypeError):  # older Lightning: no 'verbose'
        pass


def load_model(source: str):
    """A pretrained Novae: a local folder (``save_pretrained``'s), or a hub name (downloads; needs internet)."""
    import novae

    path = Path(source)
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"--novae_model {source}: not a Novae model folder (no config.json)")
        return novae.Novae.from_pretrained(str(path)), f"local folder {path.name}"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise InputError(
            f"--novae_model {source}: no such folder, and the Hugging Face hub is offline (HF_HUB_OFFLINE=1); "
            "give a local model folder (e.g. a run's <group>.novae_model)"
        )
    try:
        return novae.Novae.from_pretrained(source), f"hub {source}"
    except (OSError, ValueError) as err:  # not found, or no network
        raise InputError(f"--novae_model {source}: cannot load it from the Hugging Face hub: {err}") from None


@contextlib.contextmanager
def inference_progress(what: str, total: int):
    """Progress lines while Novae computes representations (it iterates its batches through ``novae.utils.tqdm``)."""
    import novae.utils as nutils

    original = nutils.tqdm
    progress = Progress(what, total, "locations")

    def counted(iterable, *args, **kwargs):
        for batch in iterable:
            yield batch
            size = getattr(batch.get("main"), "num_graphs", 0) if isinstance(batch, dict) else 0
            progress.advance(int(size))

    nutils.tqdm = counted
    try:
        yield progress
    finally:
        nutils.tqdm = original
        progress.finish()


def training_callback(total_per_epoch: int, max_epochs: int):
    """A Lightning callback logging training progress lines (locations seen, loss)."""
    from lightning.pytorch.callbacks import Callback

    class _Progress(Callback):
        def __init__(self):
            self.progress = Progress(
                "Novae training", total_per_epoch * max_epochs, "locations", objective="loss", cap=True
            )
            self.epochs = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            size = getattr(batch.get("main"), "num_graphs", 0) if isinstance(batch, dict) else 0
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            value = float(loss) if loss is not None else None
            self.progress.advance(int(size), value, note=f"epoch {trainer.current_epoch + 1}")

        def on_train_epoch_end(self, trainer, pl_module):
            self.epochs = trainer.current_epoch + 1

        def on_train_end(self, trainer, pl_module):
            self.progress.finish(note=f"{self.epochs} epochs")

    return _Progress()


def novae_domains(
    inputs: list[ad.AnnData],
    samples: list[str],
    levels: list[int],
    radii: list[float],
    *,
    seed: int = 0,
    model_source: str | None = None,
    max_epochs: int = 20,
    train_locations: int = 20000,
) -> tuple[list[pd.DataFrame], dict, object]:
    """Novae's raw domains of every slide at every level.

    Parameters
    ----------
    inputs
        One AnnData per slide from :func:`novae_input` (Novae changes them).
    samples, radii
        Each slide's name and neighbourhood radius in µm.
    levels
        The hierarchy's levels to cut.
    model_source
        A pretrained model (local folder or hub name); None trains one on the slides.

    Returns
    -------
    Per slide a table (its locations x ``L<k>`` for each level, Novae's domain names, NaN where
    none), the training details, and the model (to save where it was trained here).
    """
    import novae

    seed_everything(seed)
    for adata, radius in zip(inputs, radii):
        novae.spatial_neighbors(adata, radius=radius, coord_type="generic", delaunay=True, verbose=False)
    details: dict = {"locations": int(sum(a.n_obs for a in inputs))}
    if model_source:
        model, source = load_model(model_source)
        details.update({"model_source": source, "trained": False, "locations_trained_on": 0, "epochs": 0})
    else:
        model, train_details = _train(inputs, samples, radii, seed, max_epochs, train_locations)
        details.update(train_details)
    started = time.monotonic()
    for adata, sample in zip(inputs, samples):
        with inference_progress(f"Novae domains of sample {sample}", adata.n_obs):
            model.compute_representations(adata, accelerator="cpu", num_workers=0)
    details["inference_seconds"] = round(time.monotonic() - started, 1)
    tables = [pd.DataFrame(index=a.obs_names) for a in inputs]
    for level in levels:
        key = model.assign_domains(inputs, level=level, key_added=f"spatialmap_L{level}")
        for adata, table in zip(inputs, tables):
            table[f"L{level}"] = adata.obs[key].astype(object).to_numpy()
    return tables, details, model


def _train(inputs, samples, radii, seed, max_epochs, train_locations):
    """A new model trained on whole tiles of the slides (at most ``train_locations`` in all)."""
    import novae

    total = sum(a.n_obs for a in inputs)
    share = [max(1, int(train_locations * a.n_obs / total)) for a in inputs]
    train = []
    for i, (adata, radius, n_max) in enumerate(zip(inputs, radii, share)):
        mask = common.contiguous_sample(np.asarray(adata.obsm["spatial"]), n_max, seed + i)
        if mask.all():
            train.append(adata)
            continue
        part = ad.AnnData(
            X=adata.X[mask].copy(), obs=adata.obs.iloc[np.flatnonzero(mask)][[]].copy(), var=adata.var[[]].copy()
        )
        part.obsm["spatial"] = np.asarray(adata.obsm["spatial"])[mask]
        novae.spatial_neighbors(part, radius=radius, coord_type="generic", delaunay=True, verbose=False)
        train.append(part)
    n_train = int(sum(a.n_obs for a in train))
    if n_train < total:
        log.info(
            "Novae: training on %s of the group's %s locations (whole tiles of each slide: --novae_train_locations %s)",
            f"{n_train:,}", f"{total:,}", f"{train_locations:,}",
        )  # fmt: skip
    k = num_prototypes(n_train)
    model = novae.Novae(train, num_prototypes=k, batch_size=batch_size(n_train))
    per_epoch = min(n_train, max(50_000, int(0.02 * n_train)))
    callback = training_callback(per_epoch, max_epochs)
    started = time.monotonic()
    model.fit(
        max_epochs=max_epochs,
        accelerator="cpu",
        num_workers=0,
        callbacks=[callback],
        use_scheduler=max_epochs >= 3,  # Novae's warm-up + cosine schedule divides by zero below 3 epochs
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    details = {
        "model_source": "trained on this group's slides",
        "trained": True,
        "locations_trained_on": n_train,
        "locations_trained_on_per_sample": {s: int(a.n_obs) for s, a in zip(samples, train)},
        "epochs": int(callback.epochs),
        "max_epochs": int(max_epochs),
        "num_prototypes": k,
        "batch_size": batch_size(n_train),
        "training_seconds": round(time.monotonic() - started, 1),
    }
    return model, details
