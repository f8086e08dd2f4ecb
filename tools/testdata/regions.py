"""True regions of the generated slides: the areas each cell type's spatial field dominates.

The generators (:mod:`testdata.synth`, :mod:`testdata.synth_hd`) give every cell type a smooth
spatial field (1-3 Gaussian blobs, or a blob and a sigmoid gradient); a location's true
composition is the fields normalised to their maximum, raised to a contrast power, plus a small
background, and normalised to sum 1. The **true regions** come from that composition, never
from the simulated counts, and without drawing a random number (so no generated array changes):

1. each location is labelled with its dominant type: the argmax of its true composition (the
   type whose powered field is highest; an argmax of smooth fields gives contiguous areas whose
   borders are where two fields cross);
2. on the slide's neighbour graph (hexagonal spot grid, square bin grid, or the Delaunay graph of
   cell centres), every connected patch of one label smaller than ``MIN_REGION_FRACTION`` of the
   slide's locations is given, smallest first, the label most of its graph neighbours carry
   (a patch smaller than the core of the narrowest blob is too small for a domain method to find);
3. a region is the set of locations that carry one label (a type whose field has two blobs far
   apart makes one region of two patches: they have the same composition, which is what a
   domain method groups); regions are numbered ``region1`` ... in the order of their label's type;
4. each region's **dominant types** are what the elbow-gap annotation should give it, computed on
   the truth: the mean true composition of the region minus that of the rest of the slide (the
   "mean change"), the positive ones sorted in decreasing order and cut at their largest drop; the
   types above the cut, joined by ``/`` (``Bcell``, or ``Bcell/Plasma``).

Each location also gets its own ``location_types``: its dominant type, or ``A/B`` when the second
share is within ``DOMINANCE_MARGIN`` of the first (a border location with no clear region).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse import csgraph

# A patch below this share of the slide's locations is merged into its neighbours: about the
# area within one sigma of the narrowest blob (sigma 0.08 of the slide's width: pi * 0.08^2 = 0.02).
MIN_REGION_FRACTION = 0.02
MIN_REGION_LOCATIONS = 3  # and never below this many locations
DELAUNAY_MAX_EDGE = 3.0  # cell graph: Delaunay edges longer than this x the median edge are cut
DOMINANCE_MARGIN = 0.1  # a location is "A/B" when B's share is within 0.1 of A's (under 1 of a spot's ~8 cells)
REGION_COLUMNS = ("region", "dominant_types", "location_types")


def hex_grid_edges(array_row: np.ndarray, array_col: np.ndarray) -> np.ndarray:
    """Neighbouring spots of a Visium hexagonal grid (``array_col`` steps of 2 in a row, 1 across rows).

    Returns
    -------
    ``(n_edges, 2)`` pairs of positions in the given arrays.
    """
    row = np.asarray(array_row, dtype=np.int64)
    col = np.asarray(array_col, dtype=np.int64)
    return _offset_edges(row, col, ((0, 2), (1, -1), (1, 1)))


def square_grid_edges(array_row: np.ndarray, array_col: np.ndarray) -> np.ndarray:
    """Neighbouring bins of a square grid (4-neighbourhood): ``(n_edges, 2)`` pairs of positions."""
    row = np.asarray(array_row, dtype=np.int64)
    col = np.asarray(array_col, dtype=np.int64)
    return _offset_edges(row, col, ((0, 1), (1, 0)))


def _offset_edges(row: np.ndarray, col: np.ndarray, offsets) -> np.ndarray:
    """Pairs of locations whose ``(row, col)`` differ by one of ``offsets``."""
    index = pd.Series(np.arange(row.size), index=pd.MultiIndex.from_arrays([row, col]))
    if not index.index.is_unique:
        raise ValueError("two locations share one grid position")
    pairs = []
    for dr, dc in offsets:
        other = index.reindex(pd.MultiIndex.from_arrays([row + dr, col + dc])).to_numpy()
        keep = ~np.isnan(other)
        pairs.append(np.column_stack([np.flatnonzero(keep), other[keep].astype(np.int64)]))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def delaunay_edges(x: np.ndarray, y: np.ndarray, max_edge: float = DELAUNAY_MAX_EDGE) -> np.ndarray:
    """Edges of the Delaunay triangulation of points, less those over ``max_edge`` x the median edge.

    The long edges cut are those that bridge a notch of the tissue outline.
    """
    from scipy.spatial import Delaunay

    points = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    if points.shape[0] < 3:
        raise ValueError(f"a neighbour graph needs at least 3 locations, got {points.shape[0]}")
    simplices = Delaunay(points).simplices
    edges = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    length = np.hypot(*(points[edges[:, 0]] - points[edges[:, 1]]).T)
    return edges[length <= max_edge * np.median(length)]


def _adjacency(edges: np.ndarray, n: int) -> sparse.csr_matrix:
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    ones = np.ones(edges.shape[0])
    adj = sparse.coo_matrix((ones, (edges[:, 0], edges[:, 1])), shape=(n, n))
    return ((adj + adj.T) > 0).astype(np.int64).tocsr()


def patches(labels: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Connected patch of each location: components of the graph restricted to edges within one label."""
    labels = np.asarray(labels)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    same = edges[labels[edges[:, 0]] == labels[edges[:, 1]]]
    _, patch = csgraph.connected_components(_adjacency(same, labels.size), directed=False)
    return patch


