"""Agreement of cell2location and Tangram maps: known correlations, spot and type matching, the script."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pandas as pd
import pytest

from conftest import BIN
from spatialmap import agreement
from spatialmap.cli import InputError

SPOTS = ["s1-1", "s2-1", "s3-1", "s4-1"]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), BIN / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def c2l_table() -> pd.DataFrame:
    """q05 abundance whose proportions are A = 0, .1, .2, .3; B = .5 - A; C = .5 (constant).

    Each spot holds a different number of cells (1, 2, 5, 10), which normalisation removes.
    """
    props = np.array([[0.0, 0.5, 0.5], [0.1, 0.4, 0.5], [0.2, 0.3, 0.5], [0.3, 0.2, 0.5]])
    cells = np.array([1.0, 2.0, 5.0, 10.0])[:, None]
    return pd.DataFrame(props * cells, index=SPOTS, columns=["A", "B", "C"])


def tangram_table() -> pd.DataFrame:
    """Proportions A = 0, .1, .3, .2 (r = 0.8 with the c2l A); B = .6 - A; C = .4."""
    props = np.array([[0.0, 0.6, 0.4], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.4, 0.4]])
    return pd.DataFrame(props, index=SPOTS, columns=["A", "B", "C"])


def test_identical_maps_agree_perfectly():
    rng = np.random.default_rng(0)
    q05 = pd.DataFrame(rng.gamma(2.0, 1.0, size=(50, 4)), index=[f"b{i}" for i in range(50)], columns=list("WXYZ"))
    table = agreement.slide_agreement(q05, q05.div(q05.sum(axis=1), axis=0), "S1")
    assert list(table.columns) == ["sample", "cell_type", "pearson_r", "n_spots"]
    assert list(table["cell_type"]) == list("WXYZ")
    np.testing.assert_allclose(table["pearson_r"], 1.0)
    assert (table["n_spots"] == 50).all() and (table["sample"] == "S1").all()


def test_known_correlations_and_constant_column(caplog):
    with caplog.at_level(logging.WARNING, logger="spatialmap.agreement"):
        table = agreement.slide_agreement(c2l_table(), tangram_table(), "S1").set_index("cell_type")
    assert table.loc["A", "pearson_r"] == pytest.approx(0.8)
    assert table.loc["B", "pearson_r"] == pytest.approx(0.8)
    assert np.isnan(table.loc["C", "pearson_r"])  # C is constant in both maps
    assert "S1, C: constant" in caplog.text


def test_only_shared_spots_and_types_are_compared(caplog):
    c2l = c2l_table()
    c2l.columns = ["q05cell_abundance_w_sf_" + c for c in c2l.columns]  # cell2location's raw column names
    c2l.loc["extra-1"] = [1.0, 2.0, 3.0]  # a spot Tangram did not map
    tg = tangram_table().iloc[::-1] * 0.9  # another spot order ...
    tg["D"] = 0.1  # ... and a type cell2location does not know (rows still sum to 1)
    with caplog.at_level(logging.INFO, logger="spatialmap.agreement"):
        table = agreement.slide_agreement(c2l, tg, "S2").set_index("cell_type")
    assert list(table.index) == ["A", "B", "C"]
    assert (table["n_spots"] == 4).all()
    assert table.loc["A", "pearson_r"] == pytest.approx(0.8)
    assert "only in Tangram, not compared: D" in caplog.text
    assert "4 spots in both methods (1 only in cell2location, 0 only in Tangram)" in caplog.text


def test_spots_with_zero_total_are_dropped():
    c2l = c2l_table()
    c2l.loc["s4-1"] = 0.0
    table = agreement.slide_agreement(c2l, tangram_table(), "S1")
    assert (table["n_spots"] == 3).all()


def test_pearson_edge_cases():
    assert agreement.pearson([0, 1, 2, 3], [0, 1, 3, 2]) == pytest.approx(0.8)
    assert agreement.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(agreement.pearson([1 / 3, 1 / 3, 1 - 2 / 3], [1, 2, 3]))  # constant up to rounding
    assert np.isnan(agreement.pearson([1.0], [2.0]))


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="share no spot barcode"):
        other = tangram_table()
        other.index = ["x", "y", "z", "w"]
        agreement.slide_agreement(c2l_table(), other, "S1")
    with pytest.raises(ValueError, match="share no cell type name"):
        agreement.slide_agreement(c2l_table(), tangram_table().rename(columns=str.lower), "S1")
    negative = c2l_table()
    negative.iloc[0, 0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        agreement.slide_agreement(negative, tangram_table(), "S1")


def test_compare_slides_long_and_wide(caplog):
    c2l = {"S1": c2l_table(), "S2": c2l_table(), "S3": c2l_table()}
    tangram = {"S2": tangram_table(), "S1": c2l_table(), "S4": tangram_table()}
    with caplog.at_level(logging.WARNING, logger="spatialmap.agreement"):
        long, wide = agreement.compare_slides(c2l, tangram)
    assert list(long["sample"].unique()) == ["S1", "S2"]
    assert "sample S3: mapped only by cell2location; skipped" in caplog.text
    assert "sample S4: mapped only by Tangram; skipped" in caplog.text
    assert list(wide.index) == ["S1", "S2"] and list(wide.columns) == ["A", "B", "C"]
    assert wide.loc["S1", "A"] == pytest.approx(1.0) and wide.loc["S2", "A"] == pytest.approx(0.8)
    assert wide["C"].isna().all()
    with pytest.raises(ValueError, match="no slide has both"):
        agreement.compare_slides({"S1": c2l_table()}, {"S2": tangram_table()})


def test_compare_methods_script(tmp_path):
    c2l_table().to_csv(tmp_path / "S1.cell2location_q05.csv", index_label="barcode")
    c2l_table().to_csv(tmp_path / "S2.cell2location_q05.csv", index_label="barcode")
    tangram_table().to_csv(tmp_path / "S1.tangram_proportions.csv", index_label="barcode")
    script = _load_script("compare_methods.py")
    out_csv, out_tsv = tmp_path / "agreement.csv", tmp_path / "matrix.tsv"
    script.main([
        "--c2l", str(tmp_path / "S1.cell2location_q05.csv"), str(tmp_path / "S2.cell2location_q05.csv"),
        "--samples-c2l", "S1", "S2",
        "--tangram", str(tmp_path / "S1.tangram_proportions.csv"), "--samples-tangram", "S1",
        "--output-csv", str(out_csv), "--output-matrix", str(out_tsv), "--versions", str(tmp_path / "versions.yml"),
    ])
    long = pd.read_csv(out_csv)
    assert list(long.columns) == ["sample", "cell_type", "pearson_r", "n_spots"]
    assert list(long["sample"]) == ["S1"] * 3
    assert long.set_index("cell_type").loc["A", "pearson_r"] == pytest.approx(0.8, abs=1e-6)
    wide = pd.read_csv(out_tsv, sep="\t", index_col=0)
    assert list(wide.index) == ["S1"] and np.isnan(wide.loc["S1", "C"])
    assert '"compare_methods.py":' in (tmp_path / "versions.yml").read_text()
    with pytest.raises(InputError, match="2 files but 1 sample names"):
        script.main(["--c2l", str(tmp_path / "S1.cell2location_q05.csv"), str(tmp_path / "S2.cell2location_q05.csv"),
                     "--samples-c2l", "S1", "--tangram", str(tmp_path / "S1.tangram_proportions.csv"),
                     "--samples-tangram", "S1"])
