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

The first repeat also compares the fast table (largest absolute difference on the log scale)
with the package's timed rows, with the committed sample ``tests/unit/data/rctd_q_sample.npz``
and with ``--check-rows`` random (sigma, count) rows over all grid points.

``--write-sample PATH`` instead writes that sample: the package's ``compute_q_matrix`` at the
sample's sigmas, counts and grid points (the extremes included), about a minute.

Example::

    ~/.cache/spatialmap/env/bin/python tools/benchmark_rctd_q.py --threads 2 --repeats 3 --workdir /tmp/rctdq
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from spatialmap import cli

REPO = Path(__file__).resolve().parents[1]

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


def run_package(sigmas: list[int], k: int) -> tuple[float, float, dict[int, np.ndarray]]:
    """Wall and CPU seconds per (count, sigma) row of the package's ``compute_q_matrix``, and the rows."""
    from rctd._likelihood import build_x_vals, compute_q_matrix

    x_vals = build_x_vals()
    t0, c0 = time.perf_counter(), time.process_time()
    rows = {s: compute_q_matrix(s / 100.0, x_vals, K_val=k) for s in sigmas}
    n = len(sigmas) * (k + 3)
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n, rows


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_fast(workdir: Path, threads: int, repeat: int) -> tuple[float, float, float, Path]:
    """Wall and CPU seconds of ``compute_rctd_q.py`` for the full default table from a cold start, and
    the seconds of the table alone (its JSON: kernel compilation, the sums and the check)."""
    out = workdir / f"fast_{repeat}.npz"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(workdir / f"numba_cache_{repeat}"), PYTHONPATH=str(REPO / "bin"))
    cmd = [sys.executable, str(REPO / "bin" / "compute_rctd_q.py"), "--output", str(out), "--k-max", "1000"]
    cmd += ["--sigma-step", "1", "--workers", str(threads), "--versions", str(workdir / "versions.yml")]
    t0, c0 = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    return wall, cpu, json.loads(out.with_suffix(".json").read_text())["seconds"], out


def compare(table_path: Path, package_rows: dict[int, np.ndarray], check_rows: int) -> tuple[float, float, float]:
    """Largest |difference| of the fast table from the package's rows, the committed sample, and random rows.

    The random rows: ``check_rows`` (sigma, count) drawn over the whole table (seed 0), each computed
    over all grid points with ``rctd._likelihood._get_q_single``, the package's routine behind each
    row of ``compute_q_matrix`` (its ``log(max(., 1e-300))`` applied the same way).
    """
    from rctd._likelihood import _get_q_single, build_x_vals

    x_vals = build_x_vals()
    rng = np.random.default_rng(0)
    with np.load(table_path) as z:
        worst_rows = max(float(np.abs(z[f"Q_{s}"][: len(r)] - r).max()) for s, r in package_rows.items())
        with np.load(SAMPLE) as sample:
            e = sample["entries"]
            fast = np.array([z[f"Q_{s}"][k, i] for s, k, i in zip(e["sigma"], e["count"], e["grid"])])
        worst_sample = float(np.abs(fast - e["q"]).max())
        sigmas = sorted(int(n[2:]) for n in z.files if n.startswith("Q_"))
        worst_random = 0.0
        for _ in range(check_rows):
            s, k = int(rng.choice(sigmas)), int(rng.integers(0, 1003))
            ref = np.log(np.maximum(_get_q_single(x_vals, k, s / 100.0), 1e-300))
            worst_random = max(worst_random, float(np.abs(z[f"Q_{s}"][k] - ref).max()))
    return worst_rows, worst_sample, worst_random


def _hours(per_row: list[float]) -> str:
    return f"{min(per_row) * FULL_ROWS / 3600:.1f} / {statistics.median(per_row) * FULL_ROWS / 3600:.1f}"


def _spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("rctd_q_bench"), help="folder of the tables written")
    p.add_argument("--threads", type=int, default=2, help="threads of the fast engine (default: 2)")
    p.add_argument("--repeats", type=int, default=3, help="times each arm runs (default: 3)")
    p.add_argument("--package-sigmas", default="10,100,200", help="sigmas (x100) the package's function runs")
    p.add_argument("--package-k", type=int, default=2, help="K_val of the package's rows: counts 0..K+2 (default: 2)")
    p.add_argument("--check-rows", type=int, default=20, help="random (sigma, count) rows compared (default: 20)")
    p.add_argument("--write-sample", type=Path, default=None, help="write the unit test's sample here and stop")
    args = p.parse_args(argv)
    if args.write_sample:
        write_sample(args.write_sample)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    sigmas = [int(s) for s in args.package_sigmas.split(",")]
    per_row, per_row_cpu, walls, cpus, computes = [], [], [], [], []
    for repeat in range(args.repeats):
        seconds, cpu_row, rows = run_package(sigmas, args.package_k)
        per_row.append(seconds)
        per_row_cpu.append(cpu_row)
        wall, cpu, compute, table = run_fast(args.workdir, args.threads, repeat)
        walls.append(wall)
        cpus.append(cpu)
        computes.append(compute)
        if repeat == 0:
            diffs = compare(table, rows, args.check_rows)
        table.unlink()
        print(
            f"repeat {repeat}: package {seconds:.3f} s per row ({cpu_row:.3f} CPU-s); "
            f"fast {wall:.1f} s wall, {cpu:.1f} CPU-s ({compute:.1f} s the table alone)",
            flush=True,
        )
    print(
        f"\n| arm (min / median of {args.repeats}) | wall | CPU |\n|---|---|---|\n"
        f"| rctd-py `compute_q_matrix`, one core: the full default table extrapolated from "
        f"{len(sigmas) * (args.package_k + 3)} (count, sigma) rows | {_hours(per_row)} h | {_hours(per_row_cpu)} h |\n"
        f"| `compute_rctd_q.py --workers {args.threads}`, cold start to the 444 MB file written "
        f"| {_spread(walls)} s | {_spread(cpus)} s |\n"
        f"| of which the table (compilation, sums, check) | {_spread(computes)} s | |\n"
    )
    print(
        "largest |difference| (log scale) from the package: %.2e on its timed rows, %.2e on the committed sample, "
        "%.2e on %d random rows of 439 grid points" % (*diffs, args.check_rows)
    )


if __name__ == "__main__":
    main()
