"""Segmentation models checked before they are used.

A StarDist model folder (``--stardist_model``) is ``config.json`` (the network's shape) and the
trained weights (``weights_best.h5``). StarDist itself only warns, and sopa hides the warning,
when a folder has no weights: it then segments with an untrained network and returns hundreds
of thousands of pixel-sized "cells". :func:`check_stardist_model` refuses such a folder, and
one whose files are unreadable (a half-copied download), naming the sample and the missing or
broken file; it needs only the standard library and h5py, so the samplesheet check (the first
task) runs it before any segmentation task starts. :func:`load_stardist_model` then loads the
network in the segmentation task itself.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from spatialmap.cli import InputError

STARDIST_CONFIG = "config.json"
STARDIST_WEIGHTS = "weights_best.h5"
# what csbdeep's BaseModel._find_and_load_weights loads: any *.h5 / *.hdf5 of the folder, one with
# 'best' in its name first, else the newest
WEIGHT_PATTERNS = ("*.h5", "*.hdf5")
STARDIST_CONFIG_KEYS = ("n_dim", "n_rays", "n_channel_in")
STARDIST_OUTPUT_LAYERS = ("prob", "dist")  # StarDist2D's two heads: object probability and ray distances
HE_CHANNELS = 3  # sopa gives StarDist the H&E as RGB


def _folder_words(model: Path) -> str:
    return f"--stardist_model {model}"


def stardist_weights(model: str | Path) -> Path | None:
    """The weights file StarDist would load from ``model`` (see :data:`WEIGHT_PATTERNS`), or None."""
    files = [f for pattern in WEIGHT_PATTERNS for f in Path(model).glob(pattern) if f.is_file()]
    if not files:
        return None
    files.sort(key=lambda f: f.stat().st_mtime, reverse=True)
    best = [f for f in files if "best" in f.name]
    return (best or files)[0]


def _read_config(model: Path, where: str) -> dict:
    config = model / STARDIST_CONFIG
    if not config.is_file():
        raise InputError(
            f"{where}: {_folder_words(model)} is not a StarDist model folder: no {STARDIST_CONFIG} "
            f"(a model folder holds {STARDIST_CONFIG} and {STARDIST_WEIGHTS})"
        )
    try:
        settings = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(
            f"{where}: {_folder_words(model)}: {STARDIST_CONFIG} cannot be read ({err}); copy the model folder again"
        ) from err
    missing = [k for k in STARDIST_CONFIG_KEYS if not isinstance(settings, dict) or k not in settings]
    if missing:
        raise InputError(
            f"{where}: {_folder_words(model)}: {STARDIST_CONFIG} is not a StarDist configuration "
            f"(no {', '.join(missing)}); copy the model folder again"
        )
    if settings["n_dim"] != 2 or settings["n_channel_in"] != HE_CHANNELS:
        raise InputError(
            f"{where}: {_folder_words(model)} is a {settings['n_dim']}D model of {settings['n_channel_in']} "
            f"input channel(s); the H&E needs a 2D model of {HE_CHANNELS} (RGB), e.g. one trained like 2D_versatile_he"
        )
    return settings


def _check_weights(weights: Path, model: Path, where: str) -> None:
    """The weights file opens as HDF5 and holds Keras layer weights with StarDist's two output heads."""
    import h5py

    try:
        with h5py.File(weights, "r") as handle:
            layers = [n.decode() if isinstance(n, bytes) else str(n) for n in handle.attrs.get("layer_names", [])]
            empty = [name for name in STARDIST_OUTPUT_LAYERS if name in layers and not _holds_arrays(handle[name])]
    except (OSError, KeyError, ValueError) as err:
        raise InputError(
            f"{where}: {_folder_words(model)}: {weights.name} cannot be read ({err}); it may be a partial copy: "
            "copy it again"
        ) from err
    absent = [name for name in STARDIST_OUTPUT_LAYERS if name not in layers]
    if absent or empty:
        raise InputError(
            f"{where}: {_folder_words(model)}: {weights.name} holds no StarDist network weights "
            f"(layers {', '.join(absent + empty)} missing or empty); copy the model's weights again"
        )


def _holds_arrays(group) -> bool:
    import h5py

    found = []
    group.visititems(lambda name, item: found.append(name) if isinstance(item, h5py.Dataset) else None)
    return bool(found)


def check_stardist_model(model: str | Path, where: str) -> Path:
    """Check a local StarDist model folder before it is used; returns the weights file StarDist will load.

    Parameters
    ----------
    model
        The ``--stardist_model`` folder.
    where
        Who uses it, for messages (``sample hd1``).

    Raises
    ------
    InputError
        No such folder; no or an unreadable ``config.json``, or one that is not a 2D RGB StarDist
        model; no weights (``weights_best.h5`` or any ``*.h5``); weights that do not open as HDF5
        or hold no StarDist network.
    """
    model = Path(model).resolve()  # the user's folder, not the link a task stages it as
    if not model.is_dir():
        raise InputError(f"{where}: {_folder_words(model)} does not exist or is not a folder")
    _read_config(model, where)
    weights = stardist_weights(model)
    if weights is None:
        raise InputError(
            f"{where}: {_folder_words(model)} has {STARDIST_CONFIG} but no {STARDIST_WEIGHTS} (no *.h5 weights at all): "
            "StarDist would segment with an untrained network; copy the whole model folder "
            f"({STARDIST_CONFIG} and {STARDIST_WEIGHTS})"
        )
    _check_weights(weights, model, where)
    return weights


def load_stardist_model(model: str | Path, where: str):
    """``check_stardist_model``, then the network built and its weights loaded (``stardist.models.StarDist2D``).

    Raises
    ------
    InputError
        The checks fail, or the weights do not fit the network of ``config.json``.
    """
    from stardist.models import StarDist2D

    model = Path(model).resolve()
    weights = check_stardist_model(model, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return StarDist2D(None, name=model.name, basedir=str(model.parent))
    except (OSError, ValueError, KeyError, TypeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(
            f"{where}: {_folder_words(model)}: the network of {STARDIST_CONFIG} cannot load {weights.name} ({first}); "
            "are both files from the same model?"
        ) from err
