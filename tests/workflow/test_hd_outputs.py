"""Numbers a user checks after the test_hd run: Visium, Visium HD and Xenium slides in one report.

The HD slide and the Xenium region were generated with cells of known type and position
(assets/test_data_hd/truth), so the mapping is checked against that truth.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]

HD = REPO / "assets" / "test_data_hd"
SLIDES = ("hd1", "visium1", "xenium1")

# thresholds with the test_hd profile's settings (seeds fixed)
XENIUM_MIN_LABEL_ACCURACY = 0.8  # predicted type (argmax) == true type of the cell
HD_MIN_PEARSON = 0.8  # per type, proportions of 8 µm bins vs the true share of their counts


def _results(workflow_dir) -> Path:
    return Path(workflow_dir, "results")


def _in_tissue_bins(size: int) -> int:
    positions = pd.read_parquet(HD / f"hd1/outs/binned_outputs/square_{size:03d}um/spatial/tissue_positions.parquet")
    return int(positions["in_tissue"].sum())


@pytest.mark.workflow("test_hd profile")
def test_every_slide_in_the_report_with_its_units(workflow_dir):
    stats = pd.read_csv(
        _results(workflow_dir) / "multiqc/multiqc_data/multiqc_general_stats.txt", sep="\t", index_col=0
    )
    assert sorted(stats.index) == list(SLIDES)
    units = stats.filter(like="spots_in_tissue").iloc[:, 0]
    cells = pd.read_parquet(HD / "xenium1" / "cells.parquet")
    assert units["hd1"] == _in_tissue_bins(8)
    assert units["xenium1"] == len(cells)


@pytest.mark.workflow("test_hd profile")
def test_qc_json_platform_fields(workflow_dir):
    hd = json.loads((_results(workflow_dir) / "qc/hd1/hd1.qc.json").read_text())
    assert hd["platform"] == "visium_hd" and hd["unit"] == "bin" and hd["bin_size_um"] == 8
    assert hd["bins_kept"] == hd["spots_kept"] and hd["n_mt_genes_removed"] == 13
    xen = json.loads((_results(workflow_dir) / "qc/xenium1/xenium1.qc.json").read_text())
    truth = pd.read_csv(HD / "truth" / "xenium1_cells.csv")
    assert xen["cells_found"] == len(truth)
    assert xen["median_cell_area_um2"] == pytest.approx(float(np.median(np.pi * truth["radius_um"] ** 2)), rel=1e-3)
    assert 90 < xen["pct_transcripts_in_cells"] < 99
    visium = json.loads((_results(workflow_dir) / "qc/visium1/visium1.qc.json").read_text())
    assert visium["platform"] == "visium" and visium["unit"] == "spot"


@pytest.mark.workflow("test_hd profile")
def test_xenium_predicted_types_match_the_truth(workflow_dir):
    labels = pd.read_csv(_results(workflow_dir) / "spatial/xenium1/xenium1.cell_types.csv", index_col="unit")
    truth = pd.read_csv(HD / "truth" / "xenium1_cells.csv", index_col="cell_id").loc[labels.index]
    accuracy = float((labels["predicted_cell_type"] == truth["cell_type"]).mean())
    assert accuracy >= XENIUM_MIN_LABEL_ACCURACY, f"label accuracy {accuracy:.3f}"
    assert labels["predicted_probability"].between(0, 1).all()
    composition = pd.read_csv(_results(workflow_dir) / "spatial/xenium1/xenium1.composition.csv")
    labelled = composition.dropna(subset=["units_labelled"])
    assert labelled["units_labelled"].sum() == len(labels)


@pytest.mark.workflow("test_hd profile")
def test_hd_bin_proportions_match_the_truth(workflow_dir):
    import anndata as ad

    mapped = ad.read_h5ad(_results(workflow_dir) / "spatial/hd1/hd1.mapped.h5ad")
    method = mapped.uns["label_method"]
    props = mapped.obsm[f"{method}_proportions"].dropna()
    truth = pd.read_csv(HD / "truth" / "hd1_bins_008um_proportions.csv", index_col=0).loc[props.index]
    r = {c: np.corrcoef(props[c], truth[c])[0, 1] for c in props.columns}
    assert min(r.values()) >= HD_MIN_PEARSON, r
    assert mapped.n_obs == _in_tissue_bins(8)
    assert mapped.X.format == "csr"


@pytest.mark.workflow("test_hd profile")
@pytest.mark.parametrize("sample, shapes", [("hd1", "_square_008um"), ("xenium1", "cell_boundaries")])
def test_spatialdata_store_opens_with_images_shapes_and_results(workflow_dir, sample, shapes):
    import spatialdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = spatialdata.read_zarr(_results(workflow_dir) / f"spatial/{sample}/{sample}.spatialdata.zarr")
    assert len(sdata.images) >= 1
    table = sdata.tables["table"]
    assert shapes in sdata.shapes and table.uns["spatialdata_attrs"]["region"] == shapes
    assert "predicted_cell_type" in table.obs
    assert any(k.endswith("_proportions") for k in table.obsm)
    if sample == "xenium1":  # the transcripts read by sopa.io.xenium, every one of them, as points
        raw = pd.read_parquet(
            Path(__file__).resolve().parents[2] / "assets/test_data_hd/xenium1/transcripts.parquet",
            columns=["feature_name"],
        )
        assert "transcripts" in sdata.points and len(sdata.points["transcripts"]) == len(raw)
    else:  # Visium HD: the bins are the table, no transcripts
        assert not sdata.points


HD_CELLS_MIN_LABEL_ACCURACY = 0.8


@pytest.mark.workflow("test_hd cells mode")
def test_hd_cells_match_the_true_cells(workflow_dir):
    import anndata as ad

    mapped = ad.read_h5ad(_results(workflow_dir) / "spatial/hd1/hd1.mapped.h5ad")
    truth = pd.read_csv(HD / "truth" / "hd1_cells.csv")
    # cells found against the true cells: count, and the share of true cells whose centre is
    # within 1 µm (2 px) of a found cell's centroid
    assert mapped.n_obs == len(truth)
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(mapped.obsm["spatial"]).query(truth[["x_px", "y_px"]].to_numpy())
    matched = float((dist < 2.0).mean())
    assert matched >= 0.99 and len(set(idx[dist < 2.0])) == int((dist < 2.0).sum())
    found = mapped.obs.iloc[idx]
    assert (found["bins_002um"].to_numpy() == truth["bins_002um"].to_numpy()).mean() >= 0.99
    qc_json = json.loads((_results(workflow_dir) / "qc/hd1/hd1.qc.json").read_text())
    assert qc_json["cells_found"] == len(truth)
    assert qc_json["median_bins_per_cell"] == float(np.median(truth["bins_002um"]))


@pytest.mark.workflow("test_hd cells mode")
def test_hd_cell_labels_match_the_truth(workflow_dir):
    labels = pd.read_csv(_results(workflow_dir) / "spatial/hd1/hd1.cell_types.csv", index_col="unit")
    truth = pd.read_csv(HD / "truth" / "hd1_cells.csv", index_col="spaceranger_cell_id").loc[labels.index]
    accuracy = float((labels["predicted_cell_type"] == truth["cell_type"]).mean())
    assert accuracy >= HD_CELLS_MIN_LABEL_ACCURACY, f"label accuracy {accuracy:.3f}"
    stats = pd.read_csv(
        _results(workflow_dir) / "multiqc/multiqc_data/multiqc_general_stats.txt", sep="\t", index_col=0
    )
    assert sorted(stats.index) == list(SLIDES)


CELLTYPIST_MIN_LABEL_ACCURACY = 0.9  # set before measuring (issue 24); measured 1.000 on both slides


@pytest.mark.workflow("test_hd cells mode")
@pytest.mark.parametrize(
    ("sample", "truth_file", "index"),
    [("xenium1", "xenium1_cells.csv", "cell_id"), ("hd1", "hd1_cells.csv", "spaceranger_cell_id")],
)
def test_celltypist_labels_the_true_cells(workflow_dir, sample, truth_file, index):
    cells = pd.read_csv(_results(workflow_dir) / f"celltypist/{sample}/{sample}.celltypist_labels.csv", index_col=0)
    truth = pd.read_csv(HD / "truth" / truth_file, index_col=index)["cell_type"].reindex(cells.index)
    assert truth.notna().all() and (cells["status"] == "fitted").all()
    for column in ("predicted_label", "majority_voting"):
        accuracy = float((cells[column] == truth).mean())
        assert accuracy >= CELLTYPIST_MIN_LABEL_ACCURACY, f"{sample} {column}: {accuracy:.3f}"
    confident = ~cells["low_confidence"].astype(bool)
    assert (cells.loc[~confident, "label"] == "Unassigned").all()
    assert (cells.loc[confident, "label"] == truth[confident]).mean() >= CELLTYPIST_MIN_LABEL_ACCURACY


@pytest.mark.workflow("test_hd cells mode")
def test_celltypist_is_trained_once_and_refused_on_spots(workflow_dir):
    trace = next((_results(workflow_dir) / "pipeline_info").glob("execution_trace_*.txt"))
    names = pd.read_csv(trace, sep="\t")["name"]
    assert names.str.contains("TRAIN_CELLTYPIST").sum() == 1
    assert sorted(n.split("(")[1].rstrip(")") for n in names[names.str.contains(":CELLTYPIST ")]) == ["hd1", "xenium1"]
    plan = json.loads((_results(workflow_dir) / "qc/visium1/visium1.qc.json").read_text())["method_plan"]
    assert (
        plan["methods"] == ["flashdeconv", "nnls", "rctd"]
        and "CellTypist skipped: it labels single cells" in plan["selection"]
    )
    model = json.loads((_results(workflow_dir) / "celltypist/celltypist_model.json").read_text())
    assert model["cells"] == 960 and model["normalised_over_genes"] >= 390  # the genes of both slides


# StarDist (small model trained on the generator's nuclei) on the generated H&E, 4 patches
STARDIST_COUNT_TOLERANCE = 0.05  # cells found within 5% of the true cells
STARDIST_MATCH_UM = 1.5  # a true cell is matched when a found centroid lies within 1.5 µm (3 px) of its centre
STARDIST_MIN_MATCHED = 0.95  # share of true cells matched (one to one)
STARDIST_BINS_TOLERANCE = 2  # median |bins of the found cell - bins of the true cell| over matched cells
STARDIST_MIN_LABEL_ACCURACY = 0.75  # predicted type == true type over matched cells
MPP_HD = 0.5  # µm per full-resolution pixel of the generated HD slide


def _matched(found_xy: np.ndarray, true_xy: np.ndarray, max_px: float) -> np.ndarray:
    """Index of the found cell matched to each true cell (-1: none), one to one, nearest first."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(found_xy).query(true_xy, k=1)
    match = np.full(len(true_xy), -1)
    used: set[int] = set()
    for i in np.argsort(dist):
        if dist[i] <= max_px and idx[i] not in used:
            used.add(int(idx[i]))
            match[i] = idx[i]
    return match


