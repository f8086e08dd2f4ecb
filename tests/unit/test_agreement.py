"""Agreement of every pair of methods' maps: known correlations, spot and type matching, file names, the script."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from spatialmap.cli import InputError
from spatialmap.consensus import agreement
from spatialmap.scripts import compare_methods, summarise_agreement

SPOTS = ["s1-1", "s2-1", "s3-1", "s4-1"]


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
    table = agreement.pair_agreement(q05, q05.div(q05.sum(axis=1), axis=0), "S1", "cell2location", "tangram")
    assert list(table.columns) == ["sample", "cell_type", "method_a", "method_b", "pearson_r", "n_spots"]
    assert list(table["cell_type"]) == list("WXYZ")
    np.testing.assert_allclose(table["pearson_r"], 1.0)
    assert (table["n_spots"] == 50).all() and (table["sample"] == "S1").all()


def test_known_correlations_and_constant_column(caplog):
    with caplog.at_level(logging.WARNING, logger="spatialmap.consensus.agreement"):
        table = agreement.pair_agreement(c2l_table(), tangram_table(), "S1", "cell2location", "tangram").set_index(
            "cell_type"
        )
    assert table.loc["A", "pearson_r"] == pytest.approx(0.8)
    assert table.loc["B", "pearson_r"] == pytest.approx(0.8)
    assert np.isnan(table.loc["C", "pearson_r"])  # C is constant in both maps
    assert "S1, cell2location vs tangram, C: constant" in caplog.text


def test_only_shared_spots_and_types_are_compared(caplog):
    c2l = c2l_table()
    c2l.columns = ["q05cell_abundance_w_sf_" + c for c in c2l.columns]  # cell2location's raw column names
    c2l.loc["extra-1"] = [1.0, 2.0, 3.0]  # a spot Tangram did not map
    tg = tangram_table().iloc[::-1] * 0.9  # another spot order ...
    tg["D"] = 0.1  # ... and a type cell2location does not know (rows still sum to 1)
    with caplog.at_level(logging.INFO, logger="spatialmap.consensus.agreement"):
        table = agreement.pair_agreement(c2l, tg, "S2", "cell2location", "tangram").set_index("cell_type")
    assert list(table.index) == ["A", "B", "C"]
    assert (table["n_spots"] == 4).all()
    assert table.loc["A", "pearson_r"] == pytest.approx(0.8)
    assert "cell types only in tangram, not compared: D" in caplog.text
    assert "1 spots only in cell2location are not compared" in caplog.text


def test_spots_with_zero_total_are_dropped():
    c2l = c2l_table()
    c2l.loc["s4-1"] = 0.0
    table = agreement.pair_agreement(c2l, tangram_table(), "S1", "cell2location", "tangram")
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
        agreement.pair_agreement(c2l_table(), other, "S1", "cell2location", "tangram")
    with pytest.raises(ValueError, match="share no cell type name"):
        agreement.pair_agreement(
            c2l_table(), tangram_table().rename(columns=str.lower), "S1", "cell2location", "tangram"
        )
    negative = c2l_table()
    negative.iloc[0, 0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        agreement.pair_agreement(negative, tangram_table(), "S1", "cell2location", "tangram")
    with pytest.raises(ValueError, match="at least 2 methods"):
        agreement.slide_agreement({"nnls": tangram_table()}, "S1")


def test_a_method_added_later_is_compared_after_the_known_ones():
    """A sixth method needs no edit here: it is ordered after the known methods, in name order."""
    assert agreement.method_order(["zeta", "nnls", "foo", "cell2location"]) == ["cell2location", "nnls", "foo", "zeta"]
    rng = np.random.default_rng(3)
    truth = pd.DataFrame(rng.dirichlet(np.ones(3), 30), index=[f"b{i}" for i in range(30)], columns=list("ABC"))
    tables = {"foo": truth * 0.5, "rctd": truth, "tangram": truth.iloc[::-1]}
    long = agreement.slide_agreement(tables, "S")
    assert list(dict.fromkeys(zip(long["method_a"], long["method_b"]))) == [
        ("tangram", "rctd"),
        ("tangram", "foo"),
        ("rctd", "foo"),
    ]
    np.testing.assert_allclose(long["pearson_r"], 1.0)
    pairs = agreement.pair_matrix(long)
    assert list(pairs.index) == ["tangram", "rctd", "foo"]


def test_every_pair_of_n_methods():
    rng = np.random.default_rng(1)
    truth = pd.DataFrame(rng.dirichlet(np.ones(3), 40), index=[f"b{i}" for i in range(40)], columns=list("ABC"))
    methods = {m: (truth + rng.uniform(0, 0.05, truth.shape)) for m in ("nnls", "tangram", "rctd", "cell2location")}
    long, matrix, pairs = agreement.compare_slides({"S.1": methods, "S2": {"nnls": truth}})
    assert list(long["sample"].unique()) == ["S.1"]  # S2 has one method only
    got = list(dict.fromkeys(zip(long["method_a"], long["method_b"])))
    assert got == [
        ("cell2location", "tangram"),
        ("cell2location", "rctd"),
        ("cell2location", "nnls"),
        ("tangram", "rctd"),
        ("tangram", "nnls"),
        ("rctd", "nnls"),
    ]
    assert len(long) == 6 * 3 and (long["pearson_r"] > 0.9).all()
    assert matrix.shape == (6, 3) and matrix.index[0] == "S.1: cell2location vs tangram"
    assert list(pairs.index) == ["cell2location", "tangram", "rctd", "nnls"]
    np.testing.assert_allclose(np.diag(pairs), 1.0)
    assert pairs.loc["rctd", "nnls"] == pairs.loc["nnls", "rctd"] > 0.9
    with pytest.raises(ValueError, match="two or more methods"):
        agreement.compare_slides({"S1": {"nnls": truth}})


def _compare(tmp_path, sample, tables, *extra):
    """compare_methods.py on one slide: ``{method: table}`` written to files whose names say nothing."""
    files = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i, (method, table) in enumerate(tables.items()):
        table.to_csv(tmp_path / f"table{i}.csv", index_label="barcode")
        files.append(str(tmp_path / f"table{i}.csv"))
    compare_methods.main(
        ["--sample", sample, "--methods", *tables, "--proportions", *files, "--rule", "mean"]
        + ["--outdir", str(tmp_path / "out"), "--versions", str(tmp_path / "versions.yml"), *extra]
    )
    return tmp_path / "out"


def test_compare_methods_and_summarise_agreement_scripts(tmp_path):
    """Per slide: the agreement and consensus of its methods (named by --methods, not by the file
    names); then the run's tables gathered from every slide's, in sample order."""
    out = _compare(tmp_path, "S.1", {"cell2location": c2l_table(), "tangram": tangram_table(), "nnls": tangram_table()})
    long = pd.read_csv(out / "S.1.method_agreement.csv")
    assert list(long.columns) == ["sample", "cell_type", "method_a", "method_b", "pearson_r", "n_spots"]
    assert set(long["sample"]) == {"S.1"} and len(long) == 3 * 3
    a = long[(long["method_a"] == "cell2location") & (long["method_b"] == "tangram")].set_index("cell_type")
    assert a.loc["A", "pearson_r"] == pytest.approx(0.8, abs=1e-6)
    consensus = pd.read_csv(out / "S.1.consensus_proportions.csv", index_col=0)
    np.testing.assert_allclose(consensus.sum(axis=1), 1.0, atol=1e-5)
    assert (out / "S.1.consensus_disagreement.csv").is_file()
    assert json.loads((out / "S.1.consensus_summary.json").read_text())["n_methods"] == 3
    assert '"compare_methods.py":' in (tmp_path / "versions.yml").read_text()
    second = _compare(tmp_path / "b", "A0", {"rctd": c2l_table(), "nnls": tangram_table()})
    summarise_agreement.main(
        ["--agreement", str(out / "S.1.method_agreement.csv"), str(second / "A0.method_agreement.csv")]
        + ["--consensus-summary", str(out / "S.1.consensus_summary.json"), str(second / "A0.consensus_summary.json")]
        + ["--outdir", str(tmp_path / "run"), "--versions", str(tmp_path / "v2.yml")]
    )
    run = tmp_path / "run"
    gathered = pd.read_csv(run / "method_agreement.csv")
    assert list(dict.fromkeys(gathered["sample"])) == ["A0", "S.1"] and len(gathered) == 3 + 9
    wide = pd.read_csv(run / "method_agreement_matrix.tsv", sep="\t", index_col=0)
    assert "S.1: cell2location vs nnls" in wide.index and np.isnan(wide.loc["S.1: cell2location vs tangram", "C"])
    pairs = pd.read_csv(run / "method_agreement_pairs.tsv", sep="\t", index_col=0)
    assert list(pairs.index) == ["cell2location", "tangram", "rctd", "nnls"]
    summary = pd.read_csv(run / "consensus_summary.tsv", sep="\t", index_col=0)
    assert list(summary.index) == ["A0", "S.1"] and summary.loc["S.1", "n_methods"] == 3
    with pytest.raises(InputError, match="2 methods but 1 tables"):
        compare_methods.main(
            ["--sample", "S", "--methods", "nnls", "rctd", "--proportions", str(tmp_path / "table0.csv")]
        )
    with pytest.raises(InputError, match="at least 2"):
        compare_methods.main(["--sample", "S", "--methods", "nnls", "--proportions", str(tmp_path / "table0.csv")])


def test_compare_methods_script_takes_a_method_added_later(tmp_path):
    out = _compare(tmp_path, "S.1", {"nnls": tangram_table(), "foo": tangram_table() * 2})
    long = pd.read_csv(out / "S.1.method_agreement.csv")
    assert set(zip(long["method_a"], long["method_b"])) == {("nnls", "foo")}
    assert json.loads((out / "S.1.consensus_summary.json").read_text())["n_methods"] == 2


def test_compare_methods_weighted_rule_with_reference(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    types, genes = ["A", "B", "C"], [f"g{i}" for i in range(40)]
    profiles = rng.gamma(0.5, 10.0, (3, 40))
    labels = np.repeat(types, 10)
    cells = rng.poisson(profiles[np.repeat(np.arange(3), 10)])
    reference = ad.AnnData(
        X=sp.csr_matrix(cells.astype(np.float32)),
        obs=pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(30)]),
        var=pd.DataFrame(index=genes),
    )
    reference.write_h5ad(tmp_path / "reference.h5ad")
    spots = [f"s{i}" for i in range(60)]
    truth = pd.DataFrame(rng.dirichlet(np.ones(3), 60), index=spots, columns=types)
    slide = ad.AnnData(
        X=sp.csr_matrix(rng.poisson(20 * truth.to_numpy() @ profiles).astype(np.float32)),
        obs=pd.DataFrame(index=spots),
        var=pd.DataFrame(index=genes),
    )
    slide.obsm["spatial"] = rng.uniform(0, 1000, (60, 2))
    slide.write_h5ad(tmp_path / "S1.qc.h5ad")
    truth.to_csv(tmp_path / "S1.rctd_proportions.csv")
    shuffled = pd.DataFrame(rng.dirichlet(np.ones(3), 60), index=spots, columns=types)
    shuffled.to_csv(tmp_path / "S1.nnls_proportions.csv")
    script = compare_methods
    out = tmp_path / "out"
    script.main(
        [
            "--sample",
            "S1",
            "--methods",
            "rctd",
            "nnls",
            "--proportions",
            str(tmp_path / "S1.rctd_proportions.csv"),
            str(tmp_path / "S1.nnls_proportions.csv"),
            "--slide",
            str(tmp_path / "S1.qc.h5ad"),
            "--reference",
            str(tmp_path / "reference.h5ad"),
            "--outdir",
            str(out),
            "--versions",
            str(tmp_path / "versions.yml"),
        ]
    )
    consensus = pd.read_csv(out / "S1.consensus_proportions.csv", index_col=0)
    assert np.abs(consensus - truth).to_numpy().mean() < 0.5 * np.abs(shuffled - truth).to_numpy().mean()
    assert (out / "S1.consensus_maps.png").stat().st_size > 0 and (out / "S1.consensus_disagreement.png").is_file()
    assert json.loads((out / "S1.consensus_summary.json").read_text())["rule"] == "spot_geometric"  # the default
    with pytest.raises(InputError, match="needs --signatures or --reference"):
        script.main(
            [
                "--sample",
                "S1",
                "--methods",
                "rctd",
                "nnls",
                "--proportions",
                str(tmp_path / "S1.rctd_proportions.csv"),
                str(tmp_path / "S1.nnls_proportions.csv"),
                "--slide",
                str(tmp_path / "S1.qc.h5ad"),
                "--rule",
                "weighted",
                "--outdir",
                str(out),
            ]
        )
