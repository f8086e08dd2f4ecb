"""Deconvolve one slide with FlashDeconv (spatially regularised, on the slide's k-nearest-neighbour graph).

Writes ``S.flashdeconv.h5ad`` (``obsm['flashdeconv_proportions']``, ``obs['flashdeconv_status']``),
``S.flashdeconv_proportions.csv`` (fitted spots x cell types, rows sum to 1),
``S.flashdeconv_filtered_spots.csv``, ``S.flashdeconv_maps.png`` and ``S.flashdeconv_qc.json``.

Example::

    map_flashdeconv.py --slide S1.qc.h5ad --sample S1 --reference reference.h5ad --sketch-dim 512
"""

from __future__ import annotations

PACKAGES = ["flashdeconv", "numba", "scipy", "anndata"]


def lambda_value(text: str) -> float | str:
    """``auto`` or a non-negative number (argparse type)."""
    if text.strip().lower() == "auto":
        return "auto"
    value = float(text)
    if value < 0:
        raise ValueError(f"--lambda-spatial must be 'auto' or non-negative, not {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    """Run FlashDeconv on one slide and write its outputs."""
    from spatialmap.methods import flashdeconv, script

    parser = script.common_parser(__doc__.splitlines()[0], "flashdeconv")
    parser.add_argument("--sketch-dim", type=int, default=512, help="FlashDeconv sketch dimension (default: 512)")
    parser.add_argument(
        "--lambda-spatial",
        type=lambda_value,
        default="auto",
        help="spatial regularisation: 'auto' (FlashDeconv tunes it) or a number (default: auto)",
    )
    parser.add_argument(
        "--k-neighbors", type=int, default=6, help="neighbours per spot in the spatial graph (default: 6)"
    )
    parser.add_argument("--min-cells", type=int, default=3, help="fewest reference cells per type (default: 3)")
    args = parser.parse_args(argv)
    slide, reference = script.read_inputs(args)
    result = flashdeconv.run(
        slide,
        reference,
        args.label_key,
        seed=args.seed,
        sample=args.sample,
        sketch_dim=args.sketch_dim,
        lambda_spatial=args.lambda_spatial,
        k_neighbors=args.k_neighbors,
        min_cells=args.min_cells,
    )
    script.finish(args, slide, result, flashdeconv, PACKAGES)
