"""Map reference cell types onto one slide with Tangram.

Writes, for sample S, what every mapping script writes (``spatialmap.methods.script``):
``S.tangram.h5ad`` (``obsm['tangram_proportions']``, ``obsm['tangram_expected_counts']``,
``obsm['tangram_projected_heldout']``, a run summary in ``uns['tangram']``),
``S.tangram_proportions.csv``, ``S.tangram_filtered_spots.csv`` (empty: Tangram maps every spot),
``S.tangram_maps.png``, ``S.tangram_qc.json``; and Tangram's own tables: ``S.tangram_counts.csv``
(expected cells of each type per spot), ``S.tangram_heldout_genes.csv`` (per shared gene, Pearson r
and cosine of measured and projected expression, held out of training or not) and, with
``--assignment``, ``S.tangram_assignment.csv`` (each reference cell's most likely spot).

Example::

    map_tangram.py --slide S1.qc.h5ad --sample S1 --reference reference.h5ad --label-key cell_type
"""

from __future__ import annotations

from spatialmap import cli

PACKAGES = ["tangram-sc", "torch", "scanpy", "anndata"]


def main(argv: list[str] | None = None) -> None:
    """Run Tangram on one slide and write its outputs."""
    from spatialmap.methods import script, tangram

    parser = script.common_parser(__doc__.splitlines()[0], "tangram", device=True)
    parser.add_argument("--n-markers", type=int, default=100, help="marker genes per cell type (default: 100)")
    parser.add_argument(
        "--mode", choices=tangram.MODES, default="cells", help="map single cells or per-type averages (default: cells)"
    )
    parser.add_argument(
        "--density-prior",
        choices=tangram.DENSITY_PRIORS,
        default="rna_count_based",
        help="cells per spot follow the spot's UMI count, or are uniform (default: rna_count_based)",
    )
    parser.add_argument("--max-epochs", type=int, default=1000, help="training epochs (default: 1000)")
    parser.add_argument("--learning-rate", type=float, default=0.1, help="Adam learning rate (default: 0.1)")
    parser.add_argument(
        "--max-cells-per-type", type=int, default=500, help="cells mode: reference cells per type, drawn (default: 500)"
    )
    parser.add_argument(
        "--cells-per-spot", type=float, default=8.0, help="mean cells per spot, for expected counts (default: 8)"
    )
    parser.add_argument("--assignment", action="store_true", help="cells mode: write each cell's most likely spot")
    args = parser.parse_args(argv)
    if args.assignment and args.mode != "cells":
        raise cli.InputError("--assignment needs --mode cells")
    slide, reference = script.read_inputs(args)
    result = tangram.run(
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
    script.finish(args, slide, result, tangram, PACKAGES)
