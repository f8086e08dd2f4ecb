"""ProSeg cell segmentation through sopa (``sopa.segmentation.proseg``), for Visium HD and Xenium.

ProSeg (https://github.com/dcjones/proseg, a Rust binary) refines a prior segmentation from
where the transcripts are. sopa drives it in two ways, and this module uses both:

- **Visium HD**: the 2 µm bins are ProSeg's input (``proseg --anndata``: each bin a point at
  its centre in µm with its gene counts; sopa's ``--voxel-size 2``); a prior segmentation is
  required (sopa's ``prior_shapes_key``): the polygons of an earlier segmentation (e.g. the
  pipeline's StarDist cells) or Space Ranger 4's ``segmented_outputs/`` boundaries.
- **Xenium**: the decoded transcripts (``transcripts.parquet``) are ProSeg's input, one patch
  (``sopa.make_transcript_patches(patch_width=None)``), the platform's assignment of each
  transcript to a cell (``cell_id``) as the prior; sopa adds ``--qv-column qv --min-qv 20``,
  the FOV and the nuclear compartment (``overlaps_nucleus``) from the columns it finds.

The result is the pipeline's cells file (see :func:`write_cells`): one valid polygon per cell,
Visium HD in full-resolution image pixels, Xenium in µm. Nothing is written into the input
folders: sopa's cache (the bins table and ProSeg's output) goes into a folder of the caller's
choice, removed afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import geopandas as gpd
import numpy as np

from spatialmap.cli import InputError, atomic_path
from spatialmap.io.sdata import read_sopa, read_sopa_visium_hd

log = logging.getLogger(__name__)

PROSEG_VERSION = "3.2.0"  # the crate version installed by containers/Dockerfile and tools/setup.sh --with-proseg
INSTALL_HINT = (
    f"install it with `cargo install proseg --version {PROSEG_VERSION} --locked` (Rust >= 1.88), or "
    "`bash tools/setup.sh --with-proseg` (puts it in ~/.cache/spatialmap/proseg/<version>/bin: add that to PATH), "
    "or run with -profile podman/docker, whose spatial image carries it"
)
PROSEG_KEY = "proseg_boundaries"
PRIOR_KEY = "spatialmap_prior"


def find_proseg(sample: str) -> tuple[str, str]:
    """The ``proseg`` executable on ``PATH`` and its version.

    Raises
    ------
    FileNotFoundError
        naming the sample and how to install ProSeg, when no ``proseg`` is on ``PATH``.
    """
    path = shutil.which("proseg")
    if path is None:
        raise FileNotFoundError(
            f"sample {sample}: --segmentation proseg needs the proseg binary on PATH, and none was found; {INSTALL_HINT}"
        )
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    words = result.stdout.split()
    version = words[1] if result.returncode == 0 and len(words) > 1 else "unknown"
    return path, version


def split_args(extra_args: str, sample: str) -> str:
    """Check the user's extra ProSeg options (``--proseg_args``) and return them as one shell-safe string."""
    try:
        words = shlex.split(extra_args or "")
    except ValueError as err:
        raise InputError(f"sample {sample}: cannot parse the ProSeg options {extra_args!r}: {err}") from err
    reserved = {"--anndata", "--anndata-coordinate-key", "--cell-id-column", "--cell-id-unassigned", "--gene-column",
                "-x", "-y", "-z", "--output-spatialdata"}  # fmt: skip
    clash = sorted(reserved.intersection(w.split("=", 1)[0] for w in words))
    if clash:
        raise InputError(f"sample {sample}: ProSeg options {', '.join(clash)} are set by the pipeline; remove them")
    return " ".join(shlex.quote(w) for w in words)


@contextlib.contextmanager
def sopa_cache(folder: Path) -> Iterator[Path]:
    """Point sopa's cache (``~/.sopa_cache`` for an in-memory SpatialData) at ``folder``; remove it afterwards."""
    from sopa.utils import utils as sopa_utils

    if not hasattr(sopa_utils, "HOME_CACHE_DIR"):  # sopa's layout changed: fail loudly rather than write to ~
        raise RuntimeError("sopa.utils.utils.HOME_CACHE_DIR not found: this sopa version is not supported here")
    folder = Path(folder).resolve()  # absolute: sopa runs proseg inside it with paths under it
    folder.mkdir(parents=True, exist_ok=True)
    before = sopa_utils.HOME_CACHE_DIR
    sopa_utils.HOME_CACHE_DIR = folder
    try:
        yield folder
    finally:
        sopa_utils.HOME_CACHE_DIR = before
        shutil.rmtree(folder, ignore_errors=True)


def _valid_cells(geo_df: gpd.GeoDataFrame, sample: str) -> gpd.GeoDataFrame:
    """One valid Polygon per cell (sopa's ``to_valid_polygons``), string IDs in ``cell_id``."""
    from sopa import shapes

    cells = gpd.GeoDataFrame({"geometry": geo_df.geometry.to_numpy()}, index=geo_df.index.astype(str), crs=None)
    cells = shapes.to_valid_polygons(cells)  # drops the empty ones
    cells = cells[cells.geometry.geom_type == "Polygon"]
    cells.index.name = "cell_id"
    if cells.empty:
        raise InputError(f"sample {sample}: ProSeg found no cell")
    if not cells.index.is_unique:
        raise InputError(f"sample {sample}: ProSeg returned repeated cell IDs")
    return cells


