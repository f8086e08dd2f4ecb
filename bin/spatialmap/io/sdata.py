"""Reading Visium HD, Xenium and SpatialData stores into the pipeline's AnnData layout.

The files are read by the libraries made for them (``sopa.io.visium_hd`` and
``sopa.io.xenium``, both wrapping spatialdata-io, and ``spatialdata.read_zarr``); this
module only turns their table into what the rest of the pipeline expects, the same layout
as :mod:`spatialmap.io.visium` gives for Visium spots:

- ``X``: raw counts, CSR ``float32`` (never densified);
- ``obs``: ``in_tissue``, ``sample`` (and ``array_row``/``array_col`` for bins, the
  platform's cell metadata for cells);
- ``obsm['spatial']``: unit centres in the pixels of the slide's full-resolution image
  (Visium HD: the microscope image; Xenium: the morphology image), columns (x, y);
- ``uns['spatial'][sample]``: a low-resolution image and scale factors (``spot_diameter_fullres``
  is the bin side, or the median cell diameter);
- ``uns['spatialmap_platform']``: ``platform``, ``unit`` ('bin' or 'cell') and, for cells,
  the segmentation QC (cells found, median area, share of transcripts assigned to cells).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.io.visium import _as_csr_float32
from spatialmap.segmentation import plausibility

log = logging.getLogger(__name__)


def read_sopa(reader: str, path, sample: str, **kwargs):
    """``sopa.io.<reader>(path, **kwargs)`` with its warnings silenced; an unreadable input is an
    :class:`InputError` naming the sample."""
    import sopa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(sopa.io, reader)(path, **kwargs)
    except (OSError, KeyError, ValueError, AssertionError, RuntimeError) as err:
        raise InputError(f"sample {sample}: sopa.io.{reader} cannot read {path}: {err}") from err


def read_sopa_visium_hd(outs: Path, sample: str, bin_size: int):
    """``sopa.io.visium_hd`` of the ``bin_size`` µm bins; when it fails on bins without a position, the
    error says so (which file, how many bins, whose bins the positions are) instead of pandas' KeyError."""
    try:
        return read_sopa("visium_hd", outs, sample, bin_size=bin_size, load_segmentations_only=False)
    except InputError:
        problem = _hd_positions_problem(Path(outs) / "binned_outputs" / f"square_{bin_size:03d}um", sample)
        if problem:
            raise InputError(problem) from None
        raise


def _hd_positions_problem(folder: Path, sample: str) -> str | None:
    """Why the bins of ``folder``'s matrix are not all in its ``tissue_positions.parquet``, or None."""
    import h5py

    from spatialmap.io.samplesheet import HD_MATRIX, HD_POSITIONS

    try:
        with h5py.File(folder / HD_MATRIX, "r") as handle:
            bins = pd.Index([b.decode() for b in handle["matrix/barcodes"][:]])
        positions = pd.Index(pd.read_parquet(folder / HD_POSITIONS, columns=["barcode"])["barcode"].astype(str))
    except (OSError, ValueError, KeyError):
        return None  # unreadable: the reader's own message stands
    missing = bins.difference(positions)
    if not len(missing):
        return None
    return (
        f"sample {sample}: the positions do not match the bins: {len(missing):,} of {len(bins):,} bins of "
        f"{folder.name}/{HD_MATRIX} (e.g. {missing[0]}) have no position in {folder.name}/{HD_POSITIONS} "
        f"(which lists e.g. {positions[0] if len(positions) else 'nothing'}); copy {folder.name}/ again from the "
        "same Space Ranger run"
    )


def write_new_store(sdata, path, exists_message: str) -> Path:
    """Write ``sdata`` as a new zarr store: to ``<path>.tmp`` (a stale one replaced), renamed when
    complete, removed on failure; never over an existing store (``exists_message``)."""
    import shutil

    path = Path(path)
    if path.exists():
        raise InputError(exists_message)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sdata.write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


LOWRES_MAX_PX = 1000  # longest side of the image kept in uns['spatial'] for figures


