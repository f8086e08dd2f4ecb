"""Spot QC: MT gene detection and removal, metrics, filters, summary, and the two scripts."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

from conftest import MATRIX_BARCODES, OFF_TISSUE_IN_MATRIX
from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.qc import slide as qc
from spatialmap.scripts import read_slide, slide_qc

# --- finding MT genes --------------------------------------------------------------------


def test_human_and_mouse_prefix_is_case_insensitive():
    names = ["MT-CO1", "mt-Nd1", "Mt-Atp6", "MTOR", "MTX1", "SMT-1", "ACTB"]
    assert list(qc.find_mt_genes(names)) == [True, True, True, False, False, False, False]


def test_prefix_on_symbols_when_names_are_ids():
    ids = ["ENSG1", "ENSG2", "ENSG3"]
    assert list(qc.find_mt_genes(ids, gene_symbols=["MT-CO1", "ACTB", "mt-Co2"])) == [True, False, True]


def test_empty_prefix_marks_nothing():
    assert not qc.find_mt_genes(["MT-CO1"], prefix="").any()


def test_gene_list_matches_names_or_ids_case_insensitively(tmp_path):
    path = tmp_path / "mt.txt"
    path.write_text("# my MT genes\nmt-co1\n\nENS003\nNOT-THERE\n")
    genes = qc.read_gene_list(path)
    assert genes == ["mt-co1", "ENS003", "NOT-THERE"]
    names = ["ACTB", "MT-CO1", "MYH4", "MT-ND1"]
    ids = ["ENS000", "ENS001", "ENS002", "ENS003"]
    # the list replaces the prefix: MT-ND1 matches by ID, not by prefix; MYH4 is not listed
    assert list(qc.find_mt_genes(names, mt_genes=genes, gene_ids=ids)) == [False, True, False, True]
    assert list(qc.find_mt_genes(names, mt_genes=["MT-ND1"])) == [False, False, False, True]


def test_empty_gene_list_is_an_error(tmp_path):
    path = tmp_path / "mt.txt"
    path.write_text("\n# nothing\n")
    with pytest.raises(InputError, match="names no gene"):
        qc.read_gene_list(path)


# --- metrics and MT removal ------------------------------------------------------------


def test_compute_qc_counts_all_genes_and_leaves_input_alone(small_slide):
    original = small_slide.copy()
    mask = qc.find_mt_genes(small_slide.var_names)
    out = qc.compute_qc(small_slide, mask)
    x = small_slide.X.toarray()
    np.testing.assert_array_equal(out.obs[keys.TOTAL_COUNTS], x.sum(axis=1))
    np.testing.assert_array_equal(out.obs[keys.N_GENES], (x > 0).sum(axis=1))
    np.testing.assert_array_equal(out.obs[keys.MT_COUNTS], x[:, [1, 3]].sum(axis=1))
    assert out.obs[keys.PCT_MT].iloc[0] == 0  # empty spot: 0 %, not NaN
    assert out.obs[keys.PCT_MT].iloc[1] == pytest.approx(100 * 700 / x[1].sum())
    assert list(small_slide.obs.columns) == list(original.obs.columns)
    assert (small_slide.X != original.X).nnz == 0


def test_remove_mt_genes_keeps_their_counts_and_nothing_else_changes(small_slide):
    before = qc.compute_qc(small_slide)
    mask = qc.find_mt_genes(before.var_names)
    after = qc.remove_mt_genes(before, mask)

    assert list(after.var_names) == ["ACTB", "MYH4", "MTOR", "CKM"]
    assert not qc.find_mt_genes(after.var_names).any()
    mt = after.obsm[keys.MT]
    assert list(mt.columns) == ["MT-CO1", "MT-ND1"]
    assert list(mt.index) == list(after.obs_names)
    x = before.X.toarray()
    assert mt.to_numpy().sum() == x[:, mask].sum()
    np.testing.assert_array_equal(mt.to_numpy(), x[:, mask])
    # the other genes' counts are byte-identical
    kept = sparse.csr_matrix(before.X[:, ~mask])
    assert after.X.dtype == before.X.dtype
    assert after.X.data.tobytes() == kept.data.tobytes()
    assert after.X.indices.tobytes() == kept.indices.tobytes()
    # obs, obsm['spatial'] and uns are carried over; the input is untouched
    assert after.obs.equals(before.obs)
    np.testing.assert_array_equal(after.obsm[keys.SPATIAL], before.obsm[keys.SPATIAL])
    assert after.uns[keys.UNS_SPATIAL]["S1"]["scalefactors"] == before.uns[keys.UNS_SPATIAL]["S1"]["scalefactors"]
    assert before.n_vars == 6 and keys.MT not in before.obsm


def test_mouse_mt_genes_are_removed(small_mouse_slide):
    mask = qc.find_mt_genes(small_mouse_slide.var_names)
    after = qc.remove_mt_genes(small_mouse_slide, mask)
    assert list(after.obsm[keys.MT].columns) == ["mt-Co1", "mt-Nd1"]
    assert "Mtor" in after.var_names


def test_no_mt_gene_gives_an_empty_table(small_slide, tmp_path):
    after = qc.remove_mt_genes(small_slide, np.zeros(small_slide.n_vars, dtype=bool))
    assert after.obsm[keys.MT].shape == (small_slide.n_obs, 0)
    assert after.n_vars == small_slide.n_vars
    after.write_h5ad(tmp_path / "x.h5ad")  # an empty table still writes


# --- filters and summary ---------------------------------------------------------------


def test_filters_off_keep_every_spot(small_slide):
    before = qc.compute_qc(small_slide)
    assert qc.filter_spots(before).n_obs == 12
    assert qc.filter_spots(before, 0, 0, 100).n_obs == 12


def test_each_filter_removes_the_expected_spots(small_slide):
    before = qc.compute_qc(small_slide)
    obs = before.obs
    kept = qc.filter_spots(before, min_counts=10)
    assert set(kept.obs_names) == set(obs.index[obs[keys.TOTAL_COUNTS] >= 10])
    assert "SPOT00-1" not in kept.obs_names and "SPOT03-1" not in kept.obs_names
    kept = qc.filter_spots(before, min_genes=2)
    assert "SPOT03-1" not in kept.obs_names and "SPOT00-1" not in kept.obs_names
    assert kept.n_obs == int((obs[keys.N_GENES] >= 2).sum())
    kept = qc.filter_spots(before, max_pct_mt=50)
    assert "SPOT01-1" not in kept.obs_names
    assert kept.n_obs == int((obs[keys.PCT_MT] <= 50).sum())
    assert kept.n_vars == before.n_vars  # genes are never dropped here


def test_no_spot_passing_is_an_error_naming_the_sample(small_slide):
    before = qc.compute_qc(small_slide)
    with pytest.raises(InputError, match=r"sample S1: no spot passes the QC filters \(min_counts=1e\+06"):
        qc.filter_spots(before, min_counts=1e6)
    with pytest.raises(InputError, match="max_pct_mt must be between 0 and 100"):
        qc.filter_spots(before, max_pct_mt=150)
    with pytest.raises(ValueError, match="run compute_qc first"):
        qc.filter_spots(small_slide, min_counts=1)


def test_qc_summary_reports_what_a_user_checks(small_slide):
    before = qc.compute_qc(small_slide)
    mask = qc.find_mt_genes(before.var_names)
    after = qc.filter_spots(qc.remove_mt_genes(before, mask), max_pct_mt=50)
    summary = qc.qc_summary(before, after, {"min_counts": 0, "min_genes": None, "max_pct_mt": 50})
    x = small_slide.X.toarray()
    assert summary["spots_in_tissue"] == 12
    assert summary["spots_kept"] == 11
    assert summary["median_umis"] == np.median(x.sum(axis=1))
    assert summary["median_genes"] == np.median((x > 0).sum(axis=1))
    assert summary["pct_mt"] == pytest.approx(100 * x[:, mask].sum() / x.sum(), abs=1e-4)
    assert summary["n_mt_genes_removed"] == 2
    assert summary["mt_genes_removed"] == ["MT-CO1", "MT-ND1"]
    assert summary["genes"] == 4
    assert summary["filters"] == {"min_counts": 0.0, "min_genes": 0, "max_pct_mt": 50.0}
    assert summary["spots_removed_by"] == {"min_counts": 0, "min_genes": 0, "max_pct_mt": 1}
    json.dumps(summary)  # plain Python values


def test_plot_qc_maps_smoke(small_slide, tmp_path):
    from PIL import Image

    before = qc.compute_qc(small_slide)
    out = tmp_path / "figs" / "qc.png"
    qc.plot_qc_maps(before, out, kept=qc.spots_passing(before, max_pct_mt=50))
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height > 100
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


# --- the scripts -----------------------------------------------------------------------


def test_scripts_read_and_qc_a_spaceranger_slide(make_outs, tmp_path):
    raw = tmp_path / "S1.raw.h5ad"
    read_slide.main(
        [
            "--sample",
            "S1",
            "--spaceranger-dir",
            str(make_outs()),
            "--output",
            str(raw),
            "--versions",
            str(tmp_path / "v1.yml"),
        ]
    )
    assert ad.read_h5ad(raw).n_obs == len(MATRIX_BARCODES) - 1
    assert '"read_slide.py":' in (tmp_path / "v1.yml").read_text()

    slide_qc.main(
        [
            "--input",
            str(raw),
            "--sample",
            "S1",
            "--output-h5ad",
            str(tmp_path / "S1.qc.h5ad"),
            "--output-json",
            str(tmp_path / "S1.qc.json"),
            "--output-png",
            str(tmp_path / "S1.qc_maps.png"),
            "--min-genes",
            "2",
            "--versions",
            str(tmp_path / "v2.yml"),
            "--process-name",
            "SLIDE_QC",
        ]
    )
    summary = json.loads((tmp_path / "S1.qc.json").read_text())
    out = ad.read_h5ad(tmp_path / "S1.qc.h5ad")
    assert summary["sample"] == "S1"
    assert summary["spots_in_tissue"] == 6
    assert summary["n_mt_genes_removed"] == 2  # MT-CO1, MT-ND1; not MTOR
    assert list(out.obsm[keys.MT].columns) == ["MT-CO1", "MT-ND1"]
    assert "MTOR" in out.var_names
    assert out.uns[keys.UNS_QC]["spots_kept"] == summary["spots_kept"] == out.n_obs
    assert OFF_TISSUE_IN_MATRIX not in out.obs_names
    assert (tmp_path / "v2.yml").read_text().startswith('"SLIDE_QC":')
    # the slide's method plan: in the JSON (for the rest of the pipeline), not in the h5ad
    assert summary["method_plan"] == {
        "locations": out.n_obs,
        "kind": "spot",
        "methods": ["cell2location", "tangram", "rctd", "flashdeconv", "nnls"],
        "selection": f"auto: {out.n_obs} locations <= large_slide_locations 20000: all five methods",
        "label_methods": ["rctd", "cell2location", "tangram", "flashdeconv", "nnls"],
    }
    assert "method_plan" not in out.uns[keys.UNS_QC]
    # stub runs: the plan alone, for an empty slide
    slide_qc.main(
        ["--input", "x", "--sample", "S2", "--output-h5ad", "x", "--output-json", str(tmp_path / "S2.qc.json")]
        + ["--output-png", "x", "--plan-only", "--methods", "nnls,tangram", "--large-slide-locations", "5"]
    )
    stub = json.loads((tmp_path / "S2.qc.json").read_text())
    assert stub["sample"] == "S2" and stub["method_plan"]["methods"] == ["nnls", "tangram"]


def test_scripts_exit_1_with_one_line_when_nothing_passes(small_slide, tmp_path, capsys):
    from spatialmap import cli

    path = tmp_path / "S1.raw.h5ad"
    small_slide.write_h5ad(path)
    args = [
        "--input",
        str(path),
        "--sample",
        "S1",
        "--output-h5ad",
        str(tmp_path / "o.h5ad"),
        "--output-json",
        str(tmp_path / "o.json"),
        "--output-png",
        str(tmp_path / "o.png"),
        "--min-counts",
        "100000",
        "--versions",
        str(tmp_path / "v.yml"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(slide_qc.main, args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ERROR: sample S1: no spot passes the QC filters (min_counts=100000")
    assert not (tmp_path / "o.h5ad").exists() and not (tmp_path / "o.json").exists()


def test_plot_spatial_values_from_coordinates_smoke(tmp_path):
    import pandas as pd
    from PIL import Image

    from spatialmap.report import plotting

    coords = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 8.0], [15.0, 8.0]])
    values = pd.DataFrame({"B cells": [0.1, np.nan, 0.5, 2.0], "dominant": ["B", "T", "B", None]})
    out = plotting.plot_spatial_values(coords, values, tmp_path / "map.png", title="test", vmax_quantile=0.9)
    with Image.open(out) as image:
        assert image.format == "PNG"
    with pytest.raises(ValueError, match="3 rows of values for 4 spots"):
        plotting.plot_spatial_values(coords, values.iloc[:3], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
