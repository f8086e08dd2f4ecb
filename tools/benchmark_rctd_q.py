#!/usr/bin/env python3
"""Benchmark RCTD's likelihood table: rctd-py's own function against the pipeline's, side by side.

Arms, run in turn in every repeat (the machine is shared: each figure is the min and median of
``--repeats``):

``package``
    ``rctd._likelihood.compute_q_matrix(sigma / 100, build_x_vals(), K_val=--package-k)`` for
    each of ``--package-sigmas``: rows of counts ``0..K+2`` over all 439 grid points, each row
    a (count, sigma). Its cost per row does not depend on the count, so the full default table
    (126 sigmas x 1,003 counts) is extrapolated from the measured seconds per row (labelled so).
``fast``
    ``bin/compute_rctd_q.py --k-max 1000 --sigma-step 1 --workers --threads``, the command
    RCTD_QMATRIX runs, in a new process with an empty numba cache (a fresh machine: imports,
    compilation, the table, its check against the package and the 444 MB file written), timed
    from outside; the table's own compute time is read from its JSON.

The first repeat also compares the package's rows with the same rows of the fast table
(largest absolute difference on the log scale), and the fast table with the committed sample
``tests/unit/data/rctd_q_sample.npz``.

``--write-sample PATH`` instead writes that sample: the package's ``compute_q_matrix`` at the
sample's sigmas, counts and grid points (the extremes included), about a minute.

Example::

    ~/.cache/spatialmap/env/bin/python tools/benchmark_rctd_q.py --threads 2 --repeats 3 --workdir /tmp/rctdq
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "bin") not in sys.path:
    sys.path.insert(0, str(REPO / "bin"))

import numpy as np  # noqa: E402

from spatialmap import cli  # noqa: E402

SAMPLE = REPO / "tests" / "unit" / "data" / "rctd_q_sample.npz"
# the committed sample: smallest and largest sigma and around sigma 1.0 and the grid's change of
# step (70, 72); counts 0, 1, 2 ... up to the table's last row; both ends of the grid and between
SAMPLE_SIGMAS = (10, 11, 37, 70, 72, 100, 150, 198, 200)
SAMPLE_COUNTS = (0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 900, 999, 1000, 1001, 1002)
SAMPLE_GRID = (0, 1, 2, 10, 39, 40, 41, 100, 200, 300, 400, 437, 438)
SAMPLE_K_MAX = 1000
FULL_ROWS = 126 * 1003  # (sigma, count) rows of the default table


def write_sample(path: Path) -> None:
    """The package's own numbers at the sample's (sigma, count, grid point), written to ``path``."""
    from rctd._likelihood import build_x_vals, compute_q_matrix

    x_vals = build_x_vals()
    grid = np.array(SAMPLE_GRID)
    rows = []
    for sigma in SAMPLE_SIGMAS:
        t0 = time.perf_counter()
        q = compute_q_matrix(sigma / 100.0, x_vals[grid], K_val=SAMPLE_K_MAX)
        for k in SAMPLE_COUNTS:
            rows += [(sigma, k, int(i), float(q[k, c])) for c, i in enumerate(grid)]
        print(f"sigma {sigma}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    table = np.array(rows, dtype=[("sigma", "i4"), ("count", "i4"), ("grid", "i4"), ("q", "f8")])
    with cli.atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle, entries=table, k_max=SAMPLE_K_MAX, rctd_py=cli.package_versions(["rctd-py"])["rctd-py"]
            )
    print(f"{len(table)} entries written to {path}", file=sys.stderr)


def run_package(sigmas: list[int], k: int) -> tuple[float, dict[int, np.ndarray]]:
    """Seconds per (count, sigma) row of the package's ``compute_q_matrix``, and the rows."""
    from rctd._likelihood import build_x_vals, compute_q_matrix

    x_vals = build_x_vals()
    t0 = time.perf_counter()
    rows = {s: compute_q_matrix(s / 100.0, x_vals, K_val=k) for s in sigmas}
    return (time.perf_counter() - t0) / (len(sigmas) * (k + 3)), rows


def run_fast(workdir: Path, threads: int, repeat: int) -> tuple[float, float, Path]:
    """Wall seconds of ``compute_rctd_q.py`` for the full default table from a cold start, its compute seconds."""
    out = workdir / f"fast_{repeat}.npz"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(workdir / f"numba_cache_{repeat}"), PYTHONPATH=str(REPO / "bin"))
    cmd = [sys.executable, str(REPO / "bin" / "compute_rctd_q.py"), "--output", str(out), "--k-max", "1000"]
    cmd += ["--sigma-step", "1", "--workers", str(threads), "--versions", str(workdir / "versions.yml")]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return wall, json.loads(out.with_suffix(".json").read_text())["seconds"], out


def compare(table_path: Path, package_rows: dict[int, np.ndarray]) -> tuple[float, float]:
    """Largest |difference| of the fast table from the package's rows, and from the committed sample."""
    with np.load(table_path) as z:
        worst_rows = max(float(np.abs(z[f"Q_{s}"][: len(r)] - r).max()) for s, r in package_rows.items())
        with np.load(SAMPLE) as sample:
            e = sample["entries"]
            fast = np.array([z[f"Q_{s}"][k, i] for s, k, i in zip(e["sigma"], e["count"], e["grid"])])
        worst_sample = float(np.abs(fast - e["q"]).max())
    return worst_rows, worst_sample


def _spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("rctd_q_bench"), help="folder of the tables written")
    p.add_argument("--threads", type=int, default=2, help="threads of the fast engine (default: 2)")
    p.add_argument("--repeats", type=int, default=3, help="times each arm runs (default: 3)")
    p.add_argument("--package-sigmas", default="10,100,200", help="sigmas (x100) the package's function runs")
    p.add_argument("--package-k", type=int, default=2, help="K_val of the package's rows: counts 0..K+2 (default: 2)")
    p.add_argument("--write-sample", type=Path, default=None, help="write the unit test's sample here and stop")
    args = p.parse_args(argv)
    if args.write_sample:
        write_sample(args.write_sample)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    sigmas = [int(s) for s in args.package_sigmas.split(",")]
    per_row, walls, computes = [], [], []
    for repeat in range(args.repeats):
        seconds, rows = run_package(sigmas, args.package_k)
        per_row.append(seconds)
        wall, compute, table = run_fast(args.workdir, args.threads, repeat)
        walls.append(wall)
        computes.append(compute)
        if repeat == 0:
            diff_rows, diff_sample = compare(table, rows)
        table.unlink()
        print(f"repeat {repeat}: package {seconds:.3f} s per row; fast {wall:.1f} s wall ({compute:.1f} s compute)")
    extrapolated = [s * FULL_ROWS for s in per_row]
    print(
        "\n| arm (min / median of %d) | full default table (126 sigmas x counts 0..1,000) |\n|---|---|\n"
        "| rctd-py `compute_q_matrix`, one core | %.3f / %.3f s per (count, sigma) row: %.1f / %.1f CPU-hours "
        "(extrapolated from %d rows) |\n"
        "| `compute_rctd_q.py`, %d threads, cold start to file written | %s s wall (table alone: %s s) |\n"
        % (
            args.repeats,
            min(per_row),
            statistics.median(per_row),
            min(extrapolated) / 3600,
            statistics.median(extrapolated) / 3600,
            len(sigmas) * (args.package_k + 3),
            args.threads,
            _spread(walls),
            _spread(computes),
        )
    )
    print(f"largest |difference| (log scale): {diff_rows:.2e} on the package's rows, {diff_sample:.2e} on the sample")


if __name__ == "__main__":
    main()