def read_cells(path: str | Path, sample: str):
    """Read and check a ``<sample>.cells.parquet`` (GeoParquet of cell polygons).

    Returns
    -------
    GeoDataFrame indexed by unique string cell IDs, with a ``geometry`` column of valid
    Polygons.

    Raises
    ------
    InputError
        The file cannot be read, holds no cell, repeats a cell ID, or holds a geometry that
        is not a non-empty Polygon.
    """
    import geopandas as gpd

    try:
        cells = gpd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise InputError(f"sample {sample}: cannot read the cell polygons {path}: {err}") from err
    if len(cells) == 0:
        raise InputError(f"sample {sample}: the segmentation found no cell ({path})")
    cells.index = cells.index.astype(str)
    if cells.index.has_duplicates:
        raise InputError(f"sample {sample}: repeated cell IDs in {path}")
    kinds = set(cells.geom_type.unique())
    if kinds != {"Polygon"} or cells.geometry.is_empty.any() or not cells.geometry.is_valid.all():
        raise InputError(
            f"sample {sample}: {path} must hold valid, non-empty Polygons (found {', '.join(sorted(kinds))})"
        )
    return cells[["geometry"]]


def read_visium_hd(outs_dir: str | Path, sample: str, bin_size: int = 8) -> ad.AnnData:
    """Read the ``bin_size`` µm bins of a Visium HD ``outs/`` with ``sopa.io.visium_hd``.

    Parameters
    ----------
    outs_dir
        Space Ranger ``outs/`` holding ``binned_outputs/`` and ``feature_slice.h5``.
    sample
        Sample name.
    bin_size
        Bin side in µm (8 or 16; 2 reads the raw 2 µm bins).

    Returns
    -------
    AnnData of the in-tissue bins (the filtered matrix), raw counts in ``X``.
    """
    outs = Path(outs_dir)
    folder = outs / "binned_outputs" / f"square_{bin_size:03d}um"
    if not folder.is_dir():
        raise InputError(f"sample {sample}: Visium HD folder {outs} has no binned_outputs/square_{bin_size:03d}um")
    sdata = read_sopa_visium_hd(outs, sample, bin_size)
    table_key = f"square_{bin_size:03d}um"
    if table_key not in sdata.tables:
        raise InputError(f"sample {sample}: no {table_key} table read from {outs} (found {', '.join(sdata.tables)})")
    adata = sdata.tables[table_key]
    factors = _read_json(folder / "spatial" / "scalefactors_json.json", sample)
    adata = _standardise(adata, sample, adata.obsm["spatial"])
    in_tissue = adata.obs[keys.IN_TISSUE].to_numpy() == 1
    if not in_tissue.all():
        adata = adata[in_tissue].copy()
    image_key = next((k for k in sdata.images if k.endswith("_lowres_image")), None)
    image, scalef = _small_image(sdata, image_key) if image_key else (None, None)
    scalefactors = {k: float(v) for k, v in factors.items() if isinstance(v, (int, float))}
    if image is not None:
        scalefactors["tissue_lowres_scalef"] = float(factors.get("tissue_lowres_scalef", scalef))
    adata.uns[keys.UNS_SPATIAL] = {
        sample: {
            "images": {"lowres": image} if image is not None else {},
            "scalefactors": scalefactors,
            "metadata": {"source": "visium_hd", "reader": "sopa.io.visium_hd", "table": table_key},
        }
    }
    adata.uns[keys.UNS_PLATFORM] = {"platform": "visium_hd", "unit": "bin", "bin_size_um": int(bin_size)}
    return adata