def segment_visium_hd(
    outs_dir: str | Path,
    sample: str,
    workdir: str | Path,
    prior: str | Path | None = None,
    extra_args: str = "",
    threads: int = 1,
) -> tuple[gpd.GeoDataFrame, dict]:
    """ProSeg on the 2 µm bins of a Visium HD ``outs/``, refining a prior segmentation.

    Parameters
    ----------
    outs_dir
        Space Ranger ``outs/`` (read with ``sopa.io.visium_hd``, never written to).
    sample
        Sample name, for messages.
    workdir
        Folder for sopa's cache (the bins table handed to ProSeg, ProSeg's output); removed.
    prior
        Cells file (GeoParquet, full-resolution pixels) of an earlier segmentation; ``None``
        uses Space Ranger 4's ``segmented_outputs/cell_segmentations.geojson``.
    extra_args
        Extra ProSeg options, appended to sopa's command line.
    threads
        ProSeg's ``--nthreads``.

    Returns
    -------
    The cells (full-resolution image pixels) and a QC dict.
    """
    import sopa
    import spatialdata
    from spatialdata.transformations import get_transformation

    outs = Path(outs_dir)
    version, suffix = _proseg_command(sample, extra_args, threads)
    sdata = read_sopa_visium_hd(outs, sample, 2)
    bins_key = sdata.attrs.get("bins_table", "square_002um")
    if bins_key not in sdata.tables:
        raise InputError(f"sample {sample}: no 2 µm bins (binned_outputs/square_002um) read from {outs}")
    bins_shapes_key = sdata.tables[bins_key].uns["spatialdata_attrs"]["region"]
    bins_shapes_key = bins_shapes_key[0] if isinstance(bins_shapes_key, list) else bins_shapes_key
    pixel_cs = _identity_system(get_transformation(sdata[bins_shapes_key], get_all=True), sample)
    prior_key, prior_source = _hd_prior(sdata, bins_shapes_key, prior, outs, sample)
    n_prior = int(len(sdata[prior_key]))
    bins = sdata.tables[bins_key]
    bins.X = bins.X.tocsr()
    total = float(bins.X.sum())
    with _running_proseg(workdir, sample):
        sopa.segmentation.proseg(sdata, prior_shapes_key=prior_key, command_line_suffix=suffix)
    shapes_px = spatialdata.transform(sdata[PROSEG_KEY], to_coordinate_system=pixel_cs)
    cells = _valid_cells(shapes_px, sample)
    mpp = _microns_per_pixel(sdata[bins_shapes_key], sample)
    table = sdata.tables.get("table")
    qc = {
        "sample": sample, "platform": "visium_hd", "segmentation": "proseg", "proseg_version": version,
        "input": "2 µm bins", "prior": prior_source, "prior_cells": n_prior, "cells_found": int(len(cells)),
        "median_cell_area_um2": round(float(np.median(cells.geometry.area)) * mpp**2, 3),
        "proseg_options": suffix,
    }  # fmt: skip
    if table is not None and total:
        qc["pct_counts_in_cells"] = round(100.0 * float(table.X.sum()) / total, 3)
    return cells, qc


def _proseg_command(sample: str, extra_args: str, threads: int) -> tuple[str, str]:
    """ProSeg's version (the binary must be on ``PATH``) and the options appended to sopa's command line."""
    _, version = find_proseg(sample)
    suffix = f"--nthreads {int(threads)} {split_args(extra_args, sample)}".strip()
    return version, suffix


@contextlib.contextmanager
def _running_proseg(workdir: str | Path, sample: str) -> Iterator[None]:
    """Run ProSeg (through sopa) with sopa's cache in ``workdir``; a failed run is an :class:`InputError`."""
    with sopa_cache(Path(workdir)):
        try:
            yield
        except subprocess.CalledProcessError as err:
            raise InputError(f"sample {sample}: proseg failed (exit {err.returncode}): {err.cmd}") from err


def _hd_prior(sdata, bins_shapes_key: str, prior: str | Path | None, outs: Path, sample: str) -> tuple[str, str]:
    """The prior segmentation's key in ``sdata.shapes`` and its source: the ``prior`` cells file (added as
    ``spatialmap_prior`` in the bins' coordinate systems) or Space Ranger 4's boundaries."""
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    if prior is not None:
        prior_df = gpd.read_parquet(prior)
        if prior_df.empty:
            raise InputError(f"sample {sample}: the prior segmentation {prior} holds no cell")
        prior_df = gpd.GeoDataFrame(geometry=prior_df.geometry.to_numpy(), crs=None)
        transformations = get_transformation(sdata[bins_shapes_key], get_all=True)
        sdata.shapes[PRIOR_KEY] = ShapesModel.parse(prior_df, transformations=transformations)
        return PRIOR_KEY, Path(prior).name
    prior_key = next((k for k in sdata.shapes if k.endswith("_cell_segmentations")), None)
    if prior_key is None:
        raise InputError(
            f"sample {sample}: ProSeg on Visium HD refines a prior segmentation, and {outs} has none "
            "(no segmented_outputs/cell_segmentations.geojson, Space Ranger 4): give a prior cells file"
        )
    return prior_key, "segmented_outputs/cell_segmentations.geojson"


