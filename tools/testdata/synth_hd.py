"""Deterministic synthetic Visium HD and Xenium outputs with known cells (truth included).

Cells of known type and position are laid out on a tissue; each cell emits transcripts
drawn from the cell-type signatures of :mod:`testdata.synth` (the same signatures as the
generated single-cell reference, so the reference maps onto these slides). Then:

- **Visium HD** (Space Ranger 3/4 ``outs/`` layout): every transcript falls in a 2 µm bin;
  the 8 µm and 16 µm bins are exact sums of their 2 µm bins (4 x 4 and 8 x 8). Files:
  ``binned_outputs/square_002um|008um|016um/filtered_feature_bc_matrix.h5`` and
  ``spatial/{tissue_positions.parquet, scalefactors_json.json}``, ``spatial/`` images and scale
  factors, ``feature_slice.h5`` (its ``metadata_json`` attribute, which the reader checks),
  and a full-resolution H&E-like ``tissue_image.tif`` with one nucleus per true cell.
- **Xenium** (Xenium Onboard Analysis 2.x layout): ``experiment.xenium``,
  ``transcripts.parquet`` (transcripts assigned to the cell whose boundary holds them),
  ``cells.parquet``, ``cell_feature_matrix.h5``, ``cell_boundaries.parquet``,
  ``nucleus_boundaries.parquet``, ``cells.zarr.zip`` (label masks) and
  ``morphology_focus/morphology_focus_0000.ome.tif`` (DAPI-like, nuclei at the true cells).

Segmentation tests get wrong boundaries on purpose (:func:`generate_perturbed_hd`: the same
HD slide with Space Ranger 4 boundaries merged, split and shifted, recorded in the truth) and a
score against the true cells (:func:`score_segmentation`: matches at IoU ≥ 0.5, merges, splits).

Everything is drawn from numpy generators keyed by ``(seed, stream)``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image

from spatialmap import cli, keys
from testdata import regions, synth

log = logging.getLogger("testdata.synth_hd")

HD_BIN_SIZES = (2, 8, 16)  # µm; Space Ranger's binned_outputs/square_XXXum
TRUTH_BIN_SIZES = (8, 16)  # µm; the bin sizes the pipeline maps, with proportions and regions in the truth
HD_MICRONS_PER_PIXEL = 0.5  # full-resolution image (real slides: ~0.27)
HD_MARGIN_PX = 16  # image border around the bin grid
HD_DETECTION = 0.10  # mean share of a cell's signature UMIs captured on Visium HD
HD_AMBIENT_PER_BIN = 0.04  # mean ambient UMIs per in-tissue 2 µm bin
HD_MT_SHARE_RANGE = (0.04, 0.14)  # mitochondrial share of each cell's UMIs
XENIUM_PIXEL_SIZE = 0.2125  # µm per morphology pixel, as on the instrument
XENIUM_DETECTION = 0.06
XENIUM_BACKGROUND_SHARE = 0.05  # transcripts scattered over the tissue, mostly outside cells
XENIUM_LOW_QV_SHARE = 0.04  # transcripts below Q20, left out of the cell matrix
XENIUM_CONTROL_PROBES = ("NegControlProbe_00001", "NegControlProbe_00002", "NegControlProbe_00003")
XENIUM_VERSION = "xenium-2.0.0.10"
CELL_RADIUS_UM = (3.6, 4.4)  # cell body radius range
NUCLEUS_FRACTION = 0.6  # nucleus radius / cell radius
MIN_CELL_DISTANCE_UM = 9.0  # no two cell centres closer (cells never overlap)
TYPE_CONTRAST = 3.0  # type fields raised to this power: neighbouring cells mostly share a type
TYPE_BACKGROUND = 0.03
POLYGON_VERTICES = 13  # Xenium boundaries: up to 13 vertices, first repeated at the end

_STREAM_HD = 2000
_STREAM_XENIUM = 3000


@dataclass(frozen=True)
class SimulatedCells:
    """Cells of one simulated tissue (positions in µm from the tissue's top-left corner)."""

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    types: np.ndarray  # integer type index per cell
    type_names: list[str]
    type_fields: synth.TypeFields | None = None  # the fields the types were drawn from (coordinates of _normalised)

    @property
    def n(self) -> int:
        """Number of cells."""
        return int(self.x.size)


@dataclass(frozen=True)
class Transcripts:
    """Transcripts: position (µm), gene index and emitting cell (-1: ambient/background)."""

    x: np.ndarray
    y: np.ndarray
    gene: np.ndarray
    cell: np.ndarray


# --------------------------------------------------------------------------------------------
# Cells and transcripts
# --------------------------------------------------------------------------------------------


def tissue_for(rng: np.random.Generator, side_um: float) -> synth.TissueShape:
    """A wobbly tissue outline covering about three quarters of a ``side_um`` square."""
    grid = np.linspace(0.0, side_um, 60)
    gx, gy = np.meshgrid(grid, grid)
    x, y = _normalised(gx.ravel(), gy.ravel(), side_um)
    return synth.make_tissue_shape(rng, x, y)


def _normalised(x_um: np.ndarray, y_um: np.ndarray, side_um: float) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(x_um) / side_um - 0.5, np.asarray(y_um) / side_um - 0.5


def place_cells(
    rng: np.random.Generator, side_um: float, tissue: synth.TissueShape, n_cells: int, n_types: int
) -> SimulatedCells:
    """Up to ``n_cells`` non-overlapping cells inside the tissue, types following smooth fields.

    Cells are thrown at random and kept when no kept centre is closer than
    ``MIN_CELL_DISTANCE_UM``; types are drawn per cell from ``n_types`` spatial fields (blobs
    and gradients of :func:`testdata.synth.make_type_layouts`), so tissue regions are
    dominated by one or two types, as in real tissue.
    """
    if n_cells < 10:
        raise ValueError(f"n_cells must be at least 10, got {n_cells}")
    cand = rng.uniform(MIN_CELL_DISTANCE_UM / 2, side_um - MIN_CELL_DISTANCE_UM / 2, (60 * n_cells, 2))
    nx, ny = _normalised(cand[:, 0], cand[:, 1], side_um)
    cand = cand[tissue.contains(nx, ny)]
    kept: list[np.ndarray] = []
    cell = MIN_CELL_DISTANCE_UM
    buckets: dict[tuple[int, int], list[int]] = {}
    for point in cand:
        key = (int(point[0] // cell), int(point[1] // cell))
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in buckets.get((key[0] + dx, key[1] + dy), [])]
        if near and np.min(np.hypot(*(np.asarray([kept[j] for j in near]) - point).T)) < MIN_CELL_DISTANCE_UM:
            continue
        buckets.setdefault(key, []).append(len(kept))
        kept.append(point)
        if len(kept) == n_cells:
            break
    xy = np.asarray(kept)
    nx, ny = _normalised(xy[:, 0], xy[:, 1], side_um)
    layouts = synth.make_type_layouts(rng, nx, ny, n_types)
    type_fields = synth.TypeFields.anchored(layouts, nx, ny, TYPE_CONTRAST, TYPE_BACKGROUND)
    probs = type_fields.composition(nx, ny)
    types = (rng.random(len(xy))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    types = np.minimum(types, n_types - 1)
    radius = rng.uniform(*CELL_RADIUS_UM, len(xy))
    return SimulatedCells(xy[:, 0], xy[:, 1], radius, types, synth.cell_type_names(n_types), type_fields)


def cell_gene_counts(
    rng: np.random.Generator,
    cells: SimulatedCells,
    signatures: pd.DataFrame,
    detection: float,
    mt_share: tuple[float, float] | None,
) -> sp.csr_matrix:
    """Counts emitted by each cell: cells x (nuclear genes [+ 13 MT genes]).

    NB counts with mean ``signature[type] * detection * lognormal(0, 0.25)`` per cell and a
    per-gene technical effect; MT genes (when ``mt_share`` is given) carry a share drawn
    uniformly from that range.
    """
    sig = signatures.to_numpy()
    gene_effect = rng.lognormal(0.0, 0.2, sig.shape[0])
    scale = detection * rng.lognormal(0.0, 0.25, cells.n)
    mean = sig[:, cells.types].T * scale[:, None] * gene_effect
    parts = [synth.sample_nb(rng, mean, 8.0)]
    if mt_share is not None:
        share = rng.uniform(*mt_share, cells.n)
        mt_mean = (mean.sum(axis=1) * share / (1.0 - share))[:, None] * synth.mt_profile()
        parts.append(rng.poisson(mt_mean))
    return sp.csr_matrix(np.hstack(parts))


def scatter_in_cells(rng: np.random.Generator, cells: SimulatedCells, counts: sp.csr_matrix) -> Transcripts:
    """One position per count, uniform within its cell's disk."""
    coo = counts.tocoo()
    reps = coo.data.astype(np.int64)
    cell = np.repeat(coo.row, reps)
    gene = np.repeat(coo.col, reps)
    r = cells.radius[cell] * np.sqrt(rng.random(cell.size))
    angle = rng.uniform(0.0, 2.0 * np.pi, cell.size)
    return Transcripts(cells.x[cell] + r * np.cos(angle), cells.y[cell] + r * np.sin(angle), gene, cell)


def cell_of_point(cells: SimulatedCells, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Index of the cell whose disk holds each point, -1 where none (cells do not overlap)."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(np.column_stack([cells.x, cells.y])).query(np.column_stack([x, y]))
    return np.where(dist <= cells.radius[idx], idx, -1)


# --------------------------------------------------------------------------------------------
# Visium HD
# --------------------------------------------------------------------------------------------


def hd_barcode(bin_um: int, row: np.ndarray, col: np.ndarray) -> list[str]:
    """Space Ranger bin barcodes: ``s_008um_00012_00034-1``."""
    return [f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(row, col)]


def hd_bins(
    counts2: sp.csr_matrix, in_tissue2: np.ndarray, n_side2: int, bin_um: int
) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Aggregate 2 µm bins (row-major ``n_side2 x n_side2`` grid) into ``bin_um`` bins.

    Returns the in-tissue bins' counts (exact sums of their in-tissue 2 µm bins) and the
    positions table of every bin of the grid (``tissue_positions.parquet`` columns, pixel
    columns still in µm; see :func:`write_hd`).
    """
    factor = bin_um // 2
    n_side = n_side2 // factor
    rows2, cols2 = np.divmod(np.arange(n_side2 * n_side2), n_side2)
    target = (rows2 // factor) * n_side + cols2 // factor
    agg = sp.csr_matrix(
        (in_tissue2.astype(np.float64), (target, np.arange(target.size))), shape=(n_side**2, target.size)
    )
    counts = (agg @ counts2).tocsr()
    in_tissue = np.asarray(agg.sum(axis=1)).ravel() > 0
    rows, cols = np.divmod(np.arange(n_side * n_side), n_side)
    positions = pd.DataFrame(
        {
            "barcode": hd_barcode(bin_um, rows, cols),
            keys.IN_TISSUE: in_tissue.astype(np.int32),
            keys.ARRAY_ROW: rows.astype(np.int32),
            keys.ARRAY_COL: cols.astype(np.int32),
            "pxl_row_in_fullres": (rows + 0.5) * bin_um,
            "pxl_col_in_fullres": (cols + 0.5) * bin_um,
        }
    )
    return counts, positions


def simulate_hd(seed: int, signatures: pd.DataFrame, side_um: int = 240, n_cells: int = 350) -> dict:
    """Simulate one Visium HD slide in memory.

    Returns
    -------
    dict with ``cells`` (:class:`SimulatedCells`), ``tissue``, ``side_um``,
    ``bins`` (``{bin_um: (counts of in-tissue bins, positions of all bins)}``) and
    ``truth`` (``{bin_um: in-tissue bins x types share of cell-derived nuclear counts}``) and
    ``regions`` (the true regions: ``{bin_um: of the in-tissue bins}`` for ``TRUTH_BIN_SIZES``, and
    ``"cells"``: of the cells, index :func:`hd_cell_ids`).
    """
    if side_um % 16:
        raise ValueError(f"the HD slide side must be a multiple of 16 µm, got {side_um}")
    rng = np.random.default_rng([seed, _STREAM_HD])
    tissue = tissue_for(rng, side_um)
    cells = place_cells(rng, side_um, tissue, n_cells, signatures.shape[1])
    per_cell = cell_gene_counts(rng, cells, signatures, HD_DETECTION, HD_MT_SHARE_RANGE)
    tx = scatter_in_cells(rng, cells, per_cell)
    n_side2 = side_um // 2
    centres = (np.arange(n_side2) + 0.5) * 2.0
    gx, gy = np.meshgrid(centres, centres)
    in_tissue2 = tissue.contains(*_normalised(gx.ravel(), gy.ravel(), side_um))
    n_genes = per_cell.shape[1]
    ambient_n = rng.poisson(HD_AMBIENT_PER_BIN * in_tissue2.sum())
    ambient_bins = rng.choice(np.flatnonzero(in_tissue2), ambient_n)
    ambient_genes = rng.choice(n_genes, ambient_n, p=np.asarray(per_cell.sum(axis=0)).ravel() / per_cell.sum())
    bin2 = np.clip(tx.y // 2, 0, n_side2 - 1).astype(np.int64) * n_side2 + np.clip(tx.x // 2, 0, n_side2 - 1).astype(
        np.int64
    )
    keep = in_tissue2[bin2]  # transcripts off the tissue are not captured
    rows = np.concatenate([bin2[keep], ambient_bins])
    cols = np.concatenate([tx.gene[keep], ambient_genes])
    counts2 = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n_side2**2, n_genes))
    counts2.sum_duplicates()
    # truth: per 2 µm bin and type, nuclear counts emitted by cells of that type
    nuclear = keep & (tx.gene < signatures.shape[0])
    by_type2 = sp.csr_matrix(
        (np.ones(int(nuclear.sum())), (bin2[nuclear], cells.types[tx.cell[nuclear]])),
        shape=(n_side2**2, signatures.shape[1]),
    )
    bins, truth = {}, {}
    for bin_um in HD_BIN_SIZES:
        counts, positions = hd_bins(counts2, in_tissue2, n_side2, bin_um)
        by_type, _ = hd_bins(by_type2, in_tissue2, n_side2, bin_um)
        inside = positions[keys.IN_TISSUE].to_numpy() == 1
        bins[bin_um] = (counts[inside].astype(np.int64), positions)
        share = by_type[inside].toarray()
        total = share.sum(axis=1, keepdims=True)
        truth[bin_um] = pd.DataFrame(
            np.divide(share, total, out=np.zeros_like(share), where=total > 0),
            index=pd.Index(positions["barcode"].to_numpy()[inside], name="barcode"),
            columns=list(signatures.columns),
        ).assign(cell_counts=total.ravel().astype(int))
    true_regions = {bin_um: bin_regions(cells, side_um, bins[bin_um][1]) for bin_um in TRUTH_BIN_SIZES}
    true_regions["cells"] = cell_regions(cells, side_um, hd_cell_ids(cells.n))
    return {
        "cells": cells, "tissue": tissue, "side_um": side_um, "bins": bins, "truth": truth,
        "counts2": counts2, "in_tissue2": in_tissue2, "n_side2": n_side2, "regions": true_regions,
    }  # fmt: skip


def hd_cell_ids(n: int) -> np.ndarray:
    """IDs of the HD slide's true cells in the truth tables: ``hdcell00001`` ..."""
    return np.array([f"hdcell{i + 1:05d}" for i in range(n)])


def bin_regions(cells: SimulatedCells, side_um: float, positions: pd.DataFrame) -> pd.DataFrame:
    """True regions of the in-tissue bins of ``positions`` (pixel columns in µm), from the cells' type fields.

    The composition is the fields at each bin's centre; neighbours are the 4 bins around it.
    See :mod:`testdata.regions`.
    """
    inside = positions[positions[keys.IN_TISSUE].to_numpy() == 1]
    nx, ny = _normalised(inside["pxl_col_in_fullres"].to_numpy(), inside["pxl_row_in_fullres"].to_numpy(), side_um)
    composition = pd.DataFrame(
        cells.type_fields.composition(nx, ny),
        index=pd.Index(inside["barcode"].to_numpy(), name="barcode"),
        columns=list(cells.type_names),
    )
    edges = regions.square_grid_edges(inside[keys.ARRAY_ROW].to_numpy(), inside[keys.ARRAY_COL].to_numpy())
    return regions.true_regions(composition, edges)


def cell_regions(cells: SimulatedCells, side_um: float, ids: np.ndarray) -> pd.DataFrame:
    """True regions of the cells (index ``ids``), from their type fields at the cell centres.

    Neighbours are the Delaunay graph of the centres. A cell's own type was drawn from this
    composition, so it need not be its region's dominant type. See :mod:`testdata.regions`.
    """
    nx, ny = _normalised(cells.x, cells.y, side_um)
    composition = pd.DataFrame(
        cells.type_fields.composition(nx, ny), index=pd.Index(ids, name="cell_id"), columns=list(cells.type_names)
    )
    return regions.true_regions(composition, regions.delaunay_edges(cells.x, cells.y))


def hd_segmentation(hd: dict) -> dict:
    """Space Ranger 4-like cell segmentation of the HD slide: the true cells as polygons (pixels).

    A 2 µm bin belongs to the cell whose polygon holds its centre (as ``sopa.aggregate`` and
    Space Ranger assign bins); the cell matrix is the sum of its in-tissue 2 µm bins.

    Returns
    -------
    dict with ``polygons`` (shapely, full-resolution pixels), ``cell_ids`` (1-based),
    ``bin_cell`` (cell index per 2 µm bin of the grid, -1: none) and ``counts`` (cells x genes).
    """
    cells = hd["cells"]
    return segmentation_of_polygons(hd, [_cell_polygon(x, y, r) for x, y, r in zip(cells.x, cells.y, cells.radius)])


def _cell_polygon(x_um: float, y_um: float, r_um: float):
    """A cell's disk as the 24-vertex polygon of the Space Ranger 4-like boundaries, full-resolution pixels."""
    import shapely

    angles = np.linspace(0.0, 2.0 * np.pi, 25)[:-1]
    return shapely.Polygon(
        np.column_stack([um_to_hd_px(x_um + r_um * np.cos(angles)), um_to_hd_px(y_um + r_um * np.sin(angles))])
    )


def segmentation_of_polygons(hd: dict, polygons: list) -> dict:
    """A Space Ranger 4-like segmentation of the HD slide from polygons in full-resolution pixels.

    A 2 µm bin belongs to the polygon that holds its centre (the last one, should two overlap);
    the cell matrix sums each cell's in-tissue 2 µm bins. Returns the dict of
    :func:`hd_segmentation` (cell IDs 1..n in the order of ``polygons``).
    """
    import shapely

    n_side2 = hd["n_side2"]
    centres = (np.arange(n_side2) + 0.5) * 2.0
    gx, gy = np.meshgrid(um_to_hd_px(centres), um_to_hd_px(centres))
    bin_cell = np.full(n_side2 * n_side2, -1, dtype=np.int64)
    tree = shapely.STRtree(polygons)
    points = shapely.points(gx.ravel(), gy.ravel())
    pt, poly = tree.query(points, predicate="within")
    bin_cell[pt] = poly
    bin_cell[~hd["in_tissue2"]] = -1
    inside = np.flatnonzero(bin_cell >= 0)
    n = len(polygons)
    agg = sp.csr_matrix((np.ones(inside.size), (bin_cell[inside], inside)), shape=(n, bin_cell.size))
    counts = (agg @ hd["counts2"]).tocsr().astype(np.int64)
    return {"polygons": list(polygons), "cell_ids": np.arange(1, n + 1), "bin_cell": bin_cell, "counts": counts}


def write_hd_segmentation(outs: Path, hd: dict, seg: dict, genes: pd.DataFrame, name: str) -> dict[str, Path]:
    """``segmented_outputs/`` and ``barcode_mappings.parquet`` of Space Ranger 4."""
    folder = outs / "segmented_outputs"
    barcodes = [f"cellid_{i:09d}-1" for i in seg["cell_ids"]]
    synth.write_10x_h5(folder / "filtered_feature_cell_matrix.h5", seg["counts"], barcodes, genes, name)
    features = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [np.round(np.asarray(p.exterior.coords), 3).tolist()]},
         "properties": {"cell_id": int(i)}}
        for p, i in zip(seg["polygons"], seg["cell_ids"])
    ]  # fmt: skip
    synth.write_json(folder / "cell_segmentations.geojson", {"type": "FeatureCollection", "features": features})
    size = hd_image_size(hd["side_um"])
    synth.write_json(folder / "spatial" / "scalefactors_json.json", hd_scalefactors(None, size))
    n_side2 = hd["n_side2"]
    rows, cols = np.divmod(np.arange(n_side2 * n_side2), n_side2)
    keep = hd["in_tissue2"]
    cell = seg["bin_cell"][keep]
    mapping = pd.DataFrame(
        {
            "square_002um": hd_barcode(2, rows[keep], cols[keep]),
            "square_008um": hd_barcode(8, rows[keep] // 4, cols[keep] // 4),
            "square_016um": hd_barcode(16, rows[keep] // 8, cols[keep] // 8),
            "cell_id": pd.array([f"cellid_{c + 1:09d}-1" if c >= 0 else None for c in cell], dtype="string"),
            "in_nucleus": np.zeros(int(keep.sum()), dtype=bool),
            "in_cell": cell >= 0,
        }
    )
    with cli.atomic_path(outs / "barcode_mappings.parquet") as tmp:
        mapping.to_parquet(tmp, index=False, compression="zstd")
    return {"segmented_outputs": folder, "barcode_mappings": outs / "barcode_mappings.parquet"}


# --------------------------------------------------------------------------------------------
# Wrong boundaries on purpose, and segmentations scored against the true cells
# --------------------------------------------------------------------------------------------

PERTURB_MERGE_FRACTION = 0.10  # share of the true cells drawn as one polygon with a neighbour (pairs)
PERTURB_SPLIT_FRACTION = 0.10  # share of the true cells cut in two halves
PERTURB_SHIFT_FRACTION = 0.10  # share of the true cells whose polygon is moved
PERTURB_SHIFT_UM = 3.0  # by this much, in a random direction (a disk moved 3 µm keeps IoU < 0.45)
SPLIT_GAP_UM = 1.0  # split halves lie this far apart (so each keeps IoU < 0.5 with its cell)
MERGE_MAX_DISTANCE_UM = 12.0  # merged pairs are neighbours: centres at most this far apart
SCORE_IOU_MIN = 0.5  # a found cell matches a true cell at IoU ≥ 0.5 (then the match is one to one)
SCORE_COVER_MIN = 0.5  # merges / splits: "holds" means at least half of the area
_STREAM_HD_PERTURB = 2500


def perturb_segmentation(
    hd: dict,
    seed: int = 0,
    merge_fraction: float = PERTURB_MERGE_FRACTION,
    split_fraction: float = PERTURB_SPLIT_FRACTION,
    shift_fraction: float = PERTURB_SHIFT_FRACTION,
    shift_um: float = PERTURB_SHIFT_UM,
) -> tuple[dict, pd.DataFrame]:
    """Space Ranger 4-like boundaries of the HD slide that are wrong in known ways.

    Cells are drawn in a seeded random order; the first ones not yet used are, in turn:
    **merged** with their nearest free neighbour (centres at most ``MERGE_MAX_DISTANCE_UM``
    apart) into one polygon, the convex hull of both disks less every other true cell;
    **split** in two halves by a line through the centre at a random angle, ``SPLIT_GAP_UM``
    apart; **shifted** by
    ``shift_um`` in a random direction (less the polygons already drawn, so no two
    polygons overlap). Every other cell keeps its true polygon.

    Parameters
    ----------
    hd
        :func:`simulate_hd`'s slide.
    seed
        Seed of the choices, angles and directions (its own random stream).
    merge_fraction, split_fraction, shift_fraction
        Share of the true cells merged (in pairs), split and shifted; at most 1 together.
    shift_um
        Distance of the shift, µm.

    Returns
    -------
    The segmentation dict of :func:`hd_segmentation` (polygons in full-resolution pixels) and a
    table, one row per true cell: ``perturbation`` (``none``, ``merged``, ``split``,
    ``shifted``), ``partner`` (index of the cell it is merged with, -1), ``shift_x_um``,
    ``shift_y_um``, ``split_angle_deg`` and ``polygons`` (the 1-based IDs of the polygons
    drawn for it, ``;``-separated; empty when a shifted polygon was wholly covered).
    """
    import shapely
    from scipy.spatial import cKDTree
    from shapely import affinity

    fractions = {"merge_fraction": merge_fraction, "split_fraction": split_fraction, "shift_fraction": shift_fraction}
    for key, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} must lie in [0, 1], got {value}")
    if sum(fractions.values()) > 1.0:
        raise ValueError(f"the merged, split and shifted shares add up to more than 1: {sum(fractions.values()):g}")
    if shift_um < 0:
        raise ValueError(f"shift_um must be non-negative, got {shift_um}")
    cells = hd["cells"]
    n = cells.n
    rng = np.random.default_rng([seed, _STREAM_HD_PERTURB])
    order = rng.permutation(n)
    kind = np.full(n, "none", dtype=object)
    partner = np.full(n, -1, dtype=np.int64)
    shift = np.zeros((n, 2))
    angle = np.full(n, np.nan)
    centres = np.column_stack([cells.x, cells.y])
    tree = cKDTree(centres)
    pairs: list[tuple[int, int]] = []
    n_pairs = int(round(merge_fraction * n / 2))
    for i in order:
        if len(pairs) >= n_pairs:
            break
        if kind[i] != "none":
            continue
        dist, idx = tree.query(centres[i], k=min(8, n))
        for d, j in zip(dist[1:], idx[1:]):
            if d > MERGE_MAX_DISTANCE_UM:
                break
            if kind[j] == "none":
                kind[i] = kind[j] = "merged"
                partner[i], partner[j] = j, i
                pairs.append((int(i), int(j)))
                break
    for i in [i for i in order if kind[i] == "none"][: int(round(split_fraction * n))]:
        kind[i] = "split"
        angle[i] = rng.uniform(0.0, np.pi)
    for i in [i for i in order if kind[i] == "none"][: int(round(shift_fraction * n))]:
        kind[i] = "shifted"
        theta = rng.uniform(0.0, 2.0 * np.pi)
        shift[i] = shift_um * np.cos(theta), shift_um * np.sin(theta)

    disks = np.array([_cell_polygon(x, y, r) for x, y, r in zip(cells.x, cells.y, cells.radius)], dtype=object)
    drawn: dict[int, list] = {}  # first true cell -> its polygons
    for i in np.flatnonzero(kind == "none"):
        drawn[i] = [disks[i]]
    for i in np.flatnonzero(kind == "split"):
        drawn[i] = _halves(disks[i], float(um_to_hd_px(cells.x[i])), float(um_to_hd_px(cells.y[i])), angle[i])
    placed: list = []  # merged and shifted polygons so far
    for i, j in sorted((min(p), max(p)) for p in pairs):
        hull = shapely.union(disks[i], disks[j]).convex_hull
        others = [disks[k] for k in np.flatnonzero(shapely.intersects(disks, hull)) if k not in (i, j)]
        others += [q for q in placed if shapely.intersects(q, hull)]
        hull = _largest_polygon(hull.difference(shapely.union_all(others)) if others else hull)
        drawn[i] = [hull] if hull is not None else []
        placed.append(hull)
    fixed = [q for i, polys in drawn.items() if kind[i] in ("none", "split") for q in polys]
    for i in np.flatnonzero(kind == "shifted"):
        moved = affinity.translate(disks[i], *(shift[i] / HD_MICRONS_PER_PIXEL))
        near = [q for q in fixed + placed if q is not None and shapely.intersects(q, moved)]
        moved = _largest_polygon(moved.difference(shapely.union_all(near)) if near else moved)
        drawn[i] = [moved] if moved is not None else []
        if moved is not None:
            placed.append(moved)
    polygons, ids = [], {i: [] for i in range(n)}
    for i in sorted(drawn):
        for q in drawn[i]:
            polygons.append(q)
            ids[i].append(len(polygons))
            if kind[i] == "merged":
                ids[int(partner[i])].append(len(polygons))
    table = pd.DataFrame(
        {
            "perturbation": kind.astype(str),
            "partner": partner,
            "shift_x_um": shift[:, 0].round(3),
            "shift_y_um": shift[:, 1].round(3),
            "split_angle_deg": np.degrees(angle).round(2),
            "polygons": [";".join(map(str, ids[i])) for i in range(n)],
        }
    )
    log.info("perturbed boundaries: %d cells merged in pairs, %d split, %d shifted by %g µm; %d polygons",
             2 * len(pairs), int((kind == "split").sum()), int((kind == "shifted").sum()), shift_um, len(polygons))  # fmt: skip
    return segmentation_of_polygons(hd, polygons), table


def _halves(polygon, cx: float, cy: float, angle: float) -> list:
    """``polygon`` cut in two by the line through ``(cx, cy)`` at ``angle`` (radians), ``SPLIT_GAP_UM`` apart."""
    import shapely

    normal = np.array([np.cos(angle), np.sin(angle)])
    along = np.array([-normal[1], normal[0]])
    centre, far = np.array([cx, cy]), 1e4
    gap = SPLIT_GAP_UM / 2 / HD_MICRONS_PER_PIXEL
    halves = []
    for side in (1.0, -1.0):
        near = centre + side * gap * normal
        corners = [near + far * along, near + far * along + side * far * normal,
                   near - far * along + side * far * normal, near - far * along]  # fmt: skip
        halves.append(_largest_polygon(polygon.intersection(shapely.Polygon(corners))))
    return [h for h in halves if h is not None]


def _largest_polygon(geometry):
    """The largest Polygon of a geometry (``None`` when it holds none)."""
    import shapely

    parts = [g for g in shapely.get_parts(geometry) if g.geom_type == "Polygon" and not g.is_empty]
    return max(parts, key=lambda g: g.area) if parts else None


def true_cell_polygons(truth: pd.DataFrame, nucleus: bool = False) -> list:
    """The true cells (or nuclei) of a generated HD slide's truth table as polygons, full-resolution pixels."""
    column = "nucleus_radius_um" if nucleus else "radius_um"
    missing = {"x_um", "y_um", column} - set(truth.columns)
    if missing:
        raise ValueError(f"the truth table lacks the columns {', '.join(sorted(missing))}")
    return [_cell_polygon(x, y, r) for x, y, r in zip(truth["x_um"], truth["y_um"], truth[column])]


def spaceranger_cell_polygons(outs: str | Path) -> list:
    """The cell polygons of a generated Space Ranger 4 ``outs/`` (``segmented_outputs/cell_segmentations.geojson``),
    as shapely shapes in full-resolution pixels, in file order: what :func:`score_segmentation` scores."""
    from shapely.geometry import shape

    geo = json.loads((Path(outs) / "segmented_outputs" / "cell_segmentations.geojson").read_text())
    return [shape(f["geometry"]) for f in geo["features"]]


def score_segmentation(found, true, iou_min: float = SCORE_IOU_MIN, cover_min: float = SCORE_COVER_MIN) -> dict:
    """Found cell polygons against the true ones (same coordinates): matches by IoU, merges, splits.

    A true cell is **matched** to the found cell of highest IoU when that IoU is at least
    ``iou_min`` (greedy, one to one, highest IoU first; from 0.5 up a match is unique anyway
    when neither set of polygons overlaps itself).
    A found cell is a **merge** when it holds at least ``cover_min`` of the area of two or
    more true cells; a true cell is **split** when two or more found cells each have at least
    ``cover_min`` of their own area inside it.

    Parameters
    ----------
    found, true
        Polygons (a sequence of shapely geometries or a GeoSeries / GeoDataFrame).
    iou_min, cover_min
        Thresholds, in (0, 1].

    Returns
    -------
    dict with ``true_cells``, ``found_cells``, ``matched``, ``matched_fraction`` (of the true
    cells), ``precision`` (matched share of the found cells), ``mean_iou`` (over the matched
    pairs), ``mean_best_iou`` (over the true cells: each one's best IoU with any found cell,
    0 when none overlaps), ``merges`` (found cells), ``merged_true_cells``, ``splits`` (true
    cells), ``missed`` (true cells no found cell overlaps), ``match`` (found index per true
    cell, -1) and ``best_iou`` (per true cell).
    """
    import shapely

    def polygons(value) -> np.ndarray:
        value = getattr(value, "geometry", value)
        return np.asarray(list(value), dtype=object)

    for name, value in (("iou_min", iou_min), ("cover_min", cover_min)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must lie in (0, 1], got {value}")
    found, true = polygons(found), polygons(true)
    if true.size == 0:
        raise ValueError("no true cell to score the segmentation against")
    n_true, n_found = len(true), len(found)
    if n_found:
        t_idx, f_idx = shapely.STRtree(found).query(true, predicate="intersects")
    else:
        t_idx = f_idx = np.zeros(0, dtype=np.int64)
    inter = shapely.area(shapely.intersection(true[t_idx], found[f_idx])) if t_idx.size else np.zeros(0)
    area_t = shapely.area(true)
    area_f = shapely.area(found) if n_found else np.zeros(0)
    union = area_t[t_idx] + area_f[f_idx] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    match = np.full(n_true, -1, dtype=np.int64)
    match_iou = np.zeros(n_true)
    used = np.zeros(n_found, dtype=bool)
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < iou_min:
            break
        if match[t_idx[k]] < 0 and not used[f_idx[k]]:
            match[t_idx[k]], match_iou[t_idx[k]] = f_idx[k], iou[k]
            used[f_idx[k]] = True
    best = np.zeros(n_true)
    np.maximum.at(best, t_idx, iou)
    share_of_true = np.divide(inter, area_t[t_idx], out=np.zeros_like(inter), where=area_t[t_idx] > 0)
    share_of_found = np.divide(inter, area_f[f_idx], out=np.zeros_like(inter), where=area_f[f_idx] > 0)
    holds = share_of_true >= cover_min
    true_per_found = np.bincount(f_idx[holds], minlength=n_found)
    merged_true = np.isin(np.arange(n_true), t_idx[holds & (true_per_found[f_idx] >= 2)])
    inside = share_of_found >= cover_min
    found_per_true = np.bincount(t_idx[inside], minlength=n_true)
    matched = match >= 0
    overlapped = np.zeros(n_true, dtype=bool)
    overlapped[t_idx[inter > 0]] = True
    pair_iou = match_iou[matched]
    return {
        "true_cells": int(n_true), "found_cells": int(n_found), "matched": int(matched.sum()),
        "matched_fraction": float(matched.mean()),
        "precision": float(matched.sum() / n_found) if n_found else 0.0,
        "mean_iou": float(pair_iou.mean()) if pair_iou.size else 0.0,
        "mean_best_iou": float(best.mean()),
        "merges": int((true_per_found >= 2).sum()), "merged_true_cells": int(merged_true.sum()),
        "splits": int((found_per_true >= 2).sum()), "missed": int((~overlapped).sum()),
        "match": match, "best_iou": best,
    }  # fmt: skip


def hd_image_size(side_um: int) -> int:
    """Side of the square full-resolution image, pixels."""
    return int(round(side_um / HD_MICRONS_PER_PIXEL)) + 2 * HD_MARGIN_PX


def um_to_hd_px(value_um: np.ndarray) -> np.ndarray:
    """Slide µm (from the grid's corner) to full-resolution pixels."""
    return HD_MARGIN_PX + np.asarray(value_um, dtype=float) / HD_MICRONS_PER_PIXEL


def render_he(size: int, px_per_um: float, offset: float, cells: SimulatedCells, tissue, side_um: float) -> np.ndarray:
    """H&E-like RGB image: white glass, pink tissue, pale cytoplasm and a purple nucleus per cell."""
    coords = (np.arange(size) + 0.5 - offset) / px_per_um
    gx, gy = np.meshgrid(coords, coords)
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[...] = (246, 244, 247)
    image[tissue.contains(*_normalised(gx, gy, side_um))] = (233, 180, 205)
    for colour, fraction in (((214, 150, 190), 1.0), ((92, 52, 140), NUCLEUS_FRACTION)):
        label = _disk_labels(size, px_per_um, offset, cells, fraction)
        image[label > 0] = colour
    return image


def _disk_labels(size: int, px_per_um: float, offset: float, cells: SimulatedCells, fraction: float) -> np.ndarray:
    """Label image (cell index + 1 inside each cell's disk scaled by ``fraction``, 0 elsewhere)."""
    label = np.zeros((size, size), dtype=np.uint32)
    for i in range(cells.n):
        cx, cy = offset + cells.x[i] * px_per_um, offset + cells.y[i] * px_per_um
        r = cells.radius[i] * fraction * px_per_um
        r0, r1 = max(int(cy - r - 1), 0), min(int(cy + r + 2), size)
        c0, c1 = max(int(cx - r - 1), 0), min(int(cx + r + 2), size)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        inside = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
        label[r0:r1, c0:c1][inside] = i + 1
    return label


def hd_scalefactors(bin_um: int | None, size: int) -> dict:
    """Space Ranger scale factors (``bin_size_um / spot_diameter_fullres == microns_per_pixel``)."""
    factors = {
        "tissue_hires_scalef": round(min(1.0, 2000 / size), 8),
        "tissue_lowres_scalef": round(300 / size, 8),
        "fiducial_diameter_fullres": round(8 * 22.0 / HD_MICRONS_PER_PIXEL, 4),
        "regist_target_img_scalef": round(min(1.0, 2000 / size), 8),
        "microns_per_pixel": HD_MICRONS_PER_PIXEL,
    }
    if bin_um is not None:
        factors["bin_size_um"] = float(bin_um)
        factors["spot_diameter_fullres"] = bin_um / HD_MICRONS_PER_PIXEL
    else:
        factors["spot_diameter_fullres"] = 2 / HD_MICRONS_PER_PIXEL
    return factors


def feature_slice_metadata(n_side2: int) -> dict:
    """The ``metadata_json`` attribute of ``feature_slice.h5`` (what spatialdata-io parses)."""
    identity = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    to_px = [
        1.0 / HD_MICRONS_PER_PIXEL * 2, 0.0, HD_MARGIN_PX,
        0.0, 1.0 / HD_MICRONS_PER_PIXEL * 2, HD_MARGIN_PX,
        0.0, 0.0, 1.0,
    ]  # fmt: skip
    from_px = list(np.linalg.inv(np.asarray(to_px).reshape(3, 3)).ravel())
    layout = {"file_format": "1.0", "num_rows": n_side2, "num_cols": n_side2, "transform": identity}
    return {
        "hd_layout_json": json.dumps(layout),
        "transform_matrices": {
            "spot_colrow_to_microscope_colrow": to_px,
            "microscope_colrow_to_spot_colrow": from_px,
            "spot_colrow_to_cytassist_colrow": identity,
            "cytassist_colrow_to_spot_colrow": identity,
        },
        "software_version": "spatialmap-synth (Space Ranger 3.x layout)",
        "bin_size_um": 2.0,
    }


def write_hd(outdir: Path, name: str, hd: dict, genes: pd.DataFrame, seg: dict | None = None) -> dict[str, Path]:
    """Write ``hd`` in Space Ranger's Visium HD ``outs/`` layout under ``outdir/<name>/outs``.

    ``seg`` is the Space Ranger 4 segmentation written (default: :func:`hd_segmentation`, the true cells).
    """
    outs = outdir / name / "outs"
    size = hd_image_size(hd["side_um"])
    seg = hd_segmentation(hd) if seg is None else seg
    paths = {"outs": outs, **write_hd_segmentation(outs, hd, seg, genes, name)}
    for bin_um, (counts, positions) in hd["bins"].items():
        folder = outs / "binned_outputs" / f"square_{bin_um:03d}um"
        inside = positions[keys.IN_TISSUE].to_numpy() == 1
        barcodes = positions["barcode"].to_numpy()[inside].tolist()
        synth.write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, barcodes, genes, name)
        table = positions.copy()
        for col in ("pxl_row_in_fullres", "pxl_col_in_fullres"):
            table[col] = um_to_hd_px(table[col])
        with cli.atomic_path(folder / "spatial" / "tissue_positions.parquet") as tmp:
            table.to_parquet(tmp, index=False)
        synth.write_json(folder / "spatial" / "scalefactors_json.json", hd_scalefactors(bin_um, size))
        paths[f"square_{bin_um:03d}um"] = folder
    image = render_he(size, 1.0 / HD_MICRONS_PER_PIXEL, HD_MARGIN_PX, hd["cells"], hd["tissue"], hd["side_um"])
    factors = hd_scalefactors(None, size)
    synth.write_json(outs / "spatial" / "scalefactors_json.json", factors)
    for key in ("hires", "lowres"):
        small = _resize(image, factors[f"tissue_{key}_scalef"])
        synth.write_image(outs / "spatial" / f"tissue_{key}_image.png", small)
    paths["fullres_image"] = outs / "tissue_image.tif"
    _write_tiff(paths["fullres_image"], image)
    paths["feature_slice"] = outs / "feature_slice.h5"
    with cli.atomic_path(paths["feature_slice"]) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["metadata_json"] = json.dumps(feature_slice_metadata(hd["side_um"] // 2))
    return paths


def _resize(image: np.ndarray, scalef: float) -> np.ndarray:
    side = max(1, int(round(image.shape[0] * scalef)))
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR))


def _write_tiff(path: Path, image: np.ndarray, **kwargs) -> None:
    """TIFF (OME-TIFF with ``ome=True``); the random OME UUID is replaced by a fixed one (same bytes each run)."""
    import re

    import tifffile

    with cli.atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, compression="zlib", **kwargs)
        data = re.sub(rb"urn:uuid:[0-9a-f-]{36}", b"urn:uuid:00000000-0000-4000-8000-000000000000", tmp.read_bytes())
        tmp.write_bytes(data)


# --------------------------------------------------------------------------------------------
# Xenium
# --------------------------------------------------------------------------------------------


def xenium_cell_ids(n: int) -> np.ndarray:
    """Xenium cell IDs (``aaabcdef-1``): 8 letters a-p encoding a uint32 prefix, then ``-1``."""
    prefix = (np.arange(n, dtype=np.uint64) * 2654435 + 1048576).astype(np.uint32)
    nibbles = (prefix[:, None] >> np.arange(28, -4, -4, dtype=np.uint32)) & 0xF
    letters = (nibbles + ord("a")).astype(np.uint8).view("S8").ravel().astype("U8")
    return np.char.add(letters, "-1"), prefix


def simulate_xenium(seed: int, signatures: pd.DataFrame, side_um: int = 200, n_cells: int = 260) -> dict:
    """Simulate one Xenium region in memory.

    Returns
    -------
    dict with ``cells``, ``tissue``, ``side_um``, ``transcripts`` (DataFrame in
    ``transcripts.parquet`` form), ``matrix`` (cells x panel genes, Q20 transcripts assigned
    to cells), ``controls`` (cells x control probes), ``cell_ids`` and ``regions`` (the true
    regions of the cells, :func:`cell_regions`).
    """
    rng = np.random.default_rng([seed, _STREAM_XENIUM])
    tissue = tissue_for(rng, side_um)
    cells = place_cells(rng, side_um, tissue, n_cells, signatures.shape[1])
    emitted = cell_gene_counts(rng, cells, signatures, XENIUM_DETECTION, None)
    tx = scatter_in_cells(rng, cells, emitted)
    n_bg = int(round(XENIUM_BACKGROUND_SHARE * tx.gene.size))
    bg = rng.uniform(0, side_um, (4 * n_bg, 2))
    bg = bg[tissue.contains(*_normalised(bg[:, 0], bg[:, 1], side_um))][:n_bg]
    n_genes = signatures.shape[0]
    n_features = n_genes + len(XENIUM_CONTROL_PROBES)
    bg_gene = rng.choice(n_features, len(bg))
    x = np.concatenate([tx.x, bg[:, 0]])
    y = np.concatenate([tx.y, bg[:, 1]])
    gene = np.concatenate([tx.gene, bg_gene])
    cell = cell_of_point(cells, x, y)  # assignment by boundary, as the instrument does
    order = np.lexsort((x, np.floor(y / 10.0)))  # stored in 10 µm stripes, like the instrument's tiles
    x, y, gene, cell = np.round(x[order], 2), np.round(y[order], 2), gene[order], cell[order]
    low = rng.random(x.size) < XENIUM_LOW_QV_SHARE
    qv = np.round(np.where(low, rng.uniform(5, 19.9, x.size), rng.uniform(20, 40, x.size)), 1)
    ids, prefix = xenium_cell_ids(cells.n)
    dist = np.hypot(x - cells.x[np.maximum(cell, 0)], y - cells.y[np.maximum(cell, 0)])
    nuc_r = cells.radius[np.maximum(cell, 0)] * NUCLEUS_FRACTION
    names = np.array(list(signatures.index) + list(XENIUM_CONTROL_PROBES))
    transcripts = pd.DataFrame(
        {
            "transcript_id": np.arange(x.size, dtype=np.uint64) + 281474976710657,
            "cell_id": np.where(cell >= 0, ids[np.maximum(cell, 0)], "UNASSIGNED"),
            "overlaps_nucleus": ((cell >= 0) & (dist <= nuc_r)).astype(np.uint8),
            "feature_name": names[gene],
            "x_location": x.astype(np.float32),
            "y_location": y.astype(np.float32),
            "z_location": np.round(rng.normal(12.0, 1.5, x.size), 1).astype(np.float32),
            "qv": qv.astype(np.float32),
            "fov_name": "A1",
            "nucleus_distance": np.round(np.where(cell >= 0, np.maximum(dist - nuc_r, 0), 0), 2).astype(np.float32),
        }
    )
    good = (cell >= 0) & (qv >= 20)
    full = sp.csr_matrix((np.ones(int(good.sum())), (cell[good], gene[good])), shape=(cells.n, n_features))
    full.sum_duplicates()
    return {
        "cells": cells,
        "tissue": tissue,
        "side_um": side_um,
        "transcripts": transcripts,
        "matrix": full[:, :n_genes].astype(np.int64),
        "controls": full[:, n_genes:].astype(np.int64),
        "cell_ids": ids,
        "cell_prefix": prefix,
        "regions": cell_regions(cells, side_um, ids),
    }


def circle_polygons(cells: SimulatedCells, ids: np.ndarray, fraction: float) -> pd.DataFrame:
    """Boundary vertices (µm) in Xenium's parquet form: closed, contiguous per cell."""
    angles = np.linspace(0.0, 2.0 * np.pi, POLYGON_VERTICES)  # last == first: closed ring
    angles[-1] = 0.0
    r = cells.radius[:, None] * fraction
    vx = cells.x[:, None] + r * np.cos(angles)
    vy = cells.y[:, None] + r * np.sin(angles)
    return pd.DataFrame(
        {
            "cell_id": np.repeat(ids, POLYGON_VERTICES),
            "vertex_x": vx.ravel().astype(np.float32),
            "vertex_y": vy.ravel().astype(np.float32),
            "label_id": np.repeat(np.arange(1, cells.n + 1, dtype=np.uint32), POLYGON_VERTICES),
        }
    )


def xenium_cells_table(xen: dict) -> pd.DataFrame:
    """``cells.parquet``: one row per cell, centroids and areas in µm."""
    cells = xen["cells"]
    area = np.pi * cells.radius**2
    matrix, controls = xen["matrix"], xen["controls"]
    counts = np.asarray(matrix.sum(axis=1)).ravel()
    control = np.asarray(controls.sum(axis=1)).ravel()
    return pd.DataFrame(
        {
            "cell_id": xen["cell_ids"],
            "x_centroid": cells.x,
            "y_centroid": cells.y,
            "transcript_counts": counts.astype(np.int32),
            "control_probe_counts": control.astype(np.int32),
            "genomic_control_counts": np.zeros(cells.n, dtype=np.int32),
            "control_codeword_counts": np.zeros(cells.n, dtype=np.int32),
            "unassigned_codeword_counts": np.zeros(cells.n, dtype=np.int32),
            "deprecated_codeword_counts": np.zeros(cells.n, dtype=np.int32),
            "total_counts": (counts + control).astype(np.int32),
            "cell_area": area,
            "nucleus_area": area * NUCLEUS_FRACTION**2,
            "nucleus_count": np.ones(cells.n, dtype=np.int32),
            "segmentation_method": pd.Categorical(["Segmented by nucleus expansion of 5.0µm"] * cells.n),
        }
    )


def write_cells_zarr(path: Path, xen: dict, size: int) -> None:
    """``cells.zarr.zip`` of XOA 2.x: cell IDs, summary, label masks and polygon sets."""
    import zarr

    cells = xen["cells"]
    px = 1.0 / XENIUM_PIXEL_SIZE
    summary = np.column_stack(
        [cells.x, cells.y, np.pi * cells.radius**2, cells.x, cells.y,
         np.pi * (cells.radius * NUCLEUS_FRACTION) ** 2, np.zeros(cells.n), np.ones(cells.n)]
    )  # fmt: skip
    with cli.atomic_path(path) as tmp:
        tmp.unlink()
        store = zarr.storage.ZipStore(tmp, mode="w")
        root = zarr.group(store=store, zarr_format=2, attributes={"major_version": 6, "minor_version": 0})
        ids = np.column_stack([xen["cell_prefix"], np.ones(cells.n, dtype=np.uint32)]).astype(np.uint32)
        root.create_array("cell_id", data=ids)
        columns = [
            "cell_centroid_x", "cell_centroid_y", "cell_area", "nucleus_centroid_x",
            "nucleus_centroid_y", "nucleus_area", "z_level", "nucleus_count",
        ]  # fmt: skip
        root.create_array("cell_summary", data=summary, attributes={"column_names": columns})
        masks = root.create_group("masks")
        for index, fraction in ((0, NUCLEUS_FRACTION), (1, 1.0)):
            masks.create_array(str(index), data=_disk_labels(size, px, 0.0, cells, fraction), chunks=(512, 512))
            root.create_array(f"polygon_sets/{index}/cell_index", data=np.arange(cells.n, dtype=np.uint32))
        store.close()
        _fix_zip_times(tmp)


def _fix_zip_times(path: Path) -> None:
    """Rewrite a zip with fixed member times and order, so the same data gives the same bytes."""
    import zipfile

    with zipfile.ZipFile(path) as src:
        members = sorted((info.filename, src.read(info)) for info in src.infolist())
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as dst:
        for name, data in members:
            dst.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)


