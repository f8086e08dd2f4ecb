"""A refused parameter stops the run before any task starts (pytest-workflow custom tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

REFUSED = (
    "bad parameter unknown enum value",
    "bad parameter negative epochs",
    "bad parameter non-numeric threshold",
    "bad parameter unknown methods entry",
    "bad parameters all reported at once",
    "bad parameter missing outdir",
    "bad parameter domain level not among the levels",
    "bad parameter celltypist voting over skipped domains",
)


def started_tasks(workflow_dir: Path) -> list[str]:
    """Task directories under work/ and rows of any trace (both empty when nothing ran)."""
    work = Path(workflow_dir, "work")
    dirs = [str(p) for p in work.glob("??/*") if p.is_dir()] if work.exists() else []
    rows = []
    for trace in Path(workflow_dir).rglob("execution_trace_*.txt"):
        rows += trace.read_text().splitlines()[1:]
    return dirs + rows


def _no_task_started_test(name: str):
    @pytest.mark.workflow(name)
    def test(workflow_dir):
        assert started_tasks(workflow_dir) == []
        assert not Path(workflow_dir, "results", "qc").exists()

    test.__name__ = "test_no_task_started_" + name.replace(" ", "_").replace("-", "_")
    return test


# one test per refused run (pytest-workflow binds a custom test to one workflow by its mark)
for _name in REFUSED:
    _test = _no_task_started_test(_name)
    globals()[_test.__name__] = _test
