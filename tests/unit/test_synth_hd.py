"""The Visium HD / Xenium generator: Space Ranger and Xenium layouts, exact bin sums, truth, readers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from testdata import synth_hd

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets" / "test_data_hd"
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


def read_10x(path: Path) -> ad.AnnData:
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc.read_10x_h5(path, gex_only=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("hd")
    paths = synth_hd.generate(out, seed=0)
    return out, paths


def bins(outs: Path, size: int) -> tuple[ad.AnnData, pd.DataFrame]:
    folder = outs / "binned_outputs" / f"square_{size:03d}um"
    return read_10x(folder / "filtered_feature_bc_matrix.h5"), pd.read_parquet(
        folder / "spatial" / "tissue_positions.parquet"
    )


def test_hd_layout_is_space_ranger(data):
    out, _ = data
    outs = out / "hd1" / "outs"
    for size in (2, 8, 16):
        adata, positions = bins(outs, size)
        assert list(positions.columns) == POSITION_COLUMNS
        assert set(adata.obs_names) == set(positions.loc[positions.in_tissue == 1, "barcode"])
        factors = json.loads(
            (outs / "binned_outputs" / f"square_{size:03d}um" / "spatial" / "scalefactors_json.json").read_text()
        )
        assert factors["bin_size_um"] == size
        assert np.isclose(factors["bin_size_um"] / factors["spot_diameter_fullres"], factors["microns_per_pixel"])
    import h5py

    with h5py.File(outs / "feature_slice.h5") as f:
        layout = json.loads(json.loads(f.attrs["metadata_json"])["hd_layout_json"])
    assert layout["file_format"] == "1.0"
    for name in ("tissue_image.tif", "spatial/tissue_hires_image.png", "spatial/tissue_lowres_image.png"):
        assert (outs / name).is_file()


def test_bins_sum_exactly_across_sizes(data):
    out, _ = data
    outs = out / "hd1" / "outs"
    small, small_pos = bins(outs, 2)
    small_pos = small_pos.set_index("barcode").loc[small.obs_names]
    for size in (8, 16):
        big, big_pos = bins(outs, size)
        big_pos = big_pos.set_index("barcode").loc[big.obs_names]
        factor = size // 2
        key_small = (small_pos.array_row // factor).astype(str) + "_" + (small_pos.array_col // factor).astype(str)
        key_big = big_pos.array_row.astype(str) + "_" + big_pos.array_col.astype(str)
        index = pd.Index(key_big.to_numpy())
        rows = index.get_indexer(key_small.to_numpy())
        assert (rows >= 0).all(), f"{size} µm: a 2 µm bin in tissue lies in no {size} µm bin"
        agg = sparse.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(big.n_obs, small.n_obs))
        assert abs(agg @ small.X - big.X).sum() == 0
        # the 8/16 µm bin centre is the centre of its 2 µm bins
        centre = (agg @ small_pos[["pxl_col_in_fullres"]].to_numpy()) / np.asarray(agg.sum(axis=1))
        full = np.asarray(agg.sum(axis=1)).ravel() == factor * factor
        assert np.allclose(centre[full, 0], big_pos.pxl_col_in_fullres.to_numpy()[full])


def test_genes_and_signatures_are_those_of_the_reference(data):
    out, _ = data
    reference = ad.read_h5ad(REPO / "assets" / "test_data" / "reference.h5ad", backed="r")
    small, _ = bins(out / "hd1" / "outs", 8)
    assert list(small.var_names) == list(reference.var_names)
    assert sum(g.startswith("MT-") for g in small.var_names) == 13
    xen = read_10x(out / "xenium1" / "cell_feature_matrix.h5")
    gex = xen.var["feature_types"] == "Gene Expression"
    assert set(xen.var_names[gex]) <= set(reference.var_names)
    assert (~gex).sum() == 3


def test_truth_matches_the_data(data):
    out, paths = data
    cells = pd.read_csv(paths["truth"]["xenium1_cells"])
    table = pd.read_parquet(out / "xenium1" / "cells.parquet")
    assert list(table["cell_id"]) == list(cells["cell_id"])
    assert np.allclose(table["x_centroid"], cells["x_um"], atol=1e-3)
    assert set(cells["cell_type"]) == set(synth_hd.synth.cell_type_names(8))
    hd_cells = pd.read_csv(paths["truth"]["hd1_cells"])
    assert 300 <= len(hd_cells) <= 350
    props = pd.read_csv(paths["truth"]["hd1_bins_008um"], index_col=0)
    small, _ = bins(out / "hd1" / "outs", 8)
    assert list(props.index) == list(small.obs_names)
    share = props.drop(columns="cell_counts")
    has = props["cell_counts"] > 0
    assert np.allclose(share[has].sum(axis=1), 1.0)
    # neighbouring cells mostly share a type, so many 8 µm bins are dominated by one type
    assert (share[has].max(axis=1) > 0.8).mean() > 0.4
    transcripts = pd.read_parquet(out / "xenium1" / "transcripts.parquet")
    assigned = (transcripts["cell_id"] != "UNASSIGNED").mean()
    assert 0.9 < assigned < 0.99


def test_readers_of_the_libraries_read_both(data):
    sopa = pytest.importorskip("sopa")
    out, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = sopa.io.visium_hd(out / "hd1" / "outs", dataset_id="", load_segmentations_only=False)
        xen = sopa.io.xenium(out / "xenium1", cells_table=True, cells_boundaries=True)
    small, _ = bins(out / "hd1" / "outs", 8)
    assert hd.tables["square_008um"].n_obs == small.n_obs
    assert any(k.endswith("_full_image") for k in hd.images)
    cells = pd.read_parquet(out / "xenium1" / "cells.parquet")
    assert xen.tables["table"].n_obs == len(cells)
    assert len(xen.shapes["cell_boundaries"]) == len(cells)
    assert "morphology_focus" in xen.images


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    signatures = synth_hd.synth.make_signatures(np.random.default_rng([0, 1]), 400, 8)
    a = synth_hd.simulate_hd(0, signatures)
    b = synth_hd.simulate_hd(0, signatures)
    c = synth_hd.simulate_hd(1, signatures)
    assert (a["bins"][8][0] != b["bins"][8][0]).nnz == 0
    assert not np.array_equal(a["cells"].x, c["cells"].x)


def test_committed_test_data_is_what_the_generator_makes(data):
    out, _ = data
    fresh = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    committed = {p.relative_to(ASSETS): p.read_bytes() for p in sorted(ASSETS.rglob("*")) if p.is_file()}
    assert sorted(fresh) == sorted(committed)
    changed = [str(name) for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"regenerate assets/test_data_hd: {changed}"


def test_space_ranger_4_segmentation_sums_the_2um_bins_of_each_cell(data):
    out, paths = data
    outs = out / "hd1" / "outs"
    cells = read_10x(outs / "segmented_outputs" / "filtered_feature_cell_matrix.h5")
    small, _ = bins(outs, 2)
    mapping = pd.read_parquet(outs / "barcode_mappings.parquet")
    assert list(mapping.columns) == ["square_002um", "square_008um", "square_016um", "cell_id", "in_nucleus", "in_cell"]
    assigned = mapping.dropna(subset=["cell_id"])
    rows = cells.obs_names.get_indexer(assigned["cell_id"])
    cols = small.obs_names.get_indexer(assigned["square_002um"])
    agg = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(cells.n_obs, small.n_obs))
    assert abs(agg @ small.X - cells.X).sum() == 0
    truth = pd.read_csv(paths["truth"]["hd1_cells"]).set_index("spaceranger_cell_id").loc[cells.obs_names]
    assert (np.asarray(agg.sum(axis=1)).ravel() == truth["bins_002um"].to_numpy()).all()
    geo = json.loads((outs / "segmented_outputs" / "cell_segmentations.geojson").read_text())
    assert len(geo["features"]) == cells.n_obs


def test_full_slide_generator_draws_bins_sparse_with_known_shares():
    signatures = synth_hd.synth.make_signatures(np.random.default_rng([0, 1]), 600, 8)
    counts, positions, truth = synth_hd.simulate_big_hd_bins(0, signatures, 40)
    assert sparse.issparse(counts) and counts.shape == (1600, 600)
    assert list(positions.columns) == POSITION_COLUMNS
    assert np.allclose(truth.sum(axis=1), 1.0)
    assert 100 < np.median(np.asarray(counts.sum(axis=1)).ravel()) < 220
    # a bin's counts follow the type mixture: its dominant type's markers are enriched
    dominant = truth.to_numpy().argmax(axis=1)
    profile = signatures.to_numpy() / signatures.to_numpy().sum(axis=0)
    x = counts.toarray()
    pick = dominant == 0
    assert np.corrcoef(x[pick].sum(axis=0), profile[:, 0])[0, 1] > 0.8


# --- wrong Space Ranger 4 boundaries on purpose, scored against the true cells -------------------------------------

# Thresholds fixed from the construction, before any measurement: 10% of the cells merged in pairs, 10% split
# (halves 1 µm apart), 10% shifted by 3 µm; every one of them must fall below IoU 0.5, every other cell keep its
# true polygon, so the perturbed boundaries match about 70% of the true cells where the true boundaries match all.
PERTURBED_MAX_MATCHED = 0.75
TRUE_MIN_MATCHED = 0.99
TRUE_MIN_MEAN_IOU = 0.99


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory):
    out = tmp_path_factory.mktemp("hd_perturbed")
    paths = synth_hd.generate_perturbed_hd(out, seed=0, perturb_seed=0)
    return out, paths


def _geojson_polygons(outs: Path) -> tuple[list, list[int]]:
    from shapely.geometry import shape

    geo = json.loads((outs / "segmented_outputs" / "cell_segmentations.geojson").read_text())
    return [shape(f["geometry"]) for f in geo["features"]], [f["properties"]["cell_id"] for f in geo["features"]]


def test_score_segmentation_counts_matches_merges_and_splits():
    import shapely

    true = [shapely.Point(0, 0).buffer(4), shapely.Point(10, 0).buffer(4), shapely.Point(30, 0).buffer(4),
            shapely.Point(50, 0).buffer(4)]  # fmt: skip
    merged = shapely.union(true[0], true[1]).convex_hull
    halves = [shapely.box(25, -5, 29.5, 5).intersection(true[2]), shapely.box(30.5, -5, 35, 5).intersection(true[2])]
    found = [merged, *halves, shapely.affinity.translate(true[3], 1.0)]
    score = synth_hd.score_segmentation(found, true)
    # the shifted-by-1 disk of radius 4 keeps IoU ~0.73: matched; the others are not
    assert list(score["match"]) == [-1, -1, -1, 3] and score["matched_fraction"] == 0.25
    assert score["merges"] == 1 and score["merged_true_cells"] == 2 and score["splits"] == 1 and score["missed"] == 0
    assert 0.7 < score["mean_iou"] < 0.76 and score["precision"] == 0.25
    assert synth_hd.score_segmentation(true, true)["mean_iou"] == pytest.approx(1.0)
    empty = synth_hd.score_segmentation([], true)
    assert empty["matched"] == 0 and empty["missed"] == 4 and empty["mean_best_iou"] == 0.0
    with pytest.raises(ValueError, match="no true cell"):
        synth_hd.score_segmentation(found, [])
    with pytest.raises(ValueError, match="iou_min must lie in"):
        synth_hd.score_segmentation(found, true, iou_min=0)


def test_perturbed_boundaries_score_clearly_worse_than_the_truth(data, perturbed):
    """The data's answer is not its input: the perturbed Space Ranger 4 boundaries miss the truth where recorded."""
    out, _ = perturbed
    truth = pd.read_csv(out / "truth" / "hd1_perturbed_cells.csv")
    true = synth_hd.true_cell_polygons(truth)
    original, _ = _geojson_polygons(data[0] / "hd1" / "outs")
    wrong, ids = _geojson_polygons(out / "hd1_perturbed" / "outs")
    good, bad = synth_hd.score_segmentation(original, true), synth_hd.score_segmentation(wrong, true)
    assert good["matched_fraction"] >= TRUE_MIN_MATCHED and good["mean_iou"] >= TRUE_MIN_MEAN_IOU, good
    assert good["merges"] == good["splits"] == 0
    assert bad["matched_fraction"] <= PERTURBED_MAX_MATCHED, bad
    kind = truth["perturbation"].to_numpy()
    counts = truth["perturbation"].value_counts()
    n = len(truth)
    assert counts["merged"] == 2 * round(0.1 * n / 2) and counts["split"] == counts["shifted"] == round(0.1 * n)
    # every perturbed cell is unmatched, every other cell matched by its own, unchanged polygon
    assert (bad["match"][kind != "none"] == -1).all() and (bad["best_iou"][kind != "none"] < 0.5).all()
    assert (bad["best_iou"][kind == "none"] > 0.99).all()
    assert bad["matched"] == counts["none"]
    # the merges and splits the score finds are those recorded
    assert bad["merges"] == counts["merged"] // 2 and bad["merged_true_cells"] == counts["merged"]
    assert bad["splits"] == counts["split"] and len(wrong) == n - counts["merged"] // 2 + counts["split"]
    # the truth names the polygons drawn for each cell, and merged cells name each other
    polygons = truth["spaceranger_cell_ids"].fillna("").str.split(";")
    assert (polygons[kind == "split"].str.len() == 2).all() and (polygons[kind != "split"].str.len() == 1).all()
    assert {p for ps in polygons for p in ps} == {f"cellid_{i:09d}-1" for i in ids}
    partners = truth.set_index("cell_id")["partner"]
    merged = truth[kind == "merged"]
    assert (partners.loc[merged["partner"]].to_numpy() == merged["cell_id"].to_numpy()).all()
    shift = np.hypot(truth["shift_x_um"], truth["shift_y_um"])
    assert np.allclose(shift[kind == "shifted"], 3.0, atol=1e-3) and (shift[kind != "shifted"] == 0).all()