def experiment_xenium(name: str, n_cells: int, n_genes: int, n_transcripts: int) -> dict:
    """The ``experiment.xenium`` specification (JSON)."""
    return {
        "major_version": 5, "minor_version": 0, "patch_version": 0,
        "run_name": f"spatialmap synthetic {name}", "run_start_time": "2026-01-01T00:00:00Z",
        "region_name": name, "preservation_method": "FFPE", "num_cells": n_cells,
        "transcripts_per_cell": int(round(n_transcripts / max(n_cells, 1))),
        "panel_name": "spatialmap synthetic panel", "panel_organism": "Human",
        "panel_num_targets_predesigned": n_genes, "panel_num_targets_custom": 0,
        "pixel_size": XENIUM_PIXEL_SIZE, "instrument_sw_version": "2.0.0.6",
        "analysis_sw_version": XENIUM_VERSION, "z_step_size": 3.0,
        "images": {"morphology_focus_filepath": "morphology_focus/morphology_focus_0000.ome.tif"},
    }  # fmt: skip


def write_xenium(outdir: Path, name: str, xen: dict, genes: pd.DataFrame) -> dict[str, Path]:
    """Write ``xen`` in the Xenium output layout under ``outdir/<name>``."""
    out = outdir / name
    cells = xen["cells"]
    paths = {"xenium_dir": out}
    n_genes = xen["matrix"].shape[1]
    panel = genes.iloc[:n_genes]
    features = pd.DataFrame(
        {keys.GENE_IDS: list(panel[keys.GENE_IDS]) + list(XENIUM_CONTROL_PROBES)},
        index=list(panel.index) + list(XENIUM_CONTROL_PROBES),
    )
    matrix = sp.hstack([xen["matrix"], xen["controls"]]).tocsr()
    _write_xenium_h5(out / "cell_feature_matrix.h5", matrix, xen["cell_ids"], features, n_genes, name)
    for file, table in (
        ("transcripts.parquet", xen["transcripts"]),
        ("cells.parquet", xenium_cells_table(xen)),
        ("cell_boundaries.parquet", circle_polygons(cells, xen["cell_ids"], 1.0)),
        ("nucleus_boundaries.parquet", circle_polygons(cells, xen["cell_ids"], NUCLEUS_FRACTION)),
    ):
        with cli.atomic_path(out / file) as tmp:
            table.to_parquet(tmp, index=False, compression="zstd")
        paths[file] = out / file
    size = int(np.ceil(xen["side_um"] / XENIUM_PIXEL_SIZE))
    write_cells_zarr(out / "cells.zarr.zip", xen, size)
    dapi = _disk_labels(size, 1.0 / XENIUM_PIXEL_SIZE, 0.0, cells, NUCLEUS_FRACTION) > 0
    image = (200 + 3800 * dapi).astype(np.uint16)[None]
    paths["morphology"] = out / "morphology_focus" / "morphology_focus_0000.ome.tif"
    _write_tiff(
        paths["morphology"], image, ome=True,
        metadata={"axes": "CYX", "Channel": {"Name": ["DAPI"]},
                  "PhysicalSizeX": XENIUM_PIXEL_SIZE, "PhysicalSizeY": XENIUM_PIXEL_SIZE},
    )  # fmt: skip
    spec = experiment_xenium(name, cells.n, n_genes, len(xen["transcripts"]))
    synth.write_json(out / "experiment.xenium", spec)
    paths["experiment"] = out / "experiment.xenium"
    return paths


