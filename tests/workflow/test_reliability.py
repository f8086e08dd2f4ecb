"""Numbers behind the reliability pipeline tests (pytest-workflow custom tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
TRUTH = REPO / "assets" / "test_data" / "truth"
SLIDES = ("slide1", "slide2", "slide3")
# 413 genes, 13 of them mitochondrial (removed from one side by QC / reference preparation)
SHARED_GENES = 400


def last_failure_line(workflow_dir) -> str:
    lines = Path(workflow_dir, "log.out").read_text().splitlines()
    failed = [line for line in lines if "spatialmap failed:" in line]
    assert failed, "no 'spatialmap failed' line"
    return failed[-1]


@pytest.mark.workflow("failure line is the script message")
def test_failure_line_is_the_script_message(workflow_dir):
    assert last_failure_line(workflow_dir).endswith(
        "spatialmap failed: ERROR: sample slide1: slide1.h5ad repeats spot names (obs_names)"
    )


def _check_matched(workflow_dir, naming: str) -> None:
    table = pd.read_csv(Path(workflow_dir, "results/reference/gene_overlap.tsv"), sep="\t", index_col=0)
    assert sorted(table.index) == list(SLIDES)
    assert set(table["genes_matched_by"]) == {naming}
    assert (table["shared_genes"] == SHARED_GENES).all()
    details = json.loads(Path(workflow_dir, "results/reference/gene_overlap.json").read_text())
    assert details["gene_matching"]["description"] == naming
    for sample in SLIDES:
        # the mapping ran on the matched genes: proportions follow the truth
        est = pd.read_csv(Path(workflow_dir, f"results/tangram/{sample}/{sample}.tangram_proportions.csv"), index_col=0)
        truth = pd.read_csv(TRUTH / f"{sample}_proportions.csv", index_col=0).loc[est.index, est.columns]
        r = np.mean([np.corrcoef(est[c], truth[c])[0, 1] for c in est.columns])
        assert r > 0.9, (sample, r)


@pytest.mark.workflow("genes matched ensembl reference to symbol slides")
def test_ensembl_reference_matched(workflow_dir):
    _check_matched(workflow_dir, "reference var_names = slide var['gene_ids']")


@pytest.mark.workflow("genes matched symbol reference to ensembl slides")
def test_ensembl_slides_matched(workflow_dir):
    _check_matched(workflow_dir, "reference var['gene_ids'] = slide var_names")
