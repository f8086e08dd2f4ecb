"""cell2location mapping of two tiny slides jointly: outputs, QC numbers, the script; the fast
engine's convergence rule, closed-form export and parity with the package's own training."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.methods import c2l_train
from spatialmap.methods import cell2location as c2l
from spatialmap.scripts import map_cell2location
from testdata.c2l_small import N_GENES, N_SPOTS, PARITY_COMMON, TYPES, make_slide, parity_slides, true_signatures

FAST = dict(max_epochs=60, num_samples=20, seed=0, accelerator="cpu", threads=1, min_shared_genes=10)


@pytest.fixture(scope="module")
def mapped():
    slides, truth = {}, {}
    for i, sample in enumerate(["S1", "S2"]):
        slides[sample], truth[sample] = make_slide(sample, seed=i + 1)
    result = c2l.run(slides, true_signatures(), n_cells_per_location=9, detection_alpha=20, **FAST)
    return result, slides, truth


def test_each_slide_gets_abundance_tables_named_by_cell_type(mapped):
    result, slides, _ = mapped
    assert list(result.slides) == ["S1", "S2"]
    for sample, slide in result.slides.items():
        assert list(slide.obs_names) == list(slides[sample].obs_names)
        assert slide.n_vars == N_GENES + 2  # the slide keeps all its genes
        assert slide.uns["note"] == "kept" and "spatial" in slide.obsm
        for key in (keys.C2L_MEAN, keys.C2L_Q05, keys.C2L_Q95):
            df = slide.obsm[key]
            assert list(df.columns) == TYPES and list(df.index) == list(slide.obs_names)
            assert (df.to_numpy() >= 0).all()
        q05, mean, q95 = (slide.obsm[k].to_numpy() for k in (keys.C2L_Q05, keys.C2L_MEAN, keys.C2L_Q95))
        assert (q05 <= mean + 1e-6).all() and (mean <= q95 + 1e-6).all()
        np.testing.assert_allclose(slide.obs[keys.C2L_TOTAL_CELLS], mean.sum(axis=1), rtol=1e-5)
        assert slide.uns[keys.UNS_C2L]["genes_used"] == N_GENES


def test_genes_used_are_the_shared_ones(mapped):
    result, _, _ = mapped
    assert result.genes_used == list(true_signatures().index)
    assert result.combined.n_obs == 2 * N_SPOTS


def test_qc_numbers(mapped):
    result, _, _ = mapped
    qc = result.qc["S1"]
    assert qc["n_spots"] == N_SPOTS and qc["n_genes_used"] == N_GENES and qc["device"] == "cpu"
    assert set(qc["mean_abundance"]) == set(TYPES)
    assert qc["most_abundant_type"] == max(qc["mean_abundance"], key=qc["mean_abundance"].get)
    assert qc["mean_total_cells_per_spot"] > 0 and qc["detection_sensitivity"] > 0
    assert 0.5 < qc["reconstruction_r"] <= 1.0  # counts follow the signatures closely


def test_abundance_follows_the_truth_even_after_few_epochs(mapped):
    result, _, truth = mapped
    est = pd.concat([result.slides[s].obsm[keys.C2L_MEAN] for s in ("S1", "S2")])
    true = pd.concat([truth[s] for s in ("S1", "S2")])
    for t in TYPES:
        assert np.corrcoef(est[t], true[t])[0, 1] > 0.5, t


def test_figures_and_model(mapped, tmp_path):
    result, _, _ = mapped
    c2l.plot_reconstruction(result, tmp_path / "recon.png")
    c2l.plot_training_loss(result, tmp_path / "loss.png", "tiny")
    c2l.save_model(result, tmp_path / "model")
    assert (tmp_path / "recon.png").stat().st_size > 1000
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "model" / "model.pt").is_file()


def test_qc_reports_the_training(mapped):
    result, _, _ = mapped
    qc = result.qc["S1"]
    assert qc["epochs_run"] == FAST["max_epochs"] and qc["stop_reason"] == "max_epochs"  # 60 < min epochs
    assert qc["final_loss"] == pytest.approx(float(result.training.history[-1]))
    assert qc["train_seconds"] > 0 and qc["training_engine"] == "lean-jit" and qc["minibatch_size"] is None
    assert len(result.history) == FAST["max_epochs"]  # model.history_ is set as the package sets it


def test_reconstruction_r_in_blocks_equals_the_dense_r(mapped):
    result, _, _ = mapped
    model, means = result.model, result.summaries["means"]
    rows = (result.combined.obs[keys.SAMPLE] == "S2").to_numpy()
    dense = model.module.model.compute_expected(means, model.adata_manager)["mu"][rows]
    r = np.corrcoef(result.combined.X[rows].toarray().ravel(), dense.ravel())[0, 1]
    blocks = c2l_train.reconstruction_r_by_group(
        model, means, result.combined.obs[keys.SAMPLE].to_numpy(), block_size=7
    )
    assert blocks["S2"] == pytest.approx(r, rel=1e-9)
    assert result.qc["S2"]["reconstruction_r"] == pytest.approx(r, rel=1e-9)


def test_convergence_rule():
    rule = c2l_train.ConvergenceRule(min_epochs=300, window=100, tol=1e-3)
    falling = 1000.0 + 500.0 * np.exp(-np.arange(1, 3001) / 300.0)  # improves by > 0.1% per window until ~1,500
    flat = np.concatenate([np.linspace(2.0, 1.0, 200), np.ones(400)])
    assert not rule.converged(flat[:250])  # before min epochs
    assert rule.converged(flat[:400])
    first = rule.first_stop(flat)  # once both windows lie on the plateau
    assert 300 < first <= 400 and rule.converged(flat[:first]) and not rule.converged(flat[: first - 1])
    stop = rule.first_stop(falling)
    assert stop is not None and stop > 300
    rel = rule.improvement(falling[:stop])
    assert rel < 1e-3 and rule.improvement(falling[: stop - 1]) >= 1e-3
    assert c2l_train.ConvergenceRule(0, 10, 0.0).first_stop(flat) is None  # tol 0: never
    with pytest.raises(ValueError, match="window"):
        c2l_train.ConvergenceRule(0, 0, 1e-3)


def test_fast_engine_stops_at_convergence_and_minibatches():
    slides = {s: make_slide(s, seed=i + 1)[0] for i, s in enumerate(["S1", "S2"])}
    result = c2l.run(
        slides,
        true_signatures(),
        n_cells_per_location=9,
        **{**FAST, "max_epochs": 3000},
        min_epochs=200,
        convergence_window=100,
        convergence_tol=1e-2,
    )
    assert result.training.stop_reason == "converged" and 200 <= result.training.epochs_run < 3000
    # the default first rate (0.02) dropped to the package's 0.002 at the first plateau, then at
    # least two windows at 0.002 before the stop
    tr = result.training
    assert tr.lr_start == c2l_train.DEFAULT_LR_START and tr.lr == 0.002
    assert tr.lr_drop_epoch is not None and tr.epochs_run - tr.lr_drop_epoch >= 2 * 100
    assert result.qc["S1"]["learning_rate"] == {"start": 0.02, "final": 0.002, "dropped_at_epoch": tr.lr_drop_epoch}
    constant = c2l.run(slides, true_signatures(), n_cells_per_location=9, **{**FAST, "max_epochs": 300}, lr_start=None)
    assert constant.training.lr_drop_epoch is None and constant.training.lr_start == 0.002
    assert c2l_train.choose_batch_size(40000, None, 30000) == c2l_train.DEFAULT_MINIBATCH_SIZE
    assert c2l_train.choose_batch_size(20000, None, 30000) is None
    assert c2l_train.choose_batch_size(40, 16, 30000) == 16 and c2l_train.choose_batch_size(40, 64, 30000) is None
    small = c2l.run(slides, true_signatures(), n_cells_per_location=9, **{**FAST, "batch_size": 16})
    assert small.training.batch_size == 16 and small.training.engine == "lean"
    assert small.qc["S1"]["minibatch_size"] == 16
    assert (small.slides["S1"].obsm[keys.C2L_Q05].to_numpy() >= 0).all()


def test_too_few_shared_genes_names_the_slide():
    slide, _ = make_slide("S1", 1)
    other = slide[:, ["g00", "g01", "extra1"]].copy()
    with pytest.raises(InputError, match=r"slide S2: only 2 of 40 signature genes"):
        c2l.run({"S1": slide, "S2": other}, true_signatures(), **FAST)


def test_bad_parameters_are_refused():
    slide, _ = make_slide("S1", 1)
    with pytest.raises(InputError, match="cells per spot must be positive"):
        c2l.run({"S1": slide}, true_signatures(), n_cells_per_location=0, **FAST)
    slide.X = slide.X * 0.5
    with pytest.raises(InputError, match="slide S1: X must hold raw integer counts"):
        c2l.run({"S1": slide}, true_signatures(), **FAST)


def test_map_cell2location_script(tmp_path):
    paths = []
    for i, sample in enumerate(["S1", "S2"]):
        slide, _ = make_slide(sample, seed=i + 1)
        slide.var_names = slide.var["gene_ids"].to_numpy()  # the slides name genes by ID ...
        slide.var["symbol"] = [g[3:] for g in slide.var_names]  # ... and carry symbols
        paths.append(tmp_path / f"{sample}.qc.h5ad")
        slide.write_h5ad(paths[-1])
    true_signatures().to_csv(tmp_path / "sig.csv", index_label="gene")
    out = tmp_path / "out"
    script = map_cell2location
    script.main(
        [
            "--signatures",
            str(tmp_path / "sig.csv"),
            "--slide",
            *map(str, paths),
            "--sample",
            "S1",
            "S2",
            "--group",
            "G",
            "--slide-gene-column",
            "symbol",
            "--max-epochs",
            "30",
            "--num-samples",
            "10",
            "--accelerator",
            "cpu",
            "--min-shared-genes",
            "10",
            "--outdir",
            str(out),
            "--versions",
            str(tmp_path / "versions.yml"),
        ]
    )
    for sample in ("S1", "S2"):
        adata = ad.read_h5ad(out / sample / f"{sample}.cell2location.h5ad")
        assert adata.var_names[0] == "ENSg00"  # original gene names kept
        assert list(adata.obsm[keys.C2L_Q05].columns) == TYPES
        q05 = pd.read_csv(out / sample / f"{sample}.cell2location_q05.csv", index_col=0)
        assert list(q05.index) == list(adata.obs_names) and list(q05.columns) == TYPES
        np.testing.assert_allclose(q05.to_numpy(), adata.obsm[keys.C2L_Q05].to_numpy(), rtol=1e-5)
        qc = json.loads((out / sample / f"{sample}.cell2location_qc.json").read_text())
        assert qc["sample"] == sample and qc["group"] == "G" and qc["n_genes_used"] == N_GENES
        assert qc["epochs_run"] == 30 and qc["stop_reason"] == "max_epochs" and qc["final_loss"] > 0
        assert qc["train_seconds"] > 0
        assert qc["method"] == "cell2location" and qc["label"] == "cell2location"
        assert qc["headline"] == list(c2l.HEADLINE) and set(qc["report_columns"]) <= set(qc)
        assert "group" in qc["report_columns"] and set(qc["mean_abundance"]) == set(TYPES)
        props = q05.div(q05.sum(axis=1), axis=0)
        assert qc["mean_proportions"] == pytest.approx(props.mean().to_dict(), rel=1e-4)
        assert (out / sample / f"{sample}.cell2location_maps.png").stat().st_size > 1000
    assert (out / "G.cell2location_model" / "model.pt").is_file()
    assert (out / "G.cell2location_training_loss.png").is_file()
    assert (out / "G.cell2location_reconstruction.png").is_file()


def test_map_cell2location_script_sample_mismatch(tmp_path):
    slide, _ = make_slide("S1", 1)
    slide.write_h5ad(tmp_path / "S1.h5ad")
    true_signatures().to_csv(tmp_path / "sig.csv")
    script = map_cell2location
    with pytest.raises(InputError, match="sample X: .* holds sample\\(s\\) S1"):
        script.main(
            [
                "--signatures",
                str(tmp_path / "sig.csv"),
                "--slide",
                str(tmp_path / "S1.h5ad"),
                "--sample",
                "X",
                "--group",
                "G",
                "--outdir",
                str(tmp_path),
            ]
        )


# --------------------------------------------------------------------------------------------
# parity of the fast engine with the package's own training and export
# --------------------------------------------------------------------------------------------
# The package default is train(max_epochs=30000) + export_posterior(num_samples=1000). On this
# small data (2 slides x 20 spots) that is about 25 CPU minutes, too slow for every CI run, so it
# was run once with tools/c2l_parity_reference.py (same data, signatures and seed as here) and
# its abundances are stored in tests/unit/data/c2l_parity_package30000.npz (rerun the script
# when cell2location, scvi-tools, pyro or torch change). The fast engine runs here with the
# pipeline's defaults (learning-rate drop, convergence rule, 30,000-epoch cap).
# PARITY_MAD_SD: the maps agree (r >= 0.99 per type) but their overall scale does not to within
# one posterior SD: cell2location's abundance scale keeps drifting slowly along a weakly
# identified direction for the whole 30,000 epochs (on the test data the package's own map at
# epoch 25,000 is 0.95 SD from its map at 30,000, at 20,000 2.3 SD; tools/BENCHMARKS.md), so a
# run that stops at convergence of the ELBO lands at a slightly different point of that drift.
# Measured here: 1.86 SD (8.6% of the mean abundance).
PARITY_REFERENCE = Path(__file__).parent / "data" / "c2l_parity_package30000.npz"
PARITY_MIN_R = 0.99  # Pearson r per cell type, posterior mean and 5% quantile
PARITY_MAD_SD = 2.5  # mean |fast - package| of the abundances, in mean posterior SDs: see the note below
EXPORT_EPOCHS = 300  # a short package training for the export comparison (same guide, two exports)


@pytest.fixture(scope="module")
def fast_default():
    return c2l.run(parity_slides(), true_signatures(), engine="fast", max_epochs=30000, **PARITY_COMMON)


@pytest.fixture(scope="module")
def package_short():
    return c2l.run(
        parity_slides(),
        true_signatures(),
        engine="package",
        num_samples=1000,
        max_epochs=EXPORT_EPOCHS,
        **PARITY_COMMON,
    )


def test_fast_engine_matches_the_package_default(fast_default):
    ref = np.load(PARITY_REFERENCE, allow_pickle=True)  # written by tools/c2l_parity_reference.py
    assert int(ref["epochs"]) == 30000
    fast = fast_default
    assert fast.training.stop_reason == "converged" and fast.training.epochs_run < 30000
    assert list(fast.combined.obs_names.astype(str)) == list(ref["obs"])
    types = [str(t) for t in ref["types"]]
    assert [str(f) for f in fast.model.factor_names_] == types
    sd = float(np.mean(ref["sd"]))
    for summary, site in (("means", "mean"), ("q05", "q05")):
        a, b = fast.summaries[summary]["w_sf"], ref[site]
        for k, t in enumerate(types):
            assert np.corrcoef(a[:, k], b[:, k])[0, 1] >= PARITY_MIN_R, (summary, t)
        assert float(np.mean(np.abs(a - b))) <= PARITY_MAD_SD * sd, summary


def test_closed_form_export_matches_the_package_export(package_short):
    """On the package-trained model: closed-form summaries vs the package's 1,000-sample export."""
    package = package_short
    closed = c2l_train.guide_summaries(package.model)
    sd = package.summaries["stds"]["w_sf"]
    for summary in ("means", "q05", "q95"):
        a, b = closed[summary]["w_sf"], package.summaries[summary]["w_sf"]
        assert float(np.mean(np.abs(a - b))) <= 0.1 * float(np.mean(sd)), summary  # Monte Carlo error of 1,000 draws
        for site in ("detection_y_s", "m_g", "s_g_gene_add", "alpha_g_inverse"):
            np.testing.assert_allclose(closed[summary][site], package.summaries[summary][site], rtol=0.1)