def read_visium_hd_cells(
    outs_dir: str | Path,
    sample: str,
    cells: str | Path | None = None,
    method: str = "spaceranger",
    expand_radius_ratio: float = 0.0,
) -> ad.AnnData:
    """Cells of a Visium HD slide: cell polygons with the 2 µm bins aggregated by ``sopa.aggregate``.

    The polygons are Space Ranger 4's (``segmented_outputs/cell_segmentations.geojson``, read
    by ``sopa.io.visium_hd``) or, with ``cells``, the pipeline's own segmentation (a GeoParquet
    of polygons in full-resolution image pixels, e.g. StarDist nuclei). A 2 µm bin belongs to
    the cell whose polygon (grown by ``expand_radius_ratio`` x the mean cell radius, as
    ``sopa.aggregate`` does) holds its centre. ``obs['spaceranger_cell_id']`` keeps Space Ranger's
    cell ID, ``obs['segmentation_cell_id']`` the pipeline's.

    Parameters
    ----------
    outs_dir
        Space Ranger ``outs/``.
    sample
        Sample name (messages, ``obs['sample']``).
    cells
        ``<sample>.cells.parquet`` of the pipeline's segmentation; ``None``: Space Ranger's.
    method
        Name of the segmentation, written to the QC (``spaceranger``, ``stardist``, ``proseg``).
    expand_radius_ratio
        Growth of the polygons before bins are assigned (nuclei -> cells); 0 for whole cells.

    Returns
    -------
    AnnData of the cells, centroids in full-resolution pixels, segmentation QC in
    ``uns['spatialmap_platform']`` (cells found, median area, median 2 µm bins per cell,
    share of the 2 µm bins' counts inside cells).
    """
    outs = Path(outs_dir)
    geojson = outs / "segmented_outputs" / "cell_segmentations.geojson"
    if cells is None and not geojson.is_file():
        raise InputError(
            f"sample {sample}: --hd_mode cells needs Space Ranger 4's cell segmentation; {outs} has no "
            "segmented_outputs/cell_segmentations.geojson (use --segmentation stardist to segment the H&E)"
        )
    polygons = None if cells is None else read_cells(cells, sample)
    sdata = read_sopa_visium_hd(outs, sample, 2)
    if "square_002um" not in sdata.tables:
        raise InputError(f"sample {sample}: no 2 µm bins read from {outs}")
    bins = sdata.tables["square_002um"]
    key = _hd_cell_shapes(sdata, bins, polygons, outs, sample)
    cell_ids = sdata.shapes[key].index.astype(str).to_numpy()
    segmented_area_px = sdata.shapes[key].area.to_numpy(dtype=float)  # as segmented (nuclei for StarDist)
    factors = _read_json(_hd_cells_scalefactors_file(outs, sample), sample)
    mpp = float(factors["microns_per_pixel"])
    # before any work on them: stops on cells no tissue can hold (the bins table: the in-tissue 2 µm bins)
    warning = plausibility.check(sample, method, len(cell_ids), np.median(segmented_area_px) * mpp**2, bins.n_obs)
    total = float(bins.X.sum())  # before the aggregation
    table = _aggregate_hd_bins(sdata, key, expand_radius_ratio, len(cell_ids), sample)
    assignments = table.obsm["bins_assignments"].tocsr()
    n_bins = np.diff(assignments.indptr)
    id_column = "spaceranger_cell_id" if polygons is None else "segmentation_cell_id"
    adata = _standardise(table, sample, table.obsm["spatial"])
    adata.obs_names = cell_ids
    adata.obs[id_column] = cell_ids
    adata.obs[keys.IN_TISSUE] = 1
    adata.obs["cell_area_um2"] = _hd_cell_area_px(sdata, key, table, expand_radius_ratio) * mpp**2
    adata.obs["bins_002um"] = n_bins
    adata.obs = adata.obs.drop(columns=[c for c in ("slide", "cell_id", "area") if c in adata.obs])
    adata = _drop_cells_without_bins(adata, n_bins, sample, method)
    reader = "sopa.io.visium_hd + sopa.aggregate" + ("" if polygons is None else f" ({method} polygons)")
    adata.uns[keys.UNS_SPATIAL] = {sample: _hd_cells_spatial(sdata, adata, factors, mpp, reader)}
    qc = _hd_cells_qc(adata, method, len(cell_ids), segmented_area_px, mpp, assignments, bins, total)
    adata.uns[keys.UNS_PLATFORM] = {**qc, **_warned(sample, warning)}
    return adata