@pytest.mark.workflow("test_hd stardist cells")
def test_stardist_cells_match_the_true_cells(workflow_dir):
    import anndata as ad

    res = _results(workflow_dir)
    mapped = ad.read_h5ad(res / "spatial/hd1/hd1.mapped.h5ad")
    truth = pd.read_csv(HD / "truth" / "hd1_cells.csv")
    qc_json = json.loads((res / "qc/hd1/hd1.qc.json").read_text())
    assert qc_json["segmentation"] == "stardist"
    assert abs(qc_json["cells_found"] - len(truth)) <= STARDIST_COUNT_TOLERANCE * len(truth)
    match = _matched(mapped.obsm["spatial"], truth[["x_px", "y_px"]].to_numpy(), STARDIST_MATCH_UM / MPP_HD)
    assert (match >= 0).mean() >= STARDIST_MIN_MATCHED, f"matched {(match >= 0).mean():.3f}"
    ok = match >= 0
    found_bins = mapped.obs["bins_002um"].to_numpy()[match[ok]]
    assert np.median(np.abs(found_bins - truth["bins_002um"].to_numpy()[ok])) <= STARDIST_BINS_TOLERANCE
    assert abs(qc_json["median_bins_per_cell"] - np.median(truth["bins_002um"])) <= STARDIST_BINS_TOLERANCE
    # cell area: the grown nuclei against the true cells
    true_area = float(np.median(np.pi * truth["radius_um"] ** 2))
    assert qc_json["median_cell_area_um2"] == pytest.approx(true_area, rel=0.25)
    # share of the 2 µm counts inside cells against the true cells' share (Space Ranger-like mapping)
    mapping = pd.read_parquet(HD / "hd1/outs/barcode_mappings.parquet")
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bins = sc.read_10x_h5(HD / "hd1/outs/binned_outputs/square_002um/filtered_feature_bc_matrix.h5")
    in_cell = mapping.set_index("square_002um").loc[bins.obs_names, "in_cell"].to_numpy()
    counts = np.asarray(bins.X.sum(axis=1)).ravel()
    true_pct = 100 * counts[in_cell].sum() / counts.sum()
    assert abs(qc_json["pct_transcripts_in_cells"] - true_pct) <= 5, (qc_json["pct_transcripts_in_cells"], true_pct)
    seg = json.loads((res / "segmentation/hd1/hd1.segmentation.json").read_text())
    assert seg["patches"] == 4 and seg["cells"] == qc_json["cells_found"] and seg["cells_in_patches"] > seg["cells"]


