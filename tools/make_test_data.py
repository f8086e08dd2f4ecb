#!/usr/bin/env python3
"""Generate the synthetic Visium slides, reference and truth used by the tests and benchmarks.

Example::

    make_test_data.py --outdir assets/test_data            # the committed test data
    make_test_data.py --outdir bench --grid 40 --n-genes 2000 --n-cell-types 20
"""

from __future__ import annotations

import argparse
import logging

from spatialmap import cli
from testdata import synth

log = logging.getLogger("spatialmap.make_test_data")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", required=True, help="folder to write into (created; foreign files are kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    parser.add_argument("--n-slides", type=int, default=3, help="number of slides slide1, slide2, ... (default: 3)")
    parser.add_argument("--grid", type=int, default=18, help="spots per side of the hexagonal grid (default: 18)")
    parser.add_argument("--n-genes", type=int, default=400, help="nuclear genes; 13 MT genes are added (default: 400)")
    parser.add_argument("--n-cell-types", type=int, default=8, help="number of cell types (default: 8)")
    parser.add_argument("--cells-per-type", type=int, default=120, help="reference cells per cell type (default: 120)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Generate the data set described by the command line."""
    args = parse_args(argv)
    paths = synth.generate(
        args.outdir,
        seed=args.seed,
        n_slides=args.n_slides,
        grid=args.grid,
        n_genes=args.n_genes,
        n_cell_types=args.n_cell_types,
        cells_per_type=args.cells_per_type,
    )
    log.info("samplesheet: %s", paths["samplesheet"])


if __name__ == "__main__":
    cli.run(main)
