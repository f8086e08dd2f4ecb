"""Broken StarDist model folders for the tests: the small model of ``assets/stardist_synth_he`` made
untrained (the unit tests and the pipeline test of a model that loads but was never trained)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

SMALL_MODEL = Path(__file__).resolve().parents[2] / "assets" / "stardist_synth_he"
MODEL_FILES = ("config.json", "thresholds.json", "weights_best.h5")


def untrained_model(folder: Path, source: Path = SMALL_MODEL, seed: int = 0) -> Path:
    """``source``'s model files copied into ``folder`` with the weights re-initialised as Keras
    initialises a new network (Glorot-uniform kernels, zero biases): a complete, loadable folder of
    an untrained StarDist. The source is never written to."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy(source / name, folder / name)
    rng = np.random.default_rng(seed)

    def init(name, item):
        if isinstance(item, h5py.Dataset):
            if name.endswith("kernel"):
                fan_in, fan_out = int(np.prod(item.shape[:-1])), int(np.prod(item.shape[:-2])) * item.shape[-1]
                limit = np.sqrt(6 / (fan_in + fan_out))
                item[...] = rng.uniform(-limit, limit, item.shape)
            else:
                item[...] = 0

    with h5py.File(folder / "weights_best.h5", "r+") as handle:
        handle.visititems(init)
    return folder