@pytest.mark.workflow("test_hd stardist cells")
def test_stardist_cell_labels_and_report(workflow_dir):
    import anndata as ad

    res = _results(workflow_dir)
    mapped = ad.read_h5ad(res / "spatial/hd1/hd1.mapped.h5ad")
    truth = pd.read_csv(HD / "truth" / "hd1_cells.csv")
    labels = pd.read_csv(res / "spatial/hd1/hd1.cell_types.csv", index_col="unit").loc[mapped.obs_names]
    match = _matched(mapped.obsm["spatial"], truth[["x_px", "y_px"]].to_numpy(), STARDIST_MATCH_UM / MPP_HD)
    ok = match >= 0
    predicted = labels["predicted_cell_type"].to_numpy()[match[ok]]
    accuracy = float((predicted == truth["cell_type"].to_numpy()[ok]).mean())
    assert accuracy >= STARDIST_MIN_LABEL_ACCURACY, f"label accuracy {accuracy:.3f}"
    stats = pd.read_csv(res / "multiqc/multiqc_data/multiqc_general_stats.txt", sep="\t", index_col=0)
    assert sorted(stats.index) == list(SLIDES)
    qc_json = json.loads((res / "qc/hd1/hd1.qc.json").read_text())
    for field in ("cells_found", "median_cell_area_um2", "pct_transcripts_in_cells"):
        column = stats.filter(like=field).iloc[:, 0]
        assert column["hd1"] == pytest.approx(qc_json[field], rel=1e-3), field
        assert not np.isnan(column["xenium1"])  # Xenium's own segmentation QC in the same columns