# A cell of 10 µm² or more (a disc over 2.83 µm across) always covers a centre of the 2 µm grid: only cells
# off the in-tissue bins hold none. Over half of them off the bins is not a segmentation of this slide.
MAX_CELLS_WITHOUT_BINS = 0.5


def _drop_cells_without_bins(adata: ad.AnnData, n_bins: np.ndarray, sample: str, method: str) -> ad.AnnData:
    """The cells holding at least one in-tissue 2 µm bin centre; raises when over
    :data:`MAX_CELLS_WITHOUT_BINS` of them hold none."""
    empty = n_bins == 0
    if empty.mean() > MAX_CELLS_WITHOUT_BINS:
        raise InputError(
            f"sample {sample}: {int(empty.sum()):,} of the {len(n_bins):,} {method} cells hold no in-tissue 2 µm bin "
            "centre: the cells do not lie on this slide's bins (boundaries of another slide, or another image?)"
        )
    if empty.any():
        log.info("sample %s: %d of %d %s cells hold no 2 µm bin centre and are left out", sample,
                 int(empty.sum()), len(n_bins), method)  # fmt: skip
        adata = adata[~empty].copy()
    return adata


def _warned(sample: str, warning: str | None) -> dict:
    """A plausibility warning logged, and as the QC field the report shows (empty when there is none)."""
    if not warning:
        return {}
    log.warning("sample %s: %s", sample, warning)
    return {"segmentation_warning": warning}


def _hd_cells_qc(
    adata, method: str, n_cells: int, segmented_area_px, mpp: float, assignments, bins, total: float
) -> dict:
    """The segmentation QC of Visium HD cells (``uns['spatialmap_platform']``); ``assignments``: the
    cells x 2 µm bins assignment matrix, ``bins``: the 2 µm bins' table, ``total``: their counts."""
    in_cells = float(assignments.sum(axis=0).A1.clip(max=1) @ np.asarray(bins.X.sum(axis=1)).ravel())
    return {
        "platform": "visium_hd", "unit": "cell", "segmentation": method, "cells_found": int(n_cells),
        "median_cell_area_um2": round(float(np.median(adata.obs["cell_area_um2"])), 3),
        "median_segmented_area_um2": round(float(np.median(segmented_area_px)) * mpp**2, 3),
        "median_bins_per_cell": float(np.median(adata.obs["bins_002um"])),
        "pct_bins_in_cells": round(100.0 * float((assignments.sum(axis=0).A1 > 0).mean()), 3),
        "cells_per_bin": round(n_cells / bins.n_obs, 4),  # cells found per in-tissue 2 µm bin
        "pct_transcripts_in_cells": round(100.0 * in_cells / total, 3) if total else float("nan"),
    }  # fmt: skip


def _hd_cell_shapes(sdata, bins, polygons, outs: Path, sample: str) -> str:
    """The key of the cell polygons in ``sdata.shapes``: Space Ranger's ``*_cell_segmentations``, or
    ``polygons`` (the pipeline's) added as ``spatialmap_cells`` in the 2 µm bins' coordinate systems."""
    if polygons is None:
        key = next((k for k in sdata.shapes if k.endswith("_cell_segmentations")), None)
        if key is None:
            raise InputError(f"sample {sample}: no cell boundaries read from {outs}")
        return key
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    bins_shapes = sdata.get_annotated_regions(bins)
    bins_shapes = bins_shapes[0] if isinstance(bins_shapes, list) else bins_shapes
    key = "spatialmap_cells"
    sdata.shapes[key] = ShapesModel.parse(
        polygons, transformations=get_transformation(sdata.shapes[bins_shapes], get_all=True)
    )
    return key