def merge_small_patches(labels: np.ndarray, edges: np.ndarray, min_size: int) -> np.ndarray:
    """Give every patch of fewer than ``min_size`` locations, smallest first, its neighbours' commonest label.

    Ties go to the lowest label; a patch with no neighbour (an island of the graph) keeps its label.
    """
    labels = np.asarray(labels, dtype=np.int64).copy()
    adj = _adjacency(edges, labels.size)
    frozen: set[int] = set()  # patches that cannot merge (no neighbour), by their first location
    while True:
        patch = patches(labels, edges)
        sizes = np.bincount(patch)
        small = [p for p in np.argsort(sizes, kind="stable") if sizes[p] < min_size]
        small = [p for p in small if int(np.flatnonzero(patch == p)[0]) not in frozen]
        if not small:
            return labels
        members = np.flatnonzero(patch == small[0])
        around = np.setdiff1d(adj[members].indices, members)
        if around.size == 0:
            frozen.add(int(members[0]))
            continue
        labels[members] = np.argmax(np.bincount(labels[around]))


def elbow_gap(values: pd.Series) -> list[str]:
    """Names above the largest drop of the positive ``values`` sorted in decreasing order.

    The annotation rule of the issue's seed (Enrichmap, "elbow-gap"): no positive value gives
    none, one gives it alone, with two only the first is kept (their one drop is the largest).
    """
    ordered = values[values > 0].sort_values(ascending=False, kind="stable")
    if ordered.size < 2:
        return list(ordered.index)
    drops = -np.diff(ordered.to_numpy())
    return list(ordered.index[: int(np.argmax(drops)) + 1])


def location_types(composition: pd.DataFrame, margin: float = DOMINANCE_MARGIN) -> pd.Series:
    """Each location's own dominant type, ``A/B`` when the second share is within ``margin`` of the first."""
    values = composition.to_numpy(dtype=float)
    order = np.argsort(-values, axis=1, kind="stable")[:, :2]
    top = np.take_along_axis(values, order, axis=1)
    names = np.asarray(composition.columns, dtype=object)
    mixed = top[:, 0] - top[:, 1] < margin
    label = np.where(mixed, names[order[:, 0]] + "/" + names[order[:, 1]], names[order[:, 0]])
    return pd.Series(label, index=composition.index, name="location_types")


def true_regions(
    composition: pd.DataFrame, edges: np.ndarray, min_fraction: float = MIN_REGION_FRACTION
) -> pd.DataFrame:
    """The true regions of one slide's locations (see the module's docstring).

    Parameters
    ----------
    composition
        Locations x cell types: the true composition from the generator's fields (rows sum to 1).
    edges
        ``(n_edges, 2)`` neighbouring locations (positions in ``composition``'s rows).
    min_fraction
        Patches below this share of the locations (and below ``MIN_REGION_LOCATIONS``) are merged.

    Returns
    -------
    DataFrame with ``composition``'s index and columns ``region`` (``region1`` ...),
    ``dominant_types`` (``/``-joined types of the location's region), ``location_types`` (the
    location's own, :func:`location_types`) and the composition itself (one column per type).
    """
    values = composition.to_numpy(dtype=float)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] < 2:
        raise ValueError(f"the composition must be locations x at least 2 types, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("the composition holds negative or non-finite shares")
    min_size = max(MIN_REGION_LOCATIONS, int(np.ceil(min_fraction * values.shape[0])))
    labels = merge_small_patches(values.argmax(axis=1), edges, min_size)
    names = {label: f"region{i + 1}" for i, label in enumerate(np.unique(labels))}
    region = np.array([names[label] for label in labels], dtype=object)
    dominant = {}
    for name in names.values():
        inside = region == name
        mean = composition[inside].mean()
        rest = composition[~inside].mean() if (~inside).any() else 0.0 * mean
        dominant[name] = "/".join(elbow_gap(mean - rest)) or str(mean.idxmax())
    table = pd.DataFrame(
        {
            "region": region,
            "dominant_types": [dominant[r] for r in region],
            "location_types": location_types(composition).to_numpy(),
        },
        index=composition.index,
    )
    return pd.concat([table, composition], axis=1)


def region_summary(regions: pd.DataFrame, edges: np.ndarray) -> pd.DataFrame:
    """Per region of :func:`true_regions`: locations, connected patches, dominant types, mean composition."""
    types = [c for c in regions.columns if c not in REGION_COLUMNS]
    region = regions["region"].to_numpy()
    patch = patches(pd.factorize(region)[0], edges)
    table = regions[types].groupby(region).mean()
    table.insert(0, "dominant_types", regions.groupby(region)["dominant_types"].first())
    table.insert(0, "patches", pd.Series(patch).groupby(region).nunique())
    table.insert(0, "locations", pd.Series(region).value_counts())
    order = sorted(table.index, key=lambda name: int(name.removeprefix("region")))
    return table.loc[order].rename_axis("region")