@pytest.mark.workflow("test_hd profile")
@pytest.mark.parametrize("sample", ["hd1", "xenium1"])
def test_spatialdata_store_holds_the_consensus_and_disagreement(workflow_dir, sample):
    """Two or more methods ran, so the new store's table holds their consensus (rows sum to 1) and
    the per-location disagreement (finite in [0, 1] where two or more methods fitted), the numbers
    of the consensus tables."""
    import spatialdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = spatialdata.read_zarr(_results(workflow_dir) / f"spatial/{sample}/{sample}.spatialdata.zarr").tables[
            "table"
        ]
    props = table.obsm["consensus_proportions"]
    n = table.obs["consensus_n_methods"].to_numpy()
    fitted = props.notna().all(axis=1).to_numpy()
    assert (fitted == (n > 0)).all() and fitted.mean() >= 0.95
    assert np.allclose(props[fitted].sum(axis=1), 1.0, atol=1e-4)
    score = table.obs["consensus_disagreement"].to_numpy(dtype=float)
    assert (np.isfinite(score) == (n >= 2)).all() and (n >= 2).mean() >= 0.9
    assert ((score[n >= 2] >= 0) & (score[n >= 2] <= 1)).all()
    scores = pd.read_csv(
        _results(workflow_dir) / f"consensus/{sample}/{sample}.consensus_disagreement.csv", index_col=0
    )
    scores.index = scores.index.astype(str)
    names = table.obs_names.astype(str)
    assert np.allclose(score[n >= 2], scores.loc[names[n >= 2], "disagreement"].to_numpy(), atol=1e-6)


# The same score as the perturbed-boundaries run (test_segmentation_truth.yml), on the true boundaries: the control
# that the metric passes a right segmentation (every true cell matched at IoU ≥ 0.5, no merge, no split).
@pytest.mark.workflow("test_hd cells mode")
def test_hd_cells_shapes_score_as_the_true_cells(workflow_dir):
    import spatialdata

    from testdata import synth_hd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = spatialdata.read_zarr(_results(workflow_dir) / "spatial/hd1/hd1.spatialdata.zarr")
    shapes = sdata.shapes[next(k for k in sdata.shapes if k.endswith("_cell_segmentations"))]
    score = synth_hd.score_segmentation(
        shapes, synth_hd.true_cell_polygons(pd.read_csv(HD / "truth" / "hd1_cells.csv"))
    )
    assert score["matched_fraction"] >= 0.99 and score["mean_iou"] >= 0.99, score["matched_fraction"]
    assert score["merges"] == score["splits"] == 0