def _aggregate_hd_bins(sdata, key: str, expand_radius_ratio: float, n_cells: int, sample: str):
    """The 2 µm bins summed per cell of ``sdata.shapes[key]`` by ``sopa.aggregate`` (table ``cells_table``);
    raises when a cell was dropped."""
    import sopa

    sopa.aggregate(sdata, aggregate_genes=True, aggregate_channels=False, shapes_key=key,
                   bins_key="square_002um", expand_radius_ratio=expand_radius_ratio, key_added="cells_table")  # fmt: skip
    table = sdata.tables["cells_table"]
    if table.n_obs != n_cells:
        raise InputError(f"sample {sample}: {n_cells - table.n_obs} cells were dropped by the aggregation")
    return table


def _hd_cells_scalefactors_file(outs: Path, sample: str) -> Path:
    """The ``scalefactors_json.json`` of a Visium HD ``outs/`` with cells (segmented outputs first)."""
    candidates = [
        outs / d / "spatial" / "scalefactors_json.json"
        for d in ("segmented_outputs", ".", "binned_outputs/square_002um")
    ]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise InputError(
            f"sample {sample}: no scalefactors_json.json in {outs} (segmented_outputs/spatial, spatial, square_002um)"
        )
    return found


def _hd_cell_area_px(sdata, key: str, table, expand_radius_ratio: float) -> np.ndarray:
    """The area (pixels) each cell's bins were collected from: the polygon, grown as sopa.aggregate grew it."""
    if expand_radius_ratio:
        from sopa.shapes import expand_radius

        return expand_radius(sdata.shapes[key], expand_radius_ratio).area.to_numpy(dtype=float)
    return table.obs["area"].to_numpy(dtype=float)


def _hd_cells_spatial(sdata, adata: ad.AnnData, factors: dict, mpp: float, reader: str) -> dict:
    """``uns['spatial'][sample]`` of Visium HD cells: the low-resolution image, and the median cell
    diameter as ``spot_diameter_fullres``."""
    image_key = next((k for k in sdata.images if k.endswith("_lowres_image")), None)
    image, _ = _small_image(sdata, image_key) if image_key else (None, None)
    diameter = 2.0 * np.sqrt(np.median(adata.obs["cell_area_um2"]) / np.pi) / mpp
    scalefactors = {"spot_diameter_fullres": float(diameter), "microns_per_pixel": mpp}
    if image is not None and "tissue_lowres_scalef" in factors:
        scalefactors["tissue_lowres_scalef"] = float(factors["tissue_lowres_scalef"])
    return {"images": {"lowres": image} if image is not None else {}, "scalefactors": scalefactors,
            "metadata": {"source": "visium_hd", "reader": reader}}  # fmt: skip


def read_xenium(path: str | Path, sample: str) -> ad.AnnData:
    """Read the platform's cells of a Xenium bundle with ``sopa.io.xenium``.

    Returns
    -------
    AnnData of the cells (``cell_feature_matrix.h5``, gene expression features), centroids
    in morphology-image pixels, segmentation QC in ``uns['spatialmap_platform']``.
    """
    path = Path(path)
    sdata = read_sopa("xenium", path, sample, cells_table=True, cells_boundaries=True)
    if "table" not in sdata.tables:
        raise InputError(f"sample {sample}: no cell table read from {path}")
    pixel_size = float(_read_json(path / "experiment.xenium", sample)["pixel_size"])
    table = sdata.tables["table"]
    adata = _standardise(table, sample, np.asarray(table.obsm["spatial"], dtype=float) / pixel_size)
    adata.obs[keys.IN_TISSUE] = 1
    image, scalef = _small_image(sdata, "morphology_focus") if "morphology_focus" in sdata.images else (None, None)
    area = adata.obs["cell_area"].to_numpy(dtype=float) if "cell_area" in adata.obs else np.array([np.nan])
    diameter_px = 2.0 * np.sqrt(np.nanmedian(area) / np.pi) / pixel_size
    scalefactors = {"spot_diameter_fullres": float(diameter_px), "microns_per_pixel": pixel_size}
    if image is not None:
        scalefactors["tissue_lowres_scalef"] = scalef
    adata.uns[keys.UNS_SPATIAL] = {
        sample: {
            "images": {"lowres": image} if image is not None else {},
            "scalefactors": scalefactors,
            "metadata": {"source": "xenium", "reader": "sopa.io.xenium"},
        }
    }
    qc = {"platform": "xenium", "unit": "cell", "segmentation": "xenium", "cells_found": int(adata.n_obs)}
    qc["median_cell_area_um2"] = round(float(np.nanmedian(area)), 3)
    qc.update(transcript_assignment(sdata))
    _check_cells(qc, sample, "xenium", adata.n_obs, float(np.nanmedian(area)))
    adata.uns[keys.UNS_PLATFORM] = qc
    return adata


