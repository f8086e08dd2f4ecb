"""Damaged inputs are refused before any heavy task (pytest-workflow custom tests of test_broken_inputs.yml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_reliability_params import started_tasks


def _processes(workflow_dir: Path) -> set[str]:
    """The processes that started (their names, from the log's 'Submitted process > NAME (tag)' lines)."""
    lines = Path(workflow_dir, "log.out").read_text().splitlines()
    return {line.split("> ", 1)[1].split(" (")[0].split(":")[-1] for line in lines if "Submitted process >" in line}


# the tasks a slide goes through after the samplesheet check (PREPARE_REFERENCE, which needs no slide,
# may start beside CHECK_SAMPLESHEET)
SLIDE_TASKS = {"MAKE_PATCHES", "SEGMENT_PATCH", "RESOLVE_SEGMENTATION", "PROSEG", "READ_SLIDE", "SLIDE_QC"}


def _stopped_at_the_samplesheet_check(name: str):
    @pytest.mark.workflow(name)
    def test(workflow_dir):
        started = _processes(workflow_dir)
        assert "CHECK_SAMPLESHEET" in started and not started & SLIDE_TASKS, started

    test.__name__ = "test_stopped_at_the_samplesheet_check_" + name.replace(" ", "_")
    return test


for _name in (
    "stardist model without weights is refused",
    "stardist pretrained model offline is refused",
    "visium hd positions of another bin size are refused",
    "markers file without its columns is refused",
):
    _test = _stopped_at_the_samplesheet_check(_name)
    globals()[_test.__name__] = _test


@pytest.mark.workflow("input path with a space is refused with the way round it")
def test_space_in_input_refused_before_any_task(workflow_dir):
    assert started_tasks(workflow_dir) == []