# RCTD on Visium HD bins and Xenium cells, in the mode --rctd_mode auto gives them (doublet; full on
# the Visium slide), with the default filters (UMI_min 100, counts_MIN 10) and the small likelihood
# table of the test profiles (counts up to 100, sigma 1.0). Thresholds set before the first run, from
# what a correct fit reaches on these slides (distinct generated types, 400 genes):
RCTD_HD_MIN_PEARSON = 0.8  # per type over the fitted 8 µm bins: FlashDeconv's bar; doublet mode keeps at most
#                            two types (5% of the bins hold three) and the 100-300 UMI bins are noisy
RCTD_HD_MIN_SINGLE_TYPE_ACCURACY = 0.9  # fitted bins holding one true type: RCTD's main type is it
RCTD_XENIUM_MIN_LABEL_ACCURACY = 0.9  # single cells, ~97% of their transcripts their own: main type == true type
RCTD_XENIUM_MIN_FITTED = 0.9  # cells above UMI_min (8 of the 252 cells of the matrix have fewer than 100 UMIs)
RCTD_UMI_MIN = 100


def _rctd_outputs(workflow_dir, sample: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """RCTD's proportions (fitted locations), the locations it left out with the reason, its QC JSON."""
    out = _results(workflow_dir) / f"rctd/{sample}"
    props = pd.read_csv(out / f"{sample}.rctd_proportions.csv", index_col=0)
    props.index = props.index.astype(str)
    left_out = pd.read_csv(out / f"{sample}.rctd_filtered_spots.csv", index_col=0)
    left_out.index = left_out.index.astype(str)
    return props, left_out, json.loads((out / f"{sample}.rctd_qc.json").read_text())


def _check_rctd_left_out_exactly_the_low_umi_locations(workflow_dir, sample: str, props, left_out) -> None:
    """Every location either fitted or reported, and reported exactly when below RCTD's UMI_min."""
    import anndata as ad

    slide = ad.read_h5ad(_results(workflow_dir) / f"qc/{sample}/{sample}.qc.h5ad")
    totals = pd.Series(np.asarray(slide.X.sum(axis=1)).ravel(), index=slide.obs_names.astype(str))
    assert set(props.index).isdisjoint(left_out.index) and len(props) + len(left_out) == slide.n_obs
    assert set(left_out.index) == set(totals.index[totals < RCTD_UMI_MIN])
    assert set(left_out["reason"]) == {f"fewer than {RCTD_UMI_MIN} UMIs (RCTD UMI_min)"}
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-5)


def _check_rctd_hd_bins(workflow_dir) -> dict:
    """RCTD on the 8 µm bins against the true share of each bin's counts per type; returns the numbers."""
    props, left_out, qc_json = _rctd_outputs(workflow_dir, "hd1")
    assert qc_json["mode"] == "doublet" and qc_json["mode_reason"].startswith("auto: 8 µm bins")
    _check_rctd_left_out_exactly_the_low_umi_locations(workflow_dir, "hd1", props, left_out)
    truth = pd.read_csv(HD / "truth" / "hd1_bins_008um_proportions.csv", index_col=0).loc[props.index]
    truth = truth.drop(columns="cell_counts")[props.columns]
    r = {c: float(np.corrcoef(props[c], truth[c])[0, 1]) for c in props.columns}
    assert min(r.values()) >= RCTD_HD_MIN_PEARSON, r
    single = truth.max(axis=1) >= 0.999
    accuracy = float((props[single].idxmax(axis=1) == truth[single].idxmax(axis=1)).mean())
    assert single.sum() >= 100 and accuracy >= RCTD_HD_MIN_SINGLE_TYPE_ACCURACY, (int(single.sum()), accuracy)
    classes = qc_json["convergence"]["spot_class_counts"]
    assert sum(classes.values()) == len(props) and classes.get("singlet", 0) > 0
    return {"min_r": min(r.values()), "single_type_accuracy": accuracy, "fitted": len(props)}


def _check_rctd_xenium_cells(workflow_dir) -> dict:
    """RCTD on the Xenium cells against each cell's true type; returns the numbers."""
    props, left_out, qc_json = _rctd_outputs(workflow_dir, "xenium1")
    assert qc_json["mode"] == "doublet" and qc_json["mode_reason"].startswith("auto: cells")
    _check_rctd_left_out_exactly_the_low_umi_locations(workflow_dir, "xenium1", props, left_out)
    n_cells = len(props) + len(left_out)
    assert len(props) >= RCTD_XENIUM_MIN_FITTED * n_cells, (len(props), n_cells)
    truth = pd.read_csv(HD / "truth" / "xenium1_cells.csv", index_col="cell_id").loc[props.index]
    accuracy = float((props.idxmax(axis=1) == truth["cell_type"]).mean())
    assert accuracy >= RCTD_XENIUM_MIN_LABEL_ACCURACY, f"label accuracy {accuracy:.3f}"
    return {"label_accuracy": accuracy, "fitted": len(props), "cells": n_cells}


@pytest.mark.workflow("test_hd profile")
def test_rctd_hd_bins_match_the_truth(workflow_dir):
    _check_rctd_hd_bins(workflow_dir)


