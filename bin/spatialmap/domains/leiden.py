"""SpatialLeiden domains of a group's slides: one clustering over all of them, merged into the levels.

SpatialLeiden (Müller-Bötticher et al. 2025) clusters a multiplex graph: the locations' expression
neighbours and their spatial neighbours. For a group, one graph holds every slide: expression
neighbours are searched over the whole group (the same kind of tissue finds the same domain on every
slide), after the slide is removed as a batch (highly variable genes per slide, then scanpy's ComBat
on the log-normalised counts), spatial neighbours only within a slide (:mod:`.common` radii,
weights ``1 - d / d_max``).

Expression: counts normalised to 10,000 per location, log1p, the 2,000 most variable genes (all of
them below that), scaled, 30 principal components, 15 nearest neighbours (scikit-learn's exact
search: scanpy's neighbours fail from 8,192 locations with this project's pynndescent and scipy),
after each location's components are averaged with its spatial neighbours' (a neighbourhood profile,
as niche methods use: one location's expression is too sparse on bins and cells).

Levels: one SpatialLeiden run at a resolution giving at least as many clusters as the highest level
(from 1, doubled until it does, at most :data:`MAX_DOUBLINGS` times); the clusters are then merged by
average linkage of their mean principal components (cosine distance, as Novae merges its
prototypes) into ``k`` domains for each level ``k``: the levels nest, as Novae's do, and a level gives
exactly its number of domains when there are enough clusters. Clusters smaller than
:data:`MIN_CLUSTER_FRACTION` of the locations are first merged into the most similar larger one.
"""

from __future__ import annotations

import logging
import time

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

log = logging.getLogger(__name__)

N_TOP_GENES = 2000
N_PCS = 30
N_NEIGHBOURS = 15
APPROXIMATE_FROM = 8192  # locations from which the expression neighbours are searched approximately
LEIDEN_ITERATIONS = 2  # Leiden passes per run, as scanpy's default (-1, until no change, took > 10 min at 302,500)
MAX_DOUBLINGS = 6
MIN_CLUSTER_FRACTION = 0.005  # clusters under 0.5% of the locations are noise, merged before the levels


def expression_pcs(inputs: list[ad.AnnData], seed: int) -> np.ndarray:
    """The group's principal components (locations of every slide stacked, in order)."""
    import scanpy as sc

    stacked = ad.concat(
        [ad.AnnData(X=sparse.csr_matrix(a.X, dtype=np.float32), var=a.var[[]]) for a in inputs],
        join="inner",
        label="slide",
    )
    several = len(inputs) > 1
    sc.pp.normalize_total(stacked, target_sum=1e4)
    sc.pp.log1p(stacked)
    if stacked.n_vars > N_TOP_GENES:
        sc.pp.highly_variable_genes(stacked, n_top_genes=N_TOP_GENES, batch_key="slide" if several else None)
        stacked = stacked[:, stacked.var["highly_variable"].to_numpy()].copy()
    stacked.X = stacked.X.toarray()
    if several:  # the slide as the batch: ComBat's location/scale adjustment per gene (scanpy)
        sc.pp.combat(stacked, key="slide")
    n_pcs = int(min(N_PCS, stacked.n_vars - 1, stacked.n_obs - 1))
    if stacked.n_obs < APPROXIMATE_FROM:
        sc.pp.scale(stacked, max_value=10)
        sc.pp.pca(stacked, n_comps=n_pcs, random_state=seed)
        return np.asarray(stacked.obsm["X_pca"], dtype=np.float32)
    # large slides: the same steps without their full-size temporaries (a full Visium HD slide's
    # 302,500 x 2,000 float32 matrix is 2.4 GB; scanpy's scale and the default PCA solver added 2.2
    # and 4.8 GB on top): scaled in place from chunked float64 moments, PCA from the genes' covariance
    scale_in_place(stacked.X, max_value=10)
    sc.pp.pca(stacked, n_comps=n_pcs, random_state=seed, svd_solver="covariance_eigh")
    return np.asarray(stacked.obsm["X_pca"], dtype=np.float32)


