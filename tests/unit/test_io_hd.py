"""Reading Visium HD bins, Xenium cells and SpatialData stores with the libraries' readers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sopa")

from spatialmap import keys  # noqa: E402
from spatialmap.cli import InputError  # noqa: E402
from spatialmap.io import sdata as io_hd
from spatialmap.qc import slide as qc

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "test_data_hd"


@pytest.fixture(scope="module")
def hd():
    return io_hd.read_visium_hd(ASSETS / "hd1" / "outs", "hd1", 8)


@pytest.fixture(scope="module")
def xenium():
    return io_hd.read_xenium(ASSETS / "xenium1", "xenium1")


def test_hd_bins_keep_counts_sparse_and_positions(hd):
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = sc.read_10x_h5(ASSETS / "hd1/outs/binned_outputs/square_008um/filtered_feature_bc_matrix.h5")
    positions = pd.read_parquet(ASSETS / "hd1/outs/binned_outputs/square_008um/spatial/tissue_positions.parquet")
    positions = positions.set_index("barcode").loc[hd.obs_names]
    assert hd.X.format == "csr" and hd.X.dtype == np.float32
    assert hd.n_obs == raw.n_obs and float(hd.X.sum()) == float(raw.X.sum())
    assert np.allclose(hd.obsm[keys.SPATIAL], positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy())
    library = hd.uns[keys.UNS_SPATIAL]["hd1"]
    assert library["scalefactors"]["spot_diameter_fullres"] == 16.0  # 8 µm at 0.5 µm per pixel
    assert "lowres" in library["images"]
    assert hd.uns[keys.UNS_PLATFORM] == {"platform": "visium_hd", "unit": "bin", "bin_size_um": 8}


def test_hd_16um_bins(hd):
    big = io_hd.read_visium_hd(ASSETS / "hd1" / "outs", "hd1", 16)
    assert big.n_obs < hd.n_obs and float(big.X.sum()) == float(hd.X.sum())


def test_hd_cells_from_space_ranger_boundaries_and_sopa_aggregate():
    import scanpy as sc

    cells = io_hd.read_visium_hd_cells(ASSETS / "hd1" / "outs", "hd1")
    truth = pd.read_csv(ASSETS / "truth" / "hd1_cells.csv").set_index("spaceranger_cell_id")
    assert cells.n_obs == len(truth) and set(cells.obs_names) == set(truth.index)
    truth = truth.loc[cells.obs_names]
    # every true cell centre is the centre of its cell; bins per cell as generated
    assert np.allclose(cells.obsm[keys.SPATIAL], truth[["x_px", "y_px"]].to_numpy(), atol=0.5)
    assert (cells.obs["bins_002um"].to_numpy() == truth["bins_002um"].to_numpy()).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranger = sc.read_10x_h5(ASSETS / "hd1/outs/segmented_outputs/filtered_feature_cell_matrix.h5")
    assert abs(ranger[cells.obs_names].X - cells.X).sum() == 0  # sopa.aggregate == Space Ranger's cell matrix
    info = cells.uns[keys.UNS_PLATFORM]
    assert info["unit"] == "cell" and info["segmentation"] == "spaceranger" and info["cells_found"] == len(truth)
    assert info["median_bins_per_cell"] == float(np.median(truth["bins_002um"]))
    assert 80 < info["pct_transcripts_in_cells"] < 100


def test_hd_cells_without_segmentation_is_refused(tmp_path):
    import shutil

    shutil.copytree(ASSETS / "hd1", tmp_path / "hd1")
    shutil.rmtree(tmp_path / "hd1/outs/segmented_outputs")
    with pytest.raises(InputError, match="sample s: --hd_mode cells needs Space Ranger 4's cell segmentation"):
        io_hd.read_visium_hd_cells(tmp_path / "hd1/outs", "s")


def test_xenium_cells_centroids_in_morphology_pixels_and_segmentation_qc(xenium):
    cells = pd.read_csv(ASSETS / "truth" / "xenium1_cells.csv").set_index("cell_id").loc[xenium.obs_names]
    assert np.allclose(xenium.obsm[keys.SPATIAL], cells[["x_px", "y_px"]].to_numpy(), atol=1e-2)
    info = xenium.uns[keys.UNS_PLATFORM]
    assert info["unit"] == "cell" and info["cells_found"] == len(cells)
    area = np.pi * cells["radius_um"] ** 2
    assert info["median_cell_area_um2"] == pytest.approx(float(np.median(area)), rel=1e-3)
    tx = pd.read_parquet(ASSETS / "xenium1" / "transcripts.parquet")
    tx = tx[tx["qv"] >= 20]
    assert info["pct_transcripts_in_cells"] == pytest.approx(100 * (tx["cell_id"] != "UNASSIGNED").mean(), abs=1e-3)
    assert "NegControlProbe_00001" not in xenium.var_names


def test_platform_fields_of_the_qc_json(hd, xenium):
    for adata, unit in ((hd, "bins"), (xenium, "cells")):
        before = qc.compute_qc(adata)
        after = before[before.obs[keys.TOTAL_COUNTS] >= 50].copy()
        summary = io_hd.platform_summary(before, after)
        assert summary[f"{unit}_kept"] == after.n_obs
        assert summary["median_transcripts"] == float(np.median(before.obs[keys.TOTAL_COUNTS]))


def test_spatialdata_store_is_read_and_left_unchanged(tmp_path):
    import sopa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = sopa.io.xenium(ASSETS / "xenium1", cells_table=True, cells_boundaries=True)
        store = tmp_path / "x.zarr"
        sdata.write(store)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    adata = io_hd.read_spatialdata_zarr(store, "z1")
    assert adata.n_obs == sdata.tables["table"].n_obs
    assert adata.uns[keys.UNS_PLATFORM]["unit"] == "cell"
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_unreadable_input_names_the_sample(tmp_path):
    with pytest.raises(InputError, match="sample bad: Visium HD folder"):
        io_hd.read_visium_hd(tmp_path, "bad", 8)
    with pytest.raises(InputError, match="sample bad: sopa.io.xenium cannot read"):
        io_hd.read_xenium(tmp_path, "bad")


def test_qc_maps_of_a_huge_slide_draw_a_sample(hd, tmp_path, monkeypatch):
    from spatialmap.report import plotting

    drawn = {}
    monkeypatch.setattr(qc, "MAX_PLOTTED_SPOTS", 100)
    monkeypatch.setattr(
        plotting, "plot_spatial_values", lambda view, values, *a, **k: drawn.update(n=view.n_obs, v=len(values))
    )
    qc.plot_qc_maps(qc.compute_qc(hd), tmp_path / "maps.png")
    assert drawn == {"n": 100, "v": 100}