def read_xenium_cells(path: str | Path, sample: str, cells: str | Path, method: str = "proseg") -> ad.AnnData:
    """Cells of a Xenium bundle from the pipeline's own segmentation: decoded transcripts counted per polygon.

    ``cells`` is the pipeline's cells file (GeoParquet, polygons in µm, the transcripts'
    coordinates). The transcripts are read with ``sopa.io.xenium`` (Q < 20 left out, as in the
    platform's cell matrix) and counted per polygon by ``sopa.aggregate`` (control probes
    excluded by sopa's gene pattern). Centroids in morphology-image pixels, as :func:`read_xenium`.
    """
    import geopandas as gpd
    import sopa
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    path = Path(path)
    sdata = read_sopa("xenium", path, sample, qv_threshold=20)
    if "transcripts" not in sdata.points:
        raise InputError(f"sample {sample}: no transcripts read from {path}")
    try:
        shapes = gpd.read_parquet(cells)
    except (OSError, ValueError) as err:
        raise InputError(f"sample {sample}: cannot read the {method} cells file {cells}: {err}") from err
    if shapes.empty:
        raise InputError(f"sample {sample}: the {method} cells file {cells} holds no cell")
    ids = shapes.index.astype(str).to_numpy()
    shapes = gpd.GeoDataFrame(geometry=shapes.geometry.to_numpy(), index=ids, crs=None)
    transformations = get_transformation(sdata.points["transcripts"], get_all=True)
    sdata.shapes["cells"] = ShapesModel.parse(shapes, transformations=transformations)
    points = sdata.points["transcripts"]
    genes = ~points["feature_name"].astype(str).str.fullmatch(sopa.settings.gene_exclude_pattern, case=False)
    decoded = int((genes & ~points["low_quality_transcript"]).sum().compute())  # Q >= 20 gene transcripts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sopa.aggregate(sdata, aggregate_genes=True, aggregate_channels=False, shapes_key="cells",
                       points_key="transcripts", key_added="cells_table")  # fmt: skip
    table = sdata.tables["cells_table"]
    if table.n_obs != len(ids):  # sopa renames the cells 0..n-1 in order: the IDs are put back by position
        raise InputError(f"sample {sample}: {len(ids) - table.n_obs} {method} cells were dropped by the aggregation")
    pixel_size = float(_read_json(path / "experiment.xenium", sample)["pixel_size"])
    centroids_um = np.column_stack([shapes.centroid.x, shapes.centroid.y])
    adata = _standardise(table, sample, centroids_um / pixel_size)
    adata.obs = adata.obs.drop(columns=[c for c in ("cell_id", "area", "slide") if c in adata.obs])
    adata.obs_names = pd.Index(ids)
    adata.obs["segmentation_cell_id"] = ids  # links the table to these polygons in the output store
    adata.obs["cell_area"] = shapes.area.to_numpy(dtype=float)
    adata.obs[keys.IN_TISSUE] = 1
    image, scalef = _small_image(sdata, "morphology_focus") if "morphology_focus" in sdata.images else (None, None)
    area = adata.obs["cell_area"].to_numpy(dtype=float)
    scalefactors = {"spot_diameter_fullres": float(2.0 * np.sqrt(np.median(area) / np.pi) / pixel_size),
                    "microns_per_pixel": pixel_size}  # fmt: skip
    if image is not None:
        scalefactors["tissue_lowres_scalef"] = scalef
    adata.uns[keys.UNS_SPATIAL] = {
        sample: {"images": {"lowres": image} if image is not None else {}, "scalefactors": scalefactors,
                 "metadata": {"source": "xenium", "reader": f"sopa.io.xenium + {method} cells + sopa.aggregate"}}
    }  # fmt: skip
    in_cells = float(adata.X.sum())
    adata.uns[keys.UNS_PLATFORM] = {
        "platform": "xenium", "unit": "cell", "segmentation": method, "cells_found": int(adata.n_obs),
        "median_cell_area_um2": round(float(np.median(area)), 3), "transcripts_decoded": decoded,
        "pct_transcripts_in_cells": round(100.0 * in_cells / decoded, 3) if decoded else float("nan"),
    }  # fmt: skip
    _check_cells(adata.uns[keys.UNS_PLATFORM], sample, method, adata.n_obs, float(np.median(area)))
    return adata


