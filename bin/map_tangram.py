#!/usr/bin/env python3
"""Map reference cell types onto one Visium slide with Tangram.

Writes into the current directory, for sample S:

- ``S.tangram.h5ad``: the slide with ``obsm['tangram_proportions']``,
  ``obsm['tangram_expected_counts']``, ``obsm['tangram_projected_heldout']`` and a run
  summary in ``uns['tangram']``
- ``S.tangram_proportions.csv``: spots x cell types, rows sum to 1 (index: barcode)
- ``S.tangram_counts.csv``: expected number of cells of each type per spot
- ``S.tangram_maps.png``: one map per cell type
- ``S.tangram_heldout_genes.csv``: per shared gene, Pearson r and cosine between the
  measured and projected expression, and whether it was held out of training
- ``S.tangram_qc.json``: settings, device, gene numbers, held-out scores
- ``S.tangram_assignment.csv`` (``--assignment``): each reference cell's most likely spot

Example::

    map_tangram.py --slide S1.qc.h5ad --sample S1 --reference reference.h5ad --label-key cell_type
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spatialmap import cli

log = logging.getLogger("spatialmap.map_tangram")

PACKAGES = ["tangram-sc", "torch", "scanpy", "anndata"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    from spatialmap.device import ACCELERATORS
    from spatialmap.methods.tangram import DENSITY_PRIORS, MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", required=True, help="slide after QC (.h5ad, raw counts in X)")
    parser.add_argument("--sample", required=True, help="sample name; prefix of every output file")
    parser.add_argument("--reference", required=True, help="prepared single-cell reference (.h5ad, raw counts in X)")
    parser.add_argument(
        "--label-key", default="cell_type", help="reference obs column with the cell types (default: cell_type)"
    )
    parser.add_argument(
        "--n-markers", type=int, default=100, help="marker genes per cell type used for training (default: 100)"
    )
    parser.add_argument(
        "--mode", choices=MODES, default="cells", help="map single cells or per-type averages (default: cells)"
    )
    parser.add_argument(
        "--density-prior",
        choices=DENSITY_PRIORS,
        default="rna_count_based",
        help="cells per spot follow the spot's UMI count, or are uniform (default: rna_count_based)",
    )
    parser.add_argument("--max-epochs", type=int, default=1000, help="training epochs (default: 1000)")
    parser.add_argument("--learning-rate", type=float, default=0.1, help="Adam learning rate (default: 0.1)")
    parser.add_argument(
        "--max-cells-per-type",
        type=int,
        default=500,
        help="cells mode: at most this many reference cells per type, drawn with --seed (default: 500)",
    )
    parser.add_argument(
        "--cells-per-spot",
        type=float,
        default=8.0,
        help="mean number of cells per spot, to turn proportions into expected counts (default: 8)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every random draw and of the optimiser (default: 0)"
    )
    parser.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default="auto",
        help="auto: the GPU when torch sees one, else the CPU; gpu: fail without one (default: auto)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch; give the task's CPUs (default: 1)"
    )
    parser.add_argument(
        "--assignment", action="store_true", help="cells mode: also write each reference cell's most likely spot"
    )
    parser.add_argument(
        "--process-name", default=Path(__file__).name, help="process name in versions.yml (default: script name)"
    )
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run Tangram on one slide and write its outputs."""
    args = parse_args(argv)
    from spatialmap.methods import base, script
    from spatialmap.methods import tangram as tangram_map

    if args.assignment and args.mode != "cells":
        raise cli.InputError("--assignment needs --mode cells")
    slide, reference = script.read_inputs(args)

    result = tangram_map.run(
        slide,
        reference,
        args.label_key,
        sample=args.sample,
        n_markers=args.n_markers,
        mode=args.mode,
        density_prior=args.density_prior,
        num_epochs=args.max_epochs,
        learning_rate=args.learning_rate,
        max_cells_per_type=args.max_cells_per_type,
        cells_per_spot=args.cells_per_spot,
        seed=args.seed,
        accelerator=args.accelerator,
        threads=args.threads,
        assignment=args.assignment,
    )
    annotated = tangram_map.annotate_slide(slide, result)

    prefix = args.sample
    with cli.atomic_path(f"{prefix}.tangram_proportions.csv") as tmp:
        result.proportions.to_csv(tmp, float_format="%.6g")
    with cli.atomic_path(f"{prefix}.tangram_counts.csv") as tmp:
        result.abundances.to_csv(tmp, float_format="%.6g")
    with cli.atomic_path(f"{prefix}.tangram_heldout_genes.csv") as tmp:
        result.extras["gene_scores"].sort_values(["heldout", "pearson_r"], ascending=[False, False]).to_csv(
            tmp, float_format="%.6g"
        )
    if result.extras["assignment"] is not None:
        with cli.atomic_path(f"{prefix}.tangram_assignment.csv") as tmp:
            result.extras["assignment"].to_csv(tmp, float_format="%.6g")
    base.write_qc_json(f"{prefix}.tangram_qc.json", base.contract_fields(tangram_map, result))
    plot_maps(annotated, result, f"{prefix}.tangram_maps.png", prefix)
    with cli.atomic_path(f"{prefix}.tangram.h5ad") as tmp:
        annotated.write_h5ad(tmp)
    cli.write_versions(args.versions, args.process_name, PACKAGES)
    log.info("sample %s: wrote %s.tangram.* files", prefix, prefix)


def plot_maps(slide, result, out_png: str, sample: str) -> None:
    """One spatial map of the Tangram proportion per cell type."""
    from spatialmap.report.plotting import plot_spatial_values

    qc = result.qc
    title = (
        f"{sample}: Tangram cell-type proportions ({qc['mode']} mode; held-out genes "
        f"median r {qc['heldout_median']:.2f})"
    )
    values = result.proportions.copy()
    values.index = slide.obs_names
    plot_spatial_values(slide, values, out_png, title)


if __name__ == "__main__":
    cli.run(main)
