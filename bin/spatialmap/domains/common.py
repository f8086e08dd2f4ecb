"""What every domain method shares: levels, coordinates in µm, radii, labels, the training sample.

Units. ``obsm['spatial']`` holds full-resolution image pixels on every platform
(:mod:`spatialmap.io.sdata`, :mod:`spatialmap.io.visium`). Visium HD and Xenium give the pixel
size (``scalefactors['microns_per_pixel']``); Visium spots do not, and are scaled by their
diameter (``spot_diameter_fullres`` pixels are 55 µm). A SpatialData table with neither is taken
to be in µm already (said in the log).

Neighbourhoods (:data:`RADIUS_UM`): the Delaunay graph of the locations with the edges longer than
the platform's radius cut: Visium spots 150 µm (the 6 spots of the first ring, 100 µm apart), Visium
HD bins 1.5 bin sides (the 8 bins around: Novae's own grid for Visium HD), cells 50 µm (a cell's
neighbours, not across empty tissue). Novae looks two hops out (its ``n_hops_local``).
"""

from __future__ import annotations

import logging
import re

import anndata as ad
import numpy as np
import pandas as pd

from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.io.domains import UNASSIGNED  # the one label of a location without a domain

log = logging.getLogger(__name__)

DEFAULT_LEVELS = "5..15"  # the levels of Novae's tutorials for Visium HD
DEFAULT_LEVEL = 7  # Novae's own default level
PREFIX = "D"  # domain labels D1, D2, ... numbered by size within the group
VISIUM_SPOT_UM = 55.0  # Visium spot diameter: scales spot slides' pixels to µm
RADIUS_UM = {"spot": 150.0, "cell": 50.0}  # bins: BIN_RADIUS_SIDES x the bin side
BIN_RADIUS_SIDES = 1.5
MIN_GENES = 20  # Novae needs at least 20 genes; SpatialLeiden's PCA no fewer either


def parse_levels(text: str | int | list) -> list[int]:
    """``"5..15"`` (a range, both ends kept) or ``"5,7,10"`` as sorted distinct levels (each >= 2)."""
    if isinstance(text, int):
        items = [text]
    elif isinstance(text, (list, tuple)):
        items = [int(x) for x in text]
    else:
        spec = str(text).strip()
        found = re.fullmatch(r"(\d+)\s*\.\.\s*(\d+)", spec)
        if found:
            low, high = int(found.group(1)), int(found.group(2))
            if low > high:
                raise InputError(f"--domain_levels {spec}: the range goes down ({low} > {high})")
            items = list(range(low, high + 1))
        elif re.fullmatch(r"\d+(\s*,\s*\d+)*", spec):
            items = [int(x) for x in spec.split(",")]
        else:
            raise InputError(f"--domain_levels {spec}: give a range (5..15) or a comma list (5,7,10) of whole numbers")
    levels = sorted(set(items))
    if not levels or levels[0] < 2:
        raise InputError(f"--domain_levels {text}: every level must be 2 or more (a level is a number of domains)")
    return levels


def check_level(level: int, levels: list[int]) -> int:
    """The chosen level, which must be one of the levels computed."""
    if level not in levels:
        shown = f"{levels[0]}..{levels[-1]}" if levels == list(range(levels[0], levels[-1] + 1)) else levels
        raise InputError(
            f"--domain_level {level} is not one of --domain_levels ({shown}): add it, or choose one of them"
        )
    return level


UNKNOWN_SCALE = "no pixel size known: coordinates taken as µm"
NEAREST_RADIUS_FACTOR = 1.5  # without a pixel size: the radius is this x the median nearest-neighbour distance


def platform_of(adata: ad.AnnData) -> dict:
    """The slide's ``uns['spatialmap_platform']`` (Visium spots where a slide has none)."""
    return dict(adata.uns.get(keys.UNS_PLATFORM, {}) or {"platform": "visium", "unit": "spot"})


def _scalefactors(adata: ad.AnnData, sample: str) -> dict:
    libraries = adata.uns.get(keys.UNS_SPATIAL, {}) or {}
    library = libraries.get(sample) or (next(iter(libraries.values())) if len(libraries) == 1 else {})
    return dict(library.get("scalefactors", {}) or {})


def microns_per_pixel(adata: ad.AnnData, sample: str) -> tuple[float, str]:
    """µm per unit of ``obsm['spatial']`` and where that came from."""
    factors = _scalefactors(adata, sample)
    if factors.get("microns_per_pixel"):
        return float(factors["microns_per_pixel"]), "scalefactors microns_per_pixel"
    info = platform_of(adata)
    if info.get("unit") == "spot" and factors.get("spot_diameter_fullres"):
        return VISIUM_SPOT_UM / float(factors["spot_diameter_fullres"]), "spot diameter (55 µm)"
    return 1.0, UNKNOWN_SCALE


