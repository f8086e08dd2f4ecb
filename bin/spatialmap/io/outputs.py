"""Per-slide outputs of Visium HD, Xenium and SpatialData slides after mapping.

- a **SpatialData store written as a new zarr** (the input is never modified): the
  slide's images, the bin squares or cell boundaries, for Xenium the transcripts (points,
  written from dask partition by partition, never loaded whole), and one table holding the
  QC'd counts (sparse), ``obsm['spatial']``, every mapping method's proportions, the
  predicted cell type per unit and, where two or more methods ran, the **consensus**
  proportions (``obsm['consensus_proportions']``) and the per-unit **disagreement** of the
  methods (``obs['consensus_disagreement']``, with ``consensus_n_methods`` and each method's
  ``consensus_jsd_<method>``); it is written under ``<name>.tmp`` and renamed when
  complete, so a failure leaves no store under the final name;
- the mapped **h5ad** of the bins or cells (the same table);
- a **cell-type composition** table per slide (mean proportion per type and method, the
  consensus as the method ``consensus``, and how many units each type labels);
- for every unit, **one label and its probability** (argmax of the proportions of the
  labelling method: the first that ran of the slide's plan's ``label_methods``, the order of
  ``--methods``, with ``--methods auto`` the registry's label preference; where none of those ran,
  e.g. only a method added later, the first method that ran, in name order);
- a **map** of the predicted types over the tissue (cells coloured by type; subsampled
  above ``MAX_PLOTTED`` units).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import NamedTuple

import anndata as ad
import numpy as np
import pandas as pd

from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.io.sdata import write_new_store
from spatialmap.methods import registry

log = logging.getLogger(__name__)


def label_methods(methods: list[str]) -> list[str]:
    """The methods in order of preference for the label (the pipeline gives the slide plan's
    ``label_methods``); none given: the registry's label preference (``registry.label_rank``, the
    most accurate on the silver standard first). A method not listed (one added later) still
    labels a slide when none of these ran on it (:func:`annotate`)."""
    methods = [m for m in methods if m]
    return methods or registry.label_preference()


PREDICTED_TYPE = "predicted_cell_type"
PREDICTED_PROBABILITY = "predicted_probability"
LABEL_METHOD = "label_method"
MAX_PLOTTED = 100_000  # units drawn in the maps; more are subsampled with the seed

# the consensus of the methods (COMPARE_METHODS, spatialmap.consensus.rules) in the table
CONSENSUS = "consensus"  #: its method name in the composition table
CONSENSUS_PROPORTIONS = "consensus_proportions"  #: obsm: units x cell types, rows sum to 1 (NaN: no method fitted)
CONSENSUS_DISAGREEMENT = "consensus_disagreement"  #: obs: mean Jensen-Shannon divergence (base 2) to the consensus
CONSENSUS_N_METHODS = "consensus_n_methods"  #: obs: methods that fitted the unit
CONSENSUS_JSD_PREFIX = "consensus_jsd_"  #: obs: consensus_jsd_<method>, one method's divergence
UNS_CONSENSUS = "consensus"  #: uns: {"methods": [...]}


class ConsensusMaps(NamedTuple):
    """A slide's consensus proportions and per-unit disagreement, aligned to its units."""

    proportions: pd.DataFrame  #: units x cell types
    disagreement: pd.DataFrame  #: disagreement, n_methods, jsd_<method>


def read_consensus(
    proportions_csv: str | Path, disagreement_csv: str | Path, units: pd.Index, sample: str
) -> ConsensusMaps:
    """The slide's ``<sample>.consensus_proportions.csv`` and ``.consensus_disagreement.csv``
    (written by ``compare_methods.py``), aligned to the slide's units.

    A unit no method fitted gets NaN proportions, a NaN disagreement and 0 methods; so does a
    unit only one method fitted for the disagreement (nothing to compare).

    Raises
    ------
    ValueError
        When the tables name units the slide does not have, miss their columns, or their rows
        do not sum to 1 / their scores leave [0, 1]: they are not this slide's consensus.
    """
    props = pd.read_csv(proportions_csv, index_col=0)
    scores = pd.read_csv(disagreement_csv, index_col=0)
    units = pd.Index(units).astype(str)
    for name, table in (("consensus proportions", props), ("consensus disagreement", scores)):
        table.index = table.index.astype(str)
        unknown = table.index.difference(units)
        if len(unknown):
            raise ValueError(
                f"sample {sample}: the {name} table names {len(unknown)} units the slide does not have "
                f"(e.g. {unknown[0]}); is it another slide's?"
            )
        if table.shape[1] == 0:
            raise ValueError(f"sample {sample}: the {name} table has no columns")
    if not {"disagreement", "n_methods"} <= set(scores.columns):
        raise ValueError(
            f"sample {sample}: the consensus disagreement table has no 'disagreement' and 'n_methods' columns"
        )
    values = props.to_numpy(dtype=float)
    rows = np.isfinite(values).all(axis=1)
    if not np.allclose(values[rows].sum(axis=1), 1.0, atol=1e-3) or (values[rows] < -1e-9).any():
        raise ValueError(f"sample {sample}: the consensus proportions are not proportions (rows must sum to 1)")
    score = scores["disagreement"].to_numpy(dtype=float)
    finite = score[np.isfinite(score)]
    if ((finite < -1e-9) | (finite > 1 + 1e-9)).any():
        raise ValueError(f"sample {sample}: consensus disagreement outside [0, 1]")
    scores = scores.reindex(units)
    scores["n_methods"] = scores["n_methods"].fillna(0).astype(int)
    return ConsensusMaps(props.reindex(units), scores)


