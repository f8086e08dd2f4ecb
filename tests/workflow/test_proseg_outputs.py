"""Numbers a user checks after `--hd_mode cells --segmentation stardist_proseg` on the test_hd data
(Visium HD: StarDist nuclei refined by ProSeg; Xenium: ProSeg refining the platform's cells).

ProSeg's cells are matched to the generated true cells (assets/test_data_hd/truth): a true cell is
found when exactly one ProSeg cell's centroid lies within MATCH_UM of its centre (and that cell is
no other true cell's match); the predicted type of the matched cells is compared with the truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]

HD = REPO / "assets" / "test_data_hd"
MATCH_UM = 3.0  # centroid within 3 µm of the true centre (true cell radius 3.6-4.4 µm)
COUNT_TOLERANCE = 0.10  # cells found within 10% of the true number
MIN_MATCHED = 0.85  # share of true cells matched one-to-one
MIN_LABEL_ACCURACY = 0.75  # predicted type == true type, over the matched cells
UM_PER_PX = {"hd1": 0.5, "xenium1": 0.2125}  # full-resolution (HD) / morphology (Xenium) pixels


def _results(workflow_dir) -> Path:
    return Path(workflow_dir, "results")


def _matched(workflow_dir, sample: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    import anndata as ad
    from scipy.spatial import cKDTree

    mapped = ad.read_h5ad(_results(workflow_dir) / f"spatial/{sample}/{sample}.mapped.h5ad")
    truth = pd.read_csv(HD / "truth" / f"{sample}_cells.csv")
    dist, idx = cKDTree(mapped.obsm["spatial"]).query(truth[["x_px", "y_px"]].to_numpy())
    close = dist * UM_PER_PX[sample] < MATCH_UM
    unique = pd.Series(idx[close]).value_counts()
    one_to_one = close & np.isin(idx, unique.index[unique == 1])
    stats = {"true": len(truth), "found": mapped.n_obs, "matched": float(one_to_one.mean())}
    return truth[one_to_one], mapped.obs.iloc[idx[one_to_one]], stats


@pytest.mark.workflow("test_hd stardist proseg")
@pytest.mark.parametrize("sample", ["hd1", "xenium1"])
def test_proseg_cells_match_the_true_cells(workflow_dir, sample):
    _, _, stats = _matched(workflow_dir, sample)
    assert abs(stats["found"] - stats["true"]) <= COUNT_TOLERANCE * stats["true"], stats
    assert stats["matched"] >= MIN_MATCHED, stats
    qc = json.loads((_results(workflow_dir) / f"qc/{sample}/{sample}.qc.json").read_text())
    expected = {"hd1": "stardist_proseg", "xenium1": "proseg"}[sample]
    assert qc["segmentation"] == expected and qc["cells_kept"] == stats["found"] <= qc["cells_found"]


@pytest.mark.workflow("test_hd stardist proseg")
@pytest.mark.parametrize("sample", ["hd1", "xenium1"])
def test_proseg_cell_labels_match_the_truth(workflow_dir, sample):
    truth, found, _ = _matched(workflow_dir, sample)
    labels = pd.read_csv(_results(workflow_dir) / f"spatial/{sample}/{sample}.cell_types.csv", index_col="unit")
    predicted = labels.loc[found.index, "predicted_cell_type"].to_numpy()
    accuracy = float((predicted == truth["cell_type"].to_numpy()).mean())
    assert accuracy >= MIN_LABEL_ACCURACY, f"{sample}: label accuracy {accuracy:.3f} over {len(truth)} matched cells"
