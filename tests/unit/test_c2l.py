"""cell2location mapping of two tiny slides jointly (few epochs): outputs, QC numbers, the script."""

from __future__ import annotations

import importlib.util
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from conftest import BIN
from spatialmap import c2l, keys
from spatialmap.cli import InputError

TYPES = ["A", "B", "C"]
N_GENES = 40
N_SPOTS = 20
FAST = dict(max_epochs=60, num_samples=20, seed=0, accelerator="cpu", threads=1, min_shared_genes=10)


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), BIN / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def true_signatures() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sig = rng.uniform(1, 3, size=(N_GENES, len(TYPES)))
    for k in range(len(TYPES)):
        sig[8 * k: 8 * k + 8, k] = 40.0
    return pd.DataFrame(sig, index=[f"g{i:02d}" for i in range(N_GENES)], columns=TYPES)


def make_slide(sample: str, seed: int) -> tuple[ad.AnnData, pd.DataFrame]:
    """Spots with 0-6 cells of each type; same barcodes on every slide (as on real Visium)."""
    rng = np.random.default_rng(seed)
    sig = true_signatures()
    abundance = pd.DataFrame(rng.integers(0, 7, size=(N_SPOTS, len(TYPES))).astype(float), columns=TYPES)
    mu = abundance.to_numpy() @ sig.to_numpy().T * 0.5
    counts = rng.poisson(mu).astype(np.float32)
    barcodes = [f"BC{i:03d}-1" for i in range(N_SPOTS)]
    abundance.index = barcodes
    genes = list(sig.index) + ["extra1", "extra2"]  # two genes not in the signatures
    counts = np.hstack([counts, rng.poisson(2, size=(N_SPOTS, 2)).astype(np.float32)])
    slide = ad.AnnData(X=sparse.csr_matrix(counts), obs=pd.DataFrame({"sample": sample}, index=barcodes),
                       var=pd.DataFrame({"gene_ids": [f"ENS{g}" for g in genes]}, index=genes))
    yy, xx = np.divmod(np.arange(N_SPOTS), 5)
    slide.obsm["spatial"] = np.column_stack([100.0 * xx, 100.0 * yy])
    slide.uns["note"] = "kept"
    return slide, abundance


@pytest.fixture(scope="module")
def mapped():
    slides, truth = {}, {}
    for i, sample in enumerate(["S1", "S2"]):
        slides[sample], truth[sample] = make_slide(sample, seed=i + 1)
    result = c2l.map_cell2location(slides, true_signatures(), n_cells_per_location=9, detection_alpha=20, **FAST)
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
    c2l.save_model(result, tmp_path / "model")
    assert (tmp_path / "recon.png").stat().st_size > 1000
    assert (tmp_path / "model" / "model.pt").is_file()


def test_too_few_shared_genes_names_the_slide():
    slide, _ = make_slide("S1", 1)
    other = slide[:, ["g00", "g01", "extra1"]].copy()
    with pytest.raises(InputError, match=r"slide S2: only 2 of 40 signature genes"):
        c2l.map_cell2location({"S1": slide, "S2": other}, true_signatures(), **FAST)


def test_bad_parameters_are_refused():
    slide, _ = make_slide("S1", 1)
    with pytest.raises(InputError, match="cells per spot must be positive"):
        c2l.map_cell2location({"S1": slide}, true_signatures(), n_cells_per_location=0, **FAST)
    slide.X = slide.X * 0.5
    with pytest.raises(InputError, match="slide S1: X must hold raw integer counts"):
        c2l.map_cell2location({"S1": slide}, true_signatures(), **FAST)


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
    script = _load_script("map_cell2location.py")
    script.main([
        "--signatures", str(tmp_path / "sig.csv"), "--slides", *map(str, paths), "--samples", "S1", "S2",
        "--group", "G", "--slide-gene-column", "symbol", "--max-epochs", "30", "--num-samples", "10",
        "--accelerator", "cpu", "--min-shared-genes", "10", "--outdir", str(out), "--versions", str(tmp_path / "versions.yml"),
    ])
    for sample in ("S1", "S2"):
        adata = ad.read_h5ad(out / f"{sample}.cell2location.h5ad")
        assert adata.var_names[0] == "ENSg00"  # original gene names kept
        assert list(adata.obsm[keys.C2L_Q05].columns) == TYPES
        q05 = pd.read_csv(out / f"{sample}.cell2location_q05.csv", index_col=0)
        assert list(q05.index) == list(adata.obs_names) and list(q05.columns) == TYPES
        np.testing.assert_allclose(q05.to_numpy(), adata.obsm[keys.C2L_Q05].to_numpy(), rtol=1e-5)
        qc = json.loads((out / f"{sample}.cell2location_qc.json").read_text())
        assert qc["sample"] == sample and qc["group"] == "G" and qc["n_genes_used"] == N_GENES
        assert (out / f"{sample}.cell2location_maps.png").stat().st_size > 1000
    assert (out / "G.cell2location_model" / "model.pt").is_file()
    assert (out / "G.cell2location_training_loss.png").is_file()
    assert (out / "G.cell2location_reconstruction.png").is_file()


def test_map_cell2location_script_sample_mismatch(tmp_path):
    slide, _ = make_slide("S1", 1)
    slide.write_h5ad(tmp_path / "S1.h5ad")
    true_signatures().to_csv(tmp_path / "sig.csv")
    script = _load_script("map_cell2location.py")
    with pytest.raises(InputError, match="sample X: .* holds sample\\(s\\) S1"):
        script.main(["--signatures", str(tmp_path / "sig.csv"), "--slides", str(tmp_path / "S1.h5ad"),
                     "--samples", "X", "--group", "G", "--outdir", str(tmp_path)])