def test_perturbed_slide_is_the_same_slide_with_other_boundaries(data, perturbed):
    """Bins, images and true cells as hd1; Space Ranger 4's cell matrix sums the perturbed cells' 2 µm bins."""
    out, paths = perturbed
    outs, original = out / "hd1_perturbed" / "outs", data[0] / "hd1" / "outs"
    assert (outs / "tissue_image.tif").read_bytes() == (original / "tissue_image.tif").read_bytes()
    ours, theirs = bins(outs, 2)[0], bins(original, 2)[0]  # the h5 files differ only in the sample name
    assert list(ours.obs_names) == list(theirs.obs_names) and abs(ours.X - theirs.X).sum() == 0
    truth = pd.read_csv(paths["truth"])
    hd1 = pd.read_csv(data[1]["truth"]["hd1_cells"])
    assert truth[["cell_id", "x_um", "y_um", "radius_um", "bins_002um"]].equals(
        hd1[["cell_id", "x_um", "y_um", "radius_um", "bins_002um"]]
    )
    cells = read_10x(outs / "segmented_outputs" / "filtered_feature_cell_matrix.h5")
    small, _ = bins(outs, 2)
    mapping = pd.read_parquet(outs / "barcode_mappings.parquet").dropna(subset=["cell_id"])
    rows, cols = cells.obs_names.get_indexer(mapping["cell_id"]), small.obs_names.get_indexer(mapping["square_002um"])
    assert (rows >= 0).all() and (cols >= 0).all()
    agg = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(cells.n_obs, small.n_obs))
    assert abs(agg @ small.X - cells.X).sum() == 0
    assert pd.read_csv(paths["samplesheet"]).to_dict("records") == [
        {"sample": "hd1_perturbed", "spaceranger_dir": "hd1_perturbed/outs"}
    ]


def test_perturbations_are_seeded_and_checked():
    signatures = synth_hd.synth.make_signatures(np.random.default_rng([0, 1]), 400, 8)
    hd = synth_hd.simulate_hd(0, signatures)
    a, ta = synth_hd.perturb_segmentation(hd, 0)
    b, tb = synth_hd.perturb_segmentation(hd, 0)
    c, tc = synth_hd.perturb_segmentation(hd, 1)
    assert ta.equals(tb) and all(p.equals(q) for p, q in zip(a["polygons"], b["polygons"]))
    assert not ta["perturbation"].equals(tc["perturbation"])
    none, table = synth_hd.perturb_segmentation(hd, 0, 0.0, 0.0, 0.0)
    assert (table["perturbation"] == "none").all()
    assert np.array_equal(none["bin_cell"], synth_hd.hd_segmentation(hd)["bin_cell"])
    with pytest.raises(ValueError, match="add up to more than 1"):
        synth_hd.perturb_segmentation(hd, 0, 0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="shift_um must be non-negative"):
        synth_hd.perturb_segmentation(hd, 0, shift_um=-1)
