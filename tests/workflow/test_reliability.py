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


def trace_rows(workflow_dir) -> pd.DataFrame:
    """Every task attempt of the run (the trace written with conf/test_faults.config's fields)."""
    traces = sorted(Path(workflow_dir, "results", "pipeline_info").glob("execution_trace_*.txt"))
    return pd.concat([pd.read_csv(t, sep="\t", dtype=str) for t in traces], ignore_index=True)


@pytest.mark.workflow("out of memory retried with more memory")
def test_oom_retried_with_more_memory(workflow_dir):
    trace = trace_rows(workflow_dir)
    check = trace[trace["name"].str.contains("CHECK_SAMPLESHEET")].sort_values("attempt")
    assert list(check["attempt"]) == ["1", "2"]
    assert list(check["status"]) == ["FAILED", "COMPLETED"]
    assert list(check["exit"]) == ["137", "0"]
    # process_single: 4 GB x attempt (base.config), under the 16 GB cap given
    assert list(check["memory"]) == ["4 GB", "8 GB"]
    # no other task needed a retry, and every one finished
    others = trace[~trace["name"].str.contains("CHECK_SAMPLESHEET")]
    assert (others["attempt"] == "1").all() and (others["status"] == "COMPLETED").all()


def _last_trace(results: Path) -> pd.DataFrame:
    traces = sorted(Path(results, "pipeline_info").glob("execution_trace_*.txt"))
    return pd.read_csv(traces[-1], sep="\t", dtype=str)


@pytest.mark.workflow("resume after a kill")
def test_finished_tasks_cached_after_kill(workflow_dir):
    finished = Path(workflow_dir, "finished_before_kill.txt").read_text().split()
    # the samplesheet check, 3 x read + QC, the reference and the overlap check at least
    assert len(finished) >= 9
    trace = _last_trace(Path(workflow_dir, "resumed", "results")).set_index("hash")
    for work_dir in finished:
        assert trace.loc[work_dir[:9], "status"] == "CACHED", work_dir
    # the task killed mid-run ran again, to completion
    tangram = trace[trace["name"].str.contains("TANGRAM")]
    assert len(tangram) == 3 and (tangram["status"].isin(["COMPLETED", "CACHED"])).all()
    assert (tangram["status"] == "COMPLETED").any()
    assert set(trace["status"]) <= {"CACHED", "COMPLETED"}


@pytest.mark.workflow("resume after a kill")
def test_resumed_results_equal_an_uninterrupted_run(workflow_dir):
    resumed, plain = Path(workflow_dir, "resumed", "results"), Path(workflow_dir, "uninterrupted", "results")
    for sample in SLIDES:
        for name in (
            f"tangram/{sample}/{sample}.tangram_proportions.csv",
            f"tangram/{sample}/{sample}.tangram_counts.csv",
        ):
            a, b = pd.read_csv(resumed / name, index_col=0), pd.read_csv(plain / name, index_col=0)
            assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns)
            np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-4, atol=1e-6)
        qa = json.loads((resumed / f"qc/{sample}/{sample}.qc.json").read_text())
        qb = json.loads((plain / f"qc/{sample}/{sample}.qc.json").read_text())
        assert qa == qb
    a = pd.read_csv(resumed / "reference/gene_overlap.tsv", sep="\t", index_col=0).sort_index()
    b = pd.read_csv(plain / "reference/gene_overlap.tsv", sep="\t", index_col=0).sort_index()
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.workflow("no partial results after a kill mid-write")
def test_no_partial_results_after_a_kill(workflow_dir):
    import anndata as ad

    trace = trace_rows(workflow_dir)
    qc1 = trace[trace["name"].str.contains(r"SLIDE_QC \(slide1\)")].sort_values("attempt")
    assert list(qc1["status"]) == ["FAILED", "COMPLETED"] and list(qc1["exit"]) == ["137", "0"]
    # the killed attempt had written the file under its temporary name only
    killed = next(Path(workflow_dir, "work").glob(qc1.iloc[0]["hash"] + "*"))
    assert not (killed / "slide1.qc.h5ad").exists()
    assert list(killed.glob(".slide1.qc.h5ad.*"))
    assert "test fault: killing the task while it writes slide1.qc.h5ad" in (killed / ".command.err").read_text()
    # what was published is whole, and no temporary file was published
    results = Path(workflow_dir, "results")
    assert not [p for p in results.rglob(".*") if p.is_file()]
    for sample in SLIDES:
        qc = ad.read_h5ad(results / f"qc/{sample}/{sample}.qc.h5ad")
        summary = json.loads((results / f"qc/{sample}/{sample}.qc.json").read_text())
        assert qc.n_obs == summary["spots_kept"] > 0
