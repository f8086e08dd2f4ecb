"""Deterministic synthetic Visium slides and a labelled single-cell reference with known truth.

The data follow cell2location's generative model, so a working mapping step can recover them:
spot counts are negative binomial with mean
``sum_k abundance[spot, k] * signature[k, gene] * detection[spot] * gene_effect[gene]``.
Everything is drawn from numpy generators seeded by ``seed`` (one independent stream per
piece: signatures, reference, barcodes, and one per slide), so the same seed gives the same
arrays, and adding slides leaves the earlier ones unchanged.

The files are written in Space Ranger's ``outs/`` layout (10x HDF5 v3 matrix, positions,
scale factors, images, metrics) so the pipeline reads them exactly as it reads real slides.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image

from spatialmap import cli, keys
from testdata import regions

log = logging.getLogger("testdata.synth")

CELL_TYPE_NAMES = (
    "Tcell_CD4",
    "Tcell_CD8",
    "Bcell",
    "Plasma",
    "Macrophage",
    "Fibroblast",
    "Endothelial",
    "Epithelial",
    "NK",
    "Monocyte",
    "Dendritic",
    "Neutrophil",
    "Mast",
    "Pericyte",
    "SmoothMuscle",
    "Adipocyte",
)
MT_GENES = (
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3",
    "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
)  # fmt: skip
# Relative expression of the mitochondrial genes (MT-CO1/CO3/ATP6 high, ATP8/ND4L/ND6 low).
MT_WEIGHTS = (6.0, 5.0, 16.0, 10.0, 1.5, 11.0, 13.0, 4.0, 1.5, 9.0, 3.0, 1.0, 8.0)

GENOME = "GRCh38"
FEATURE_TYPE = "Gene Expression"
SPOT_SPACING_PX = 100.0  # centre-to-centre distance of neighbouring spots, full-resolution px
MARGIN_PX = 200.0  # image border around the spot grid, full-resolution px
IN_TISSUE_FRACTION = 0.75
MEAN_CELLS_PER_SPOT = 8.0
MIN_CELLS_PER_SPOT, MAX_CELLS_PER_SPOT = 3.0, 15.0
DETECTION_MEAN = 0.5  # mean spot detection efficiency (cell2location's default prior mean)
DETECTION_SD = 0.2  # lognormal sd of the spot detection efficiency
SLIDE_GENE_SD = 0.2  # lognormal sd of the per-slide, per-gene technical effect
BATCH_GENE_SD = 0.3  # lognormal sd of the reference's batch2 per-gene effect
CELL_UMI_RANGE = (2500.0, 4500.0)  # expected nuclear UMIs of one cell, drawn per type
REFERENCE_MT_SHARE = 0.05
SPOT_MT_SHARE_RANGE = (0.11, 0.23)
REFERENCE_THETA = 5.0  # NB inverse overdispersion (variance = mu + mu^2 / theta)
SPOT_THETA = 10.0
MT_THETA = 30.0  # mitochondrial genes are less overdispersed (many copies per cell)
LAYOUT_CONTRAST = 2.0  # type fields are raised to this power: higher = purer spots
BLOB_SIGMA_RANGE = (0.08, 0.16)  # blob widths, as a fraction of the grid's width
LAYOUT_BACKGROUND = 0.02  # small uniform presence of every type everywhere
MARKERS_PER_TYPE = 25
LOWRES_MAX_PX = 300
HIRES_MAX_PX = 1000
SPOT_DIAMETER_FRACTION = 0.55  # Visium: 55 um spots, 100 um apart
FIDUCIAL_DIAMETER_FRACTION = 0.889  # Space Ranger's fiducial / spot diameter ratio x 0.55

# One independent random stream per piece, keyed by (seed, stream).
_STREAM_SIGNATURES = 1
_STREAM_REFERENCE = 2
_STREAM_BARCODES = 3
_STREAM_SLIDE = 1000


@dataclass(frozen=True)
class SlideForm:
    """How Space Ranger wrote a slide: 2.x (headed ``tissue_positions.csv``) or 1.x."""

    spaceranger_2: bool
    has_hires: bool

    @property
    def positions_name(self) -> str:
        """File name of the spot positions table."""
        return "tissue_positions.csv" if self.spaceranger_2 else "tissue_positions_list.csv"


@dataclass(frozen=True)
class Layout:
    """A smooth spatial field in normalised coordinates: Gaussian blobs plus sigmoid gradients.

    Attributes
    ----------
    blobs
        ``(n, 4)`` rows of ``(centre_x, centre_y, sigma, amplitude)``.
    gradients
        ``(m, 4)`` rows of ``(direction_x, direction_y, offset, amplitude)``.
    background
        Constant added everywhere.
    """

    blobs: np.ndarray
    gradients: np.ndarray
    background: float = 0.0

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Evaluate the field at normalised coordinates ``x``, ``y`` (same shape)."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        out = np.full(x.shape, self.background, dtype=float)
        for cx, cy, sigma, amp in self.blobs:
            out += amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma**2))
        for dx, dy, offset, amp in self.gradients:
            out += amp / (1.0 + np.exp(-(x * dx + y * dy - offset) / 0.08))
        return out


@dataclass(frozen=True)
class TypeFields:
    """The cell types' spatial fields of one slide: what its true compositions are made of.

    A location's composition is each type's field divided by its ``scale`` (the field's maximum
    over the points it was anchored on), raised to ``contrast``, plus ``background``, normalised
    to sum 1. Evaluating it draws no random number.

    Attributes
    ----------
    layouts
        One :class:`Layout` per cell type.
    scale
        Each layout's maximum over the anchor points.
    contrast
        Power the scaled fields are raised to (higher: purer locations).
    background
        Share-like constant added to every powered field.
    """

    layouts: tuple[Layout, ...]
    scale: np.ndarray
    contrast: float
    background: float

    @classmethod
    def anchored(
        cls, layouts: list[Layout], x: np.ndarray, y: np.ndarray, contrast: float, background: float
    ) -> TypeFields:
        """The fields of ``layouts`` scaled to peak at 1 over the points ``x, y``."""
        raw = np.column_stack([layout(x, y) for layout in layouts])
        return cls(tuple(layouts), raw.max(axis=0), contrast, background)

    def composition(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True composition (points x types, rows sum to 1) at normalised coordinates ``x, y``."""
        fields = np.column_stack([layout(x, y) for layout in self.layouts])
        fields = (fields / self.scale) ** self.contrast + self.background
        return fields / fields.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class TissueShape:
    """A wobbly, rotated ellipse; a point is tissue where ``score(x, y) <= threshold``."""

    centre: tuple[float, float]
    radii: tuple[float, float]
    angle: float
    wobble: float
    phase: float
    threshold: float = 1.0

    def score(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Elliptical distance from the centre (1 on the ellipse before thresholding)."""
        dx = np.asarray(x, dtype=float) - self.centre[0]
        dy = np.asarray(y, dtype=float) - self.centre[1]
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        u = (cos * dx + sin * dy) / self.radii[0]
        v = (-sin * dx + cos * dy) / self.radii[1]
        theta = np.arctan2(v, u)
        return np.hypot(u, v) * (1.0 + self.wobble * np.sin(3.0 * theta + self.phase))

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Boolean mask of the points inside the tissue."""
        return self.score(x, y) <= self.threshold


@dataclass(frozen=True)
class SimulatedSlide:
    """One simulated slide with its truth.

    Attributes
    ----------
    name
        Sample name (``slide1`` ...).
    positions
        All spots, in array order: ``barcode, in_tissue, array_row, array_col,
        pxl_row_in_fullres, pxl_col_in_fullres``.
    counts
        In-tissue spots x features (nuclear then mitochondrial genes), integer CSR,
        rows in ``barcodes`` order.
    barcodes
        In-tissue barcodes, sorted as Space Ranger sorts its filtered matrix.
    abundance
        True number of cells of each type per in-tissue spot (index ``barcodes``).
    mt_share
        Expected mitochondrial share of each in-tissue spot's counts.
    detection
        Spot detection efficiency of each in-tissue spot.
    scalefactors
        Space Ranger's ``scalefactors_json.json`` content.
    images
        ``{"lowres": array, "hires": array}`` RGB uint8 images (hires only if the form has one).
    form
        Space Ranger version form of the files.
    type_fields
        The cell types' spatial fields (normalised coordinates of :func:`normalised_coords`):
        ``abundance`` divided by its row sums is their composition at the spots.
    regions
        The true regions of the in-tissue spots (index ``barcodes``; :func:`testdata.regions.true_regions`).
    """

    name: str
    positions: pd.DataFrame
    counts: sp.csr_matrix
    barcodes: list[str]
    abundance: pd.DataFrame
    mt_share: np.ndarray
    detection: np.ndarray
    scalefactors: dict[str, float]
    images: dict[str, np.ndarray]
    form: SlideForm
    type_fields: TypeFields | None = None
    regions: pd.DataFrame | None = None


# --------------------------------------------------------------------------------------------
# Genes, cell types, signatures
# --------------------------------------------------------------------------------------------


def gene_table(n_genes: int) -> pd.DataFrame:
    """Feature table: ``n_genes`` nuclear genes then the 13 mitochondrial genes.

    Parameters
    ----------
    n_genes
        Number of nuclear genes (named ``GENE0001`` ...).

    Returns
    -------
    DataFrame indexed by gene symbol with columns ``gene_ids`` (stable Ensembl-like ids,
    ``ENSG9`` + 10 digits) and ``is_mt``.
    """
    if n_genes < 1:
        raise ValueError(f"n_genes must be at least 1, got {n_genes}")
    width = max(4, len(str(n_genes)))
    symbols = [f"GENE{i:0{width}d}" for i in range(1, n_genes + 1)] + list(MT_GENES)
    ids = [f"ENSG9{i:010d}" for i in range(1, len(symbols) + 1)]
    table = pd.DataFrame({keys.GENE_IDS: ids, "is_mt": [s.startswith("MT-") for s in symbols]})
    table.index = pd.Index(symbols, name="gene")
    return table


def cell_type_names(n_cell_types: int) -> list[str]:
    """Names of ``n_cell_types`` cell types: immune/stromal names first, then ``CellType17`` ..."""
    if n_cell_types < 2:
        raise ValueError(f"n_cell_types must be at least 2, got {n_cell_types}")
    named = list(CELL_TYPE_NAMES[:n_cell_types])
    return named + [f"CellType{k + 1:02d}" for k in range(len(named), n_cell_types)]


def markers_per_type(n_genes: int, n_cell_types: int) -> int:
    """Marker genes per type: ``MARKERS_PER_TYPE``, fewer when genes are scarce."""
    n = min(MARKERS_PER_TYPE, n_genes // (n_cell_types + 2))
    if n < 6:
        raise ValueError(
            f"{n_genes} genes are too few for {n_cell_types} cell types: "
            f"need at least {6 * (n_cell_types + 2)} to give each type 6 marker genes"
        )
    return n


def make_signatures(rng: np.random.Generator, n_genes: int, n_cell_types: int) -> pd.DataFrame:
    """True expected counts per cell of each nuclear gene in each cell type.

    A shared gamma baseline, per-type lognormal variation, and a block of strongly raised
    marker genes per type. Types 0 and 1 (the T-cell subtypes) are fine-grained: type 1 is
    type 0 with a third of its markers swapped for its own. Types 2 and 3 (B cells and plasma
    cells) share 3 markers, and from type 4 on each type weakly shares 3 markers with the next type.
    Each column sums to the type's expected UMIs per cell (2,500-4,500).

    Parameters
    ----------
    rng
        Random generator.
    n_genes
        Number of nuclear genes.
    n_cell_types
        Number of cell types.

    Returns
    -------
    DataFrame, nuclear genes x cell types.
    """
    names = cell_type_names(n_cell_types)
    n_markers = markers_per_type(n_genes, n_cell_types)
    base = rng.gamma(0.6, 1.0, n_genes)
    base /= base.mean()
    level = float(np.median(base))
    sig = base[:, None] * rng.lognormal(0.0, 0.3, (n_genes, n_cell_types))
    order = rng.permutation(n_genes)
    markers = [order[k * n_markers : (k + 1) * n_markers] for k in range(n_cell_types)]
    boost = rng.lognormal(np.log(12.0), 0.4, (n_markers, n_cell_types))
    for k in range(n_cell_types):
        sig[markers[k], k] = np.maximum(sig[markers[k], k], level) * boost[:, k]

    n_swap = max(2, n_markers // 3)
    sig[:, 1] = sig[:, 0] * rng.lognormal(0.0, 0.15, n_genes)
    private0 = markers[0][:n_swap]
    sig[private0, 1] = base[private0] * rng.lognormal(0.0, 0.3, n_swap)
    own1 = markers[1][:n_swap]
    sig[own1, 1] = np.maximum(base[own1], level) * boost[:n_swap, 1]
    if n_cell_types >= 4:
        shared = markers[2][:3]
        sig[shared, 3] = np.maximum(sig[shared, 3], 0.5 * sig[shared, 2])
    for k in range(4, n_cell_types):
        nxt = markers[(k + 1) % n_cell_types][:3]
        sig[nxt, k] = np.maximum(sig[nxt, k], 0.5 * sig[nxt, (k + 1) % n_cell_types])

    totals = rng.uniform(*CELL_UMI_RANGE, n_cell_types)
    sig *= totals / sig.sum(axis=0)
    genes = gene_table(n_genes)
    index = genes.index[~genes["is_mt"].to_numpy()]
    return pd.DataFrame(sig, index=index, columns=pd.Index(names, name="cell_type"))


def mt_profile() -> np.ndarray:
    """Relative expression of the 13 mitochondrial genes, summing to 1."""
    weights = np.asarray(MT_WEIGHTS, dtype=float)
    return weights / weights.sum()


def sample_nb(rng: np.random.Generator, mean: np.ndarray, theta: np.ndarray | float) -> np.ndarray:
    """Negative binomial counts (gamma-Poisson) with ``mean`` and inverse overdispersion ``theta``."""
    mean = np.asarray(mean, dtype=float)
    theta = np.broadcast_to(np.asarray(theta, dtype=float), mean.shape)
    rate = rng.gamma(theta, mean / theta)
    return rng.poisson(rate)


def random_barcodes(rng: np.random.Generator, n: int, suffix: str = "-1") -> list[str]:
    """``n`` unique, Visium-looking barcodes: 16 nt of ACGT then ``suffix``."""
    letters = np.array(list("ACGT"))
    codes: list[int] = []
    seen: set[int] = set()
    while len(codes) < n:
        for value in rng.integers(0, 4**16, size=2 * (n - len(codes)), dtype=np.int64):
            if value not in seen and len(codes) < n:
                seen.add(int(value))
                codes.append(int(value))
    digits = (np.asarray(codes, dtype=np.int64)[:, None] >> (2 * np.arange(15, -1, -1))) & 3
    return ["".join(row) + suffix for row in letters[digits]]


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------


def make_reference(rng: np.random.Generator, signatures: pd.DataFrame, cells_per_type: int) -> ad.AnnData:
    """Labelled single-cell reference drawn from ``signatures``.

    Cells are split over ``batch1`` and ``batch2``; batch2 has per-gene multiplicative
    technical effects. Counts are NB with per-gene inverse overdispersion around
    ``REFERENCE_THETA``; mitochondrial genes carry about 5% of each cell's counts.

    Parameters
    ----------
    rng
        Random generator.
    signatures
        Nuclear genes x cell types, expected counts per cell (from :func:`make_signatures`).
    cells_per_type
        Cells per type (at least 2).

    Returns
    -------
    AnnData with integer counts in a float32 CSR ``X``, ``obs['cell_type']``, ``obs['batch']``,
    ``var['gene_ids']``.
    """
    if cells_per_type < 2:
        raise ValueError(f"cells_per_type must be at least 2, got {cells_per_type}")
    genes = gene_table(signatures.shape[0])
    types = list(signatures.columns)
    n_cells = cells_per_type * len(types)
    labels = np.repeat(np.arange(len(types)), cells_per_type)
    batch2 = np.tile(np.arange(cells_per_type) % 2 == 1, len(types))

    profile = signatures.to_numpy() / signatures.to_numpy().sum(axis=0)
    totals = signatures.to_numpy().sum(axis=0)
    library = totals[labels] * rng.lognormal(0.0, 0.25, n_cells)
    batch_effect = rng.lognormal(0.0, BATCH_GENE_SD, signatures.shape[0])
    nuclear_mean = library[:, None] * profile[:, labels].T
    nuclear_mean[batch2] *= batch_effect
    mt_share = np.clip(rng.normal(REFERENCE_MT_SHARE, 0.015, n_cells), 0.01, 0.15)
    mt_mean = (nuclear_mean.sum(axis=1) * mt_share / (1.0 - mt_share))[:, None] * mt_profile()
    theta = rng.lognormal(np.log(REFERENCE_THETA), 0.3, genes.shape[0])
    counts = sample_nb(rng, np.hstack([nuclear_mean, mt_mean]), theta)

    barcodes = random_barcodes(rng, n_cells)
    obs_names = [bc[:-2] + ("-2" if b2 else "-1") for bc, b2 in zip(barcodes, batch2)]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(np.asarray(types)[labels], categories=types),
            "batch": pd.Categorical(np.where(batch2, "batch2", "batch1"), categories=["batch1", "batch2"]),
        },
        index=pd.Index(obs_names, name="barcode"),
    )
    var = pd.DataFrame(
        {
            keys.GENE_IDS: genes[keys.GENE_IDS].to_numpy(),
            "feature_types": pd.Categorical([FEATURE_TYPE] * genes.shape[0]),
        },
        index=pd.Index(genes.index.to_numpy(), name=None),
    )
    return ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)


