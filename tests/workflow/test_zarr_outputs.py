"""SpatialData stores in, consensus out (test_zarr.yml): the new store of each `zarr` slide holds the
methods' consensus proportions and their per-location disagreement, and they are right."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TRUTH = Path(__file__).resolve().parents[2] / "assets" / "test_data_hd" / "truth"
# sample -> (shapes the table annotates, their instance column)
STORES = {"zarr_xenium": ("cell_boundaries", "cell_id"), "zarr_hd": ("_square_008um", "location_id")}
MIN_PEARSON = 0.8  # per type, consensus of 8 µm bins vs the true share of their counts (as test_hd)
MIN_LABEL_ACCURACY = 0.8  # Xenium cells: consensus argmax vs the true type


def _store(workflow_dir, sample):
    import spatialdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spatialdata.read_zarr(Path(workflow_dir, f"results/spatial/{sample}/{sample}.spatialdata.zarr"))


@pytest.mark.workflow("zarr samplesheet consensus")
@pytest.mark.parametrize("sample", sorted(STORES))
def test_store_holds_the_consensus_and_disagreement(workflow_dir, sample):
    sdata = _store(workflow_dir, sample)
    table = sdata.tables["table"]
    shapes, instance = STORES[sample]
    assert (
        table.uns["spatialdata_attrs"]["region"] == shapes
        and table.uns["spatialdata_attrs"]["instance_key"] == instance
    )
    assert shapes in sdata.shapes and len(sdata.images) >= 1
    assert {"flashdeconv_proportions", "nnls_proportions", "consensus_proportions"} <= set(table.obsm)
    props = table.obsm["consensus_proportions"]
    n = table.obs["consensus_n_methods"].to_numpy()
    fitted = props.notna().all(axis=1).to_numpy()
    assert (fitted == (n > 0)).all() and fitted.mean() >= 0.95, fitted.mean()
    assert np.allclose(props[fitted].sum(axis=1), 1.0, atol=1e-4)
    assert (props[fitted].to_numpy() >= 0).all()
    score = table.obs["consensus_disagreement"].to_numpy(dtype=float)
    assert (np.isfinite(score) == (n == 2)).all() and (n[fitted] == 2).all()
    assert ((score[n == 2] >= 0) & (score[n == 2] <= 1)).all() and 0 < np.nanmean(score) < 0.3
    for method in ("flashdeconv", "nnls"):
        assert np.isfinite(table.obs[f"consensus_jsd_{method}"].to_numpy(dtype=float)[n == 2]).all()
    # the same numbers as the consensus tables of COMPARE_METHODS
    csv = pd.read_csv(Path(workflow_dir, f"results/consensus/{sample}/{sample}.consensus_proportions.csv"), index_col=0)
    csv.index = csv.index.astype(str)
    names = table.obs_names.astype(str)
    assert np.allclose(props[fitted].to_numpy(), csv.loc[names[fitted], props.columns].to_numpy(), atol=1e-6)
    scores = pd.read_csv(
        Path(workflow_dir, f"results/consensus/{sample}/{sample}.consensus_disagreement.csv"), index_col=0
    )
    scores.index = scores.index.astype(str)
    assert np.allclose(score[n == 2], scores.loc[names[n == 2], "disagreement"].to_numpy(), atol=1e-6)
    summary = pd.read_csv(Path(workflow_dir, "results/consensus/consensus_summary.tsv"), sep="\t", index_col=0)
    assert np.nanmean(score) == pytest.approx(summary.loc[sample, "mean_disagreement"], abs=1e-5)


@pytest.mark.workflow("zarr samplesheet consensus")
def test_hd_store_consensus_matches_the_true_bin_shares(workflow_dir):
    table = _store(workflow_dir, "zarr_hd").tables["table"]
    props = table.obsm["consensus_proportions"].dropna()
    props.index = props.index.astype(str)
    truth = pd.read_csv(TRUTH / "hd1_bins_008um_proportions.csv", index_col=0).loc[props.index]
    r = {c: np.corrcoef(props[c], truth[c])[0, 1] for c in props.columns}
    assert min(r.values()) >= MIN_PEARSON, r


@pytest.mark.workflow("zarr samplesheet consensus")
def test_xenium_store_consensus_labels_the_true_types(workflow_dir):
    table = _store(workflow_dir, "zarr_xenium").tables["table"]
    props = table.obsm["consensus_proportions"].dropna()
    truth = pd.read_csv(TRUTH / "xenium1_cells.csv", index_col="cell_id")["cell_type"]
    cells = table.obs.loc[props.index, "cell_id"].astype(str)
    assert len(props) == len(truth)
    accuracy = float((props.idxmax(axis=1).to_numpy() == truth.loc[cells].to_numpy()).mean())
    assert accuracy >= MIN_LABEL_ACCURACY, accuracy