def scale_in_place(x: np.ndarray, max_value: float, chunk: int = 16_384) -> None:
    """``sc.pp.scale(max_value=...)`` of a dense matrix in place: genes centred and divided by their
    (n - 1) standard deviation (1 where it is 0), then clipped to ``[-max_value, max_value]``; the moments summed in
    float64 by chunks of rows, so no temporary the size of the matrix is made."""
    n = x.shape[0]
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, n, chunk):
        block = x[start : start + chunk].astype(np.float64)
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
    mean = total / n
    var = (squares / n - mean**2) * (n / max(n - 1, 1))
    std = np.sqrt(np.maximum(var, 0))
    std[std == 0] = 1
    for start in range(0, n, chunk):
        block = x[start : start + chunk]
        block -= mean
        block /= std
        np.clip(block, -max_value, max_value, out=block)


def knn_graph(pcs: np.ndarray, k: int = N_NEIGHBOURS, seed: int = 0) -> sparse.csr_matrix:
    """Symmetric k-nearest-neighbour connectivities in expression space (weights ``1 - d / d_max``).

    Exact (scikit-learn) below :data:`APPROXIMATE_FROM` locations; from there pynndescent's approximate
    search, seeded, as scanpy does from the same size (an exact search of a full Visium HD slide,
    302,500 x 30 components, took most of 516 s on two loaded cores)."""
    from spatialleiden import distance2connectivity

    k = int(min(k, len(pcs) - 1))
    if len(pcs) < APPROXIMATE_FROM:
        from sklearn.neighbors import NearestNeighbors

        dist = NearestNeighbors(n_neighbors=k).fit(pcs).kneighbors_graph(mode="distance")
    else:
        from pynndescent import NNDescent

        index = NNDescent(pcs, n_neighbors=k + 1, random_state=seed, n_jobs=1, low_memory=True)
        neighbours, distances = index.neighbor_graph
        rows = np.repeat(np.arange(len(pcs)), k)
        keep = neighbours[:, 1:].ravel(), distances[:, 1:].ravel()  # the first is the location itself
        dist = sparse.csr_matrix((np.maximum(keep[1], 1e-12), (rows, keep[0])), shape=(len(pcs), len(pcs)))
    conn = distance2connectivity(sparse.csr_matrix(dist))
    return sparse.csr_matrix(conn.maximum(conn.T))


def spatial_graph(xy_um: list[np.ndarray], radii: list[float], samples: list[str] | None = None) -> sparse.csr_matrix:
    """Spatial connectivities within each slide (radius graph, ``1 - d / d_max``), block-diagonal."""
    from sklearn.neighbors import radius_neighbors_graph
    from spatialleiden import distance2connectivity

    blocks = []
    for i, (xy, radius) in enumerate(zip(xy_um, radii)):
        dist = radius_neighbors_graph(xy, radius=radius, mode="distance")
        if dist.nnz == 0:
            name = samples[i] if samples else f"slide {i + 1}"
            raise ValueError(
                f"sample {name}: no location has a neighbour within {radius:g} µm: are the slide's coordinates "
                "in the unit its pixel size says?"
            )
        dist.data = np.maximum(dist.data, 1e-6)
        blocks.append(sparse.csr_matrix(distance2connectivity(dist)))
    return sparse.block_diag(blocks, format="csr")


def smooth(pcs: np.ndarray, spatial: sparse.csr_matrix) -> np.ndarray:
    """Each location's components averaged with its spatial neighbours' (itself included, equal weights)."""
    adjacency = (spatial > 0).astype(np.float32) + sparse.identity(spatial.shape[0], dtype=np.float32, format="csr")
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return np.asarray(sparse.diags(1.0 / degree) @ adjacency @ pcs, dtype=np.float32)


