"""Map reference cell types onto the slides of one group jointly with cell2location.

Writes the group's model and figures (``G.cell2location_model``, ``G.cell2location_*.png``) and, for
each sample S, in the folder ``S/``: ``S.cell2location.h5ad``, ``S.cell2location_q05.csv``,
``S.cell2location_maps.png`` and ``S.cell2location_qc.json`` (``spatialmap.methods.script``, the
shape every mapping script has; a group method takes several ``--slide`` / ``--sample``).

Example::

    map_cell2location.py --signatures signatures.csv --slide a.qc.h5ad b.qc.h5ad --sample a b --group g
"""

from __future__ import annotations

import os

PACKAGES = ["cell2location", "scvi-tools", "pyro-ppl", "torch", "anndata", "matplotlib"]


# long: one add_argument per option of cell2location (a flat list, formatted one per line), then the run
def main(argv: list[str] | None = None) -> None:
    """Train cell2location on the group's slides and write their outputs."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in task logs
    from spatialmap.methods import c2l_train, script
    from spatialmap.methods import cell2location as c2l

    parser = script.common_parser(__doc__.splitlines()[0], "cell2location", device=True)
    parser.add_argument(
        "--n-cells-per-location", type=float, default=8, help="expected cells per spot, a histology prior (default: 8)"
    )
    parser.add_argument(
        "--detection-alpha",
        type=float,
        default=20,
        help="regularisation of per-spot RNA detection: 20 for variable, 200 for even detection (default: 20)",
    )
    parser.add_argument(
        "--max-epochs", type=int, default=30000, help="cap; training stops at convergence (default: 30000)"
    )
    parser.add_argument(
        "--engine",
        choices=c2l.ENGINES,
        default="fast",
        help="fast: lean loop that stops at convergence, closed-form export; package: cell2location's own "
        "train for --max-epochs and export_posterior (default: fast)",
    )
    parser.add_argument(
        "--min-epochs", type=int, default=c2l_train.DEFAULT_MIN_EPOCHS, help="never stop before (default: %(default)s)"
    )
    parser.add_argument(
        "--convergence-window",
        type=int,
        default=c2l_train.DEFAULT_WINDOW,
        help="epochs per window of the convergence check (default: %(default)s)",
    )
    parser.add_argument(
        "--convergence-tol",
        type=float,
        default=c2l_train.DEFAULT_TOL,
        help="stop when a window's mean -ELBO improved on the last by less than this fraction; 0: never "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--minibatch-above",
        type=int,
        default=c2l_train.DEFAULT_MINIBATCH_ABOVE,
        help=f"groups with more spots train in minibatches of {c2l_train.DEFAULT_MINIBATCH_SIZE} spots unless "
        "--batch-size is given (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=script.optional_number(int),
        default=None,
        help="minibatch size in spots; '': all spots (default: all)",
    )
    parser.add_argument("--lr", type=float, default=0.002, help="learning rate; training ends at it (default: 0.002)")
    parser.add_argument(
        "--lr-start",
        type=script.optional_number(float),
        default=c2l_train.DEFAULT_LR_START,
        help="fast engine: start at this rate, drop to --lr when the -ELBO stops improving; '': --lr "
        "throughout (default: %(default)s)",
    )
    parser.add_argument(
        "--num-samples", type=int, default=1000, help="posterior samples for the mean and quantiles (default: 1000)"
    )
    parser.add_argument(
        "--min-shared-genes",
        type=int,
        default=c2l.DEFAULT_MIN_SHARED_GENES,
        help="stop when fewer signature genes are on every slide (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    slides, renamed, signatures = script.read_group(args)
    result = c2l.run(
        renamed,
        signatures,
        n_cells_per_location=args.n_cells_per_location,
        detection_alpha=args.detection_alpha,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        accelerator=args.accelerator,
        lr=args.lr,
        lr_start=args.lr_start,
        num_samples=args.num_samples,
        min_shared_genes=args.min_shared_genes,
        threads=args.threads,
        engine=args.engine,
        min_epochs=args.min_epochs,
        convergence_window=args.convergence_window,
        convergence_tol=args.convergence_tol,
        minibatch_above=args.minibatch_above,
    )
    script.finish_group(args, slides, result, c2l, PACKAGES)