def _write_xenium_h5(path: Path, matrix, ids, features: pd.DataFrame, n_genes: int, name: str) -> None:
    """10x HDF5 matrix whose last features are negative control probes."""
    with cli.atomic_path(path) as tmp:
        synth.write_10x_h5(tmp, matrix, list(ids), features, name)
        with h5py.File(tmp, "a") as f:
            values = f["matrix/features/feature_type"][...]
            values[n_genes:] = b"Negative Control Probe"
            del f["matrix/features/feature_type"]
            f["matrix/features"].create_dataset("feature_type", data=values)
            f.attrs["software_version"] = XENIUM_VERSION


# --------------------------------------------------------------------------------------------
# Truth, samplesheet, entry point
# --------------------------------------------------------------------------------------------


def cells_truth(cells: SimulatedCells, ids, to_px) -> pd.DataFrame:
    """True cells: ID, type, centre (µm and image pixels), radius."""
    return pd.DataFrame(
        {
            "cell_id": ids,
            "cell_type": np.asarray(cells.type_names)[cells.types],
            "x_um": cells.x.round(3),
            "y_um": cells.y.round(3),
            "x_px": to_px(cells.x).round(3),
            "y_px": to_px(cells.y).round(3),
            "radius_um": cells.radius.round(3),
            "nucleus_radius_um": (cells.radius * NUCLEUS_FRACTION).round(3),
        }
    )


