"""The synthetic test-data generator: determinism, Space Ranger layout, MT share, truth."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse
from scipy.optimize import nnls

from testdata import synth

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets" / "test_data"
SLIDES = ["slide1", "slide2", "slide3"]
POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


def read_10x(path: Path) -> ad.AnnData:
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc.read_10x_h5(path)


def read_positions(outs: Path) -> pd.DataFrame:
    two = outs / "spatial" / "tissue_positions.csv"
    if two.exists():
        return pd.read_csv(two)
    return pd.read_csv(outs / "spatial" / "tissue_positions_list.csv", header=None, names=POSITION_COLUMNS)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """The default data set (seed 0), written once for the module; tests must not modify it."""
    return synth.generate(tmp_path_factory.mktemp("synth") / "data")


@pytest.fixture(scope="module")
def reference(data) -> ad.AnnData:
    return ad.read_h5ad(data["reference"])


def test_same_seed_gives_identical_arrays():
    sig_a, ref_a, slides_a = synth.simulate(seed=3, n_slides=2, grid=8, n_genes=80, n_cell_types=4, cells_per_type=6)
    sig_b, ref_b, slides_b = synth.simulate(seed=3, n_slides=2, grid=8, n_genes=80, n_cell_types=4, cells_per_type=6)
    pd.testing.assert_frame_equal(sig_a, sig_b)
    assert (ref_a.X != ref_b.X).nnz == 0
    pd.testing.assert_frame_equal(ref_a.obs, ref_b.obs)
    for a, b in zip(slides_a, slides_b):
        assert (a.counts != b.counts).nnz == 0
        pd.testing.assert_frame_equal(a.abundance, b.abundance)
        pd.testing.assert_frame_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.images["lowres"], b.images["lowres"])


def test_other_seed_gives_other_data():
    _, _, (a,) = synth.simulate(seed=0, n_slides=1, grid=8, n_genes=80, n_cell_types=4, cells_per_type=6)
    _, _, (b,) = synth.simulate(seed=1, n_slides=1, grid=8, n_genes=80, n_cell_types=4, cells_per_type=6)
    assert not np.allclose(a.abundance.to_numpy().sum(), b.abundance.to_numpy().sum())


def test_adding_slides_keeps_the_earlier_ones():
    _, _, two = synth.simulate(seed=0, n_slides=2, grid=8, n_genes=80, n_cell_types=4, cells_per_type=6)
    _, _, four = synth.simulate(seed=0, n_slides=4, grid=8, n_genes=80, n_cell_types=4, cells_per_type=6)
    for a, b in zip(two, four):
        assert (a.counts != b.counts).nnz == 0


def test_written_files_reload_identically(data, tmp_path):
    again = synth.generate(tmp_path / "again")
    for name in SLIDES:
        first = read_10x(data["slides"][name]["matrix"])
        second = read_10x(again["slides"][name]["matrix"])
        assert list(first.obs_names) == list(second.obs_names)
        assert (first.X != second.X).nnz == 0
        for kind in ("abundance", "proportions"):
            assert data["truth"][name][kind].read_bytes() == again["truth"][name][kind].read_bytes()
        for image in ("lowres", "hires"):
            if image in data["slides"][name]:
                assert data["slides"][name][image].read_bytes() == again["slides"][name][image].read_bytes()
    assert data["signatures"].read_bytes() == again["signatures"].read_bytes()
    assert data["samplesheet"].read_bytes() == again["samplesheet"].read_bytes()


def test_smoke_layout_is_space_ranger_outs(data):
    root = data["outdir"]
    for name in SLIDES:
        outs = root / name / "outs"
        for rel in (
            "filtered_feature_bc_matrix.h5",
            "metrics_summary.csv",
            "spatial/scalefactors_json.json",
            "spatial/tissue_lowres_image.png",
        ):
            assert (outs / rel).is_file(), f"{name}: {rel} missing"
        assert (root / "truth" / f"{name}_abundance.csv").is_file()
        assert (root / "truth" / f"{name}_proportions.csv").is_file()
    for rel in ("reference.h5ad", "truth/signatures.csv", "samplesheet.csv", "README.md"):
        assert (root / rel).is_file()
    # slide1 and slide3: Space Ranger 2.x with a header and a hires image; slide2: 1.x, no hires
    for name in ("slide1", "slide3"):
        spatial = root / name / "outs" / "spatial"
        assert (spatial / "tissue_hires_image.png").is_file()
        assert not (spatial / "tissue_positions_list.csv").exists()
        assert (spatial / "tissue_positions.csv").read_text().splitlines()[0] == ",".join(POSITION_COLUMNS)
    spatial = root / "slide2" / "outs" / "spatial"
    assert not (spatial / "tissue_hires_image.png").exists()
    assert not (spatial / "tissue_positions.csv").exists()
    first = (spatial / "tissue_positions_list.csv").read_text().splitlines()[0]
    assert re.fullmatch(r"[ACGT]{16}-1,[01],\d+,\d+,\d+,\d+", first)


def test_h5_is_cell_ranger_v3_and_loads_with_scanpy(data):
    path = data["slides"]["slide1"]["matrix"]
    with h5py.File(path) as f:
        matrix = f["matrix"]
        n_genes, n_spots = matrix["shape"][:]
        assert matrix["indptr"].shape == (n_spots + 1,)  # CSC of genes x spots
        assert set(matrix["features"]["feature_type"][:]) == {b"Gene Expression"}
        assert list(matrix["features"]["_all_tag_keys"][:]) == [b"genome"]
        assert matrix["data"].dtype == np.int32
    adata = read_10x(path)
    assert adata.shape == (n_spots, n_genes) == (adata.n_obs, 400 + 13)
    assert list(adata.var_names[:2]) == ["GENE0001", "GENE0002"]
    assert list(adata.var_names[-13:]) == list(synth.MT_GENES)
    assert adata.var["gene_ids"].iloc[0] == "ENSG90000000001"
    assert adata.var["gene_ids"].is_unique
    assert list(adata.obs_names) == sorted(adata.obs_names)  # Space Ranger sorts its barcodes


def test_positions_hold_every_spot_and_the_matrix_the_tissue_spots(data):
    for name in SLIDES:
        positions = read_positions(data["slides"][name]["outs"])
        adata = read_10x(data["slides"][name]["matrix"])
        assert len(positions) == 18 * 18
        assert positions["barcode"].is_unique
        assert positions["barcode"].str.fullmatch(r"[ACGT]{16}-1").all()
        assert set(positions.loc[positions["in_tissue"] == 1, "barcode"]) == set(adata.obs_names)
        assert 0.7 <= positions["in_tissue"].mean() <= 0.8
        # Visium hexagonal grid: array_col = 2 * i + (array_row % 2), neighbours 100 px apart
        assert ((positions["array_col"] - positions["array_row"] % 2) % 2 == 0).all()
        assert positions["array_row"].max() == 17
        first_row = positions[positions["array_row"] == 0].sort_values("array_col")
        assert np.allclose(np.diff(first_row["pxl_col_in_fullres"]), synth.SPOT_SPACING_PX)


def test_same_array_position_has_the_same_barcode_on_every_slide(data):
    tables = [read_positions(data["slides"][n]["outs"]).set_index(["array_row", "array_col"]) for n in SLIDES]
    for table in tables[1:]:
        pd.testing.assert_series_equal(table["barcode"], tables[0]["barcode"])


def test_mt_share_and_depth_are_realistic(data):
    for name in SLIDES:
        adata = read_10x(data["slides"][name]["matrix"])
        counts = adata.X.toarray()
        total = counts.sum(axis=1)
        share = counts[:, adata.var_names.str.startswith("MT-")].sum(axis=1) / total
        assert 0.10 <= np.median(share) <= 0.25, name
        assert share.min() > 0.06 and share.max() < 0.32, name
        assert share.max() - share.min() > 0.08, f"{name}: MT share should vary across the slide"
        assert 5_000 <= np.median(total) <= 30_000, name


def test_reference_labels_batches_and_counts(reference):
    assert reference.n_obs == 8 * 120
    assert list(reference.obs["cell_type"].cat.categories) == list(synth.CELL_TYPE_NAMES[:8])
    assert (reference.obs["cell_type"].value_counts() == 120).all()
    assert reference.obs["batch"].value_counts().to_dict() == {"batch1": 480, "batch2": 480}
    assert reference.obs_names.is_unique
    assert sparse.isspmatrix_csr(reference.X) and reference.X.dtype == np.float32
    assert np.array_equal(reference.X.data, np.round(reference.X.data))
    total = np.asarray(reference.X.sum(axis=1)).ravel()
    assert 2_000 <= np.median(total) <= 5_000
    mt = np.asarray(reference.X[:, reference.var_names.str.startswith("MT-")].sum(axis=1)).ravel()
    assert 0.03 <= np.median(mt / total) <= 0.07


def test_reference_genes_match_the_slides(data, reference):
    adata = read_10x(data["slides"]["slide1"]["matrix"])
    assert list(reference.var_names) == list(adata.var_names)
    assert list(reference.var["gene_ids"]) == list(adata.var["gene_ids"])


def test_reference_cells_follow_their_signature(data, reference):
    signatures = pd.read_csv(data["signatures"], index_col=0)
    batch1 = reference[reference.obs["batch"] == "batch1", signatures.index]
    for cell_type in signatures.columns:
        cells = batch1[batch1.obs["cell_type"] == cell_type].X.toarray()
        mean = cells.mean(axis=0)
        r = np.corrcoef(np.log1p(mean), np.log1p(signatures[cell_type].to_numpy()))[0, 1]
        assert r > 0.9, cell_type


def test_truth_is_consistent(data, reference):
    signatures = pd.read_csv(data["signatures"], index_col=0)
    assert list(signatures.columns) == list(reference.obs["cell_type"].cat.categories)
    assert list(signatures.index) == [g for g in reference.var_names if not g.startswith("MT-")]
    assert ((signatures.sum() >= 2_000) & (signatures.sum() <= 5_000)).all()
    for name in SLIDES:
        adata = read_10x(data["slides"][name]["matrix"])
        abundance = pd.read_csv(data["truth"][name]["abundance"], index_col=0)
        proportions = pd.read_csv(data["truth"][name]["proportions"], index_col=0)
        assert list(abundance.index) == list(adata.obs_names) == list(proportions.index)
        assert list(abundance.columns) == list(signatures.columns)
        cells = abundance.sum(axis=1)
        assert cells.between(2.99, 15.01).all() and 6.5 <= cells.mean() <= 9.5
        assert cells.max() - cells.min() > 5, f"{name}: the number of cells should vary"
        np.testing.assert_allclose(proportions.sum(axis=1), 1.0, atol=1e-3)
        np.testing.assert_allclose(proportions, abundance.div(cells, axis=0), atol=1e-4)
        # every type is present somewhere and absent (< 5%) from a fair part of the slide
        assert (proportions.max() > 0.3).all(), name
        assert ((proportions < 0.05).mean() > 0.05).sum() >= 4, name


def test_problem_is_solvable_by_nnls(data):
    """Variance-weighted NNLS of spot counts on the true signatures recovers every type."""
    signatures = pd.read_csv(data["signatures"], index_col=0)
    s = signatures.to_numpy()
    weight = 1.0 / np.sqrt(s.mean(axis=1))
    for name in SLIDES:
        adata = read_10x(data["slides"][name]["matrix"])
        counts = adata[:, signatures.index].X.toarray()
        truth = pd.read_csv(data["truth"][name]["abundance"], index_col=0).to_numpy()
        estimate = np.array([nnls(s * weight[:, None], y * weight)[0] for y in counts])
        r = [np.corrcoef(estimate[:, k], truth[:, k])[0, 1] for k in range(s.shape[1])]
        assert min(r) > 0.8, f"{name}: {np.round(r, 2)}"
        # the scale is the detection efficiency (mean 0.5)
        assert 0.4 < estimate.sum() / truth.sum() < 0.65


def test_images_match_scale_factors_and_tissue(data):
    for name in SLIDES:
        outs = data["slides"][name]["outs"]
        factors = json.loads((outs / "spatial" / "scalefactors_json.json").read_text())
        assert set(factors) == {
            "spot_diameter_fullres",
            "fiducial_diameter_fullres",
            "tissue_hires_scalef",
            "tissue_lowres_scalef",
        }
        height, width = synth.fullres_size(18)
        positions = read_positions(outs)
        for kind in ("lowres", "hires"):
            path = outs / "spatial" / f"tissue_{kind}_image.png"
            if not path.exists():
                continue
            scale = factors[f"tissue_{kind}_scalef"]
            image = np.asarray(Image.open(path))
            assert image.shape == (round(height * scale), round(width * scale), 3)
            rows = np.floor(positions["pxl_row_in_fullres"] * scale).astype(int).clip(0, image.shape[0] - 1)
            cols = np.floor(positions["pxl_col_in_fullres"] * scale).astype(int).clip(0, image.shape[1] - 1)
            white = (image[rows, cols] > 240).all(axis=1)
            agreement = (white == (positions["in_tissue"] == 0)).mean()
            assert agreement > 0.95, f"{name} {kind}: tissue in the image matches {agreement:.0%} of spots"


def test_metrics_and_samplesheet(data):
    root = data["outdir"]
    sheet = pd.read_csv(data["samplesheet"])
    assert list(sheet.columns) == ["sample", "spaceranger_dir", "group"]
    assert list(sheet["sample"]) == SLIDES and (sheet["group"] == "all").all()
    for row in sheet.itertuples():
        assert not Path(row.spaceranger_dir).is_absolute()
        assert (root / row.spaceranger_dir / "filtered_feature_bc_matrix.h5").is_file()
        metrics = pd.read_csv(root / row.spaceranger_dir / "metrics_summary.csv")
        adata = read_10x(root / row.spaceranger_dir / "filtered_feature_bc_matrix.h5")
        assert len(metrics) == 1 and metrics.loc[0, "Sample ID"] == row.sample
        assert metrics.loc[0, "Number of Spots Under Tissue"] == adata.n_obs
        assert metrics.loc[0, "Median UMI Counts per Spot"] == np.median(np.asarray(adata.X.sum(axis=1)).ravel())


def test_foreign_files_survive_regeneration(tmp_path):
    foreign = tmp_path / "slide1" / "outs" / "notes.txt"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("keep me")
    synth.generate(tmp_path, n_slides=1, grid=6, n_genes=60, n_cell_types=3, cells_per_type=4)
    assert foreign.read_text() == "keep me"
    assert (tmp_path / "slide1" / "outs" / "filtered_feature_bc_matrix.h5").is_file()


@pytest.mark.parametrize(
    "option, message",
    [
        ({"grid": 2}, "grid must be at least 4"),
        ({"n_slides": 0}, "n_slides must be at least 1"),
        ({"n_cell_types": 1}, "n_cell_types must be at least 2"),
        ({"n_genes": 20}, "too few for 8 cell types"),
        ({"cells_per_type": 1}, "cells_per_type must be at least 2"),
    ],
)
def test_bad_parameters_are_refused(tmp_path, option, message):
    with pytest.raises(ValueError, match=message):
        synth.generate(tmp_path, **option)
    assert not any(tmp_path.iterdir())


def test_many_cell_types_get_generic_names():
    names = synth.cell_type_names(18)
    assert names[:2] == ["Tcell_CD4", "Tcell_CD8"] and names[-1] == "CellType18"
    assert len(set(names)) == 18


def test_script_reports_bad_input_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_test_data.py"), "--outdir", str(tmp_path), "--grid", "2"],
        capture_output=True,
        text=True,
        # this checkout's package, wherever the shared environment's editable install points (as tools/test.sh)
        env={**os.environ, "PYTHONPATH": str(REPO / "bin")},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "ERROR: grid must be at least 4 spots wide, got 2"


@pytest.mark.skipif(not (ASSETS / "samplesheet.csv").exists(), reason="assets/test_data not generated")
def test_committed_test_data_is_what_the_generator_makes(data):
    """assets/test_data must be regenerated (make_test_data.py --outdir assets/test_data) after a change."""
    for name in SLIDES:
        committed = read_10x(ASSETS / name / "outs" / "filtered_feature_bc_matrix.h5")
        fresh = read_10x(data["slides"][name]["matrix"])
        assert list(committed.obs_names) == list(fresh.obs_names)
        assert (committed.X != fresh.X).nnz == 0, f"{name}: regenerate assets/test_data"
    for rel in ("truth/signatures.csv", "truth/markers.yaml", "truth/slide1_abundance.csv", "samplesheet.csv"):
        assert (ASSETS / rel).read_bytes() == (data["outdir"] / rel).read_bytes(), rel
