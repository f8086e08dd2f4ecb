#!/usr/bin/env python3
"""Compute RCTD's likelihood table (the "Q matrices") once, with rctd-py's own routine.

rctd-py downloads this 400 MB table on first use; the pipeline computes it instead, once per
run (and keeps it with Nextflow's storeDir), and hands it to every RCTD task.

Example::

    compute_rctd_q.py --output rctd_q_matrices.npz --k-max 1000 --sigma-step 1 --workers 16
"""

from __future__ import annotations

import argparse

from spatialmap import cli

PACKAGES = ["rctd-py", "numpy", "scipy"]


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
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the sigmas (default: 1)")
    parser.add_argument("--process-name", default="compute_rctd_q.py", help="process name in versions.yml")
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    args = parser.parse_args(argv)
    rctd.compute_rctd_q_matrix(args.output, k_max=args.k_max, sigma_step=args.sigma_step, workers=args.workers)
    cli.write_versions(args.versions, args.process_name, PACKAGES)


if __name__ == "__main__":
    cli.run(main)
