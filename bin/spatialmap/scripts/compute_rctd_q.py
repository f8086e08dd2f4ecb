"""Compute RCTD's likelihood table (the "Q matrices") once: rctd-py's numbers, in seconds.

rctd-py downloads this 400 MB table on first use; the pipeline computes it instead, once per
run (and keeps it with Nextflow's storeDir), and hands it to every RCTD task. The default
engine computes the package's ``compute_q_matrix`` sums with shared exponentials over the terms
that count (within 1e-8 on the log scale; the full default table in about 22 CPU-seconds);
``--engine package`` runs the package's own function (hours).

Example::

    compute_rctd_q.py --output rctd_q_matrices.npz --k-max 1000 --sigma-step 1 --workers 2
"""

from __future__ import annotations

import argparse

from spatialmap import cli

PACKAGES = ["rctd-py", "numpy", "scipy", "numba"]


def main(argv: list[str] | None = None) -> None:
    """Compute the table and write it (and a JSON of its settings beside it)."""
    from spatialmap.methods import rctd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="rctd_q_matrices.npz", help="table to write (default: rctd_q_matrices.npz)")
    parser.add_argument(
        "--k-max",
        type=int,
        default=1000,
        help="largest count the table covers; larger counts are clamped, as in RCTD (default: 1000)",
    )
    parser.add_argument(
        "--sigma-step",
        type=int,
        default=1,
        help="every n-th sigma of rctd-py's grid of 126, from 100; 0: sigma 100 only (default: 1)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="threads (processes with --engine package) sharing the work (default: 1)"
    )
    parser.add_argument(
        "--engine",
        choices=rctd.ENGINES,
        default="fast",
        help="fast: the package's sums over the terms that count, in seconds; package: rctd-py's own "
        "compute_q_matrix, hours for the full table (default: fast)",
    )
    parser.add_argument("--process-name", default="compute_rctd_q.py", help="process name in versions.yml")
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    args = parser.parse_args(argv)
    rctd.compute_rctd_q_matrix(
        args.output, k_max=args.k_max, sigma_step=args.sigma_step, workers=args.workers, engine=args.engine
    )
    cli.write_versions(args.versions, args.process_name, PACKAGES)
