"""Signatures: per-type means, the regression model (few epochs), user CSVs, the script."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from spatialmap import device
from spatialmap.cli import InputError
from spatialmap.reference import signatures
from spatialmap.scripts import estimate_signatures

TYPES = ["A", "B", "C"]
N_GENES = 40


def true_signatures(seed=0) -> pd.DataFrame:
    """Genes x types: background 1-3 counts, 8 markers per type at 40."""
    rng = np.random.default_rng(seed)
    sig = rng.uniform(1, 3, size=(N_GENES, len(TYPES)))
    for k in range(len(TYPES)):
        sig[8 * k : 8 * k + 8, k] = 40.0
    return pd.DataFrame(sig, index=[f"g{i:02d}" for i in range(N_GENES)], columns=TYPES)


def make_reference(cells_per_type=20, seed=0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    sig = true_signatures()
    labels = np.repeat(TYPES, cells_per_type)
    counts = rng.poisson(sig[labels].to_numpy().T).astype(np.float32)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels), "batch": pd.Categorical(np.tile(["b1", "b2"], len(labels) // 2))},
        index=[f"c{i}" for i in range(len(labels))],
    )
    return ad.AnnData(X=sparse.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=sig.index))


@pytest.fixture
def ref() -> ad.AnnData:
    return make_reference()


def test_means_are_the_per_type_average_counts(ref):
    result = signatures.estimate_signatures(ref, method="means", label_key="cell_type")
    sig = result.signatures
    assert list(sig.columns) == TYPES and list(sig.index) == list(ref.var_names)
    dense = ref.X.toarray()
    for t in TYPES:
        expected = dense[(ref.obs["cell_type"] == t).to_numpy()].mean(axis=0)
        np.testing.assert_allclose(sig[t].to_numpy(), expected, rtol=1e-6)
    assert result.model is None and result.history is None


def test_regression_recovers_the_signatures(ref, tmp_path):
    result = signatures.estimate_signatures(
        ref,
        method="regression",
        label_key="cell_type",
        batch_key="batch",
        max_epochs=30,
        batch_size=None,
        seed=0,
        accelerator="cpu",
        num_samples=20,
        threads=1,
    )
    sig = result.signatures
    assert sig.shape == (N_GENES, len(TYPES)) and list(sig.columns) == TYPES
    assert (sig.to_numpy() >= 0).all()
    truth = true_signatures()
    for t in TYPES:  # initialised at the type means; the markers stand out
        r = np.corrcoef(np.log1p(sig[t]), np.log1p(truth[t]))[0, 1]
        assert r > 0.9, (t, r)
    assert len(result.history) == 30
    signatures.plot_training_loss(result.history, tmp_path / "loss.png", "test")
    r = signatures.plot_reconstruction(result, ref, tmp_path / "recon.png")
    assert 0.5 < r <= 1.0
    signatures.save_model_dir(result.model, tmp_path / "model")
    assert (tmp_path / "model" / "model.pt").is_file()
    assert (tmp_path / "loss.png").stat().st_size > 1000 and (tmp_path / "recon.png").stat().st_size > 1000


def test_unknown_method_and_column(ref):
    with pytest.raises(InputError, match="must be one of regression, means"):
        signatures.estimate_signatures(ref, method="nmf", label_key="cell_type")
    with pytest.raises(InputError, match="column 'donor' not in obs"):
        signatures.estimate_signatures(ref, method="means", label_key="cell_type", batch_key="donor")


def test_gpu_requested_without_gpu_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no GPU"):
        device.resolve_accelerator("gpu")
    assert device.resolve_accelerator("auto") == "cpu"


# --- user signatures ---------------------------------------------------------------------


def test_load_signatures_csv_reads_genes_by_types(tmp_path):
    path = tmp_path / "sig.csv"
    true_signatures().to_csv(path, index_label="gene")
    sig = signatures.load_signatures_csv(path)
    pd.testing.assert_frame_equal(sig, true_signatures(), check_names=False)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda df: df.iloc[:, :1], "at least 2 cell type columns"),
        (lambda df: df.assign(A=-df["A"]), "column 'A' has a negative value for gene g00"),
        (lambda df: df.assign(B=["x"] + list(df["B"].iloc[1:])), "column 'B' has a non-numeric value for gene g00"),
        (lambda df: df.assign(C=0.0), "all-zero signatures: C"),
        (lambda df: df.iloc[:5], "only 5 genes"),
    ],
)
def test_load_signatures_csv_rejects_bad_tables(tmp_path, edit, message):
    path = tmp_path / "sig.csv"
    edit(true_signatures()).to_csv(path)
    with pytest.raises(InputError, match=message):
        signatures.load_signatures_csv(path)


def test_load_signatures_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        signatures.load_signatures_csv(tmp_path / "absent.csv")


# --- script ------------------------------------------------------------------------------


def test_estimate_signatures_script_means(tmp_path, ref):
    ref.write_h5ad(tmp_path / "ref.h5ad")
    script = estimate_signatures
    prefix = tmp_path / "reference"
    script.main(
        [
            "--reference",
            str(tmp_path / "ref.h5ad"),
            "--method",
            "means",
            "--label-key",
            "cell_type",
            "--output-csv",
            str(tmp_path / "sig.csv"),
            "--output-model-dir",
            str(tmp_path / "model"),
            "--output-prefix",
            str(prefix),
            "--versions",
            str(tmp_path / "versions.yml"),
        ]
    )
    sig = signatures.load_signatures_csv(tmp_path / "sig.csv")
    dense = ref.X.toarray()
    a_mean = dense[(ref.obs["cell_type"] == "A").to_numpy()].mean(axis=0)
    np.testing.assert_allclose(sig["A"].to_numpy(), a_mean[np.isin(ref.var_names, sig.index)], rtol=1e-5)
    assert (tmp_path / "reference.gene_filter.png").is_file()
    assert (tmp_path / "reference.reconstruction.png").is_file()
    assert not (tmp_path / "reference.training_loss.png").exists()
    assert (tmp_path / "model" / "NOTE.txt").is_file()
    assert "cell2location" in (tmp_path / "versions.yml").read_text()