def write_hd_samplesheet(path: Path, hd_name: str, xenium_name: str, visium_dir: str | None) -> None:
    """Samplesheet mixing the platforms, paths relative to its folder."""
    rows = []
    if visium_dir is not None:
        rows.append({"sample": "visium1", "spaceranger_dir": visium_dir, "xenium_dir": "", "group": "visium"})
    rows.append({"sample": hd_name, "spaceranger_dir": f"{hd_name}/outs", "xenium_dir": "", "group": "hd"})
    rows.append({"sample": xenium_name, "spaceranger_dir": "", "xenium_dir": xenium_name, "group": "xenium"})
    synth.write_csv(path, pd.DataFrame(rows), index=False)


def generate(
    outdir: str | Path,
    seed: int = 0,
    n_genes: int = 400,
    n_cell_types: int = 8,
    hd_side_um: int = 240,
    hd_cells: int = 350,
    xenium_side_um: int = 200,
    xenium_cells: int = 260,
    visium_dir: str | None = "../test_data/slide1/outs",
) -> dict:
    """Generate and write a Visium HD slide (``hd1``) and a Xenium region (``xenium1``).

    The cell-type signatures are those of :func:`testdata.synth.simulate` with the same
    ``seed``, ``n_genes`` and ``n_cell_types`` (by default, the committed
    ``assets/test_data/reference.h5ad``).

    Returns
    -------
    dict of written paths: ``hd`` and ``xenium`` (per-file paths), ``truth`` files,
    ``samplesheet`` and ``readme``.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    signatures = synth.make_signatures(np.random.default_rng([seed, synth._STREAM_SIGNATURES]), n_genes, n_cell_types)
    genes = synth.gene_table(n_genes)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    hd = simulate_hd(seed, signatures, hd_side_um, hd_cells)
    xen = simulate_xenium(seed, signatures, xenium_side_um, xenium_cells)
    paths: dict = {"hd": write_hd(outdir, "hd1", hd, genes), "xenium": write_xenium(outdir, "xenium1", xen, genes)}
    truth = outdir / "truth"
    paths["truth"] = {
        "hd1_cells": truth / "hd1_cells.csv",
        "xenium1_cells": truth / "xenium1_cells.csv",
    }
    hd_truth = hd_cells_truth(hd, hd_segmentation(hd))
    synth.write_csv(paths["truth"]["hd1_cells"], hd_truth, index=False)
    xen_truth = cells_truth(xen["cells"], xen["cell_ids"], lambda v: np.asarray(v) / XENIUM_PIXEL_SIZE)
    synth.write_csv(paths["truth"]["xenium1_cells"], xen_truth, index=False)
    for bin_um in TRUTH_BIN_SIZES:
        key = f"hd1_bins_{bin_um:03d}um"
        paths["truth"][key] = truth / f"{key}_proportions.csv"
        synth.write_csv(paths["truth"][key], hd["truth"][bin_um], float_format="%.5g")
    for key, table in (
        *((f"hd1_bins_{b:03d}um_regions", hd["regions"][b]) for b in TRUTH_BIN_SIZES),
        ("hd1_cells_regions", hd["regions"]["cells"]),
        ("xenium1_cells_regions", xen["regions"]),
    ):
        paths["truth"][key] = truth / f"{key}.csv"
        synth.write_csv(paths["truth"][key], table, float_format="%.5g")
    paths["samplesheet"] = outdir / "samplesheet.csv"
    write_hd_samplesheet(paths["samplesheet"], "hd1", "xenium1", visium_dir)
    paths["readme"] = outdir / "README.md"
    params = {"seed": seed, "n_genes": n_genes, "n_cell_types": n_cell_types, "hd_side_um": hd_side_um,
              "hd_cells": hd_cells, "xenium_side_um": xenium_side_um, "xenium_cells": xenium_cells}  # fmt: skip
    with cli.atomic_path(paths["readme"]) as tmp:
        tmp.write_text(readme_text(params, hd, xen, list(signatures.columns)))
    log.info(
        "wrote Visium HD slide hd1 (%d cells; %s in-tissue bins) and Xenium region xenium1 (%d cells, %d transcripts)",
        hd["cells"].n,
        ", ".join(f"{b} µm: {hd['bins'][b][0].shape[0]}" for b in HD_BIN_SIZES),
        xen["cells"].n,
        len(xen["transcripts"]),
    )
    return paths


def hd_cells_truth(hd: dict, seg: dict) -> pd.DataFrame:
    """The HD slide's true cells (:func:`cells_truth`), their Space Ranger 4 cell ID and 2 µm bins.

    ``seg`` is the true cells' segmentation (:func:`hd_segmentation`).
    """
    n = hd["cells"].n
    truth = cells_truth(hd["cells"], hd_cell_ids(n), um_to_hd_px)
    truth.insert(1, "spaceranger_cell_id", [f"cellid_{i:09d}-1" for i in seg["cell_ids"]])
    truth["bins_002um"] = np.bincount(seg["bin_cell"][seg["bin_cell"] >= 0], minlength=n)
    return truth


def generate_perturbed_hd(
    outdir: str | Path,
    seed: int = 0,
    perturb_seed: int = 0,
    n_genes: int = 400,
    n_cell_types: int = 8,
    hd_side_um: int = 240,
    hd_cells: int = 350,
    name: str = "hd1_perturbed",
    merge_fraction: float = PERTURB_MERGE_FRACTION,
    split_fraction: float = PERTURB_SPLIT_FRACTION,
    shift_fraction: float = PERTURB_SHIFT_FRACTION,
    shift_um: float = PERTURB_SHIFT_UM,
) -> dict:
    """Write the HD slide of :func:`generate` (same ``seed`` and sizes: same bins and H&E) with wrong boundaries.

    Space Ranger 4's ``segmented_outputs/`` (and ``barcode_mappings.parquet``) hold the
    boundaries of :func:`perturb_segmentation` instead of the true cells: a test of a
    segmentation method (ProSeg refining them, StarDist, the cells mode reading them) can
    measure how far it is from the truth. Written under ``outdir``: ``<name>/outs``,
    ``truth/<name>_cells.csv`` (the true cells as in ``truth/hd1_cells.csv``, ``spaceranger_cell_id``
    replaced by ``spaceranger_cell_ids``: the IDs of the polygons drawn for the cell, and the
    columns of the perturbation) and ``samplesheet.csv`` (this slide alone).

    Returns
    -------
    dict of written paths: ``hd`` (per-file paths), ``truth`` and ``samplesheet``.
    """
    if seed < 0 or perturb_seed < 0:
        raise ValueError(f"seeds must be non-negative, got seed={seed}, perturb_seed={perturb_seed}")
    signatures = synth.make_signatures(np.random.default_rng([seed, synth._STREAM_SIGNATURES]), n_genes, n_cell_types)
    genes = synth.gene_table(n_genes)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    hd = simulate_hd(seed, signatures, hd_side_um, hd_cells)
    seg, perturbed = perturb_segmentation(hd, perturb_seed, merge_fraction, split_fraction, shift_fraction, shift_um)
    paths: dict = {"hd": write_hd(outdir, name, hd, genes, seg=seg)}
    truth = hd_cells_truth(hd, hd_segmentation(hd)).drop(columns="spaceranger_cell_id")
    truth.insert(1, "spaceranger_cell_ids", [";".join(f"cellid_{int(i):09d}-1" for i in ids.split(";") if i)
                                             for ids in perturbed["polygons"]])  # fmt: skip
    partner = perturbed["partner"].to_numpy()
    perturbed["partner"] = np.where(partner >= 0, truth["cell_id"].to_numpy()[np.maximum(partner, 0)], "")
    truth = pd.concat([truth, perturbed.drop(columns="polygons")], axis=1)
    paths["truth"] = outdir / "truth" / f"{name}_cells.csv"
    synth.write_csv(paths["truth"], truth, index=False)
    paths["samplesheet"] = outdir / "samplesheet.csv"
    synth.write_csv(
        paths["samplesheet"], pd.DataFrame({"sample": [name], "spaceranger_dir": [f"{name}/outs"]}), index=False
    )
    log.info("wrote Visium HD slide %s (%d true cells) with %d perturbed Space Ranger 4 boundaries (seed %d)",
             name, hd["cells"].n, len(seg["polygons"]), perturb_seed)  # fmt: skip
    return paths


def readme_text(params: dict, hd: dict, xen: dict, types: list[str]) -> str:
    """The README describing a generated HD/Xenium data set."""
    args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in params.items())
    bins = ", ".join(f"{b} µm: {hd['bins'][b][0].shape[0]}" for b in HD_BIN_SIZES)
    tx = xen["transcripts"]
    assigned = float((tx["cell_id"] != "UNASSIGNED").mean())
    return "\n".join(
        [
            "# Synthetic Visium HD and Xenium test data (spatialmap)",
            "",
            "Generated by `tools/make_hd_test_data.py` (module `tools/testdata/synth_hd.py`); do not edit by hand.",
            "",
            f"Command: `tools/make_hd_test_data.py --outdir <this folder> {args}`",
            "",
            f"Cell types ({len(types)}): {', '.join(types)}; signatures are those of the generated reference"
            " `assets/test_data/reference.h5ad` (same seed and sizes), so it maps onto these slides.",
            "",
            f"- `hd1/outs/`: Visium HD (Space Ranger 3 layout), {hd['side_um']} x {hd['side_um']} µm,"
            f" {hd['cells'].n} cells (radius {CELL_RADIUS_UM[0]}-{CELL_RADIUS_UM[1]} µm), in-tissue bins {bins};"
            f" 8 and 16 µm bins are exact sums of their 2 µm bins; {HD_MICRONS_PER_PIXEL} µm per full-resolution pixel;"
            " 13 `MT-` genes carry 4-14% of each cell's UMIs; `tissue_image.tif` is the H&E-like full-resolution image"
            " (one purple nucleus per true cell).",
            f"- `xenium1/`: Xenium (XOA 2.0 layout), {xen['side_um']} x {xen['side_um']} µm, {xen['cells'].n} cells,"
            f" {len(tx)} transcripts ({assigned:.1%} inside a cell boundary), {len(XENIUM_CONTROL_PROBES)} negative"
            f" control probes, {XENIUM_PIXEL_SIZE} µm per morphology pixel.",
            "- `truth/hd1_cells.csv`, `truth/xenium1_cells.csv`: every cell's ID, true type, centre (µm and image"
            " pixels), radius.",
            "- `truth/hd1_bins_008um_proportions.csv`, `..._016um_...`: per in-tissue bin, the share of its cell-derived"
            " nuclear counts emitted by each type (`cell_counts`: those counts).",
            "- `truth/hd1_bins_008um_regions.csv`, `..._016um_...`, `truth/hd1_cells_regions.csv`,"
            " `truth/xenium1_cells_regions.csv`: the true regions (for spatial domains) of the in-tissue bins and the"
            " cells: `region` (the area where one cell type's smooth field, the one the cell types are drawn from,"
            f" dominates the composition; patches under {regions.MIN_REGION_FRACTION:.0%} of the locations merged into"
            " their neighbours), the region's `dominant_types` (the elbow-gap of its mean composition against the"
            " rest of the slide), `location_types` (the location's own top type, `A/B` when the second is within"
            f" {regions.DOMINANCE_MARGIN:g}) and the fields' composition at the bin or cell centre. A cell's drawn"
            " type need not be its region's. See `tools/testdata/regions.py`.",
            "- `samplesheet.csv`: a standard Visium slide of `../test_data`, the HD slide and the Xenium region.",
            "",
        ]
    )


# --------------------------------------------------------------------------------------------
# Full-slide scale (benchmark): 8 µm bins only
# --------------------------------------------------------------------------------------------


def simulate_big_hd_bins(
    seed: int, signatures: pd.DataFrame, n_side: int, umis_per_bin: float = 150.0
) -> tuple[sp.csr_matrix, pd.DataFrame, pd.DataFrame]:
    """A full-size Visium HD slide at 8 µm, drawn directly at bin level (no 2 µm bins, no cells).

    Each bin mixes the cell types of smooth spatial fields (as :func:`place_cells` does for
    cells); its UMIs are lognormal around ``umis_per_bin`` and split multinomially over types
    and genes. Never builds a dense bins x genes array.

    Returns
    -------
    ``(counts, positions, proportions)``: bins x genes CSR (int32), the positions table of the
    bins (pixel columns in µm, all in tissue) and the true type share of each bin's counts.
    """
    rng = np.random.default_rng([seed, _STREAM_HD + 1])
    n_bins, n_types = n_side * n_side, signatures.shape[1]
    rows, cols = np.divmod(np.arange(n_bins), n_side)
    nx, ny = cols / n_side - 0.5, rows / n_side - 0.5
    layouts = synth.make_type_layouts(rng, nx, ny, n_types)
    fields = np.column_stack([layout(nx, ny) for layout in layouts])
    props = (fields / fields.max(axis=0)) ** TYPE_CONTRAST + TYPE_BACKGROUND
    props /= props.sum(axis=1, keepdims=True)
    totals = np.maximum(rng.lognormal(np.log(umis_per_bin), 0.5, n_bins).round().astype(np.int64), 1)
    per_type = rng.multinomial(totals, props)  # bins x types
    cdf = np.cumsum(signatures.to_numpy() / signatures.to_numpy().sum(axis=0), axis=0)
    parts = []
    for k in range(n_types):
        bins_k = np.repeat(np.arange(n_bins, dtype=np.int32), per_type[:, k])
        genes_k = np.minimum(np.searchsorted(cdf[:, k], rng.random(bins_k.size)), len(cdf) - 1).astype(np.int32)
        parts.append(sp.csr_matrix((np.ones(bins_k.size, dtype=np.int32), (bins_k, genes_k)), shape=(n_bins, len(cdf))))
        del bins_k, genes_k
    counts = parts[0]
    for part in parts[1:]:
        counts = counts + part
    positions = pd.DataFrame(
        {
            "barcode": hd_barcode(8, rows, cols),
            keys.IN_TISSUE: np.ones(n_bins, dtype=np.int32),
            keys.ARRAY_ROW: rows.astype(np.int32),
            keys.ARRAY_COL: cols.astype(np.int32),
            "pxl_row_in_fullres": (rows + 0.5) * 8.0,
            "pxl_col_in_fullres": (cols + 0.5) * 8.0,
        }
    )
    share = per_type / per_type.sum(axis=1, keepdims=True)
    truth = pd.DataFrame(share, index=pd.Index(positions["barcode"], name="barcode"), columns=list(signatures.columns))
    return counts.tocsr(), positions, truth


def generate_big_hd(
    outdir: str | Path, seed: int = 0, n_side: int = 550, n_genes: int = 5000, n_cell_types: int = 8
) -> dict:
    """Write a full-size Visium HD ``outs/`` (8 µm bins only) as ``hdbig``, its reference and truth.

    ``n_side = 550`` gives 302,500 bins of 8 µm (a 4.4 mm square). The reference
    (``reference.h5ad``, 120 cells per type) shares the slide's genes.
    """
    outdir = Path(outdir)
    signatures = synth.make_signatures(np.random.default_rng([seed, synth._STREAM_SIGNATURES]), n_genes, n_cell_types)
    genes = synth.gene_table(n_genes).iloc[:n_genes]
    counts, positions, truth = simulate_big_hd_bins(seed, signatures, n_side)
    outs = outdir / "hdbig" / "outs"
    folder = outs / "binned_outputs" / "square_008um"
    side_px = int(np.ceil(n_side * 8 / HD_MICRONS_PER_PIXEL)) + 2 * HD_MARGIN_PX
    synth.write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, positions["barcode"].tolist(), genes, "hdbig")
    table = positions.copy()
    for col in ("pxl_row_in_fullres", "pxl_col_in_fullres"):
        table[col] = um_to_hd_px(table[col])
    with cli.atomic_path(folder / "spatial" / "tissue_positions.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    synth.write_json(folder / "spatial" / "scalefactors_json.json", hd_scalefactors(8, side_px))
    factors = hd_scalefactors(None, side_px)
    synth.write_json(outs / "spatial" / "scalefactors_json.json", factors)
    low = int(round(side_px * factors["tissue_lowres_scalef"]))
    synth.write_image(
        outs / "spatial" / "tissue_lowres_image.png", np.full((low, low, 3), (233, 180, 205), dtype=np.uint8)
    )
    with cli.atomic_path(outs / "feature_slice.h5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs["metadata_json"] = json.dumps(feature_slice_metadata(n_side * 4))
    reference = synth.make_reference(np.random.default_rng([seed, synth._STREAM_REFERENCE]), signatures, 120)
    reference = reference[:, :n_genes].copy()  # the slide has no MT genes here
    synth.write_reference(outdir / "reference.h5ad", reference)
    truth_path = outdir / "truth" / "hdbig_bins_008um_proportions.csv"
    synth.write_csv(truth_path, truth, float_format="%.4g")
    sheet = outdir / "samplesheet.csv"
    synth.write_csv(sheet, pd.DataFrame({"sample": ["hdbig"], "spaceranger_dir": ["hdbig/outs"]}), index=False)
    log.info("wrote hdbig: %d bins of 8 µm x %d genes, %d UMIs", counts.shape[0], counts.shape[1], int(counts.sum()))
    return {"outs": outs, "reference": outdir / "reference.h5ad", "truth": truth_path, "samplesheet": sheet}


_STREAM_HE_TRAINING = 4000


def he_training_pair(seed: int, side_um: int = 240, n_cells: int = 350) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like image and its nucleus label mask, drawn as the Visium HD slides' images are.

    The tissue, the cells and the image come from the same functions as the generated slides'
    full-resolution H&E (:func:`render_he`), from their own random stream (so a model trained on
    them never saw a test slide); the labels are the nuclei (cell index + 1, 0 = background).

    Returns
    -------
    ``(image, labels)``: ``uint8`` (Y, X, 3) and ``int32`` (Y, X), full-resolution pixels.
    """
    rng = np.random.default_rng([seed, _STREAM_HE_TRAINING])
    tissue = tissue_for(rng, side_um)
    cells = place_cells(rng, side_um, tissue, n_cells, 4)
    size = hd_image_size(side_um)
    image = render_he(size, 1.0 / HD_MICRONS_PER_PIXEL, HD_MARGIN_PX, cells, tissue, side_um)
    labels = _disk_labels(size, 1.0 / HD_MICRONS_PER_PIXEL, HD_MARGIN_PX, cells, NUCLEUS_FRACTION).astype(np.int32)
    return image, labels
