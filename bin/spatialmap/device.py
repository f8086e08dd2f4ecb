"""Where the torch-based steps run, and their seeds: shared by signatures, cell2location and Tangram."""

from __future__ import annotations

import logging
import random

import numpy as np

from spatialmap.cli import InputError

log = logging.getLogger(__name__)

ACCELERATORS = ("auto", "cpu", "gpu")


def resolve_accelerator(accelerator: str = "auto", threads: int | None = None) -> str:
    """``'gpu'`` or ``'cpu'``: 'auto' takes the GPU when torch sees one. Logs the device.

    Parameters
    ----------
    accelerator
        ``auto``, ``cpu`` or ``gpu``; ``gpu`` without a visible GPU is an error.
    threads
        Torch's CPU threads (None keeps torch's default, all visible cores). More
        threads than free cores makes torch much slower, so give the task's CPU count.
    """
    import torch

    if threads is not None:
        if threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(int(threads))
    if accelerator not in ACCELERATORS:
        raise InputError(f"accelerator must be one of {', '.join(ACCELERATORS)}, got '{accelerator}'")
    has_gpu = torch.cuda.is_available()
    if accelerator == "gpu" and not has_gpu:
        raise InputError("accelerator 'gpu' was asked for but no GPU is visible to torch; use 'auto' or 'cpu'")
    device = "gpu" if accelerator == "gpu" or (accelerator == "auto" and has_gpu) else "cpu"
    if device == "gpu":
        log.info("device: GPU (%s)", torch.cuda.get_device_name(0))
    else:
        log.info("device: CPU, %d torch thread(s)%s", torch.get_num_threads(), "" if has_gpu else "; no GPU found")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch; and pyro and scvi-tools when they are installed."""
    import torch

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        import pyro
        import scvi
    except ImportError:
        return
    scvi.settings.seed = seed
    pyro.set_rng_seed(seed)
