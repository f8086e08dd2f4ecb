"""Tangram mapping of a tiny slide with known composition (few epochs): numbers, genes, seeds, script."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.methods import tangram as tangram_map
from spatialmap.scripts import map_tangram

TYPES = ["A", "B", "C"]
N_MARKERS = 8  # true markers per type: genes g00-g07 for A, g08-g15 for B, g16-g23 for C
N_GENES = 40  # g24-g39 are flat background genes
N_SPOTS = 30
CELLS_PER_TYPE = 25
FAST = dict(n_markers=N_MARKERS, num_epochs=150, learning_rate=0.1, seed=0, accelerator="cpu")


def signatures() -> np.ndarray:
    """Types x genes expected counts per cell: 8 markers per type, the rest flat."""
    sig = np.full((len(TYPES), N_GENES), 2.0)
    for k in range(len(TYPES)):
        sig[k, N_MARKERS * k : N_MARKERS * (k + 1)] = 30.0
    return sig


def make_reference() -> ad.AnnData:
    rng = np.random.default_rng(1)
    labels = np.repeat(TYPES, CELLS_PER_TYPE)
    mu = signatures()[np.repeat(np.arange(len(TYPES)), CELLS_PER_TYPE)] * rng.uniform(0.7, 1.3, (len(labels), 1))
    counts = rng.poisson(mu).astype(np.float32)
    return ad.AnnData(
        X=sparse.csr_matrix(counts),
        obs=pd.DataFrame({"cell_type": labels}, index=[f"cell{i:03d}" for i in range(len(labels))]),
        var=pd.DataFrame(index=[f"g{i:02d}" for i in range(N_GENES)]),
    )


def make_slide(sample: str = "S1") -> tuple[ad.AnnData, pd.DataFrame]:
    """Spots along a line: A rises, C falls, B peaks in the middle; 2-10 cells per spot."""
    rng = np.random.default_rng(2)
    t = np.linspace(0, 1, N_SPOTS)
    weights = np.column_stack([0.05 + t, 0.05 + np.exp(-((t - 0.5) ** 2) / 0.05), 1.05 - t])
    truth = weights / weights.sum(axis=1, keepdims=True)
    n_cells = rng.uniform(2, 10, N_SPOTS)
    counts = rng.poisson((truth * n_cells[:, None]) @ signatures() * 0.5).astype(np.float32)
    barcodes = [f"BC{i:03d}-1" for i in range(N_SPOTS)]
    slide = ad.AnnData(
        X=sparse.csr_matrix(counts),
        obs=pd.DataFrame({keys.SAMPLE: sample}, index=barcodes),
        var=pd.DataFrame(index=[f"g{i:02d}" for i in range(N_GENES)]),
    )
    yy, xx = np.divmod(np.arange(N_SPOTS), 6)
    slide.obsm[keys.SPATIAL] = np.column_stack([100.0 * xx, 100.0 * yy])
    return slide, pd.DataFrame(truth, index=barcodes, columns=TYPES)


@pytest.fixture(scope="module")
def mapped():
    slide, truth = make_slide()
    reference = make_reference()
    result = tangram_map.run(slide, reference, "cell_type", sample="S1", assignment=True, **FAST)
    return result, slide, reference, truth


def test_proportions_are_non_negative_and_sum_to_one(mapped):
    result, slide, _, _ = mapped
    props = result.proportions
    assert list(props.index) == list(slide.obs_names)
    assert list(props.columns) == TYPES
    assert (props.to_numpy() >= 0).all()
    np.testing.assert_allclose(props.sum(axis=1), 1.0, rtol=1e-6)


def test_proportions_follow_the_truth(mapped):
    result, _, _, truth = mapped
    for cell_type in TYPES:
        r = np.corrcoef(result.proportions[cell_type], truth[cell_type])[0, 1]
        assert r > 0.9, (cell_type, r)


def test_counts_are_proportions_times_cells_per_spot(mapped):
    result, slide, _, _ = mapped
    counts = result.abundances
    assert (counts.to_numpy() >= 0).all()
    # On average 8 cells per spot (the default), spread by the learned density.
    assert counts.to_numpy().sum() == pytest.approx(8.0 * slide.n_obs, rel=1e-6)
    np.testing.assert_allclose(counts.div(counts.sum(axis=1), axis=0), result.proportions, rtol=1e-6)
    # rna_count_based prior: spots with more UMIs hold more cells.
    totals = np.asarray(slide.X.sum(axis=1)).ravel()
    assert np.corrcoef(totals, counts.sum(axis=1))[0, 1] > 0.9


def test_training_and_heldout_genes_are_disjoint(mapped):
    result, _, _, _ = mapped
    scores = result.extras["gene_scores"]
    training = set(scores.index[~scores["heldout"]])
    heldout = set(scores.index[scores["heldout"]])
    assert not training & heldout
    assert training | heldout == {f"g{i:02d}" for i in range(N_GENES)}
    # The true markers are the training genes; the flat genes are held out.
    assert training == {f"g{i:02d}" for i in range(N_MARKERS * len(TYPES))}
    assert result.qc["n_training_genes"] == 24 and result.qc["n_heldout_genes"] == 16
    assert not result.qc["heldout_from_markers"]
    assert list(result.extras["projected"].columns) == sorted(heldout)
    assert (result.extras["projected"].to_numpy() >= 0).all()


def test_gene_scores_and_qc_numbers(mapped):
    result, _, reference, _ = mapped
    scores = result.extras["gene_scores"]
    assert set(scores.columns) == {"pearson_r", "cosine", "heldout"}
    marker_r = scores.loc[~scores["heldout"], "pearson_r"]
    assert marker_r.median() > 0.8  # the training markers are fitted
    qc = result.qc
    assert qc["heldout_median"] == pytest.approx(scores.loc[scores["heldout"], "pearson_r"].median())
    assert qc["heldout_p90"] >= qc["heldout_median"]
    assert 0.8 < qc["training_score"] <= 1.0
    assert qc["cells_used"] == reference.n_obs and qc["device"] == "cpu" and qc["mode"] == "cells"


def test_assignment_puts_each_cell_on_one_spot(mapped):
    result, slide, reference, _ = mapped
    table = result.extras["assignment"]
    assert list(table.index) == list(reference.obs_names)
    assert list(table["cell_type"]) == list(reference.obs["cell_type"])
    assert set(table["barcode"]) <= set(slide.obs_names)
    assert ((table["probability"] > 1.0 / N_SPOTS) & (table["probability"] <= 1.0)).all()
    # A-cells go where A is abundant (the end of the line), C-cells to the start.
    position = {b: i for i, b in enumerate(slide.obs_names)}
    spots = table["barcode"].map(position)
    assert spots[table["cell_type"] == "A"].mean() > spots[table["cell_type"] == "C"].mean() + 5


def test_seeded_runs_are_identical(mapped):
    result, slide, reference, _ = mapped
    again = tangram_map.run(slide, reference, "cell_type", sample="S1", **FAST)
    pd.testing.assert_frame_equal(again.proportions, result.proportions)
    pd.testing.assert_frame_equal(again.extras["gene_scores"], result.extras["gene_scores"])
    other = tangram_map.run(slide, reference, "cell_type", sample="S1", **{**FAST, "seed": 1})
    assert not np.allclose(other.proportions.to_numpy(), result.proportions.to_numpy())


def test_clusters_mode():
    slide, truth = make_slide()
    result = tangram_map.run(slide, make_reference(), "cell_type", mode="clusters", **FAST)
    np.testing.assert_allclose(result.proportions.sum(axis=1), 1.0, rtol=1e-6)
    for cell_type in TYPES:
        assert np.corrcoef(result.proportions[cell_type], truth[cell_type])[0, 1] > 0.9
    assert result.qc["mode"] == "clusters" and result.extras["assignment"] is None
    with pytest.raises(ValueError, match="needs --mode cells"):
        tangram_map.run(slide, make_reference(), "cell_type", mode="clusters", assignment=True, **FAST)


def test_cap_cells_per_type_is_seeded_and_bounded():
    labels = pd.Series(["A"] * 10 + ["B"] * 3 + ["C"] * 7)
    keep = tangram_map.cap_cells_per_type(labels, 4, seed=3)
    assert labels.iloc[keep].value_counts().to_dict() == {"A": 4, "B": 3, "C": 4}
    assert list(keep) == sorted(keep)
    np.testing.assert_array_equal(keep, tangram_map.cap_cells_per_type(labels, 4, seed=3))
    assert not np.array_equal(keep, tangram_map.cap_cells_per_type(labels, 4, seed=4))


def test_too_few_non_markers_holds_out_markers():
    genes = [f"g{i}" for i in range(20)]
    markers = {"A": genes[:10], "B": genes[8:19]}  # only g19 is not a marker
    split = tangram_map.split_genes(markers, genes, min_heldout=5, heldout_fraction=0.25, seed=0)
    assert split.heldout_from_markers
    assert len(split.training) == 14 and len(split.heldout) == 6  # 5 of 19 markers + g19
    assert "g19" in split.heldout and not set(split.training) & set(split.heldout)
    assert tangram_map.split_genes(markers, genes, min_heldout=5, heldout_fraction=0.25, seed=0) == split
    enough = tangram_map.split_genes({"A": genes[:5]}, genes, min_heldout=5, heldout_fraction=0.25)
    assert enough.training == genes[:5] and not enough.heldout_from_markers


def test_gene_scores_known_values():
    measured = np.array([[1.0, 1.0, 2.0], [2.0, 1.0, 2.0], [3.0, 1.0, 2.0]])
    scores = tangram_map.gene_scores(measured, measured * 5, ["x", "y", "z"])
    np.testing.assert_allclose(scores["cosine"], 1.0)
    np.testing.assert_allclose(scores["pearson_r"], 1.0)
    flat = tangram_map.gene_scores(np.ones((4, 2)), np.ones((4, 2)), ["x", "y"])
    assert flat["pearson_r"].isna().all()


def test_bad_inputs_are_refused():
    slide, _ = make_slide()
    reference = make_reference()
    with pytest.raises(ValueError, match="no label column 'celltype'"):
        tangram_map.run(slide, reference, "celltype", **FAST)
    renamed = reference.copy()
    renamed.var_names = [f"other{i}" for i in range(N_GENES)]
    with pytest.raises(ValueError, match="sample S1: only 0 genes are shared"):
        tangram_map.run(slide, renamed, "cell_type", sample="S1", **FAST)
    with pytest.raises(ValueError, match="mode must be one of"):
        tangram_map.run(slide, reference, "cell_type", **{**FAST, "seed": 0}, mode="constrained")
    single = reference.copy()
    single.obs["cell_type"] = ["A"] * (reference.n_obs - 1) + ["lonely"]
    with pytest.raises(ValueError, match=r"needs at least 2 reference cells per cell type; too few: lonely \(1\)"):
        tangram_map.run(slide, single, "cell_type", **FAST)


def test_map_tangram_script(tmp_path, monkeypatch):
    slide, truth = make_slide("S1")
    slide.write_h5ad(tmp_path / "S1.qc.h5ad")
    make_reference().write_h5ad(tmp_path / "ref.h5ad")
    monkeypatch.chdir(tmp_path)
    script = map_tangram
    script.main(
        [
            "--slide",
            "S1.qc.h5ad",
            "--sample",
            "S1",
            "--reference",
            "ref.h5ad",
            "--label-key",
            "cell_type",
            "--n-markers",
            str(N_MARKERS),
            "--max-epochs",
            "100",
            "--accelerator",
            "cpu",
            "--assignment",
        ]
    )
    props = pd.read_csv("S1.tangram_proportions.csv", index_col=0)
    assert props.index.name == "barcode" and list(props.index) == list(slide.obs_names)
    np.testing.assert_allclose(props.sum(axis=1), 1.0, rtol=1e-5)
    assert np.corrcoef(props["A"], truth["A"])[0, 1] > 0.9
    counts = pd.read_csv("S1.tangram_counts.csv", index_col=0)
    assert counts.to_numpy().sum() == pytest.approx(8.0 * N_SPOTS, rel=1e-4)
    genes = pd.read_csv("S1.tangram_heldout_genes.csv", index_col=0)
    assert list(genes.columns) == ["pearson_r", "cosine", "heldout"] and genes["heldout"].sum() == 16
    qc = json.loads((tmp_path / "S1.tangram_qc.json").read_text())
    for key in (
        "sample",
        "mode",
        "device",
        "n_training_genes",
        "n_heldout_genes",
        "heldout_median",
        "heldout_p90",
        "training_score",
        "cells_used",
    ):
        assert key in qc, key
    assert qc["sample"] == "S1" and qc["n_training_genes"] == 24 and qc["cells_used"] == 75
    assert (
        qc["method"] == "tangram" and qc["label"] == "Tangram" and qc["headline"] == ["heldout_median", "heldout_p90"]
    )
    assert list(qc["report_columns"]) == list(tangram_map.REPORT_COLUMNS)
    assert qc["mean_proportions"] == pytest.approx(props.mean().to_dict(), abs=1e-5)
    assert len(pd.read_csv("S1.tangram_assignment.csv")) == 75
    assert len(pd.read_csv("S1.tangram_filtered_spots.csv")) == 0  # every spot mapped
    out = ad.read_h5ad("S1.tangram.h5ad")
    np.testing.assert_allclose(out.obsm[keys.TANGRAM_PROPORTIONS].to_numpy(), props.to_numpy(), rtol=1e-5)
    assert list(out.obsm[keys.TANGRAM_COUNTS].columns) == TYPES
    assert out.obsm[keys.TANGRAM_PROJECTED].shape == (N_SPOTS, 16)
    assert out.uns[keys.UNS_TANGRAM]["n_training_genes"] == 24
    assert sparse.issparse(out.X) and out.X.sum() == slide.X.sum()  # raw counts untouched
    assert (tmp_path / "S1.tangram_maps.png").stat().st_size > 1000
    assert '"map_tangram.py":' in (tmp_path / "versions.yml").read_text()


def test_map_tangram_script_sample_mismatch(tmp_path):
    slide, _ = make_slide("S1")
    slide.write_h5ad(tmp_path / "S1.qc.h5ad")
    make_reference().write_h5ad(tmp_path / "ref.h5ad")
    script = map_tangram
    with pytest.raises(InputError, match="sample X: .* holds sample\\(s\\) S1"):
        script.main(
            ["--slide", str(tmp_path / "S1.qc.h5ad"), "--sample", "X", "--reference", str(tmp_path / "ref.h5ad")]
        )
