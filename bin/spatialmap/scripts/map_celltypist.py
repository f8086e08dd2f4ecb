"""Label every cell of one slide with CellTypist (a model trained on the run's reference, or --celltypist_model).

Writes ``S.celltypist.h5ad`` (``obsm['celltypist_proportions']``, ``obs['celltypist_status']`` and the
per-cell label, confidence, cluster and vote), ``S.celltypist_proportions.csv`` (labelled cells x cell
types: the probabilities normalised to sum 1), ``S.celltypist_labels.csv``,
``S.celltypist_filtered_spots.csv``, ``S.celltypist_maps.png`` and ``S.celltypist_qc.json`` for sample S.

Example::

    map_celltypist.py --slide S1.qc.h5ad --sample S1 --model celltypist_model.pkl
"""

from __future__ import annotations

PACKAGES = ["celltypist", "scikit-learn", "scanpy", "numpy", "anndata"]


def main(argv: list[str] | None = None) -> None:
    """Run CellTypist on one slide and write its outputs."""
    from spatialmap.methods import celltypist, script

    parser = script.common_parser(__doc__.splitlines()[0], "celltypist")
    parser.add_argument(
        "--majority-voting",
        choices=("true", "false"),
        default="true",
        help="relabel each cell by its cluster's most predicted type (default: true)",
    )
    parser.add_argument(
        "--over-clustering",
        default=None,
        help="obs column of the slide to vote over ('domain': the --domains table's chosen level); "
        "default: CellTypist's over-clustering",
    )
    parser.add_argument(
        "--domains",
        default=None,
        help="the slide's spatial domains (<sample>.domains.csv): its chosen level becomes obs['domain']",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=celltypist.DEFAULT_MIN_CONFIDENCE,
        help="a cell whose probability of its label is lower is labelled Unassigned (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.over_clustering == "domain" and not args.domains:
        parser.error(f"sample {args.sample}: --over-clustering domain needs the slide's --domains table")
    slide = script.read_slide(args)
    if args.domains:
        from spatialmap.io.domains import DOMAIN, read_domains

        slide.obs[DOMAIN] = read_domains(args.domains, args.sample, slide.obs_names)[DOMAIN].to_numpy()
    result = celltypist.run(
        slide,
        args.model,
        sample=args.sample,
        seed=args.seed,
        majority_voting=args.majority_voting == "true",
        over_clustering=args.over_clustering,
        min_confidence=args.min_confidence,
    )
    script.finish(args, slide, result, celltypist, PACKAGES)
