"""Reading slides: Space Ranger folders in all their layouts, h5ad slides, raw-count checks."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from conftest import EXTRA_BARCODES, HIRES_SCALEF, LOWRES_SCALEF, MATRIX_BARCODES, OFF_TISSUE_IN_MATRIX
from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.io import visium as io

IN_TISSUE = [b for b in MATRIX_BARCODES if b != OFF_TISSUE_IN_MATRIX]


def _tree(path):
    return sorted((p.relative_to(path), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.mark.parametrize("positions, label", [("1.x", "1.x csv"), ("2.x", "2.x csv"), ("parquet", "parquet")])
def test_positions_formats_give_the_same_slide(make_outs, positions_table, positions, label):
    adata = io.read_spaceranger(make_outs(positions=positions), "S1")
    assert list(adata.obs_names) == IN_TISSUE
    expected = positions_table.loc[IN_TISSUE]
    # obsm['spatial'] is (x, y) = (pxl_col, pxl_row), as scanpy stores it
    np.testing.assert_array_equal(
        adata.obsm[keys.SPATIAL], expected[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    )
    assert adata.obsm[keys.SPATIAL].dtype == np.float64
    for col in (keys.IN_TISSUE, keys.ARRAY_ROW, keys.ARRAY_COL):
        np.testing.assert_array_equal(adata.obs[col].to_numpy(), expected[col].to_numpy())
    assert (adata.obs[keys.SAMPLE] == "S1").all()
    assert adata.uns[keys.UNS_SPATIAL]["S1"]["metadata"]["positions_format"] == label


def test_off_tissue_and_unmatched_spots_are_dropped(make_outs):
    adata = io.read_spaceranger(make_outs(), "S1")
    assert OFF_TISSUE_IN_MATRIX not in adata.obs_names  # in the matrix, but off tissue
    assert not set(EXTRA_BARCODES) & set(adata.obs_names)  # in the positions only
    assert (adata.obs[keys.IN_TISSUE] == 1).all()


def test_counts_are_raw_and_gene_expression_only(make_outs, counts_table):
    adata = io.read_spaceranger(make_outs(), "S1")
    assert sparse.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    # the antibody feature is dropped; the repeated symbol GeneA is made unique
    assert list(adata.var_names) == ["GeneA", "GeneB", "MTOR", "MT-CO1", "MT-ND1", "GeneA-1", "GeneC"]
    assert list(adata.var[keys.GENE_IDS]) == [f"ENSG0{i}" for i in range(1, 8)]
    assert set(adata.var["feature_types"]) == {"Gene Expression"}
    expected = counts_table.loc[IN_TISSUE].iloc[:, :7].to_numpy()
    np.testing.assert_array_equal(adata.X.toarray(), expected)


def test_mtx_folder_reads_like_the_h5(make_outs):
    from_h5 = io.read_spaceranger(make_outs(matrix="h5"), "S1")
    from_mtx = io.read_spaceranger(make_outs(matrix="mtx"), "S1")
    assert list(from_mtx.var_names) == list(from_h5.var_names)
    assert list(from_mtx.obs_names) == list(from_h5.obs_names)
    np.testing.assert_array_equal(from_mtx.X.toarray(), from_h5.X.toarray())
    np.testing.assert_array_equal(from_mtx.obsm[keys.SPATIAL], from_h5.obsm[keys.SPATIAL])


def test_no_hires_image_is_fine(make_outs):
    adata = io.read_spaceranger(make_outs(hires=False), "S1")
    library = adata.uns[keys.UNS_SPATIAL]["S1"]
    assert set(library["images"]) == {"lowres"}
    assert library["images"]["lowres"].shape == (120, 150, 3)
    assert library["scalefactors"]["tissue_lowres_scalef"] == LOWRES_SCALEF
    assert library["metadata"]["source"] == "spaceranger"


def test_hires_image_is_read_when_present(make_outs):
    library = io.read_spaceranger(make_outs(hires=True), "S1").uns[keys.UNS_SPATIAL]["S1"]
    assert set(library["images"]) == {"lowres", "hires"}
    assert library["images"]["hires"].shape == (480, 600, 3)
    assert library["scalefactors"]["tissue_hires_scalef"] == HIRES_SCALEF


def test_no_image_and_no_scalefactors_still_reads(make_outs):
    adata = io.read_spaceranger(make_outs(lowres=False, scalefactors=False), "S1")
    assert adata.uns[keys.UNS_SPATIAL]["S1"]["images"] == {}
    assert adata.uns[keys.UNS_SPATIAL]["S1"]["scalefactors"] == {}


def test_slide_round_trips_through_h5ad(make_outs, tmp_path):
    adata = io.read_spaceranger(make_outs(), "S1")
    adata.write_h5ad(tmp_path / "s.h5ad")
    back = ad.read_h5ad(tmp_path / "s.h5ad")
    np.testing.assert_array_equal(back.X.toarray(), adata.X.toarray())
    assert back.uns[keys.UNS_SPATIAL]["S1"]["images"]["lowres"].shape == (120, 150, 3)


def test_reading_writes_nothing_into_the_input(make_outs):
    outs = make_outs(positions="2.x", hires=True)
    before = _tree(outs)
    io.read_spaceranger(outs, "S1")
    assert _tree(outs) == before


def test_missing_positions_names_the_sample(make_outs):
    with pytest.raises(InputError, match=r"sample S7: no spot positions file .*tissue_positions_list\.csv"):
        io.read_spaceranger(make_outs(positions=None), "S7")


def test_missing_folder_and_matrix(make_outs, tmp_path):
    with pytest.raises(InputError, match="sample S2: the Space Ranger folder .* does not exist"):
        io.read_spaceranger(tmp_path / "nowhere", "S2")
    with pytest.raises(InputError, match="sample S2: no count matrix"):
        io.read_spaceranger(make_outs(matrix=None), "S2")
    with pytest.raises(InputError, match="sample S2: no 'spatial' folder"):
        io.read_spaceranger(tmp_path, "S2")


def test_matrix_barcode_without_position_is_an_error(make_outs):
    outs = make_outs(positions="2.x")
    path = outs / "spatial" / "tissue_positions.csv"
    table = pd.read_csv(path)
    table[table["barcode"] != MATRIX_BARCODES[2]].to_csv(path, index=False)
    with pytest.raises(InputError, match=f"sample S3: 1 of 7 spots .* no position .*e.g. {MATRIX_BARCODES[2]}"):
        io.read_spaceranger(outs, "S3")


def test_no_spot_in_tissue_is_an_error(make_outs):
    outs = make_outs(positions="2.x")
    path = outs / "spatial" / "tissue_positions.csv"
    table = pd.read_csv(path)
    table["in_tissue"] = 0
    table.to_csv(path, index=False)
    with pytest.raises(InputError, match="sample S4: none of the 7 spots .* in tissue"):
        io.read_spaceranger(outs, "S4")


def test_positions_with_missing_column_is_an_error(make_outs):
    outs = make_outs(positions="2.x")
    path = outs / "spatial" / "tissue_positions.csv"
    pd.read_csv(path).drop(columns="pxl_row_in_fullres").to_csv(path, index=False)
    with pytest.raises(InputError, match="sample S5: .* lack the column.* pxl_row_in_fullres"):
        io.read_spaceranger(outs, "S5")


# --- h5ad slides -------------------------------------------------------------------------


def test_read_h5ad_slide_fills_sample_and_spatial(small_slide, tmp_path):
    small_slide.uns = {}
    small_slide.obs = small_slide.obs.drop(columns=keys.SAMPLE)
    small_slide.X = small_slide.X.toarray().astype(np.int64)  # dense integers are accepted
    path = tmp_path / "slide.h5ad"
    small_slide.write_h5ad(path)
    digest = hashlib.md5(path.read_bytes()).hexdigest()

    adata = io.read_h5ad_slide(path, "LN")
    assert (adata.obs[keys.SAMPLE] == "LN").all()
    library = adata.uns[keys.UNS_SPATIAL]["LN"]
    assert library["images"] == {} and library["scalefactors"] == {}
    assert sparse.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), small_slide.X)
    np.testing.assert_array_equal(adata.obsm[keys.SPATIAL], small_slide.obsm[keys.SPATIAL])
    assert hashlib.md5(path.read_bytes()).hexdigest() == digest


def test_read_h5ad_slide_renames_a_single_image_library(small_slide, tmp_path):
    path = tmp_path / "slide.h5ad"
    small_slide.write_h5ad(path)  # library 'S1'
    adata = io.read_h5ad_slide(path, "other")
    assert list(adata.uns[keys.UNS_SPATIAL]) == ["other"]
    assert adata.uns[keys.UNS_SPATIAL]["other"]["images"]["lowres"].shape == (40, 40, 3)


def test_read_h5ad_slide_needs_coordinates(small_slide, tmp_path):
    del small_slide.obsm[keys.SPATIAL]
    path = tmp_path / "slide.h5ad"
    small_slide.write_h5ad(path)
    with pytest.raises(InputError, match=r"sample LN: .* no spot coordinates \(obsm\['spatial'\]\)"):
        io.read_h5ad_slide(path, "LN")
    with pytest.raises(InputError, match="sample LN: the slide file .* does not exist"):
        io.read_h5ad_slide(tmp_path / "absent.h5ad", "LN")


# --- raw counts ------------------------------------------------------------------------


def test_raw_counts_pass(small_slide):
    io.check_raw_counts(small_slide, "S1")


def test_normalised_counts_are_refused_with_a_clear_message(small_slide):
    x = small_slide.X.copy()
    x.data[:] = np.round(x.data)
    x[2, 2] = 0.372  # gene MYH4, spot SPOT02-1
    small_slide.X = sparse.csr_matrix(x)
    with pytest.raises(InputError) as err:
        io.check_raw_counts(small_slide, "S3")
    assert str(err.value) == (
        "sample S3: the count matrix holds non-integer values (e.g. 0.372 for gene MYH4 in spot SPOT02-1); "
        "give raw UMI counts, not normalised data"
    )


def test_negative_and_dense_and_csc_values_are_refused(small_slide):
    dense = small_slide.X.toarray()
    dense[4, 5] = -2
    small_slide.X = dense
    with pytest.raises(
        InputError, match="sample S3: the count matrix holds negative values .* gene CKM in spot SPOT04-1"
    ):
        io.check_raw_counts(small_slide, "S3")
    dense[4, 5] = 1.5
    small_slide.X = sparse.csc_matrix(dense)
    with pytest.raises(InputError, match="non-integer values .*1.5 for gene CKM in spot SPOT04-1"):
        io.check_raw_counts(small_slide, "S3")
    dense[4, 5] = np.nan
    small_slide.X = sparse.csr_matrix(dense)
    with pytest.raises(InputError, match="missing or infinite"):
        io.check_raw_counts(small_slide, "S3")


def test_run_folder_is_accepted_for_its_outs(make_outs):
    outs = make_outs()
    assert io.read_spaceranger(outs.parent, "S1").n_obs == len(IN_TISSUE)