# --------------------------------------------------------------------------------------------
# Slides
# --------------------------------------------------------------------------------------------


def slide_form(index: int) -> SlideForm:
    """Space Ranger form of slide ``index`` (0-based): every third slide from the second is 1.x without hires."""
    old = index % 3 == 1
    return SlideForm(spaceranger_2=not old, has_hires=not old)


def spot_grid(grid: int) -> pd.DataFrame:
    """Visium hexagonal grid of ``grid x grid`` spots, full-resolution pixel centres.

    ``array_col = 2 * i + (array_row % 2)``; neighbouring spots are ``SPOT_SPACING_PX`` apart.
    """
    if grid < 4:
        raise ValueError(f"grid must be at least 4 spots wide, got {grid}")
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    array_col = 2 * cols + rows % 2
    pxl_col = MARGIN_PX + array_col * SPOT_SPACING_PX / 2.0
    pxl_row = MARGIN_PX + rows * SPOT_SPACING_PX * np.sqrt(3.0) / 2.0
    return pd.DataFrame(
        {
            keys.ARRAY_ROW: rows,
            keys.ARRAY_COL: array_col,
            "pxl_row_in_fullres": np.rint(pxl_row).astype(int),
            "pxl_col_in_fullres": np.rint(pxl_col).astype(int),
        }
    )


