"""Cell segmentation of Visium HD H&E images with sopa, one image patch per task.

The steps are those of sopa's own CLI (and nf-core/sopa), split so that each is one
Nextflow task and none writes into anything it reads:

1. :func:`make_patches`: the full-resolution H&E is read with ``sopa.io.visium_hd`` and
   written, with sopa's patches (``sopa.make_image_patches``) and the tissue's region of
   interest, into a **new** SpatialData store ``<sample>.patches.zarr``; one small JSON
   per patch (``patch_<i>.json``) lets the pipeline start one task per patch.
2. :func:`segment_patch`: StarDist on one patch (sopa's ``stardist_patch`` method run by
   ``StainingSegmentation.write_patch_cells``, as ``sopa segmentation stardist
   --patch-index i`` does); the store is only read. Output: the patch's polygons
   (GeoParquet, full-resolution pixels).
3. :func:`resolve_patches`: the patches' polygons, with cells cut by a patch border
   merged in the overlaps by sopa's ``solve_conflicts``, written as
   ``<sample>.cells.parquet`` (see :func:`write_cells` for the format).

The cells file is the interface between any segmentation and the aggregation of 2 µm
bins into cells (:func:`spatialmap.io.sdata.read_visium_hd_cells`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from spatialmap.cli import InputError, atomic_path
from spatialmap.io.sdata import read_cells, read_sopa_visium_hd, write_new_store  # noqa: F401 (read_cells: the cells file's reader, kept importable here)

log = logging.getLogger(__name__)

PATCHES_KEY = "image_patches"  # sopa's SopaKeys.PATCHES
CELL_ID = "cell_id"
DEFAULT_STARDIST_MODEL = "2D_versatile_he"


def write_cells(cells, path: str | Path, prefix: str = "cell") -> int:
    """Write polygons as ``<sample>.cells.parquet``: index ``cell_id`` (``<prefix>00001``...), one ``geometry``.

    Coordinates are kept as given (Visium HD: full-resolution image pixels). Written to a
    temporary name, then renamed.
    """
    import geopandas as gpd

    out = gpd.GeoDataFrame(geometry=list(cells.geometry))
    width = max(5, len(str(len(out))))
    out.index = [f"{prefix}{i + 1:0{width}d}" for i in range(len(out))]
    out.index.name = CELL_ID
    with atomic_path(path) as tmp:
        out.to_parquet(tmp)
    return len(out)


def microns_per_pixel(outs: Path, sample: str) -> float:
    """µm per full-resolution pixel of a Visium HD ``outs/`` (its ``scalefactors_json.json``)."""
    candidates = [outs / "spatial"] + sorted((outs / "binned_outputs").glob("square_*um/spatial"))
    for folder in candidates:
        path = folder / "scalefactors_json.json"
        if path.is_file():
            try:
                return float(json.loads(path.read_text())["microns_per_pixel"])
            except (OSError, ValueError, KeyError) as err:
                raise InputError(f"sample {sample}: cannot read microns_per_pixel from {path}: {err}") from err
    raise InputError(f"sample {sample}: no scalefactors_json.json with microns_per_pixel in {outs}")


def _visium_hd_image(outs: Path, sample: str):
    """The full-resolution H&E of a Visium HD ``outs/`` (and the tissue ROI) as a new SpatialData."""
    import spatialdata

    # the image is what is needed: the 16 µm table is the smallest one to read along
    sdata = read_sopa_visium_hd(outs, sample, 16)
    key = sdata.attrs.get("cell_segmentation_image")
    if key not in sdata.images:
        raise InputError(
            f"sample {sample}: no full-resolution H&E image in {outs} (expected microscope_image/ or "
            "<prefix>tissue_image.tif(f)/.btf): StarDist segments that image"
        )
    image = sdata.images[key]
    dtype = image["scale0"]["image"].dtype if hasattr(image, "children") else image.dtype
    if not np.issubdtype(dtype, np.integer):
        raise InputError(
            f"sample {sample}: the full-resolution image is {dtype}; sopa needs an integer (e.g. uint8) H&E"
        )
    elements = {"images": {key: image}, "shapes": {}}
    if "region_of_interest" in sdata.shapes:
        elements["shapes"]["region_of_interest"] = sdata.shapes["region_of_interest"]
    new = spatialdata.SpatialData(images=elements["images"], shapes=elements["shapes"])
    new.attrs["cell_segmentation_image"] = key
    return new, key


def make_patches(
    outs_dir: str | Path, sample: str, store: str | Path, patch_dir: str | Path,
    patch_width: int = 2000, patch_overlap: int = 50,
) -> int:  # fmt: skip
    """Cut the H&E of a Visium HD slide into sopa's overlapping patches.

    Parameters
    ----------
    outs_dir
        Space Ranger ``outs/`` (only read).
    sample
        Sample name.
    store
        New SpatialData store to write (``<sample>.patches.zarr``): the full-resolution image,
        the region of interest and sopa's ``image_patches``.
    patch_dir
        Folder receiving one ``patch_<i>.json`` per patch (``sample``, ``index``, ``bounds``
        in pixels).
    patch_width, patch_overlap
        sopa's ``make_image_patches`` settings, full-resolution pixels.

    Returns
    -------
    The number of patches.
    """
    import sopa

    if patch_overlap >= patch_width:
        raise InputError(
            f"sample {sample}: the patch overlap ({patch_overlap} px) must be below the patch width ({patch_width} px)"
        )
    sdata, key = _visium_hd_image(Path(outs_dir), sample)
    sopa.make_image_patches(sdata, patch_width=patch_width, patch_overlap=patch_overlap, image_key=key)
    patches = sdata.shapes[PATCHES_KEY]
    if len(patches) == 0:
        raise InputError(f"sample {sample}: no image patch touches the tissue")
    write_new_store(sdata, store, f"sample {sample}: {store} exists; a new store is written, never over one")
    patch_dir = Path(patch_dir)
    patch_dir.mkdir(parents=True, exist_ok=True)
    width = len(str(len(patches) - 1))
    mpp = microns_per_pixel(Path(outs_dir), sample)
    for i, geom in enumerate(patches.geometry):
        info = {"sample": sample, "index": i, "n_patches": len(patches), "microns_per_pixel": mpp,
                "bounds": [float(b) for b in geom.bounds]}  # fmt: skip
        with atomic_path(patch_dir / f"patch_{i:0{width}d}.json") as tmp:
            tmp.write_text(json.dumps(info) + "\n")
    log.info("sample %s: %d patches of %d px (overlap %d px) on image %s", sample, len(patches), patch_width,
             patch_overlap, key)  # fmt: skip
    return len(patches)


def stardist_method(
    model: str | Path | None = None, prob_thresh: float = 0.2, nms_thresh: float = 0.6, where: str = "StarDist"
):
    """sopa's StarDist patch method: a local model folder, or ``None`` for ``2D_versatile_he`` (downloaded).

    The model is loaded first, so that a broken one stops here with one line: a local folder is
    checked (:func:`spatialmap.segmentation.models.load_stardist_model`: config and weights present,
    readable and matching), the pretrained one is fetched under :func:`spatialmap.downloads.fetching`
    (no internet: one line naming ``--stardist_model``). ``where`` names the sample in messages.

    Raises
    ------
    InputError
        A local folder that is not a complete, loadable StarDist model; the pretrained model
        neither on this machine nor downloadable.
    """
    from sopa.segmentation.methods import stardist_patch

    from spatialmap import downloads
    from spatialmap.segmentation import models

    if model is not None:
        models.load_stardist_model(model, where)
        return stardist_patch(
            model_type=None, local_model=str(Path(model).absolute()), prob_thresh=prob_thresh, nms_thresh=nms_thresh
        )
    from stardist.models import StarDist2D

    with downloads.fetching(downloads.STARDIST_HE, where):
        StarDist2D.from_pretrained(DEFAULT_STARDIST_MODEL)  # downloaded once into Keras' cache; sopa loads it there
    return stardist_patch(model_type=DEFAULT_STARDIST_MODEL, prob_thresh=prob_thresh, nms_thresh=nms_thresh)


def segment_patch(
    store: str | Path, patch_index: int, output: str | Path, sample: str,
    model: str | Path | None = None, prob_thresh: float = 0.2, nms_thresh: float = 0.6, min_area_px: float = 0,
    method=None,
) -> int:  # fmt: skip
    """StarDist on one patch of a ``make_patches`` store (read only); polygons to ``output`` (GeoParquet).

    ``method`` replaces StarDist by another sopa staining method (a callable from a (C, Y, X)
    patch to a label mask), e.g. in tests.

    Returns
    -------
    The number of cells found in the patch (before the overlaps are resolved).
    """
    import geopandas as gpd
    import spatialdata
    from sopa.segmentation import StainingSegmentation

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sdata = spatialdata.read_zarr(store)
    if PATCHES_KEY not in sdata.shapes:
        raise InputError(f"sample {sample}: {store} holds no image patches (run make_patches first)")
    n = len(sdata.shapes[PATCHES_KEY])
    if not 0 <= patch_index < n:
        raise InputError(f"sample {sample}: patch {patch_index} does not exist ({n} patches)")
    method = method or stardist_method(model, prob_thresh, nms_thresh, where=f"sample {sample}")
    segmentation = StainingSegmentation(
        sdata, method, channels=None, image_key=sdata.attrs.get("cell_segmentation_image"),
        min_area=min_area_px, clip_limit=0, gaussian_sigma=0,
    )  # fmt: skip
    cells = segmentation._run_patch(sdata.shapes[PATCHES_KEY].geometry.iloc[patch_index])
    cells = gpd.GeoDataFrame(geometry=list(cells.geometry)) if len(cells) else gpd.GeoDataFrame(geometry=[])
    with atomic_path(output) as tmp:
        cells.to_parquet(tmp)
    log.info("sample %s: patch %d of %d: %d cells", sample, patch_index, n, len(cells))
    return len(cells)


def patches_imaged(patch_files: list[str | Path], sample: str) -> tuple[float, float, int]:
    """µm per pixel, the area (px²) the patches cover together and the number of patches the slide was cut
    into, from ``make_patches``' ``patch_<i>.json``."""
    from shapely.geometry import box
    from shapely.ops import unary_union

    try:
        infos = [json.loads(Path(f).read_text()) for f in patch_files]
        mpp = float(infos[0]["microns_per_pixel"])
        area = unary_union([box(*info["bounds"]) for info in infos]).area
        n_patches = int(infos[0]["n_patches"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise InputError(f"sample {sample}: cannot read the patch files ({err})") from err
    return mpp, float(area), n_patches


def resolve_patches(
    patch_files: list[str | Path], output: str | Path, sample: str, min_area_px: float = 0,
    microns_per_pixel: float | None = None, imaged_area_px: float | None = None, method: str = "stardist",
    n_patches: int | None = None,
) -> dict:  # fmt: skip
    """Merge the patches' polygons (sopa's ``solve_conflicts`` on the overlaps) into ``<sample>.cells.parquet``.

    With ``microns_per_pixel`` (and ``imaged_area_px``, the patches' area), the cells are checked
    before they are written (:func:`spatialmap.segmentation.plausibility.check`: their median area,
    and their number per 2 µm bin of the imaged area, an upper bound of the tissue's): an
    impossible segmentation stops with nothing written. With ``n_patches`` (the number the slide was
    cut into), a missing patch result stops too: its part of the slide would have no cell.

    Returns
    -------
    ``patches``, ``cells_in_patches`` (before the overlaps are resolved) and ``cells`` (written);
    with ``microns_per_pixel`` also ``median_area_um2`` and ``cells_per_bin_imaged``.
    """
    import geopandas as gpd
    import pandas as pd
    from sopa.segmentation import solve_conflicts
    from sopa.shapes import to_valid_polygons

    from spatialmap.segmentation import plausibility

    if not patch_files:
        raise InputError(f"sample {sample}: no segmented patch to resolve")
    if n_patches is not None and len(patch_files) != n_patches:
        raise InputError(
            f"sample {sample}: {len(patch_files)} segmented patches given, the slide was cut into {n_patches}: "
            "the missing patches' part of the slide would have no cell"
        )
    frames = [gpd.read_parquet(f) for f in sorted(map(str, patch_files))]
    cells = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
    if cells is None or len(cells) == 0:
        raise InputError(f"sample {sample}: StarDist found no cell in any of the {len(frames)} patches")
    found = len(cells)
    cells = solve_conflicts(gpd.GeoDataFrame(geometry=list(cells.geometry)))
    cells = to_valid_polygons(gpd.GeoDataFrame(geometry=list(cells.geometry)))
    if min_area_px > 0:
        cells = cells[cells.area >= min_area_px]
    if len(cells) == 0:
        raise InputError(f"sample {sample}: no segmented cell is at least {min_area_px:g} px² large")
    summary = {"patches": len(frames), "cells_in_patches": int(found)}
    if microns_per_pixel:
        median_um2 = float(np.median(cells.area)) * microns_per_pixel**2
        bins = imaged_area_px * microns_per_pixel**2 / plausibility.BIN_AREA_UM2 if imaged_area_px else None
        warning = plausibility.check(sample, method, len(cells), median_um2, bins, "of the imaged patches")
        if warning:
            log.warning("sample %s: %s", sample, warning)
        summary.update({"median_area_um2": round(median_um2, 3)})
        if bins:
            summary["cells_per_bin_imaged"] = round(len(cells) / bins, 4)
    # a stable order (top to bottom, left to right) so the IDs do not depend on the patch order
    centroids = cells.geometry.centroid
    cells = cells.iloc[np.lexsort((centroids.x.to_numpy(), centroids.y.to_numpy()))]
    n = write_cells(cells, output, prefix="cell")
    log.info("sample %s: %d cells from %d patches (%d before resolving the overlaps)", sample, n, len(frames), found)
    return {**summary, "cells": int(n)}