def _check_cells(qc: dict, sample: str, method: str, n_cells: int, median_area_um2: float) -> None:
    """Xenium cells: the plausibility check of their median area (a Xenium bundle has no bins to count
    them against); stops on an impossible one, adds ``segmentation_warning`` to ``qc`` for a suspect one."""
    if np.isfinite(median_area_um2):
        qc.update(_warned(sample, plausibility.check(sample, method, n_cells, median_area_um2, None)))


def transcript_assignment(sdata) -> dict:
    """Share of the decoded transcripts (Q >= 20 where a ``qv`` column exists) inside a cell."""
    if "transcripts" not in sdata.points:
        return {}
    points = sdata.points["transcripts"]
    if "cell_id" not in points.columns:
        return {}
    cell = points["cell_id"]
    if "qv" in points.columns:
        good = points["qv"] >= 20
        cell = cell[good]
    unassigned = cell.isin(["UNASSIGNED", b"UNASSIGNED", -1, "-1"])
    total, outside = int(cell.size.compute()), int(unassigned.sum().compute())
    share = (total - outside) / total if total else float("nan")
    return {"transcripts_decoded": total, "pct_transcripts_in_cells": round(100.0 * share, 3)}


def read_spatialdata_zarr(path: str | Path, sample: str, bin_size: int = 8) -> ad.AnnData:
    """Read the count table of a SpatialData store with ``spatialdata.read_zarr`` (the store is not modified).

    The table is ``table`` when present, else the only one, else ``square_<bin_size>um``.
    Unit centres come from ``obsm['spatial']`` or the centroids of the shapes it annotates.
    """
    import spatialdata

    try:
        sdata = spatialdata.read_zarr(path)
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"sample {sample}: spatialdata.read_zarr cannot open {path}: {err}") from err
    names = list(sdata.tables)
    wanted = f"square_{bin_size:03d}um"
    name = "table" if "table" in names else names[0] if len(names) == 1 else wanted if wanted in names else None
    if name is None:
        raise InputError(f"sample {sample}: {path} holds tables {', '.join(names)}; none is 'table' or {wanted}")
    table = sdata.tables[name]
    attrs = table.uns.get("spatialdata_attrs", {})
    region = attrs.get("region")
    region = region[0] if isinstance(region, list) and region else region
    if "spatial" in table.obsm:
        coords = np.asarray(table.obsm["spatial"], dtype=float)[:, :2]
    elif region in sdata.shapes:
        centroids = spatialdata.get_centroids(sdata.shapes[region]).compute()
        order = table.obs[attrs["instance_key"]].to_numpy()
        coords = centroids.loc[order, ["x", "y"]].to_numpy(dtype=float)
    else:
        raise InputError(f"sample {sample}: table '{name}' of {path} has no obsm['spatial'] and annotates no shapes")
    adata = _standardise(table, sample, coords)
    if keys.IN_TISSUE not in adata.obs:
        adata.obs[keys.IN_TISSUE] = 1
    adata.uns[keys.UNS_SPATIAL] = {
        sample: {"images": {}, "scalefactors": {}, "metadata": {"source": "zarr", "table": name}}
    }
    unit = "bin" if "square_" in str(region or name) else "cell"
    adata.uns[keys.UNS_PLATFORM] = {"platform": "spatialdata", "unit": unit, "table": name}
    return adata


