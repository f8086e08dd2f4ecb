"""Deconvolve one slide with the NNLS baseline (non-negative least squares on the reference's per-type mean counts).

Writes ``S.nnls.h5ad`` (``obsm['nnls_proportions']``, ``obs['nnls_status']``),
``S.nnls_proportions.csv`` (fitted spots x cell types, rows sum to 1), ``S.nnls_filtered_spots.csv``,
``S.nnls_maps.png`` and ``S.nnls_qc.json`` for sample S.

Example::

    map_nnls.py --slide S1.qc.h5ad --sample S1 --reference reference.h5ad --label-key cell_type
"""

from __future__ import annotations

PACKAGES = ["scipy", "numpy", "anndata"]


def main(argv: list[str] | None = None) -> None:
    """Run NNLS on one slide and write its outputs."""
    from spatialmap.methods import nnls, script

    parser = script.common_parser(__doc__.splitlines()[0], "nnls")
    parser.add_argument("--min-cells", type=int, default=3, help="fewest reference cells per type (default: 3)")
    args = parser.parse_args(argv)
    slide, reference = script.read_inputs(args)
    result = nnls.run(slide, reference, args.label_key, seed=args.seed, sample=args.sample, min_cells=args.min_cells)
    script.finish(args, slide, result, nnls, PACKAGES)
