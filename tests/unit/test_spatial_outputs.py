"""Per-slide outputs of HD / Xenium slides: labels, composition, a new SpatialData store."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmap import spatial_outputs as so

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "test_data_hd"


def _props(values, index=None, columns=("A", "B", "C")):
    return pd.DataFrame(values, index=index or [f"u{i}" for i in range(len(values))], columns=list(columns))


def test_labels_are_the_argmax_with_its_probability_and_none_where_unfitted():
    props = _props([[0.2, 0.7, 0.1], [np.nan, np.nan, np.nan], [0.5, 0.1, 0.4]])
    labels = so.predict_labels(props)
    assert list(labels[so.PREDICTED_TYPE].astype(object)) == ["B", np.nan, "A"] or \
        labels[so.PREDICTED_TYPE].isna().tolist() == [False, True, False]
    assert labels.loc["u0", so.PREDICTED_TYPE] == "B" and labels.loc["u2", so.PREDICTED_TYPE] == "A"
    assert labels.loc["u0", so.PREDICTED_PROBABILITY] == pytest.approx(0.7)
    assert np.isnan(labels.loc["u1", so.PREDICTED_PROBABILITY])


def test_composition_counts_labels_of_the_label_method():
    props = _props([[0.2, 0.7, 0.1], [0.9, 0.05, 0.05], [0.5, 0.1, 0.4]])
    labels = so.predict_labels(props)
    table = so.composition("s", {"nnls": props, "tangram": props}, labels, "nnls")
    nnls = table[table.method == "nnls"].set_index("cell_type")
    assert nnls.loc["A", "units_labelled"] == 2 and nnls.loc["B", "units_labelled"] == 1
    assert nnls["mean_proportion"].sum() == pytest.approx(1.0)
    assert table[table.method == "tangram"]["units_labelled"].isna().all()


def test_auto_methods_label_with_the_preferred_method_that_ran():
    assert so.label_methods(["auto"]) == so.LABEL_PREFERENCE
    assert so.label_methods([]) == so.LABEL_PREFERENCE
    assert so.label_methods(["nnls", "rctd"]) == ["nnls", "rctd"]


def test_cell2location_abundance_is_normalised():
    adata = ad.AnnData(obs=pd.DataFrame(index=["a", "b"]))
    adata.obsm["c2l_abundance_q05"] = pd.DataFrame([[2.0, 6.0], [1.0, 1.0]], index=["a", "b"], columns=["X", "Y"])
    props = so.method_proportions(adata, "cell2location")
    assert props.loc["a", "Y"] == pytest.approx(0.75)


def _file_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_xenium_store_is_new_and_holds_images_shapes_and_results(tmp_path):
    pytest.importorskip("sopa")
    import spatialdata

    from spatialmap import io_hd, qc

    slide = qc.compute_qc(io_hd.read_xenium(ASSETS / "xenium1", "xenium1"))
    truth = pd.read_csv(ASSETS / "truth" / "xenium1_cells.csv", index_col="cell_id").loc[slide.obs_names]
    types = sorted(truth["cell_type"].unique())
    onehot = pd.DataFrame(0.05, index=slide.obs_names, columns=types)
    for cell, cell_type in truth["cell_type"].items():
        onehot.loc[cell, cell_type] = 0.65
    mapped = ad.AnnData(obs=pd.DataFrame(index=slide.obs_names))
    mapped.obsm["nnls_proportions"] = onehot
    before = _file_digest(ASSETS / "xenium1")
    results = so.collect_results(slide, [mapped], ["rctd", "nnls"])
    annotated, method = so.annotate(slide, results, ["rctd", "nnls"])
    assert method == "nnls"
    assert (annotated.obs[so.PREDICTED_TYPE].astype(str) == truth["cell_type"]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elements = so.read_elements("xenium", ASSETS / "xenium1", 8)
        table = so.build_table(annotated, elements.shape_key, elements.instance)
        store = so.write_store(tmp_path / "x.zarr", elements.images, elements.shapes, table, elements.points)
        back = spatialdata.read_zarr(store)
    assert "morphology_focus" in back.images and len(back.shapes["cell_boundaries"]) == slide.n_obs
    table = back.tables["table"]
    assert table.n_obs == slide.n_obs and "nnls_proportions" in table.obsm
    assert table.X.format == "csr"
    # the transcripts read by sopa.io.xenium: every row of transcripts.parquet, with its gene and cell
    assert "transcripts" in back.points
    points = back.points["transcripts"]
    assert hasattr(points, "npartitions"), "points must stay dask-backed"
    raw = pd.read_parquet(ASSETS / "xenium1" / "transcripts.parquet")
    assert len(points) == len(raw)
    assert {"x", "y", "feature_name", "cell_id"} <= set(points.columns)
    genes = points["feature_name"].astype(str).value_counts().compute().sort_index()
    assert genes.to_dict() == raw["feature_name"].astype(str).value_counts().sort_index().to_dict()
    assert not (tmp_path / "x.zarr.tmp").exists()
    assert _file_digest(ASSETS / "xenium1") == before, "the input bundle was modified"
    with pytest.raises(ValueError, match="never modifies"):
        so.write_store(store, elements.images, elements.shapes, table)


def test_visium_hd_bins_store_has_no_points(tmp_path):
    pytest.importorskip("sopa")
    elements = so.read_elements("visium_hd", ASSETS / "hd1" / "outs", 8)
    assert elements.points == {} and elements.shape_key.endswith("square_008um")
    assert elements.instance == "location_id"


def test_xenium_store_with_the_pipelines_cells_links_the_table_to_them(tmp_path):
    """A Xenium run re-segmented by the pipeline (ProSeg): the store holds those polygons (µm, the
    transcripts' coordinates) and the table names them through segmentation_cell_id."""
    pytest.importorskip("sopa")
    import geopandas as gpd
    import shapely
    import spatialdata

    from spatialmap import io_hd, qc
    from spatialmap import segmentation_proseg as proseg

    bounds = pd.read_parquet(ASSETS / "xenium1" / "cell_boundaries.parquet")
    polygons = {f"c{cid}": shapely.Polygon(g[["vertex_x", "vertex_y"]].to_numpy())
                for cid, g in bounds.groupby("cell_id", sort=False)}  # fmt: skip
    cells = tmp_path / "x.cells.parquet"
    proseg.write_cells(gpd.GeoDataFrame(geometry=list(polygons.values()), index=list(polygons)), cells)
    slide = qc.compute_qc(io_hd.read_xenium_cells(ASSETS / "xenium1", "xenium1", cells))
    assert list(slide.obs["segmentation_cell_id"]) == list(slide.obs_names) == list(polygons)
    mapped = ad.AnnData(obs=pd.DataFrame(index=slide.obs_names))
    mapped.obsm["nnls_proportions"] = _props(np.full((slide.n_obs, 3), 1 / 3), index=list(slide.obs_names))
    annotated, _ = so.annotate(slide, so.collect_results(slide, [mapped], ["nnls"]), ["nnls"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elements = so.read_elements("xenium", ASSETS / "xenium1", 8, cells=cells)
        table = so.build_table(annotated, elements.shape_key, elements.instance)
        back = spatialdata.read_zarr(so.write_store(tmp_path / "x.zarr", elements.images, elements.shapes, table,
                                                   elements.points))
    assert elements.shape_key == "spatialmap_cells" and "cell_boundaries" not in back.shapes
    shapes = back.shapes["spatialmap_cells"]
    assert list(shapes.index.astype(str)) == list(polygons) and "transcripts" in back.points
    # the same coordinate systems as the transcripts: the polygons hold their cells' transcripts (µm)
    assert np.allclose(shapes.geometry.area.to_numpy(), [p.area for p in polygons.values()])
    assert set(back.tables["table"].obs["segmentation_cell_id"]) == set(polygons)
