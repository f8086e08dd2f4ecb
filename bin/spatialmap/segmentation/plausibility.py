"""Is a segmentation physically plausible? Checked after every segmentation, before its cells are used.

A broken model (an untrained network, a half-copied folder) does not fail: StarDist returns
objects of a pixel or two, about one per 2 µm bin, and every later step runs on them. Two numbers
tell such a result from cells, whatever made it, and both are bounded by sizes of real tissue:

- the **median segmented area** (µm²): a nucleus or a cell, never smaller than the smallest nuclei;
- the **cells per 2 µm bin** of the tissue (cells / in-tissue 2 µm bins): nuclei cannot be packed
  tighter than edge to edge.

Below the *stop* limits no real tissue can give the result: the run stops with the numbers. Between
the *stop* and the *warn* limits the result is possible only for very unusual tissue: the run goes
on, the warning is logged and shown in the report (``segmentation_warning`` of the slide QC).
"""

from __future__ import annotations

import math

from spatialmap.cli import InputError

BIN_AREA_UM2 = 4.0  # Visium HD's finest bin, 2 µm x 2 µm
# The smallest nuclei of mammalian tissue (small lymphocytes, cerebellar granule cells) are ~5 µm across,
# ~20 µm². A section cuts most nuclei off their equator, so their profiles are smaller: a median below a
# 3.5 µm disc (9.6 µm²) is suspect. (The embedded test slide's nuclei are 4.8 µm across, 18 µm², and the
# small test model segments them at a median of 16 µm².)
WARN_MIN_MEDIAN_AREA_UM2 = math.pi * (3.5 / 2) ** 2
# A typical object smaller than one 2 µm bin (a 2.3 µm disc, a quarter of the smallest nuclei's area)
# is no nucleus: an untrained StarDist network gives ~0.1-0.5 µm².
STOP_MIN_MEDIAN_AREA_UM2 = BIN_AREA_UM2
# The densest tissue (lymphoid follicles, the cerebellar granular layer) packs the smallest nuclei edge
# to edge, one per ~20 µm² of tissue: 0.2 cells per 2 µm bin. (Typical tissue: one cell per ~100 µm²,
# 0.04 per bin; the test slide: 0.03.)
WARN_MAX_CELLS_PER_BIN = BIN_AREA_UM2 / 20.0
# One cell per two bins (8 µm², less than half the smallest nucleus) is impossible: an untrained
# network gives about one per bin, or more.
STOP_MAX_CELLS_PER_BIN = 0.5

HINTS = {
    "stardist": "an untrained or unsuited StarDist model gives this: check --stardist_model (config.json and the "
    "weights_best.h5 of a model trained on H&E) and --stardist_prob_thresh",
    "stardist_proseg": "check --stardist_model and --stardist_prob_thresh (StarDist's nuclei are ProSeg's prior)",
    "proseg": "check ProSeg's settings (--proseg_args) and its prior segmentation",
    "spaceranger": "check Space Ranger's segmented_outputs/ (a partial or foreign cell_segmentations.geojson?)",
    "xenium": "check the Xenium bundle's cell boundaries (cells.parquet, cell_boundaries.parquet)",
}


def assess(
    n_cells: int, median_area_um2: float, bins: float | None, bins_words: str = "of the tissue"
) -> tuple[list[str], list[str]]:
    """What is impossible and what is suspect about a segmentation, each as short phrases.

    Parameters
    ----------
    n_cells
        Cells found.
    median_area_um2
        Their median segmented area (µm²; nuclei for StarDist).
    bins
        The area they were found in, in 2 µm bins (in-tissue bins, or the imaged patches' area / 4 µm²);
        None when unknown (no density check).
    bins_words
        What ``bins`` counts, for the message (``of the tissue``, ``of the imaged patches``).

    Returns
    -------
    ``(stops, warnings)``: phrases naming each number and its limit.
    """
    stops, warnings = [], []
    area = f"a median area of {median_area_um2:.3g} µm²"
    if median_area_um2 < STOP_MIN_MEDIAN_AREA_UM2:
        stops.append(f"{area} (below one 2 µm bin, {STOP_MIN_MEDIAN_AREA_UM2:g} µm²: no nucleus is that small)")
    elif median_area_um2 < WARN_MIN_MEDIAN_AREA_UM2:
        warnings.append(f"{area} (the smallest nuclei are ~{WARN_MIN_MEDIAN_AREA_UM2:.1f} µm² or more)")
    if bins:
        density = n_cells / bins
        per_bin = f"{density:.3g} cells per 2 µm bin {bins_words}"
        if density > STOP_MAX_CELLS_PER_BIN:
            stops.append(f"{per_bin} (at most {STOP_MAX_CELLS_PER_BIN:g} is possible)")
        elif density > WARN_MAX_CELLS_PER_BIN:
            warnings.append(f"{per_bin} (the densest tissue has ~{WARN_MAX_CELLS_PER_BIN:g})")
    return stops, warnings


def check(
    sample: str,
    method: str,
    n_cells: int,
    median_area_um2: float,
    bins: float | None,
    bins_words: str = "of the tissue",
) -> str | None:
    """Stop on an impossible segmentation; return the warning for a suspect one (None when plausible).

    Arguments as :func:`assess`; ``method`` names the segmentation (``stardist``, ``proseg`` ...).

    Raises
    ------
    InputError
        One line naming the sample, the method, the numbers and their limits, and what to check.
    """
    stops, warnings = assess(n_cells, median_area_um2, bins, bins_words)
    hint = HINTS.get(method, "check the segmentation's inputs and settings")
    found = f"{n_cells:,} {method} cells"
    if stops:
        raise InputError(
            f"sample {sample}: the {method} segmentation is implausible, not used: {found} with "
            f"{' and '.join(stops)}; {hint}"
        )
    if warnings:
        return f"{found} with {' and '.join(warnings)}: the segmentation may be wrong; {hint}"
    return None