def _standardise(table: ad.AnnData, sample: str, coords: np.ndarray) -> ad.AnnData:
    """A plain AnnData copy: CSR float32 counts, unique gene names, sample, (x, y) pixels."""
    if table.n_obs == 0 or table.n_vars == 0:
        raise InputError(f"sample {sample}: the table holds {table.n_obs} units and {table.n_vars} genes")
    var = table.var.copy()
    if "feature_types" in var:
        keep = (var["feature_types"].astype(str) == "Gene Expression").to_numpy()
    else:
        keep = np.ones(table.n_vars, dtype=bool)
    obs = table.obs.drop(columns=[c for c in ("region",) if c in table.obs]).copy()
    adata = ad.AnnData(X=_as_csr_float32(table.X), obs=obs, var=var)
    adata = adata[:, keep].copy() if not keep.all() else adata
    adata.obs_names = adata.obs_names.astype(str)
    adata.var_names_make_unique()
    for col in ("feature_types", "genome"):
        if col in adata.var:
            adata.var[col] = adata.var[col].astype(str).astype("category")
    adata.obs[keys.SAMPLE] = pd.Categorical([sample] * adata.n_obs)
    coords = np.asarray(coords, dtype=np.float64)
    adata.obsm[keys.SPATIAL] = coords[:, :2]
    return adata


def _small_image(sdata, key: str) -> tuple[np.ndarray | None, float | None]:
    """The first pyramid level (or the image) at most ``LOWRES_MAX_PX`` wide, as floats in [0, 1]."""
    from spatialdata.models import get_axes_names  # noqa: F401  (checks the element is an image)

    element = sdata.images[key]
    levels = [element[k]["image"] for k in element.keys()] if hasattr(element, "children") else [element]
    full = levels[0].shape
    level = next((lvl for lvl in levels if max(lvl.shape[1:]) <= LOWRES_MAX_PX), levels[-1])
    data = np.asarray(level.data.compute() if hasattr(level.data, "compute") else level.data, dtype=np.float32)
    scalef = level.shape[-1] / full[-1]
    if data.shape[0] == 1:
        image = data[0]
    else:
        image = np.moveaxis(data[:3], 0, -1)
    top = float(np.percentile(image, 99.5)) if image.size else 1.0
    image = np.clip(image / (255.0 if data.max() <= 255 and data.shape[0] == 3 else max(top, 1e-9)), 0, 1)
    return image.astype(np.float32), float(scalef)


def _read_json(path: Path, sample: str) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"sample {sample}: cannot read {path}: {err}") from err


def platform_summary(adata_before: ad.AnnData, adata_after: ad.AnnData) -> dict:
    """Platform fields of the slide QC JSON (the report shows them as columns).

    ``platform``, ``unit``; for bins ``bin_size_um`` and ``bins_kept``, for cells
    ``cells_kept`` and the segmentation QC (``cells_found``, ``median_cell_area_um2``,
    ``pct_transcripts_in_cells``, ``segmentation``); ``median_transcripts`` per unit before
    filtering (all genes counted, as ``median_umis``).
    """
    info = dict(adata_before.uns.get(keys.UNS_PLATFORM, {}) or {"platform": "visium", "unit": "spot"})
    out = {k: _plain(v) for k, v in info.items()}
    unit = out.get("unit", "spot")
    if unit in ("bin", "cell"):
        out[f"{unit}s_kept"] = int(adata_after.n_obs)
        if keys.TOTAL_COUNTS in adata_before.obs:
            out["median_transcripts"] = float(np.median(adata_before.obs[keys.TOTAL_COUNTS]))
    return out


def _plain(value):
    """numpy scalars to Python (JSON-ready)."""
    return value.item() if isinstance(value, np.generic) else value