@pytest.mark.workflow("test_hd profile")
def test_rctd_xenium_cells_match_the_truth(workflow_dir):
    _check_rctd_xenium_cells(workflow_dir)


@pytest.mark.workflow("test_hd profile")
def test_rctd_visium_spots_in_full_mode(workflow_dir):
    props, left_out, qc_json = _rctd_outputs(workflow_dir, "visium1")
    assert qc_json["mode"] == "full" and qc_json["mode_reason"].startswith("auto: spots")
    assert len(props) == 243 and left_out.empty


# --methods auto on slides above --large_slide_locations (200 here, so that the 243-spot Visium
# slide, the 731 bins and the 252 Xenium cells are all above): RCTD, FlashDeconv and NNLS on each,
# RCTD's mode per platform, and RCTD as the method the labels come from.
AUTO_LARGE = 200


@pytest.mark.workflow("test_hd auto methods above the threshold")
def test_auto_picks_rctd_flashdeconv_nnls_on_every_platform(workflow_dir):
    res = _results(workflow_dir)
    table = pd.read_csv(res / "multiqc/multiqc_data/multiqc_spatialmap_method_selection.txt", sep="\t", index_col=0)
    assert sorted(table.index) == list(SLIDES)
    kept = {s: json.loads((res / f"qc/{s}/{s}.qc.json").read_text())["spots_kept"] for s in SLIDES}
    for sample in SLIDES:
        # CellTypist too on the Xenium cells (auto picks it on cells; it refuses spots and bins)
        methods = ["rctd", "flashdeconv", "nnls"] + (["celltypist"] if sample == "xenium1" else [])
        assert table.loc[sample, "methods"] == ", ".join(methods), table.loc[sample].to_dict()
        assert table.loc[sample, "locations"] == kept[sample] > AUTO_LARGE
        why = table.loc[sample, "why"]
        assert why.startswith(f"auto: {kept[sample]} locations > large_slide_locations {AUTO_LARGE}"), why
        for method in methods:
            record = json.loads((res / f"{method}/{sample}/{sample}.{method}_qc.json").read_text())
            assert record["selection"] == why
    assert not (res / "cell2location").exists() and not (res / "tangram").exists()
    modes = {s: json.loads((res / f"rctd/{s}/{s}.rctd_qc.json").read_text())["mode"] for s in SLIDES}
    assert modes == {"hd1": "doublet", "visium1": "full", "xenium1": "doublet"}


@pytest.mark.workflow("test_hd auto methods above the threshold")
def test_auto_rctd_matches_the_truth_and_labels_the_units(workflow_dir):
    import anndata as ad

    _check_rctd_hd_bins(workflow_dir)
    _check_rctd_xenium_cells(workflow_dir)
    # with --methods auto the labels and the mapped objects' main proportions are RCTD's
    for sample in ("hd1", "xenium1"):
        mapped = ad.read_h5ad(_results(workflow_dir) / f"spatial/{sample}/{sample}.mapped.h5ad")
        assert mapped.uns["label_method"] == "rctd"
    labels = pd.read_csv(_results(workflow_dir) / "spatial/xenium1/xenium1.cell_types.csv", index_col="unit")
    labels = labels.dropna(subset=["predicted_cell_type"])
    truth = pd.read_csv(HD / "truth" / "xenium1_cells.csv", index_col="cell_id").loc[labels.index]
    accuracy = float((labels["predicted_cell_type"] == truth["cell_type"]).mean())
    assert len(labels) >= RCTD_XENIUM_MIN_FITTED * len(pd.read_csv(HD / "truth" / "xenium1_cells.csv"))
    assert accuracy >= RCTD_XENIUM_MIN_LABEL_ACCURACY, f"label accuracy {accuracy:.3f}"


# --methods auto above --auto_rctd_max_locations (200 here, with --large_slide_locations 200, so that all three
# slides are above both): FlashDeconv and NNLS only, the reason in the selection table and each method's QC JSON,
# neither RCTD nor its likelihood table run, the consensus of the two, the labels from FlashDeconv, and the same
# accuracy against the truth as the test_hd profile (HD per-type r >= 0.8, Xenium labels >= 0.8).
AUTO_RCTD_MAX = 200


def _proportions_vs_hd_truth(props: pd.DataFrame) -> dict:
    props = props.dropna()
    props.index = props.index.astype(str)
    truth = pd.read_csv(HD / "truth" / "hd1_bins_008um_proportions.csv", index_col=0).loc[props.index]
    return {c: float(np.corrcoef(props[c], truth[c])[0, 1]) for c in props.columns}


