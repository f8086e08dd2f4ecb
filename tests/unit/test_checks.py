"""The raw-count rule (spatialmap.qc.checks), shared by the slide and reference checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from spatialmap.qc.checks import raw_count_problem


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_raw_counts_pass(fmt):
    X = np.array([[0, 3], [2, 0]], dtype=np.float32)
    X = X if fmt == "dense" else getattr(sparse, f"{fmt}_matrix")(X)
    assert raw_count_problem(X) is None


@pytest.mark.parametrize(
    "value, kind", [(np.nan, "nonfinite"), (np.inf, "nonfinite"), (-1.0, "negative"), (0.5, "fractional")]
)
@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_first_problem_and_its_position(value, kind, fmt):
    X = np.array([[0, 3, 1], [2, 0, value]], dtype=np.float64)
    X = X if fmt == "dense" else getattr(sparse, f"{fmt}_matrix")(X)
    problem = raw_count_problem(X)
    assert problem.kind == kind and (problem.row, problem.col) == (1, 2) and problem.count == 1


def test_non_numeric_refused():
    assert raw_count_problem(np.array([["a", "b"]], dtype=object)).kind == "dtype"