def fullres_size(grid: int) -> tuple[int, int]:
    """``(height, width)`` of the notional full-resolution image of a ``grid`` slide."""
    width = 2 * MARGIN_PX + (2 * grid - 1) * SPOT_SPACING_PX / 2.0
    height = 2 * MARGIN_PX + (grid - 1) * SPOT_SPACING_PX * np.sqrt(3.0) / 2.0
    return int(np.ceil(height)), int(np.ceil(width))


def normalised_coords(pxl_row: np.ndarray, pxl_col: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Map full-resolution pixels to ``(x, y)`` centred on the grid, the grid spanning about 1."""
    height, width = fullres_size(grid)
    extent = (grid - 0.5) * SPOT_SPACING_PX
    x = (np.asarray(pxl_col, dtype=float) - width / 2.0) / extent
    y = (np.asarray(pxl_row, dtype=float) - height / 2.0) / extent
    return x, y


def make_tissue_shape(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> TissueShape:
    """A slide-specific tissue outline holding about ``IN_TISSUE_FRACTION`` of the spots at ``x, y``."""
    shape = TissueShape(
        centre=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))),
        radii=(float(rng.uniform(0.45, 0.6)), float(rng.uniform(0.35, 0.5))),
        angle=float(rng.uniform(0.0, np.pi)),
        wobble=float(rng.uniform(0.03, 0.1)),
        phase=float(rng.uniform(0.0, 2.0 * np.pi)),
    )
    score = shape.score(x, y)
    n_in = int(round(IN_TISSUE_FRACTION * score.size))
    threshold = float(np.sort(score)[n_in - 1])
    return TissueShape(shape.centre, shape.radii, shape.angle, shape.wobble, shape.phase, threshold)


def make_blob_layout(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, n_min: int, n_max: int) -> Layout:
    """``n_min``-``n_max`` random Gaussian blobs centred on randomly chosen points ``x, y``."""
    n = int(rng.integers(n_min, n_max + 1))
    pick = rng.choice(x.size, size=n, replace=False)
    blobs = np.column_stack([x[pick], y[pick], rng.uniform(*BLOB_SIGMA_RANGE, n), rng.uniform(0.6, 1.0, n)])
    return Layout(blobs=blobs, gradients=np.zeros((0, 4)))


def make_type_layouts(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, n_cell_types: int) -> list[Layout]:
    """One layout per cell type, anchored on the tissue spots ``x, y``: 1-3 blobs, or one blob and a gradient."""
    layouts = []
    for _ in range(n_cell_types):
        layout = make_blob_layout(rng, x, y, 1, 3)
        if rng.random() < 0.25:
            angle = rng.uniform(0.0, 2.0 * np.pi)
            gradient = np.array([[np.cos(angle), np.sin(angle), rng.uniform(0.0, 0.25), rng.uniform(0.5, 0.9)]])
            layout = Layout(blobs=layout.blobs[:1], gradients=gradient)
        layouts.append(layout)
    return layouts


def cells_per_spot(layout: Layout, x: np.ndarray, y: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Smoothly varying total number of cells per spot, about 8 on average, within 3-15.

    A logistic map of the standardised ``layout``; ``centre`` is the ``(mean, sd)`` of the
    field over the tissue spots, so the same numbers come out wherever it is evaluated
    (spots or image pixels).
    """
    z = (layout(x, y) - centre[0]) / centre[1]
    span = MAX_CELLS_PER_SPOT - MIN_CELLS_PER_SPOT
    middle = (MEAN_CELLS_PER_SPOT - MIN_CELLS_PER_SPOT) / span
    return MIN_CELLS_PER_SPOT + span / (1.0 + np.exp(-(0.8 * z + np.log(middle / (1.0 - middle)))))


def simulate_abundance(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, n_cell_types: int
) -> tuple[np.ndarray, Layout, tuple[float, float], TypeFields]:
    """True cells of each type at spots ``x, y``.

    Proportions follow the type layouts (scaled to peak at 1 in the tissue, so every type
    dominates somewhere) raised to ``LAYOUT_CONTRAST``, plus a small uniform background;
    the total number of cells follows its own smooth field.

    Returns
    -------
    ``(abundance, density_layout, density_centre, type_fields)``: spots x types abundances, the
    total-cell field with its standardisation (for drawing the image), and the type fields the
    proportions come from.
    """
    layouts = make_type_layouts(rng, x, y, n_cell_types)
    type_fields = TypeFields.anchored(layouts, x, y, LAYOUT_CONTRAST, LAYOUT_BACKGROUND)
    proportions = type_fields.composition(x, y)
    density = make_blob_layout(rng, x, y, 2, 4)
    values = density(x, y)
    centre = (float(values.mean()), float(values.std()) or 1.0)
    total = cells_per_spot(density, x, y, centre) * rng.lognormal(0.0, 0.08, x.size)
    total = np.clip(total, MIN_CELLS_PER_SPOT, MAX_CELLS_PER_SPOT)
    return proportions * total[:, None], density, centre, type_fields


def simulate_mt_share(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spatially varying expected mitochondrial share of spot counts (``SPOT_MT_SHARE_RANGE``)."""
    values = make_blob_layout(rng, x, y, 1, 3)(x, y)
    span = values.max() - values.min()
    unit = np.sqrt((values - values.min()) / span) if span > 0 else np.zeros_like(values)
    low, high = SPOT_MT_SHARE_RANGE
    return low + (high - low) * unit


def simulate_spot_counts(
    rng: np.random.Generator,
    abundance: np.ndarray,
    signatures: pd.DataFrame,
    mt_share: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """NB spot counts following cell2location's model, plus mitochondrial counts.

    Returns
    -------
    ``(counts, detection)``: spots x (nuclear + MT genes) integer counts and the spot
    detection efficiencies.
    """
    n_spots, n_genes = abundance.shape[0], signatures.shape[0]
    detection = DETECTION_MEAN * rng.lognormal(0.0, DETECTION_SD, n_spots)
    gene_effect = rng.lognormal(0.0, SLIDE_GENE_SD, n_genes)
    nuclear_mean = (abundance @ signatures.to_numpy().T) * detection[:, None] * gene_effect
    mt_total = nuclear_mean.sum(axis=1) * mt_share / (1.0 - mt_share)
    mean = np.hstack([nuclear_mean, mt_total[:, None] * mt_profile()])
    theta = rng.lognormal(np.log(SPOT_THETA), 0.3, mean.shape[1])
    theta[n_genes:] = MT_THETA
    return sample_nb(rng, mean, theta), detection


def scalefactors_for(grid: int) -> dict[str, float]:
    """Space Ranger-like scale factors for a ``grid`` slide."""
    longest = max(fullres_size(grid))
    return {
        "spot_diameter_fullres": round(SPOT_DIAMETER_FRACTION * SPOT_SPACING_PX, 6),
        "fiducial_diameter_fullres": round(FIDUCIAL_DIAMETER_FRACTION * SPOT_SPACING_PX, 6),
        "tissue_hires_scalef": round(min(1.0, HIRES_MAX_PX / longest), 8),
        "tissue_lowres_scalef": round(LOWRES_MAX_PX / longest, 8),
    }


def render_image(
    grid: int,
    scalef: float,
    tissue: TissueShape,
    density: Layout,
    centre: tuple[float, float],
) -> np.ndarray:
    """RGB image at ``scalef`` of full resolution: white background, pink tissue, darker where dense."""
    height, width = fullres_size(grid)
    rows = (np.arange(int(round(height * scalef))) + 0.5) / scalef
    cols = (np.arange(int(round(width * scalef))) + 0.5) / scalef
    pxl_row, pxl_col = np.meshgrid(rows, cols, indexing="ij")
    x, y = normalised_coords(pxl_row, pxl_col, grid)
    inside = tissue.contains(x, y)
    cells = cells_per_spot(density, x, y, centre)
    level = np.floor((cells - MIN_CELLS_PER_SPOT) / (MAX_CELLS_PER_SPOT - MIN_CELLS_PER_SPOT) * 5.0)
    level = np.clip(level, 0, 4)[..., None] / 4.0
    light = np.array([238.0, 190.0, 212.0])
    dark = np.array([170.0, 100.0, 165.0])
    image = np.empty(x.shape + (3,), dtype=np.uint8)
    image[...] = np.array([246, 244, 247], dtype=np.uint8)
    tinted = np.rint(light + (dark - light) * level).astype(np.uint8)
    image[inside] = tinted[inside]
    return image


def simulate_slide(
    rng: np.random.Generator,
    name: str,
    index: int,
    signatures: pd.DataFrame,
    grid: int,
    grid_barcodes: list[str],
) -> SimulatedSlide:
    """Simulate one slide: tissue outline, abundances, counts, images.

    Parameters
    ----------
    rng
        The slide's own random generator.
    name
        Sample name.
    index
        0-based slide number (decides the Space Ranger form).
    signatures
        Nuclear genes x cell types expected counts per cell.
    grid
        Spots per side.
    grid_barcodes
        One barcode per grid position (Visium uses the same whitelist on every slide).
    """
    positions = spot_grid(grid)
    positions.insert(0, "barcode", grid_barcodes)
    x, y = normalised_coords(positions["pxl_row_in_fullres"], positions["pxl_col_in_fullres"], grid)
    tissue = make_tissue_shape(rng, x, y)
    inside = tissue.contains(x, y)
    positions.insert(1, keys.IN_TISSUE, inside.astype(int))

    order = np.flatnonzero(inside)[np.argsort(positions["barcode"].to_numpy()[inside], kind="stable")]
    barcodes = positions["barcode"].to_numpy()[order].tolist()
    abundance, density, centre, type_fields = simulate_abundance(rng, x[order], y[order], signatures.shape[1])
    mt_share = simulate_mt_share(rng, x[order], y[order])
    counts, detection = simulate_spot_counts(rng, abundance, signatures, mt_share)

    form = slide_form(index)
    scalefactors = scalefactors_for(grid)
    images = {"lowres": render_image(grid, scalefactors["tissue_lowres_scalef"], tissue, density, centre)}
    if form.has_hires:
        images["hires"] = render_image(grid, scalefactors["tissue_hires_scalef"], tissue, density, centre)
    truth = pd.DataFrame(
        abundance, index=pd.Index(barcodes, name="barcode"), columns=pd.Index(signatures.columns, name=None)
    )
    composition = pd.DataFrame(type_fields.composition(x[order], y[order]), index=truth.index, columns=truth.columns)
    spots = positions.iloc[order]
    edges = regions.hex_grid_edges(spots[keys.ARRAY_ROW].to_numpy(), spots[keys.ARRAY_COL].to_numpy())
    return SimulatedSlide(
        name=name,
        positions=positions,
        counts=sp.csr_matrix(counts),
        barcodes=barcodes,
        abundance=truth,
        mt_share=mt_share,
        detection=detection,
        scalefactors=scalefactors,
        images=images,
        form=form,
        type_fields=type_fields,
        regions=regions.true_regions(composition, edges),
    )


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def write_10x_h5(
    path: str | Path, counts: sp.csr_matrix, barcodes: list[str], genes: pd.DataFrame, sample: str
) -> None:
    """Write a Cell Ranger / Space Ranger HDF5 v3 feature-barcode matrix.

    ``counts`` is spots x genes CSR, which is the CSC layout of the genes x spots matrix
    that Cell Ranger stores.
    """
    counts = sp.csr_matrix(counts)
    counts.sort_indices()
    if counts.shape != (len(barcodes), genes.shape[0]):
        raise ValueError(
            f"{sample}: counts {counts.shape} do not match {len(barcodes)} barcodes x {genes.shape[0]} genes"
        )
    gz = {"compression": "gzip", "compression_opts": 4}
    n = genes.shape[0]
    with cli.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["library_ids"] = np.array([sample.encode()])
        f.attrs["original_gem_groups"] = np.array([1])
        f.attrs["chemistry_description"] = "Spatial 3' v1"
        f.attrs["software_version"] = "spatialmap-synth"
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array(barcodes, dtype="S"), **gz)
        m.create_dataset("data", data=counts.data.astype(np.int32), **gz)
        m.create_dataset("indices", data=counts.indices.astype(np.int64), **gz)
        m.create_dataset("indptr", data=counts.indptr.astype(np.int64), **gz)
        m.create_dataset("shape", data=np.array([n, len(barcodes)], dtype=np.int32))
        feats = m.create_group("features")
        feats.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        feats.create_dataset("id", data=np.array(genes[keys.GENE_IDS].tolist(), dtype="S"), **gz)
        feats.create_dataset("name", data=np.array(genes.index.tolist(), dtype="S"), **gz)
        feats.create_dataset("feature_type", data=np.array([FEATURE_TYPE] * n, dtype="S"), **gz)
        feats.create_dataset("genome", data=np.array([GENOME] * n, dtype="S"), **gz)


def write_positions(path: str | Path, positions: pd.DataFrame, header: bool) -> None:
    """Write spot positions: Space Ranger 2.x (with header) or 1.x (without)."""
    with cli.atomic_path(path) as tmp:
        positions.to_csv(tmp, index=False, header=header)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB PNG."""
    with cli.atomic_path(path) as tmp:
        Image.fromarray(image, mode="RGB").save(tmp, format="PNG", optimize=True)


def write_json(path: str | Path, content: dict) -> None:
    """Write ``content`` as JSON."""
    with cli.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=None) + "\n")