def merge_levels(clusters: np.ndarray, pcs: np.ndarray, levels: list[int]) -> dict[int, np.ndarray]:
    """The clusters merged into ``k`` domains per level (average linkage, cosine, on mean components)."""
    from sklearn.cluster import AgglomerativeClustering

    names, codes, sizes = np.unique(clusters, return_inverse=True, return_counts=True)
    centroids = np.vstack([pcs[codes == i].mean(axis=0) for i in range(len(names))])
    small = sizes < MIN_CLUSTER_FRACTION * len(clusters)
    target = np.arange(len(names))
    if small.any() and (~small).any():
        big = np.flatnonzero(~small)
        unit = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        for i in np.flatnonzero(small):
            target[i] = big[np.argmax(unit[big] @ unit[i])]
    kept = np.unique(target)
    kept_centroids = np.vstack([pcs[np.isin(codes, np.flatnonzero(target == t))].mean(axis=0) for t in kept])
    position = {t: j for j, t in enumerate(kept)}
    base = np.array([position[target[c]] for c in codes])
    out = {}
    for level in levels:
        if level >= len(kept):
            out[level] = base.copy()
            continue
        merged = AgglomerativeClustering(n_clusters=level, metric="cosine", linkage="average").fit_predict(
            kept_centroids
        )
        out[level] = merged[base]
    return out


def spatialleiden_domains(
    inputs: list[ad.AnnData], samples: list[str], levels: list[int], radii: list[float], *, seed: int = 0
) -> tuple[list[pd.DataFrame], dict]:
    """SpatialLeiden's domains of every slide of the group at every level.

    ``inputs`` hold each slide's counts in ``X`` and its µm coordinates in ``obsm['spatial']``; they
    are not changed. Returns per slide a table (locations x ``L<k>``, cluster numbers as text) and
    the run's details.
    """
    from spatialleiden import spatialleiden

    started = time.monotonic()
    sizes = [a.n_obs for a in inputs]
    pcs = expression_pcs(inputs, seed)
    log.info("SpatialLeiden: %d principal components of %s locations in %.0f s", pcs.shape[1], f"{sum(sizes):,}", time.monotonic() - started)  # fmt: skip
    graph = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(sum(sizes)).astype(str)))
    spatial = spatial_graph([np.asarray(a.obsm["spatial"]) for a in inputs], radii, samples)
    pcs = smooth(pcs, spatial)
    log.info("SpatialLeiden: spatial graph and neighbourhood profiles at %.0f s", time.monotonic() - started)
    graph.obsp["connectivities"] = knn_graph(pcs, seed=seed)
    graph.obsp["spatial_connectivities"] = spatial
    log.info("SpatialLeiden: graphs of %s locations (%d slides) made in %.0f s", f"{sum(sizes):,}", len(inputs), time.monotonic() - started)  # fmt: skip
    resolution, found = 1.0, 0
    for _ in range(MAX_DOUBLINGS + 1):
        spatialleiden(
            graph, resolution=resolution, key_added="spatialleiden", random_state=seed, directed=False,
            n_iterations=LEIDEN_ITERATIONS,
        )  # fmt: skip
        found = graph.obs["spatialleiden"].nunique()
        log.info("SpatialLeiden: resolution %g gave %d clusters (at %.0f s)", resolution, found, time.monotonic() - started)  # fmt: skip
        if found >= max(levels):
            break
        resolution *= 2
    clusters = graph.obs["spatialleiden"].astype(str).to_numpy()
    merged = merge_levels(clusters, pcs, levels)
    tables, start = [], 0
    for adata, n in zip(inputs, sizes):
        table = pd.DataFrame(index=adata.obs_names)
        for level in levels:
            table[f"L{level}"] = [f"c{x}" for x in merged[level][start : start + n]]
        tables.append(table)
        start += n
    details = {
        "resolution": resolution,
        "clusters": int(found),
        "principal_components": int(pcs.shape[1]),
        "seconds": round(time.monotonic() - started, 1),
        "group_handling": "one clustering of the group's slides (ComBat over the slides, expression neighbours across them, spatial within each)",
    }
    return tables, details
