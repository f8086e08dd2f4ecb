"""Input rules shared by every reader: each written once here, worded by its caller.

The scripts (read_slide, slide_qc, prepare_reference, the mappers) and the unit tests call these
through :func:`spatialmap.io.visium.check_raw_counts` (slides: names the gene and spot) and
:func:`spatialmap.reference.prepare.check_integer_counts` (reference and signatures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse


@dataclass
class CountProblem:
    """The first value that breaks the raw-count rule.

    ``kind``: ``"dtype"`` (not numeric), ``"nonfinite"`` (NaN or infinite), ``"negative"`` or
    ``"fractional"``; ``row``, ``col``: its position (None for ``"dtype"``); ``value``; ``count``:
    how many values break the same rule.
    """

    kind: str
    row: int | None = None
    col: int | None = None
    value: float | None = None
    count: int = 0
    dtype: str = ""


def raw_count_problem(X) -> CountProblem | None:
    """None when ``X`` (dense or sparse) holds only non-negative whole numbers, else the first problem.

    Only stored values are inspected on sparse data, so the check is cheap.
    """
    if sparse.issparse(X):
        X = X if X.format in ("csr", "csc") else sparse.csr_matrix(X)
        values = np.asarray(X.data)
    else:
        X = np.asarray(X)
        values = X.ravel()
    if values.size == 0:
        return None
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        return CountProblem("dtype", dtype=str(values.dtype))
    floating = np.issubdtype(values.dtype, np.floating)
    rules = (
        ("nonfinite", (lambda v: ~np.isfinite(v)) if floating else None),
        ("negative", lambda v: v < 0),
        ("fractional", (lambda v: v != np.round(v)) if floating else None),
    )
    for kind, rule in rules:
        if rule is None:
            continue
        bad = rule(values)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            row, col = _position(X, pos)
            return CountProblem(kind, row, col, float(values[pos]), int(bad.sum()))
    return None


def _position(X, flat_pos: int) -> tuple[int, int]:
    """(row, column) of the ``flat_pos``-th stored value."""
    if sparse.issparse(X):
        major = int(np.searchsorted(X.indptr, flat_pos, side="right") - 1)
        minor = int(X.indices[flat_pos])
        return (major, minor) if X.format == "csr" else (minor, major)
    row, col = np.unravel_index(flat_pos, X.shape)
    return int(row), int(col)