def write_csv(path: str | Path, table: pd.DataFrame, index: bool = True, float_format: str | None = None) -> None:
    """Write a table as CSV."""
    with cli.atomic_path(path) as tmp:
        table.to_csv(tmp, index=index, float_format=float_format)


def metrics_summary(slide: SimulatedSlide) -> pd.DataFrame:
    """A one-row, Space Ranger-like ``metrics_summary.csv`` table for ``slide``."""
    counts = slide.counts
    umis = np.asarray(counts.sum(axis=1)).ravel()
    genes = np.diff(counts.indptr)
    n_spots = counts.shape[0]
    saturation = 0.7
    reads = float(umis.sum() / (1.0 - saturation))
    return pd.DataFrame(
        {
            "Sample ID": [slide.name],
            "Number of Spots Under Tissue": [n_spots],
            "Number of Reads": [round(reads)],
            "Mean Reads per Spot": [reads / n_spots],
            "Sequencing Saturation": [saturation],
            "Fraction Reads in Spots Under Tissue": [0.92],
            "Median Genes per Spot": [float(np.median(genes))],
            "Median UMI Counts per Spot": [float(np.median(umis))],
            "Total Genes Detected": [int((np.asarray(counts.sum(axis=0)).ravel() > 0).sum())],
            "Fraction of Spots Under Tissue": [n_spots / slide.positions.shape[0]],
        }
    )