def segment_xenium(
    path: str | Path, sample: str, workdir: str | Path, extra_args: str = "", threads: int = 1
) -> tuple[gpd.GeoDataFrame, dict]:
    """ProSeg on the transcripts of a Xenium bundle, the platform's cells as prior.

    Returns
    -------
    The cells (µm, the transcripts' coordinates, as ``cell_boundaries.parquet``) and a QC dict.
    """
    import sopa

    path = Path(path)
    version, suffix = _proseg_command(sample, extra_args, threads)
    sdata = read_sopa("xenium", path, sample)
    if not sdata.points:
        raise InputError(f"sample {sample}: no transcripts read from {path}")
    prior_column, unassigned = sdata.attrs.get("transcript_to_cell_assignment", ("cell_id", "UNASSIGNED"))
    points_key = sdata.attrs.get("transcripts_dataframe", next(iter(sdata.points)))
    cell_ids = sdata[points_key][prior_column]
    n_prior = int(cell_ids[cell_ids != unassigned].nunique().compute())
    with _running_proseg(workdir, sample):
        sopa.make_transcript_patches(sdata, patch_width=None, prior_shapes_key="auto")
        sopa.segmentation.proseg(sdata, command_line_suffix=suffix)
    cells = _valid_cells(sdata[PROSEG_KEY], sample)  # intrinsic coordinates = the transcripts' (µm)
    qc = {
        "sample": sample, "platform": "xenium", "segmentation": "proseg", "proseg_version": version,
        "input": "transcripts", "prior": f"transcripts.parquet {prior_column}", "prior_cells": n_prior,
        "cells_found": int(len(cells)), "median_cell_area_um2": round(float(np.median(cells.geometry.area)), 3),
        "proseg_options": suffix,
    }  # fmt: skip
    return cells, qc


def write_cells(cells: gpd.GeoDataFrame, path: str | Path) -> None:
    """Write the cells file: GeoParquet, index ``cell_id`` (str), one ``geometry`` column, no CRS (temp name, then rename)."""
    out = gpd.GeoDataFrame({"geometry": cells.geometry.to_numpy()}, index=cells.index.astype(str), crs=None)
    out.index.name = "cell_id"
    with atomic_path(path) as tmp:
        out.to_parquet(tmp)


def match_cells(cells: gpd.GeoDataFrame, x: np.ndarray, y: np.ndarray) -> dict:
    """Found cells against true cell centres (same coordinates): one-to-one matches.

    A true cell is matched when its centre lies in exactly one found polygon and that polygon
    holds no other true centre.

    Returns
    -------
    dict with ``true_cells``, ``found_cells``, ``matched``, ``matched_fraction`` (of the true
    cells) and ``match`` (index of the matched polygon per true cell, -1 when unmatched).
    """
    import shapely

    points = shapely.points(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    tree = shapely.STRtree(cells.geometry.to_numpy())
    point_idx, poly_idx = tree.query(points, predicate="within")
    per_point = np.bincount(point_idx, minlength=len(points))
    per_poly = np.bincount(poly_idx, minlength=len(cells))
    match = np.full(len(points), -1, dtype=np.int64)
    good = (per_point[point_idx] == 1) & (per_poly[poly_idx] == 1)
    match[point_idx[good]] = poly_idx[good]
    matched = int((match >= 0).sum())
    return {"true_cells": int(len(points)), "found_cells": int(len(cells)), "matched": matched,
            "matched_fraction": matched / len(points) if len(points) else float("nan"), "match": match}  # fmt: skip


def _identity_system(transformations: dict, sample: str) -> str:
    """The coordinate system in which the bins' intrinsic coordinates (full-resolution pixels) are unchanged."""
    from spatialdata.transformations import Identity

    for name, transformation in transformations.items():
        if isinstance(transformation, Identity):
            return name
    raise InputError(f"sample {sample}: the 2 µm bins have no coordinate system in full-resolution pixels")


def _microns_per_pixel(bins_shapes, sample: str) -> float:
    """µm per full-resolution pixel, from the bins' ``microns`` transformation."""
    from spatialdata.transformations import get_transformation

    microns = get_transformation(bins_shapes, to_coordinate_system="microns")
    matrix = microns.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    scale = float(abs(matrix[0, 0]))
    if not np.isfinite(scale) or scale <= 0:
        raise InputError(f"sample {sample}: cannot read µm per pixel from the bins' transformation")
    return scale
