"""Per-slide outputs of HD / Xenium slides: labels, composition, a new SpatialData store."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmap.io import outputs as so

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "test_data_hd"


def _props(values, index=None, columns=("A", "B", "C")):
    return pd.DataFrame(values, index=index or [f"u{i}" for i in range(len(values))], columns=list(columns))


def test_labels_are_the_argmax_with_its_probability_and_none_where_unfitted():
    props = _props([[0.2, 0.7, 0.1], [np.nan, np.nan, np.nan], [0.5, 0.1, 0.4]])
    labels = so.predict_labels(props)
    assert list(labels[so.PREDICTED_TYPE].astype(object)) == ["B", np.nan, "A"] or labels[
        so.PREDICTED_TYPE
    ].isna().tolist() == [False, True, False]
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
    from spatialmap.methods import registry

    assert (
        so.label_methods([])
        == registry.label_preference()
        == ["rctd", "cell2location", "tangram", "flashdeconv", "nnls", "celltypist"]
    )
    assert so.label_methods(["nnls", "rctd"]) == ["nnls", "rctd"]


def test_a_method_added_later_is_collected_and_labels_when_no_preferred_method_ran():
    """A sixth method ("foo", not in the registry's label preference) needs no edit: its proportions are found in
    its mapped h5ad, and it labels the units when it is the only method that ran."""
    slide = ad.AnnData(obs=pd.DataFrame(index=["u0", "u1", "u2"]))
    props = _props([[0.2, 0.7, 0.1], [0.9, 0.05, 0.05], [0.5, 0.1, 0.4]])
    foo, nnls = slide.copy(), slide.copy()
    foo.obsm["foo_proportions"] = props
    nnls.obsm["nnls_proportions"] = props.iloc[:, ::-1]
    nnls.obsm["consensus_proportions"] = props  # not a method
    assert so.methods_in(nnls) == ["nnls"] and so.methods_in(foo) == ["foo"]
    methods = so.label_methods([])
    results = so.collect_results(slide, [foo, nnls], methods)
    assert list(results) == ["foo", "nnls"]  # in the order of the mapped files
    _, label_method = so.annotate(slide, results, methods)
    assert label_method == "nnls"
    only = so.collect_results(slide, [foo], methods)
    annotated, label_method = so.annotate(slide, only, methods)
    assert label_method == "foo" and list(annotated.obs[so.PREDICTED_TYPE]) == ["B", "A", "A"]
    assert "foo_proportions" in annotated.obsm


def test_cell2location_abundance_is_normalised():
    adata = ad.AnnData(obs=pd.DataFrame(index=["a", "b"]))
    adata.obsm["c2l_abundance_q05"] = pd.DataFrame([[2.0, 6.0], [1.0, 1.0]], index=["a", "b"], columns=["X", "Y"])
    props = so.method_proportions(adata, "cell2location")
    assert props.loc["a", "Y"] == pytest.approx(0.75)


def _file_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_xenium_store_is_new_and_holds_images_shapes_and_results(tmp_path):
    pytest.importorskip("sopa")
    import spatialdata

    from spatialmap.io import sdata as io_hd
    from spatialmap.qc import slide as qc

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

    from spatialmap.io import sdata as io_hd
    from spatialmap.qc import slide as qc
    from spatialmap.segmentation import proseg

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
        back = spatialdata.read_zarr(
            so.write_store(tmp_path / "x.zarr", elements.images, elements.shapes, table, elements.points)
        )
    assert elements.shape_key == "spatialmap_cells" and "cell_boundaries" not in back.shapes
    shapes = back.shapes["spatialmap_cells"]
    assert list(shapes.index.astype(str)) == list(polygons) and "transcripts" in back.points
    # the same coordinate systems as the transcripts: the polygons hold their cells' transcripts (µm)
    assert np.allclose(shapes.geometry.area.to_numpy(), [p.area for p in polygons.values()])
    assert set(back.tables["table"].obs["segmentation_cell_id"]) == set(polygons)


# --------------------------------------------------------------------------------------------
# the methods' consensus and disagreement in the table (and so in the store)
# --------------------------------------------------------------------------------------------


def _consensus_files(tmp_path, sample, units, types=("A", "B", "C"), seed=0, left_out_of_one=1, left_out_of_all=1):
    """Two methods' proportions on ``units`` and their consensus, written by compare_methods.py as
    the pipeline writes it. The last ``left_out_of_all`` units no method fitted; the
    ``left_out_of_one`` before them only the first method fitted."""
    from spatialmap.consensus import rules as consensus
    from spatialmap.scripts import compare_methods

    rng = np.random.default_rng(seed)
    units = list(units)
    truth = pd.DataFrame(rng.dirichlet(np.ones(len(types)), len(units)), index=units, columns=list(types))
    noisy = truth * rng.uniform(0.5, 1.5, truth.shape)
    nnls = truth.iloc[: len(units) - left_out_of_all]
    flash = (noisy / noisy.sum(axis=1).to_numpy()[:, None]).iloc[: len(units) - left_out_of_all - left_out_of_one]
    result = consensus.slide_consensus({"nnls": nnls, "flashdeconv": flash}, sample, "mean")
    compare_methods.write_slide(tmp_path, sample, result, None)
    return tmp_path / f"{sample}.consensus_proportions.csv", tmp_path / f"{sample}.consensus_disagreement.csv", result


def _check_consensus_table(table, result, left_out_of_one=1, left_out_of_all=1):
    """obsm consensus rows sum to 1 where fitted, the disagreement is finite in [0, 1] where 2 methods
    fitted, and both are the values compare_methods.py wrote."""
    props = table.obsm[so.CONSENSUS_PROPORTIONS]
    assert list(props.columns) == list(result.proportions.columns)
    fitted = props.notna().all(axis=1).to_numpy()
    assert fitted.sum() == table.n_obs - left_out_of_all and not fitted[-left_out_of_all:].any()
    assert np.allclose(props[fitted].sum(axis=1), 1.0, atol=1e-4)
    assert np.allclose(props[fitted].to_numpy(), result.proportions.loc[props.index[fitted]].to_numpy(), atol=1e-5)
    score = table.obs[so.CONSENSUS_DISAGREEMENT].to_numpy(dtype=float)
    n = table.obs[so.CONSENSUS_N_METHODS].to_numpy()
    assert ((n == 2) == np.isfinite(score)).all()
    assert (n == 2).sum() == table.n_obs - left_out_of_all - left_out_of_one
    assert ((score[n == 2] >= 0) & (score[n == 2] <= 1)).all() and score[n == 2].max() > 0
    expected = result.disagreement["disagreement"].reindex(table.obs_names.astype(str)).to_numpy(dtype=float)
    assert np.allclose(score[n == 2], expected[n == 2], atol=1e-5)
    assert {f"{so.CONSENSUS_JSD_PREFIX}nnls", f"{so.CONSENSUS_JSD_PREFIX}flashdeconv"} <= set(table.obs)
    assert list(table.uns[so.UNS_CONSENSUS]["methods"]) == ["flashdeconv", "nnls"] or sorted(
        table.uns[so.UNS_CONSENSUS]["methods"]
    ) == ["flashdeconv", "nnls"]


def test_consensus_and_disagreement_go_into_the_table_and_composition(tmp_path):
    slide = ad.AnnData(obs=pd.DataFrame(index=[f"u{i}" for i in range(12)]))
    props_csv, scores_csv, result = _consensus_files(tmp_path, "s", slide.obs_names)
    consensus = so.read_consensus(props_csv, scores_csv, slide.obs_names, "s")
    annotated, _ = so.annotate(slide, {}, ["nnls"], consensus)
    _check_consensus_table(annotated, result)
    assert annotated.obs[so.CONSENSUS_N_METHODS].tolist()[-2:] == [1, 0]
    table = so.composition("s", {}, None, None, consensus.proportions)
    means = table[table.method == so.CONSENSUS].set_index("cell_type")["mean_proportion"]
    assert means.sum() == pytest.approx(1.0, abs=1e-4)
    assert means.to_dict() == pytest.approx(result.proportions.mean().to_dict(), abs=1e-5)


def test_consensus_of_another_slide_is_refused(tmp_path):
    units = pd.Index([f"u{i}" for i in range(6)])
    props_csv, scores_csv, _ = _consensus_files(tmp_path, "s", units)
    with pytest.raises(
        ValueError, match="sample t: the consensus proportions table names 5 units the slide does not have"
    ):
        so.read_consensus(props_csv, scores_csv, pd.Index([f"v{i}" for i in range(6)]), "t")
    bad = pd.read_csv(props_csv, index_col=0) * 2
    bad.to_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="sample s: the consensus proportions are not proportions"):
        so.read_consensus(tmp_path / "bad.csv", scores_csv, units, "s")


def _store_with_consensus(tmp_path, slide, input_type, path, table_name=None):
    """The slide through annotate + the store, with a real consensus of two methods; read back."""
    import spatialdata

    props_csv, scores_csv, result = _consensus_files(tmp_path, "s", slide.obs_names, types=("Bcell", "Tcell", "Fibro"))
    mapped = ad.AnnData(obs=pd.DataFrame(index=slide.obs_names))
    mapped.obsm["nnls_proportions"] = pd.read_csv(props_csv, index_col=0).reindex(slide.obs_names)
    results = so.collect_results(slide, [mapped], ["nnls"])
    consensus = so.read_consensus(props_csv, scores_csv, slide.obs_names, "s")
    annotated, _ = so.annotate(slide, results, ["nnls"], consensus)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elements = so.read_elements(input_type, path, 8, table=table_name)
        table = so.build_table(annotated, elements.shape_key, elements.instance)
        back = spatialdata.read_zarr(
            so.write_store(tmp_path / "out.zarr", elements.images, elements.shapes, table, elements.points)
        )
    return back, elements, result


def test_xenium_store_holds_the_consensus_and_disagreement(tmp_path):
    pytest.importorskip("sopa")
    from spatialmap.io import sdata as io_hd
    from spatialmap.qc import slide as qc

    slide = qc.compute_qc(io_hd.read_xenium(ASSETS / "xenium1", "xenium1"))
    back, _, result = _store_with_consensus(tmp_path, slide, "xenium", ASSETS / "xenium1")
    table = back.tables["table"]
    assert table.n_obs == slide.n_obs and list(table.obs_names) == list(slide.obs_names)
    _check_consensus_table(table, result)


def test_visium_hd_bins_store_holds_the_consensus_and_disagreement(tmp_path):
    pytest.importorskip("sopa")
    from spatialmap.io import sdata as io_hd
    from spatialmap.qc import slide as qc

    slide = qc.compute_qc(io_hd.read_visium_hd(ASSETS / "hd1" / "outs", "hd1", 8))
    back, elements, result = _store_with_consensus(tmp_path, slide, "visium_hd", ASSETS / "hd1" / "outs")
    table = back.tables["table"]
    assert table.n_obs == slide.n_obs and elements.shape_key in back.shapes
    _check_consensus_table(table, result)


def test_zarr_store_of_several_tables_keeps_the_shapes_of_the_table_read(tmp_path):
    """A SpatialData store of a Visium HD slide (tables of 2, 8, 16 µm bins and of cells): the output
    links the table to the shapes of the table the slide was read from (square_008um), not to those
    of the store's first table."""
    sopa = pytest.importorskip("sopa")
    from spatialmap import keys
    from spatialmap.io import sdata as io_hd
    from spatialmap.qc import slide as qc

    store = tmp_path / "hd1.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sopa.io.visium_hd(ASSETS / "hd1" / "outs").write(store)
    slide = qc.compute_qc(io_hd.read_spatialdata_zarr(store, "z", 8))
    table_name = slide.uns[keys.UNS_PLATFORM]["table"]
    assert table_name == "square_008um"
    back, elements, result = _store_with_consensus(tmp_path, slide, "zarr", store, table_name)
    assert elements.shape_key.endswith("_square_008um") and elements.instance == "location_id"
    table = back.tables["table"]
    assert table.uns["spatialdata_attrs"]["region"] == elements.shape_key
    assert len(back.shapes[elements.shape_key]) >= table.n_obs
    _check_consensus_table(table, result)


def test_visium_hd_bins_store_holds_the_domains(tmp_path):
    """Every level of the slide's domains table goes into the mapped table and the store's table."""
    pytest.importorskip("sopa")
    import spatialdata

    from spatialmap.io import sdata as io_hd
    from spatialmap.io.domains import read_domains
    from spatialmap.qc import slide as qc

    slide = qc.compute_qc(io_hd.read_visium_hd(ASSETS / "hd1" / "outs", "hd1", 8))
    rng = np.random.default_rng(0)
    level5 = rng.choice(["D1", "D2", "D3", "Unassigned"], slide.n_obs)
    pd.DataFrame({"location": slide.obs_names[::-1], "domain": level5[::-1], "domain_L5": level5[::-1]}).to_csv(
        tmp_path / "hd1.domains.csv", index=False
    )
    annotated, _ = so.annotate(slide, {}, ["nnls"])
    so.add_domains(annotated, read_domains(tmp_path / "hd1.domains.csv", "hd1", annotated.obs_names))
    assert (annotated.obs["domain"].astype(str).to_numpy() == level5).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elements = so.read_elements("visium_hd", ASSETS / "hd1" / "outs", 8)
        table = so.build_table(annotated, elements.shape_key, elements.instance)
        back = spatialdata.read_zarr(
            so.write_store(tmp_path / "out.zarr", elements.images, elements.shapes, table, elements.points)
        )
    stored = back.tables["table"].obs
    assert (stored["domain_L5"].astype(str).to_numpy() == level5).all() and "domain" in stored