def add_consensus(adata: ad.AnnData, consensus: ConsensusMaps) -> None:
    """Write the consensus into ``adata`` (in place): obsm :data:`CONSENSUS_PROPORTIONS`, obs
    :data:`CONSENSUS_DISAGREEMENT`, :data:`CONSENSUS_N_METHODS` and ``consensus_jsd_<method>``."""
    names = adata.obs_names.astype(str)
    props, scores = consensus.proportions.reindex(names), consensus.disagreement.reindex(names)
    props.index = adata.obs_names
    adata.obsm[CONSENSUS_PROPORTIONS] = props.astype(float)
    adata.obs[CONSENSUS_DISAGREEMENT] = scores["disagreement"].to_numpy(dtype=float)
    adata.obs[CONSENSUS_N_METHODS] = scores["n_methods"].fillna(0).to_numpy(dtype=int)
    methods = [c[len("jsd_") :] for c in scores.columns if c.startswith("jsd_")]
    for method in methods:
        adata.obs[f"{CONSENSUS_JSD_PREFIX}{method}"] = scores[f"jsd_{method}"].to_numpy(dtype=float)
    adata.uns[UNS_CONSENSUS] = {"methods": methods}


def method_proportions(adata: ad.AnnData, method: str) -> pd.DataFrame | None:
    """A method's per-unit proportions (rows sum to 1; NaN rows: units it left out), or None."""
    if method == "cell2location":
        key = keys.C2L_Q05
    else:
        key = f"{method}_proportions"
    if key not in adata.obsm:
        return None
    table = adata.obsm[key]
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"obsm['{key}'] of the {method} result is not a table with cell-type columns")
    table = table.astype(float)
    total = table.sum(axis=1, min_count=1)
    return table.div(total.where(total > 0), axis=0)


def methods_in(adata: ad.AnnData) -> list[str]:
    """The mapping methods whose proportions ``adata`` holds (``obsm['<method>_proportions']``,
    cell2location's abundances), in name order; the consensus is not a method."""
    found = {
        "cell2location" if key == keys.C2L_Q05 else key[: -len("_proportions")]
        for key in adata.obsm.keys()
        if key == keys.C2L_Q05 or (key.endswith("_proportions") and key != CONSENSUS_PROPORTIONS)
    }
    return sorted(m for m in found if m)


def collect_results(slide: ad.AnnData, mapped: list[ad.AnnData], methods: list[str]) -> dict[str, pd.DataFrame]:
    """``{method: proportions aligned to the slide's units}`` for the methods found in ``mapped``:
    per mapped file, those of ``methods`` in its order, then any other (a method added later)."""
    found = [m for adata in mapped for m in methods_in(adata)]
    order = list(methods) + sorted(set(found) - set(methods))
    results: dict[str, pd.DataFrame] = {}
    for adata in mapped:
        for method in order:
            if method in results:
                continue
            props = method_proportions(adata, method)
            if props is not None:
                results[method] = props.reindex(slide.obs_names)
    return results


def predict_labels(props: pd.DataFrame) -> pd.DataFrame:
    """Argmax type and its proportion per unit; units without proportions get no label."""
    values = props.to_numpy(dtype=float)
    ok = np.isfinite(values).all(axis=1)
    best = np.where(ok, np.nanargmax(np.where(np.isfinite(values), values, -1.0), axis=1), 0)
    labels = np.where(ok, np.asarray(props.columns)[best], None)
    prob = np.where(ok, values[np.arange(len(values)), best], np.nan)
    categories = list(props.columns)
    return pd.DataFrame(
        {PREDICTED_TYPE: pd.Categorical(labels, categories=categories), PREDICTED_PROBABILITY: prob},
        index=props.index,
    )


