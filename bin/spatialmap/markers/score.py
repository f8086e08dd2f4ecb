"""Marker-gene scores per location with Enrichmap, over a samplesheet group's slides.

Per slide, from its QC'd counts: log1p(counts per 10,000 over all its genes), kept for the marker genes
only (the score reads nothing else), never the slide's own object (a new AnnData is built). The group's
slides are stacked and scored in one ``enrichmap.tl.score`` call with ``batch_key`` the slide, so
Enrichmap z-scores each set per slide, smooths over each slide's own ``n_neighbors`` nearest locations
and, where :func:`spatial_correction_for` says so, removes each slide's smooth spatial trend (a GAM of
the coordinates); the gene weights (coefficient of variation) come from the whole group, so a type's
score means the same on its slides.

A type is scored with its genes found on every slide of the group (:func:`group_markers`); one with
fewer than two such genes is dropped with a warning (:mod:`spatialmap.markers.genes`). Each location's
marker label is its highest-scoring type (Enrichmap's per-location label).

Enrichmap intersects a set with the slide's genes through a Python ``set``, so its summation order
follows string hashing: :data:`HASH_SEED` (``PYTHONHASHSEED``, set by the module's process) makes a
run's scores reproducible to the bit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.markers.genes import MIN_GENES, MarkerCheck, check_markers

log = logging.getLogger("spatialmap.markers.score")

BATCH = "sample"
LABEL = "marker_label"  # a location's highest-scoring type
SUFFIX = "_score"  # Enrichmap's obs column of a set: f"{name}_score"
DEFAULT_NEIGHBORS = 6
HASH_SEED = "0"
# --marker_spatial_correction auto: Enrichmap's GAM (10 x 10 tensor splines: 100 coefficients per slide)
# only where every slide of the group has at least 100 locations per coefficient. On a slide a few
# regions wide the splines are as fine as the regions and remove them (tools/BENCHMARKS.md: 18 of 22
# generated regions named with it on 243-spot slides, 22 without; every domain Unknown on the 252- and
# 350-cell test slides); the workflow it comes from applies it to Visium HD bins, 10^5 per slide.
AUTO_MIN_LOCATIONS = 10_000
CORRECTION_MODES = ("auto", "true", "false")


def spatial_correction_for(mode: str, slides: Mapping[str, object]) -> tuple[bool, str]:
    """Whether Enrichmap removes each slide's spatial trend (``mode``: :data:`CORRECTION_MODES`), and why."""
    if mode not in CORRECTION_MODES:
        raise InputError(f"the spatial correction is one of {', '.join(CORRECTION_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "true", f"--marker_spatial_correction {mode}"
    smallest = min(slide.n_obs for slide in slides.values())
    on = smallest >= AUTO_MIN_LOCATIONS
    relation = ">=" if on else "<"
    return on, f"auto: the group's smallest slide has {smallest:,} locations ({relation} {AUTO_MIN_LOCATIONS:,})"


@dataclass
class GroupMarkers:
    """The sets scored over a group (``kept``: genes on every slide) and each slide's check."""

    kept: dict[str, list[str]]
    checks: dict[str, MarkerCheck]

    @property
    def dropped(self) -> list[str]:
        every = list(dict.fromkeys(name for check in self.checks.values() for name in check.present))
        return [name for name in every if name not in self.kept]

    def slide_json(self, sample: str) -> dict:
        """The markers part of a slide's QC JSON: its own missing genes, the group's scored and dropped types."""
        check = self.checks[sample]
        dropped = self.dropped
        warnings = [
            f"sample {sample}: cell type '{name}' of {check.source} dropped: "
            f"{len(self.group_present(name))} of its genes on every slide of the group, {MIN_GENES} needed; "
            f"missing here: {', '.join(check.missing.get(name, [])[:10]) or 'none (missing on another slide)'}"
            for name in dropped
        ]
        return {
            "source": check.source,
            "types_scored": len(self.kept),
            "types_dropped": dropped,
            "genes": self.kept,
            "missing_genes": {name: genes for name, genes in check.missing.items() if genes},
            "warnings": warnings,
        }

    def group_present(self, name: str) -> list[str]:
        """The type's genes found on every slide of the group."""
        found = [check.present.get(name, []) for check in self.checks.values()]
        return [g for g in found[0] if all(g in other for other in found[1:])]


def group_markers(markers: Mapping[str, list[str]], slides: Mapping[str, object], source: str) -> GroupMarkers:
    """Check the sets on every slide (refused naming the slide where none fits), then keep per type its
    genes found on every slide; a type with fewer than :data:`MIN_GENES` of them is dropped."""
    checks = {sample: check_markers(markers, slide.var_names, sample, source) for sample, slide in slides.items()}
    found = GroupMarkers({}, checks)
    for name in next(iter(checks.values())).present:
        shared = found.group_present(name)
        if len(shared) >= MIN_GENES:
            found.kept[name] = shared
    if not found.kept:
        raise InputError(
            f"slides {', '.join(slides)}: no cell type of the markers file {source} has {MIN_GENES} of its genes "
            "on every slide of the group"
        )
    for sample in slides:
        for line in found.slide_json(sample)["warnings"]:
            log.warning(line)
    return found


def log_normalised(slide, genes: list[str]) -> sparse.csr_matrix:
    """log1p(counts per 10,000) of ``genes``, the totals over all the slide's genes (the slide untouched)."""
    X = slide.X
    totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    totals[totals == 0] = 1.0
    cols = slide.var_names.get_indexer(genes)
    sub = X[:, cols]
    sub = sparse.csr_matrix(sub, dtype=np.float64) if not sparse.issparse(sub) else sub.tocsr().astype(np.float64)
    sub = sparse.diags(1e4 / totals) @ sub
    sub = sparse.csr_matrix(sub)
    sub.data = np.log1p(sub.data)
    return sub


def stack(slides: Mapping[str, object], genes: list[str], n_neighbors: int = DEFAULT_NEIGHBORS):
    """One AnnData of the group: the marker genes' log-normalised expression, ``obs['sample']``, coordinates."""
    import anndata as ad

    blocks, obs, coords = [], [], []
    for sample, slide in slides.items():
        if keys.SPATIAL not in slide.obsm:
            raise InputError(
                f"sample {sample}: the slide has no coordinates (obsm['{keys.SPATIAL}']): marker scores need them"
            )
        xy = np.asarray(slide.obsm[keys.SPATIAL], dtype=np.float64)[:, :2]
        if not np.isfinite(xy).all():
            raise InputError(f"sample {sample}: some locations have no finite coordinates in obsm['{keys.SPATIAL}']")
        if slide.n_obs <= n_neighbors:
            raise InputError(
                f"sample {sample}: {slide.n_obs} locations; marker scores smooth over {n_neighbors} neighbours of each"
            )
        blocks.append(log_normalised(slide, genes))
        obs.append(pd.DataFrame({BATCH: sample, "location": slide.obs_names.astype(str)}))
        coords.append(xy)
    frame = pd.concat(obs, ignore_index=True)
    frame.index = frame.index.astype(str)
    frame[BATCH] = pd.Categorical(frame[BATCH], categories=list(slides))
    return ad.AnnData(
        X=sparse.vstack(blocks).tocsr(),
        obs=frame,
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
        obsm={keys.SPATIAL: np.vstack(coords)},
    )


def score_group(
    slides: Mapping[str, object],
    markers: Mapping[str, list[str]],
    source: str,
    n_neighbors: int = DEFAULT_NEIGHBORS,
    spatial_correction: bool = True,
) -> tuple[dict[str, pd.DataFrame], GroupMarkers]:
    """``({sample: locations x types scores, plus the marker label}, the sets used)``; without
    ``spatial_correction`` Enrichmap's GAM of the coordinates is skipped (module docstring of
    :mod:`spatialmap.markers`: on small slides it removes region-scale signal)."""
    import enrichmap as em

    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        log.warning("PYTHONHASHSEED is not %s: Enrichmap's sums follow string hashing, scores may differ in the last bits", HASH_SEED)  # fmt: skip
    found = group_markers(markers, slides, source)
    genes = list(dict.fromkeys(g for gs in found.kept.values() for g in gs))
    stacked = stack(slides, genes, n_neighbors)
    log.info(
        "Enrichmap: %d types, %d genes, %d locations on %d slides (smoothing over %d neighbours; %s)",
        len(found.kept), len(genes), stacked.n_obs, len(slides), n_neighbors,
        "each slide's spatial trend removed (GAM)" if spatial_correction else "no spatial-trend correction",
    )  # fmt: skip
    em.tl.score(
        stacked,
        gene_set={name: list(gs) for name, gs in found.kept.items()},
        spatial_key=keys.SPATIAL,
        n_neighbors=n_neighbors,
        smoothing=True,
        correct_spatial_covariates=spatial_correction,
        batch_key=BATCH,
    )
    columns = [f"{name}{SUFFIX}" for name in found.kept]
    scores = stacked.obs[columns].copy()
    scores.columns = list(found.kept)
    tables = {}
    for sample in slides:
        rows = (stacked.obs[BATCH] == sample).to_numpy()
        table = scores.loc[rows].copy()
        table.index = pd.Index(stacked.obs.loc[rows, "location"].to_numpy(), name="location")
        table[LABEL] = table[list(found.kept)].idxmax(axis=1)
        tables[sample] = table
    return tables, found