def write_slide(outdir: Path, slide: SimulatedSlide, genes: pd.DataFrame) -> dict[str, Path]:
    """Write ``slide`` in Space Ranger's ``outs/`` layout under ``outdir/<name>/outs``."""
    outs = outdir / slide.name / "outs"
    spatial = outs / "spatial"
    paths = {
        "outs": outs,
        "matrix": outs / "filtered_feature_bc_matrix.h5",
        "positions": spatial / slide.form.positions_name,
        "scalefactors": spatial / "scalefactors_json.json",
        "lowres": spatial / "tissue_lowres_image.png",
        "metrics": outs / "metrics_summary.csv",
    }
    write_10x_h5(paths["matrix"], slide.counts, slide.barcodes, genes, slide.name)
    write_positions(paths["positions"], slide.positions, header=slide.form.spaceranger_2)
    write_json(paths["scalefactors"], slide.scalefactors)
    write_image(paths["lowres"], slide.images["lowres"])
    if "hires" in slide.images:
        paths["hires"] = spatial / "tissue_hires_image.png"
        write_image(paths["hires"], slide.images["hires"])
    write_csv(paths["metrics"], metrics_summary(slide), index=False)
    return paths


def write_truth(outdir: Path, slide: SimulatedSlide) -> dict[str, Path]:
    """Write the slide's true abundances, proportions and regions under ``outdir/truth``."""
    truth = outdir / "truth"
    paths = {
        "abundance": truth / f"{slide.name}_abundance.csv",
        "proportions": truth / f"{slide.name}_proportions.csv",
    }
    abundance = slide.abundance
    write_csv(paths["abundance"], abundance, float_format="%.5g")
    write_csv(paths["proportions"], abundance.div(abundance.sum(axis=1), axis=0), float_format="%.5g")
    if slide.regions is not None:
        paths["regions"] = truth / f"{slide.name}_regions.csv"
        write_csv(paths["regions"], slide.regions, float_format="%.5g")
    return paths