@pytest.mark.workflow("test_hd auto methods above the RCTD limit")
def test_auto_above_the_rctd_limit_runs_flashdeconv_and_nnls_and_says_why(workflow_dir):
    res = _results(workflow_dir)
    table = pd.read_csv(res / "multiqc/multiqc_data/multiqc_spatialmap_method_selection.txt", sep="\t", index_col=0)
    assert sorted(table.index) == list(SLIDES)
    kept = {s: json.loads((res / f"qc/{s}/{s}.qc.json").read_text())["spots_kept"] for s in SLIDES}
    for sample in SLIDES:
        n = kept[sample]
        cells = sample == "xenium1"  # CellTypist too on the Xenium cells
        expected = "flashdeconv, nnls, celltypist" if cells else "flashdeconv, nnls"
        assert table.loc[sample, "methods"] == expected, table.loc[sample].to_dict()
        assert table.loc[sample, "locations"] == n > AUTO_RCTD_MAX
        why = table.loc[sample, "why"]
        listed = "FlashDeconv, NNLS, CellTypist" if cells else "FlashDeconv, NNLS"
        assert why.startswith(f"auto: {n} locations > large_slide_locations {AUTO_LARGE}: {listed}"), why
        assert f"RCTD only when asked: {n} locations > auto_rctd_max_locations {AUTO_RCTD_MAX}" in why, why
        assert "the cap set with --auto_rctd_max_locations; 0 lifts it" in why, why
        for method in ("flashdeconv", "nnls"):
            record = json.loads((res / f"{method}/{sample}/{sample}.{method}_qc.json").read_text())
            assert record["selection"] == why
    for method in ("rctd", "cell2location", "tangram"):
        assert not (res / method).exists(), method
    trace = pd.read_csv(sorted((res / "pipeline_info").glob("execution_trace_*.txt"))[-1], sep="\t")
    assert not trace["name"].str.contains("RCTD").any(), list(trace["name"])  # neither RCTD nor its likelihood table
    assert trace["name"].str.contains("FLASHDECONV").sum() == trace["name"].str.contains("NNLS").sum() == len(SLIDES)
    assert not (res / "pipeline_info" / "rctd_q_matrices.json").exists()


@pytest.mark.workflow("test_hd auto methods above the RCTD limit")
def test_auto_above_the_rctd_limit_matches_the_truth_with_a_consensus_of_two(workflow_dir):
    import anndata as ad

    res = _results(workflow_dir)
    for method in ("flashdeconv", "nnls"):
        props = pd.read_csv(res / f"{method}/hd1/hd1.{method}_proportions.csv", index_col=0)
        r = _proportions_vs_hd_truth(props)
        assert min(r.values()) >= HD_MIN_PEARSON, (method, r)
    # the consensus of the two methods: on every fitted bin, of 2 methods, rows summing to 1, as accurate
    consensus = pd.read_csv(res / "consensus/hd1/hd1.consensus_proportions.csv", index_col=0)
    fitted = consensus.dropna()
    assert len(fitted) >= 0.95 * len(consensus)
    np.testing.assert_allclose(fitted.sum(axis=1), 1.0, atol=1e-4)
    r = _proportions_vs_hd_truth(consensus)
    assert min(r.values()) >= HD_MIN_PEARSON, r
    for sample, methods in (("hd1", 2), ("xenium1", 3)):  # CellTypist too on the Xenium cells
        mapped = ad.read_h5ad(res / f"spatial/{sample}/{sample}.mapped.h5ad")
        assert mapped.uns["label_method"] == "flashdeconv"
        n = mapped.obs["consensus_n_methods"].to_numpy()
        assert n.max() == methods and (n == methods).mean() >= 0.95
    labels = pd.read_csv(res / "spatial/xenium1/xenium1.cell_types.csv", index_col="unit")
    truth = pd.read_csv(HD / "truth" / "xenium1_cells.csv", index_col="cell_id").loc[labels.index]
    accuracy = float((labels["predicted_cell_type"] == truth["cell_type"]).mean())
    assert accuracy >= XENIUM_MIN_LABEL_ACCURACY, f"label accuracy {accuracy:.3f}"


# Domains and region summaries (issue 24), on the cells-mode run: SpatialLeiden's domains at level 7
DOMAIN_LABEL_MIN_RIGHT = 0.75  # set before measuring: per slide, of the domains given a cell type
TRUE_REGIONS = {
    "visium1": (REPO / "assets" / "test_data" / "truth" / "slide1_regions.csv", None),
    "hd1": (HD / "truth" / "hd1_cells_regions.csv", HD / "truth" / "hd1_cells.csv"),
    "xenium1": (HD / "truth" / "xenium1_cells_regions.csv", None),
}


