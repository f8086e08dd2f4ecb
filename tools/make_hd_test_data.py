#!/usr/bin/env python3
"""Generate the synthetic Visium HD slide and Xenium region (with truth) used by the HD tests.

Example::

    make_hd_test_data.py --outdir assets/test_data_hd      # the committed test data
    make_hd_test_data.py --outdir perturbed --perturb-segmentation   # hd1 with wrong boundaries
"""

from __future__ import annotations

import argparse
import logging

from spatialmap import cli
from testdata import synth_hd

log = logging.getLogger("spatialmap.make_hd_test_data")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", required=True, help="folder to write into (created; foreign files are kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    parser.add_argument("--n-genes", type=int, default=400, help="nuclear genes, as the reference (default: 400)")
    parser.add_argument("--n-cell-types", type=int, default=8, help="cell types, as the reference (default: 8)")
    parser.add_argument(
        "--hd-side-um", type=int, default=240, help="side of the HD slide in µm, multiple of 16 (default: 240)"
    )
    parser.add_argument("--hd-cells", type=int, default=350, help="cells on the HD slide, at most (default: 350)")
    parser.add_argument(
        "--xenium-side-um", type=int, default=200, help="side of the Xenium region in µm (default: 200)"
    )
    parser.add_argument(
        "--xenium-cells", type=int, default=260, help="cells in the Xenium region, at most (default: 260)"
    )
    parser.add_argument(
        "--visium-dir",
        default="../test_data/slide1/outs",
        help="standard Visium outs/ put first in the samplesheet, relative to --outdir ('' for none)",
    )
    parser.add_argument(
        "--big-hd-side",
        type=int,
        default=0,
        help="instead: write a full-size Visium HD slide of N x N 8 µm bins (550: 302,500 bins) with --n-genes genes, "
        "its reference and truth, for the scale benchmark (default: 0, off)",
    )
    wrong = parser.add_argument_group(
        "wrong boundaries", "the HD slide alone, its Space Ranger 4 boundaries perturbed (for segmentation tests)"
    )
    wrong.add_argument(
        "--perturb-segmentation", action="store_true",
        help="instead: write the HD slide (same --seed and sizes as hd1) as --perturbed-name with merged, split and "
        "shifted Space Ranger 4 boundaries, the truth with what was perturbed, and a one-row samplesheet",
    )  # fmt: skip
    wrong.add_argument("--perturbed-name", default="hd1_perturbed", help="sample name (default: hd1_perturbed)")
    wrong.add_argument("--perturb-seed", type=int, default=0, help="seed of the perturbations (default: 0)")
    wrong.add_argument(
        "--merge-fraction",
        type=float,
        default=synth_hd.PERTURB_MERGE_FRACTION,
        help=f"share of the cells merged with a neighbour (default: {synth_hd.PERTURB_MERGE_FRACTION})",
    )
    wrong.add_argument(
        "--split-fraction",
        type=float,
        default=synth_hd.PERTURB_SPLIT_FRACTION,
        help=f"share of the cells split in two (default: {synth_hd.PERTURB_SPLIT_FRACTION})",
    )
    wrong.add_argument(
        "--shift-fraction",
        type=float,
        default=synth_hd.PERTURB_SHIFT_FRACTION,
        help=f"share of the cells shifted (default: {synth_hd.PERTURB_SHIFT_FRACTION})",
    )
    wrong.add_argument(
        "--shift-um",
        type=float,
        default=synth_hd.PERTURB_SHIFT_UM,
        help=f"shift distance in µm (default: {synth_hd.PERTURB_SHIFT_UM})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Generate the data set described by the command line."""
    args = parse_args(argv)
    if args.big_hd_side:
        paths = synth_hd.generate_big_hd(args.outdir, args.seed, args.big_hd_side, args.n_genes, args.n_cell_types)
        log.info("samplesheet: %s", paths["samplesheet"])
        return
    if args.perturb_segmentation:
        paths = synth_hd.generate_perturbed_hd(
            args.outdir, seed=args.seed, perturb_seed=args.perturb_seed, n_genes=args.n_genes,
            n_cell_types=args.n_cell_types, hd_side_um=args.hd_side_um, hd_cells=args.hd_cells,
            name=args.perturbed_name, merge_fraction=args.merge_fraction, split_fraction=args.split_fraction,
            shift_fraction=args.shift_fraction, shift_um=args.shift_um,
        )  # fmt: skip
        log.info("samplesheet: %s", paths["samplesheet"])
        return
    paths = synth_hd.generate(
        args.outdir,
        seed=args.seed,
        n_genes=args.n_genes,
        n_cell_types=args.n_cell_types,
        hd_side_um=args.hd_side_um,
        hd_cells=args.hd_cells,
        xenium_side_um=args.xenium_side_um,
        xenium_cells=args.xenium_cells,
        visium_dir=args.visium_dir or None,
    )
    log.info("samplesheet: %s", paths["samplesheet"])


if __name__ == "__main__":
    cli.run(main)