def coordinates_um(adata: ad.AnnData, sample: str) -> np.ndarray:
    """The locations' (x, y) in µm; a clear error when the slide has no usable coordinates."""
    if keys.SPATIAL not in adata.obsm:
        raise InputError(f"sample {sample}: the slide has no coordinates (obsm['{keys.SPATIAL}']): domains need them")
    xy = np.asarray(adata.obsm[keys.SPATIAL], dtype=float)
    if xy.ndim != 2 or xy.shape[1] < 2 or xy.shape[0] != adata.n_obs:
        raise InputError(f"sample {sample}: obsm['{keys.SPATIAL}'] is not one (x, y) pair per location")
    xy = xy[:, :2]
    if not np.isfinite(xy).all():
        bad = int((~np.isfinite(xy)).any(axis=1).sum())
        raise InputError(f"sample {sample}: {bad} locations have no finite coordinates in obsm['{keys.SPATIAL}']")
    scale, source = microns_per_pixel(adata, sample)
    log.info("sample %s: coordinates in µm from %s (%.4g µm per unit)", sample, source, scale)
    return xy * scale


def radius_um(adata: ad.AnnData, xy_um: np.ndarray | None = None, sample: str = "") -> float:
    """The neighbourhood radius of the slide's kind of location (:data:`RADIUS_UM`). Where the
    coordinates' unit is not known (a SpatialData store or an h5ad without a pixel size), the kind's
    radius in µm would be a guess in unknown units: 1.5 x the median distance between nearest
    neighbours is taken instead (the first ring of spots, the 8 bins around a bin, a cell's nearest)."""
    _, source = microns_per_pixel(adata, sample)
    if xy_um is not None and source == UNKNOWN_SCALE and len(xy_um) > 1:
        from scipy.spatial import cKDTree

        nearest = cKDTree(xy_um).query(xy_um, k=2)[0][:, 1]
        radius = NEAREST_RADIUS_FACTOR * float(np.median(nearest))
        log.info("sample %s: no pixel size: neighbourhood radius %.4g units (1.5 x the median nearest distance)", sample, radius)  # fmt: skip
        return radius
    info = platform_of(adata)
    unit = info.get("unit", "spot")
    if unit == "bin":
        return BIN_RADIUS_SIDES * float(info.get("bin_size_um", 8))
    return RADIUS_UM.get(unit, RADIUS_UM["cell"])


def check_slide(adata: ad.AnnData, sample: str) -> None:
    """Stop on a slide no domain method can use: too few locations or genes, or no coordinates."""
    if adata.n_obs < 10:
        raise InputError(f"sample {sample}: {adata.n_obs} locations: too few for spatial domains (10 at least)")
    if adata.n_vars < MIN_GENES:
        raise InputError(f"sample {sample}: {adata.n_vars} genes: spatial domains need {MIN_GENES} at least")
    coordinates_um(adata, sample)


def group_labels(raw: list[pd.Series]) -> list[pd.Series]:
    """One level's domains of the group's slides as ``D1..Dk``, numbered by size over the whole group.

    The same raw domain gets the same label on every slide; missing ones are ``Unassigned``.
    """
    pooled = pd.concat([r.astype(object) for r in raw], ignore_index=True).dropna().astype(str)
    counts = pooled.value_counts()
    order = sorted(counts.index, key=lambda name: (-counts[name], name))
    names = {name: f"{PREFIX}{i + 1}" for i, name in enumerate(order)}
    out = []
    for r in raw:
        labels = r.astype(object).map(lambda x: names.get(str(x), UNASSIGNED) if pd.notna(x) else UNASSIGNED)
        out.append(labels.astype(str))
    return out


def contiguous_sample(xy_um: np.ndarray, n_max: int, seed: int, tiles_wanted: int = 16) -> np.ndarray:
    """A mask of at most ``n_max`` locations made of whole square tiles of the slide (neighbourhoods kept).

    The slide is cut into square tiles of about ``n_max / tiles_wanted`` locations each; tiles are
    taken in a random order (from ``seed``) while they fit, so the sample spreads over the slide and
    every sampled location keeps the neighbours of its tile.
    """
    n = len(xy_um)
    if n <= n_max:
        return np.ones(n, dtype=bool)
    low, high = xy_um.min(axis=0), xy_um.max(axis=0)
    area = float(np.prod(np.maximum(high - low, 1e-9)))
    side = np.sqrt(area * (n_max / tiles_wanted) / n)
    cells = np.floor((xy_um - low) / side).astype(np.int64)
    tile = cells[:, 0] * (int(cells[:, 1].max()) + 1) + cells[:, 1]
    ids, inverse, sizes = np.unique(tile, return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(ids), dtype=bool)
    total = 0
    for t in rng.permutation(len(ids)):
        if total + sizes[t] <= n_max:
            chosen[t] = True
            total += sizes[t]
    return chosen[inverse]
