"""Numbers after `--hd_mode cells` on Space Ranger 4 boundaries made wrong on purpose (test_segmentation_truth.yml).

The generator recorded which true cells were merged, split or shifted; the cells the run kept (the output store's
shapes, the QC, the mapped cells) are scored against the true cells with ``synth_hd.score_segmentation``. The test
passes when the degradation is measured: a run that silently "fixed" or lost the boundaries fails, and so would a
metric blind to bad segmentations.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]

SAMPLE = "hd1_perturbed"
# thresholds fixed before the run (from the construction: ~30% of the true cells perturbed, each below IoU 0.5)
MAX_MATCHED = 0.75  # true cells matched at IoU ≥ 0.5 by the run's cells (the true boundaries: 1.0)
MIN_UNTOUCHED_MATCHED = 0.99  # cells whose boundary was left right are matched
MIN_UNTOUCHED_LABEL_ACCURACY = 0.8  # as the true-boundary cells mode run (test_hd cells mode)


def _truth(workflow_dir) -> pd.DataFrame:
    return pd.read_csv(Path(workflow_dir, "perturbed", "truth", f"{SAMPLE}_cells.csv"))


def _store_cells(workflow_dir):
    import spatialdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = spatialdata.read_zarr(Path(workflow_dir, "results", "spatial", SAMPLE, f"{SAMPLE}.spatialdata.zarr"))
    key = next(k for k in sdata.shapes if k.endswith("_cell_segmentations"))
    return sdata.shapes[key], sdata.tables["table"]


@pytest.mark.workflow("test_hd perturbed boundaries")
def test_the_bad_segmentation_is_measured(workflow_dir):
    from testdata import synth_hd

    truth = _truth(workflow_dir)
    shapes, _ = _store_cells(workflow_dir)
    score = synth_hd.score_segmentation(shapes, synth_hd.true_cell_polygons(truth))
    kind = truth["perturbation"].to_numpy()
    summary = {k: v for k, v in score.items() if k not in ("match", "best_iou")}
    assert score["matched_fraction"] <= MAX_MATCHED, summary
    assert (score["match"][kind == "none"] >= 0).mean() >= MIN_UNTOUCHED_MATCHED, summary
    assert not (score["match"][kind != "none"] >= 0).any(), summary
    assert score["merges"] == (kind == "merged").sum() // 2 and score["splits"] == (kind == "split").sum(), summary
    qc = json.loads(Path(workflow_dir, "results", "qc", SAMPLE, f"{SAMPLE}.qc.json").read_text())
    assert qc["cells_found"] == len(shapes) == len(truth) - (kind == "merged").sum() // 2 + (kind == "split").sum()


@pytest.mark.workflow("test_hd perturbed boundaries")
def test_cells_kept_right_are_labelled_as_with_true_boundaries(workflow_dir):
    from testdata import synth_hd

    truth = _truth(workflow_dir)
    shapes, _ = _store_cells(workflow_dir)
    score = synth_hd.score_segmentation(shapes, synth_hd.true_cell_polygons(truth))
    labels = pd.read_csv(Path(workflow_dir, "results", "spatial", SAMPLE, f"{SAMPLE}.cell_types.csv"), index_col="unit")
    ok = (score["match"] >= 0) & (truth["perturbation"].to_numpy() == "none")
    found = shapes.index.astype(str).to_numpy()[score["match"][ok]]
    kept = np.isin(found, labels.index)
    predicted = labels.loc[found[kept], "predicted_cell_type"].to_numpy()
    accuracy = float((predicted == truth["cell_type"].to_numpy()[ok][kept]).mean())
    assert kept.mean() >= 0.95 and accuracy >= MIN_UNTOUCHED_LABEL_ACCURACY, (kept.mean(), accuracy)
