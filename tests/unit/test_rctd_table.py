"""RCTD's likelihood table from :mod:`spatialmap.methods.rctd_table` equals rctd-py's own.

The reference numbers are rctd-py's ``compute_q_matrix`` at a committed sample of (sigma, count,
grid point): ``tests/unit/data/rctd_q_sample.npz``, written by
``tools/benchmark_rctd_q.py --write-sample`` (about a minute of the package's function). A few
entries are also computed live with the package's function, so a change of the installed package
shows here too. Equality: within 1e-8 on the log scale (measured: ~1e-12).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spatialmap.methods import rctd as rctd_method
from spatialmap.methods import rctd_table

SAMPLE = Path(__file__).resolve().parent / "data" / "rctd_q_sample.npz"


@pytest.fixture(scope="module")
def sample():
    with np.load(SAMPLE) as z:
        return z["entries"].copy(), int(z["k_max"])


def test_the_sample_holds_the_extremes(sample):
    entries, k_max = sample
    from rctd._likelihood import build_x_vals
    from rctd._sigma import SIGMA_ALL

    assert k_max == 1000
    assert {0, 1, 2, k_max, k_max + 2} <= set(entries["count"])  # 0, 1, large counts, the last row
    assert {int(SIGMA_ALL.min()), int(SIGMA_ALL.max()), 100} <= set(entries["sigma"])
    assert {0, 1, len(build_x_vals()) - 1} <= set(entries["grid"])  # both ends of the grid
    assert len(entries) > 2000


def test_the_table_equals_the_package_on_the_committed_sample(sample):
    entries, k_max = sample
    sigmas = sorted({int(s) for s in entries["sigma"]})
    grid = np.unique(entries["grid"])
    table = rctd_table.compute_q_tables(sigmas, k_max, threads=2, grid=grid)
    assert table.shape == (len(sigmas), k_max + 3, len(grid))
    position = {s: n for n, s in enumerate(sigmas)}
    ours = table[[position[int(s)] for s in entries["sigma"]], entries["count"], np.searchsorted(grid, entries["grid"])]
    diff = np.abs(ours - entries["q"])
    assert diff.max() <= rctd_table.TOLERANCE, f"largest difference {diff.max():.3g}"
    assert np.isfinite(table).all() and (table <= 0).all() and (table >= rctd_table.LOG_FLOOR).all()


@pytest.mark.parametrize("sigma", [10, 200])
def test_the_table_equals_the_package_live(sigma):
    """The package's public function, called now: every grid point, counts 0..4; and counts 1000..1002."""
    from rctd._likelihood import _get_q_single, build_x_vals, compute_q_matrix

    x_vals = build_x_vals()
    small = rctd_table.compute_q_tables([sigma], 2, threads=1)[0]
    assert np.abs(small - compute_q_matrix(sigma / 100.0, x_vals, K_val=2)).max() <= rctd_table.TOLERANCE
    large = rctd_table.compute_q_tables([sigma], 1000, threads=1)[0]
    grid = np.array([0, 219, 438])
    for k in (1000, 1002):
        reference = np.log(np.maximum(_get_q_single(x_vals[grid], k, sigma / 100.0), 1e-300))
        assert np.abs(large[k, grid] - reference).max() <= rctd_table.TOLERANCE


def test_the_run_time_check_catches_a_wrong_table():
    table = rctd_table.compute_q_tables([100], 60, threads=1)
    assert rctd_table.check_against_package(table, [100], 60) <= rctd_table.TOLERANCE
    table[0, 1, 219] += 1e-6
    with pytest.raises(ValueError, match="differs from rctd-py's compute_q_matrix"):
        rctd_table.check_against_package(table, [100], 60)


def test_compute_rctd_q_matrix_says_how_it_was_computed(tmp_path):
    path = rctd_method.compute_rctd_q_matrix(tmp_path / "q.npz", k_max=20, sigma_step=8, workers=2)
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["engine"] == "fast" and info["max_abs_diff_checked"] <= rctd_table.TOLERANCE
    assert info["sigmas"] == rctd_method.rctd_sigma_grid(8) and info["k_max"] == 20
    with np.load(path) as z:
        assert z["Q_100"].shape == (23, 439)
        assert np.abs(z["Q_100"] - rctd_table.compute_q_tables([100], 20)[0]).max() == 0.0
    with pytest.raises(ValueError, match="engine must be one of"):
        rctd_method.compute_rctd_q_matrix(tmp_path / "x.npz", k_max=20, engine="slow")