def composition(
    sample: str,
    results: dict[str, pd.DataFrame],
    labels: pd.DataFrame | None,
    label_method: str | None,
    consensus: pd.DataFrame | None = None,
):
    """Long table: sample, method, cell_type, mean_proportion, units_labelled, share_labelled.

    ``consensus`` (units x types) adds the consensus' mean proportions as the method ``consensus``.
    """
    rows = []
    tables = dict(results)
    if consensus is not None:
        tables[CONSENSUS] = consensus
    for method, props in tables.items():
        mean = props.mean(axis=0, skipna=True)
        counts = labels[PREDICTED_TYPE].value_counts() if method == label_method and labels is not None else None
        n = int(labels[PREDICTED_TYPE].notna().sum()) if counts is not None else 0
        for cell_type, value in mean.items():
            row = {"sample": sample, "method": method, "cell_type": cell_type, "mean_proportion": float(value)}
            if counts is not None:
                row["units_labelled"] = int(counts.get(cell_type, 0))
                row["share_labelled"] = row["units_labelled"] / n if n else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def annotate(
    slide: ad.AnnData, results: dict[str, pd.DataFrame], methods: list[str], consensus: ConsensusMaps | None = None
) -> tuple[ad.AnnData, str | None]:
    """The slide with every method's proportions in obsm, the predicted label in obs and, when
    given, the methods' consensus and disagreement (:func:`add_consensus`)."""
    out = slide.copy()
    for method, props in results.items():
        out.obsm[f"{method}_proportions" if method != "cell2location" else "cell2location_proportions"] = props
    if consensus is not None:
        add_consensus(out, consensus)
    # the preferred method that ran; else (only methods not in the preference ran) the first that ran
    label_method = next((m for m in methods if m in results), next(iter(results), None))
    if label_method is not None:
        labels = predict_labels(results[label_method])
        out.obs[PREDICTED_TYPE] = labels[PREDICTED_TYPE]
        out.obs[PREDICTED_PROBABILITY] = labels[PREDICTED_PROBABILITY]
        out.uns[LABEL_METHOD] = label_method
    return out, label_method


def add_domains(adata: ad.AnnData, domains: pd.DataFrame) -> None:
    """The slide's spatial domains (:func:`spatialmap.io.domains.read_domains`, rows in the slide's
    order) as categorical obs columns: ``domain`` (the chosen level) and ``domain_L<k>`` per level."""
    if not domains.index.equals(adata.obs_names):
        raise ValueError("the domains table's rows are not the slide's locations in its order")
    for column in domains.columns:
        adata.obs[column] = pd.Categorical(domains[column].to_numpy())


# --------------------------------------------------------------------------------------------
# SpatialData store
# --------------------------------------------------------------------------------------------


class Elements(NamedTuple):
    """What the output store keeps of the input besides the table."""

    images: dict  #: name -> image (dask-backed)
    shapes: dict  #: the shapes the table annotates (bin squares or cell boundaries)
    points: dict  #: name -> points (dask-backed; Xenium transcripts, empty for Visium HD)
    shape_key: str  #: the shapes' name, the table's region
    instance: str  #: the table's column of shape IDs


def _parsed_cells(cells: str | Path, sample: str, like):
    """The pipeline's cell polygons as SpatialData shapes, in the coordinate systems of ``like``
    (the element whose coordinates they share: Visium HD bins in full-resolution pixels, Xenium
    transcripts in µm)."""
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    from spatialmap.segmentation.stardist import read_cells

    return ShapesModel.parse(read_cells(cells, sample), transformations=get_transformation(like, get_all=True))