def _true_regions(sample: str) -> pd.DataFrame:
    path, ids = TRUE_REGIONS[sample]
    truth = pd.read_csv(path, index_col=0)
    if ids is not None:  # Visium HD cells: the truth's cell ids to Space Ranger's
        truth.index = pd.read_csv(ids, index_col="cell_id")["spaceranger_cell_id"].reindex(truth.index).to_numpy()
    truth.index = truth.index.astype(str)
    return truth


def named_right(annotation: Path, domains: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, list[bool]]:
    """The domains a table names (not Unknown), and for each whether its first type is the dominant type of
    the true region most of its locations are in."""
    named = pd.read_csv(annotation)
    named = named[named["label"] != "Unknown"]
    right = []
    for domain, label in zip(named["domain"], named["label"]):
        regions = truth.loc[domains.index[domains["domain"] == domain], "region"]
        dominant = truth.loc[truth["region"] == regions.value_counts().index[0], "dominant_types"].iloc[0]
        right.append(label.split("/")[0] == dominant)
    return named, right


@pytest.mark.workflow("test_hd cells mode")
@pytest.mark.parametrize("sample", SLIDES)
def test_domains_are_named_by_the_dominant_type_of_their_true_region(workflow_dir, sample):
    """Each domain the region summaries name by a cell type (elbow-gap of the consensus' per-domain
    ranking): its first type is the dominant type of the true region most of its locations are in."""
    results = _results(workflow_dir)
    domains = pd.read_csv(results / f"domains/{sample}.domains.csv", index_col="location", dtype={"location": str})
    truth = _true_regions(sample)
    assert domains.index.isin(truth.index).all()
    assert list(domains.columns) == ["domain"] + [f"domain_L{k}" for k in range(5, 16)]
    assert domains["domain"].nunique() == 7  # --domain_level 7: SpatialLeiden's clusters merged into 7
    named, right = named_right(results / f"regions/{sample}/{sample}.domain_annotation.csv", domains, truth)
    assert len(right) >= 3 and np.mean(right) >= DOMAIN_LABEL_MIN_RIGHT, named.assign(right=right)


MARKER_LABEL_MIN_RIGHT = 0.5  # set before measuring: per slide, of the domains the marker genes name


@pytest.mark.workflow("test_hd cells mode")
@pytest.mark.parametrize("sample", SLIDES)
def test_marker_genes_name_the_domains_by_their_true_region(workflow_dir, sample):
    """The marker sets derived from the reference, scored by Enrichmap: each domain they name (elbow-gap
    of its rising sets) is named by the dominant type of the true region most of its locations are in."""
    results = _results(workflow_dir)
    domains = pd.read_csv(results / f"domains/{sample}.domains.csv", index_col="location", dtype={"location": str})
    named, right = named_right(
        results / f"markers/{sample}.marker_domain_annotation.csv", domains, _true_regions(sample)
    )
    assert len(right) >= 3 and np.mean(right) >= MARKER_LABEL_MIN_RIGHT, named.assign(right=right)
    qc = json.loads((results / f"markers/{sample}.markers_qc.json").read_text())
    assert qc["source"] == "reference_markers.csv" and qc["types_scored"] >= 6


@pytest.mark.workflow("test_hd cells mode")
def test_region_composition_is_the_mean_of_each_method_over_the_domain(workflow_dir):
    """regions/<sample>.region_composition.csv: NNLS's mean per domain and type is the mean of its
    published proportions over the domain's locations (those it estimated)."""
    results = _results(workflow_dir)
    domains = pd.read_csv(results / "domains/xenium1.domains.csv", index_col="location", dtype={"location": str})
    nnls = pd.read_csv(results / "nnls/xenium1/xenium1.nnls_proportions.csv", index_col=0)
    nnls.index = nnls.index.astype(str)
    expected = nnls.join(domains["domain"]).groupby("domain").mean()
    table = pd.read_csv(results / "regions/xenium1/xenium1.region_composition.csv")
    got = table[table["method"] == "nnls"].pivot(index="domain", columns="cell_type", values="mean_proportion")
    np.testing.assert_allclose(got.loc[expected.index, expected.columns], expected, atol=1e-5)
    located = pd.read_csv(results / "regions/xenium1/xenium1.region_locations.csv")
    assert (
        len(located) == len(domains)
        and (
            located["ambiguous"]
            == (located["label"].isin(["ambiguous"]) | located["label"].str.contains("/", na=False))
        ).all()
    )