def write_reference(path: Path, reference: ad.AnnData) -> None:
    """Write the reference as a gzip-compressed h5ad."""
    with cli.atomic_path(path) as tmp:
        reference.write_h5ad(tmp, compression="gzip")


def write_samplesheet(path: Path, names: list[str]) -> None:
    """Write the pipeline samplesheet with paths relative to its folder."""
    sheet = pd.DataFrame({"sample": names, "spaceranger_dir": [f"{n}/outs" for n in names], "group": "all"})
    write_csv(path, sheet, index=False)


def readme_text(params: dict[str, int], slides: list[SimulatedSlide], types: list[str]) -> str:
    """The README that describes a generated data set."""
    args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in params.items())
    lines = [
        "# Synthetic Visium test data (spatialmap)",
        "",
        "Generated by `tools/make_test_data.py` (module `tools/testdata/synth.py`); do not edit by hand.",
        "",
        f"Command: `tools/make_test_data.py --outdir <this folder> {args}`",
        "",
        f"Seed {params['seed']}. The same command regenerates identical arrays.",
        "",
        "## Model (cell2location's generative model)",
        "",
        f"- {params['n_genes']} nuclear genes `GENE0001`... plus 13 mitochondrial genes (`MT-ND1`...`MT-CYB`),"
        " each with a stable Ensembl-like id `ENSG9...` (10x feature id, `var['gene_ids']`).",
        f"- {len(types)} cell types: {', '.join(types)}. Each has a signature (expected counts per cell,"
        f" {CELL_UMI_RANGE[0]:.0f}-{CELL_UMI_RANGE[1]:.0f} UMIs) with ~{MARKERS_PER_TYPE} raised marker genes;"
        f" {types[0]} and {types[1]} are fine-grained (they share two thirds of their markers).",
        "- Spot counts ~ NB(mean = sum_k abundance[spot,k] * signature[k,gene] * detection[spot] * gene_effect[gene])"
        f" with detection = {DETECTION_MEAN} x lognormal(0, {DETECTION_SD}) and a per-slide gene effect"
        f" lognormal(0, {SLIDE_GENE_SD}); NB inverse overdispersion ~{SPOT_THETA:.0f}.",
        f"- About {MEAN_CELLS_PER_SPOT:.0f} cells per spot ({MIN_CELLS_PER_SPOT:.0f}-{MAX_CELLS_PER_SPOT:.0f}),"
        " each type laid out as 1-3 smooth blobs or a gradient plus a small background.",
        f"- Mitochondrial genes carry {SPOT_MT_SHARE_RANGE[0]:.0%}-{SPOT_MT_SHARE_RANGE[1]:.0%} of spot counts"
        f" (varying smoothly) and ~{REFERENCE_MT_SHARE:.0%} of reference counts.",
        f"- Grid {params['grid']} x {params['grid']} spots (Visium hexagonal layout, {SPOT_SPACING_PX:.0f} px apart"
        f" in full resolution), ~{IN_TISSUE_FRACTION:.0%} under tissue.",
        "- Barcodes follow one whitelist, as on real Visium slides: the same array position has the same"
        " barcode on every slide, so barcodes repeat ACROSS slides (never within one).",
        "",
        "## Files",
        "",
        "- `samplesheet.csv`: `sample,spaceranger_dir,group`, paths relative to this folder.",
        "- `reference.h5ad`: labelled scRNA-seq reference; `X` raw integer counts (float32 CSR),"
        " `obs['cell_type']`, `obs['batch']` (`batch2` has per-gene lognormal(0, 0.3) effects), `var['gene_ids']`.",
        "- `truth/signatures.csv`: nuclear genes x cell types, true expected counts per cell.",
        f"- `truth/markers.yaml`: a `--markers` file from the truth: per type its {CURATED_PER_TYPE} most specific raised"
        f" genes (true expected count >= {CURATED_RATIO:g}x that of every other type; `synth.marker_sets`).",
        "- `truth/<slide>_abundance.csv`: in-tissue barcodes x cell types, true number of cells.",
        "- `truth/<slide>_proportions.csv`: the same normalised to sum 1 per spot.",
        "- `truth/<slide>_regions.csv`: the true regions (for spatial domains): per in-tissue spot its `region`"
        " (the area where one cell type's field dominates the composition, patches under"
        f" {regions.MIN_REGION_FRACTION:.0%} of the spots merged into their neighbours), the region's"
        " `dominant_types` (the elbow-gap of its mean composition against the rest of the slide),"
        f" `location_types` (the spot's own top type, `A/B` when the second is within {regions.DOMINANCE_MARGIN:g})"
        " and the true composition (as the proportions). See `tools/testdata/regions.py`.",
        "- `<slide>/outs/`: Space Ranger layout: `filtered_feature_bc_matrix.h5` (10x HDF5 v3, in-tissue spots),"
        " `metrics_summary.csv`, `spatial/scalefactors_json.json`, `spatial/tissue_lowres_image.png`.",
        "",
        "| slide | Space Ranger form | positions file | hires image | spots under tissue |",
        "|---|---|---|---|---|",
    ]
    for slide in slides:
        form = "2.x" if slide.form.spaceranger_2 else "1.x"
        hires = "yes" if slide.form.has_hires else "no"
        positions = f"`spatial/{slide.form.positions_name}`"
        lines.append(f"| {slide.name} | {form} | {positions} | {hires} | {slide.counts.shape[0]} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def check_params(n_slides: int, grid: int, n_genes: int, n_cell_types: int, cells_per_type: int, seed: int) -> None:
    """Raise ``ValueError`` for parameters the generator cannot honour."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if n_slides < 1:
        raise ValueError(f"n_slides must be at least 1, got {n_slides}")
    if grid < 4:
        raise ValueError(f"grid must be at least 4 spots wide, got {grid}")
    if cells_per_type < 2:
        raise ValueError(f"cells_per_type must be at least 2 (two batches), got {cells_per_type}")
    cell_type_names(n_cell_types)
    markers_per_type(n_genes, n_cell_types)


def simulate(
    seed: int = 0,
    n_slides: int = 3,
    grid: int = 18,
    n_genes: int = 400,
    n_cell_types: int = 8,
    cells_per_type: int = 120,
) -> tuple[pd.DataFrame, ad.AnnData, list[SimulatedSlide]]:
    """Simulate everything in memory.

    Returns
    -------
    ``(signatures, reference, slides)``.
    """
    check_params(n_slides, grid, n_genes, n_cell_types, cells_per_type, seed)
    signatures = make_signatures(np.random.default_rng([seed, _STREAM_SIGNATURES]), n_genes, n_cell_types)
    reference = make_reference(np.random.default_rng([seed, _STREAM_REFERENCE]), signatures, cells_per_type)
    grid_barcodes = random_barcodes(np.random.default_rng([seed, _STREAM_BARCODES]), grid * grid)
    slides = [
        simulate_slide(
            np.random.default_rng([seed, _STREAM_SLIDE + i]), f"slide{i + 1}", i, signatures, grid, grid_barcodes
        )
        for i in range(n_slides)
    ]
    return signatures, reference, slides


CURATED_RATIO = 3.0  # a curated marker: its true expected count in the type is >= 3x that in every other type
CURATED_PER_TYPE = 8  # curated markers per type (truth/markers.yaml)


def marker_sets(
    signatures: pd.DataFrame, n: int = CURATED_PER_TYPE, ratio: float = CURATED_RATIO
) -> dict[str, list[str]]:
    """Each type's curated markers, from its true signature (no random draw): the genes whose expected
    count in the type is at least ``ratio`` times that in every other type, the ``n`` highest ratios
    first (ties by name). A marker list as a curator writes it: specific genes only, so the two T-cell
    subtypes (which share two thirds of their raised genes) keep their private ones."""
    values = signatures.to_numpy(dtype=float)
    sets = {}
    for k, name in enumerate(signatures.columns):
        others = np.delete(values, k, axis=1).max(axis=1)
        fold = values[:, k] / np.maximum(others, 1e-12)
        order = np.lexsort((signatures.index.to_numpy(), -fold))
        sets[str(name)] = [str(signatures.index[i]) for i in order if fold[i] >= ratio][:n]
    return sets


def write_markers(path: Path, signatures: pd.DataFrame) -> None:
    """``truth/markers.yaml``: :func:`marker_sets`, as a ``--markers`` file."""
    import yaml

    with cli.atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(marker_sets(signatures), sort_keys=False, default_flow_style=None))


def generate(
    outdir: str | Path,
    seed: int = 0,
    n_slides: int = 3,
    grid: int = 18,
    n_genes: int = 400,
    n_cell_types: int = 8,
    cells_per_type: int = 120,
) -> dict:
    """Generate and write a synthetic data set under ``outdir``.

    Existing files of the same names are overwritten; other files are left alone.

    Parameters
    ----------
    outdir
        Output folder (created if needed).
    seed
        Seed of every random draw.
    n_slides
        Number of slides (``slide1`` ...); every third from ``slide2`` is Space Ranger 1.x
        without a hires image.
    grid
        Spots per side of the hexagonal grid (about 75% fall under tissue).
    n_genes
        Nuclear genes (13 mitochondrial genes are added).
    n_cell_types
        Cell types.
    cells_per_type
        Reference cells per type.

    Returns
    -------
    dict with ``outdir``, ``samplesheet``, ``reference``, ``signatures``, ``readme`` paths,
    ``slides`` (``{name: {outs, matrix, positions, scalefactors, lowres, [hires], metrics}}``)
    and ``truth`` (``{name: {abundance, proportions}}``).
    """
    params = {
        "seed": seed,
        "n_slides": n_slides,
        "grid": grid,
        "n_genes": n_genes,
        "n_cell_types": n_cell_types,
        "cells_per_type": cells_per_type,
    }
    signatures, reference, slides = simulate(**params)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    genes = gene_table(n_genes)
    paths: dict = {
        "outdir": outdir,
        "samplesheet": outdir / "samplesheet.csv",
        "reference": outdir / "reference.h5ad",
        "signatures": outdir / "truth" / "signatures.csv",
        "markers": outdir / "truth" / "markers.yaml",
        "readme": outdir / "README.md",
        "slides": {},
        "truth": {},
    }
    for slide in slides:
        paths["slides"][slide.name] = write_slide(outdir, slide, genes)
        paths["truth"][slide.name] = write_truth(outdir, slide)
        log.info("%s: %d spots under tissue of %d", slide.name, slide.counts.shape[0], slide.positions.shape[0])
    write_reference(paths["reference"], reference)
    write_csv(paths["signatures"], signatures, float_format="%.6g")
    write_markers(paths["markers"], signatures)
    write_samplesheet(paths["samplesheet"], [s.name for s in slides])
    with cli.atomic_path(paths["readme"]) as tmp:
        tmp.write_text(readme_text(params, slides, list(signatures.columns)))
    log.info("wrote %d slides and a reference of %d cells to %s", len(slides), reference.n_obs, outdir)
    return paths
