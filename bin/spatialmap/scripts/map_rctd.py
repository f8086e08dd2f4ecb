"""Deconvolve one slide with RCTD (rctd-py), reading its likelihood table from a local file.

Writes ``S.rctd.h5ad`` (``obsm['rctd_proportions']``, ``obs['rctd_status']``, and in doublet /
multi mode the spot class / number of types), ``S.rctd_proportions.csv`` (fitted spots x cell
types, rows sum to 1), ``S.rctd_filtered_spots.csv`` (the spots RCTD left out, with the reason),
``S.rctd_maps.png`` and ``S.rctd_qc.json`` (the mode used and why). Nothing is downloaded:
``--q-matrix`` is required.

Example::

    map_rctd.py --slide S1.qc.h5ad --sample S1 --reference reference.h5ad --q-matrix rctd_q_matrices.npz --mode auto
"""

from __future__ import annotations

PACKAGES = ["rctd-py", "torch", "numba", "scipy", "anndata"]


# long: one add_argument per option of RCTD (as map_cell2location.parse_args)
def main(argv: list[str] | None = None) -> None:
    """Run RCTD on one slide and write its outputs."""
    from spatialmap.device import ACCELERATORS
    from spatialmap.methods import rctd, rctd_batch, script

    parser = script.common_parser(__doc__.splitlines()[0], "rctd")
    parser.add_argument("--q-matrix", required=True, help="RCTD likelihood table (.npz from compute_rctd_q.py)")
    parser.add_argument(
        "--mode",
        choices=rctd.MODE_CHOICES,
        default="auto",
        help="auto (doublet for cells and bins up to 8 µm, full for spots and larger bins, as "
        "rctd-py advises), full, doublet or multi (default: auto)",
    )
    parser.add_argument(
        "--engine",
        choices=rctd_batch.ENGINES,
        default="auto",
        help="how the per-spot fits run: auto (the batched CPU fit, the same fit as rctd-py's, on the CPU in float64; "
        "rctd-py's own batches on a GPU), batched, or package (rctd-py's own loop) (default: auto)",
    )
    parser.add_argument("--umi-min", type=int, default=100, help="spots with fewer UMIs are left out (default: 100)")
    parser.add_argument(
        "--umi-max", type=int, default=20_000_000, help="spots with more UMIs are left out (default: 20000000)"
    )
    parser.add_argument(
        "--counts-min",
        type=int,
        default=10,
        help="spots with fewer counts on RCTD's bulk genes are left out (default: 10)",
    )
    parser.add_argument(
        "--umi-min-sigma",
        type=int,
        default=300,
        help="fewest UMIs of the spots sampled to estimate sigma (default: 300)",
    )
    parser.add_argument("--cell-min", type=int, default=25, help="fewest reference cells per type (default: 25)")
    parser.add_argument(
        "--n-max-cells", type=int, default=10_000, help="reference cells kept per type (default: 10000)"
    )
    parser.add_argument("--ref-umi-min", type=int, default=100, help="fewest UMIs per reference cell (default: 100)")
    parser.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default="auto",
        help="auto: CUDA when torch sees a GPU, else the CPU; gpu: fail without one (default: auto)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch; give the task's CPUs (default: 1)"
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="float64 (R's arithmetic) or float32 (faster on GPUs) (default: float64)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="use torch.compile (the first run compiles for 10-20 min; off by default)",
    )
    args = parser.parse_args(argv)
    slide, reference = script.read_inputs(args)
    result = rctd.run(
        slide,
        reference,
        args.label_key,
        mode=args.mode,
        q_matrix_path=args.q_matrix,
        seed=args.seed,
        accelerator=args.accelerator,
        sample=args.sample,
        umi_min=args.umi_min,
        umi_max=args.umi_max,
        counts_min=args.counts_min,
        umi_min_sigma=args.umi_min_sigma,
        cell_min=args.cell_min,
        n_max_cells=args.n_max_cells,
        ref_umi_min=args.ref_umi_min,
        threads=args.threads,
        compile=args.compile,
        dtype=args.dtype,
        engine=args.engine,
    )
    script.finish(args, slide, result, rctd, PACKAGES)