def read_elements(
    input_type: str,
    path: str | Path,
    bin_size: int,
    hd_mode: str = "bins",
    cells: str | Path | None = None,
    table: str | None = None,
) -> Elements:
    """Images, shapes and points of the input, the shapes key the table annotates, and its instance column.

    Read again with the platform's reader (``sopa.io.visium_hd`` / ``sopa.io.xenium`` /
    ``spatialdata.read_zarr``); nothing is written to the input. Points stay dask-backed
    (read lazily from ``transcripts.parquet``): nothing here loads them into memory.
    Visium HD has no transcripts (its bins are the table), so no points. ``cells``: the
    pipeline's own cell polygons (``<sample>.cells.parquet``, Visium HD full-resolution pixels),
    kept as the shapes ``spatialmap_cells`` that the table's ``segmentation_cell_id`` names;
    the same for a Xenium run re-segmented by the pipeline (ProSeg, polygons in µm). ``table``:
    for a SpatialData store, the table the slide's counts were read from (the QC'd table's
    ``uns['spatialmap_platform']['table']``); its region is the shapes kept (default: the first table).
    """
    import sopa
    import spatialdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if input_type == "visium_hd" and hd_mode == "cells" and cells is not None:
            sdata = sopa.io.visium_hd(path, bin_size=bin_size, load_segmentations_only=False)
            bins_key = next(k for k in sdata.shapes if k.endswith(f"square_{bin_size:03d}um"))
            shape_key, instance = "spatialmap_cells", "segmentation_cell_id"
            sdata.shapes[shape_key] = _parsed_cells(cells, Path(path).name, sdata.shapes[bins_key])
        elif input_type == "visium_hd" and hd_mode == "cells":
            sdata = sopa.io.visium_hd(path, bin_size=bin_size, load_segmentations_only=False)
            shape_key = next(k for k in sdata.shapes if k.endswith("_cell_segmentations"))
            instance = "spaceranger_cell_id"
        elif input_type == "visium_hd":
            sdata = sopa.io.visium_hd(path, bin_size=bin_size, load_segmentations_only=False)
            shape_key = next(k for k in sdata.shapes if k.endswith(f"square_{bin_size:03d}um"))
            instance = "location_id"
        elif input_type == "xenium" and cells is not None:  # re-segmented (ProSeg): polygons in µm
            sdata = sopa.io.xenium(path, cells_table=False, cells_boundaries=False)
            shape_key, instance = "spatialmap_cells", "segmentation_cell_id"
            sdata.shapes[shape_key] = _parsed_cells(cells, Path(path).name, sdata.points["transcripts"])
        elif input_type == "xenium":
            sdata = sopa.io.xenium(path, cells_table=True, cells_boundaries=True)
            shape_key, instance = "cell_boundaries", "cell_id"
        elif input_type == "zarr":
            sdata = spatialdata.read_zarr(path)
            source = sdata.tables[table] if table in sdata.tables else next(iter(sdata.tables.values()))
            attrs = source.uns.get("spatialdata_attrs", {})
            region = attrs.get("region")
            shape_key = region[0] if isinstance(region, list) else region
            instance = attrs.get("instance_key")
        else:
            raise ValueError(f"no SpatialData output for input type {input_type}")
    images = dict(sdata.images)
    shapes = {shape_key: sdata.shapes[shape_key]} if shape_key in sdata.shapes else {}
    points = dict(sdata.points) if input_type in ("xenium", "zarr") else {}
    return Elements(images, shapes, points, shape_key, instance)


def build_table(adata: ad.AnnData, shape_key: str, instance: str) -> ad.AnnData:
    """The table linked to the shapes (``region`` / instance key), counts kept sparse."""
    from spatialdata.models import TableModel

    table = adata.copy()
    if instance not in table.obs:
        raise InputError(f"the mapped table has no '{instance}' column to link it to the {shape_key} shapes")
    # AnnData cannot write a DataFrame of object columns; MT counts stay a plain table
    table.obs["region"] = pd.Categorical([shape_key] * table.n_obs)
    table.uns.pop(keys.UNS_SPATIAL, None)  # images live in the SpatialData images
    return TableModel.parse(table, region=shape_key, region_key="region", instance_key=instance)


def write_store(path: str | Path, images: dict, shapes: dict, table: ad.AnnData, points: dict | None = None) -> Path:
    """Write a new SpatialData zarr store; an existing ``path`` is refused (never overwritten).

    The store is written to ``<path>.tmp`` beside it and renamed to ``path`` only once
    complete; on any failure the temporary store is removed, so nothing half-written is
    left under either name. A ``<path>.tmp`` left by a killed earlier attempt is replaced.
    Points are written from their dask partitions (bounded memory).
    """
    import spatialdata

    path = Path(path)
    sdata = spatialdata.SpatialData(images=images, shapes=shapes, points=points or {}, tables={"table": table})
    return write_new_store(sdata, path, f"{path} exists; the pipeline writes a new store and never modifies one")


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def plot_predicted(adata: ad.AnnData, out_png: str | Path, seed: int = 0, title: str | None = None) -> Path:
    """Map of the predicted type (and, for cells, its probability) per unit over the tissue."""
    from spatialmap.report import plotting

    if PREDICTED_TYPE not in adata.obs:
        raise ValueError("no predicted cell type to plot")
    view = adata
    if adata.n_obs > MAX_PLOTTED:
        pick = np.sort(np.random.default_rng(seed).choice(adata.n_obs, MAX_PLOTTED, replace=False))
        view = adata[pick]
    values = pd.DataFrame({"predicted cell type": view.obs[PREDICTED_TYPE]}, index=view.obs_names)
    values["probability of that type"] = view.obs[PREDICTED_PROBABILITY].to_numpy()
    return plotting.plot_spatial_values(view, values, out_png, title=title, ncols=2, vmax_quantile=None)
