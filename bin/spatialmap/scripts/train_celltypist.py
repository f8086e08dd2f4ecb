"""Train CellTypist's classifier once per run on the prepared reference, on the genes of the slides it labels.

The reference (raw counts) is thinned to the slides' counts per cell (``--depth-matching``), then
normalised to log1p of counts per 10,000 over the genes it shares with every slide given
(``--slides``: the slides CellTypist runs on); above ``--max-genes`` the most variable of them are
the classifier's inputs. Writes the model (``--output``, a CellTypist ``.pkl``:
what ``--celltypist_model`` takes) and a JSON summary of the training (``--output-json``).

Example::

    train_celltypist.py --reference reference.matched.h5ad --label-key cell_type \\
        --slides X1.qc.h5ad X2.qc.h5ad --output celltypist_model.pkl --output-json celltypist_model.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spatialmap import cli

PACKAGES = ["celltypist", "scikit-learn", "scanpy", "numpy", "anndata"]


def read_slides(paths: list[Path], gene_column: str | None) -> list:
    """The slides (AnnData, genes renamed by ``gene_column``), checked to exist."""
    import anndata as ad

    from spatialmap.reference.prepare import use_gene_column

    slides = []
    for path in paths:
        if not path.is_file():
            raise cli.InputError(f"the slide file {path} does not exist")
        slides.append(use_gene_column(ad.read_h5ad(path), gene_column, f"slide {path.name}"))
    return slides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of the training."""
    from spatialmap.methods import celltypist

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="prepared reference (.h5ad, raw counts in X)")
    parser.add_argument(
        "--label-key", default="cell_type", help="reference obs column with the cell types (default: cell_type)"
    )
    parser.add_argument(
        "--slides",
        nargs="*",
        default=[],
        type=Path,
        help="the slides (.h5ad after QC) CellTypist will label: the model uses only genes on all of them",
    )
    parser.add_argument(
        "--slide-gene-column",
        default=None,
        help="var column of the slides to name genes by, as the mapping does (default: var_names)",
    )
    parser.add_argument(
        "--depth-matching",
        choices=("true", "false"),
        default="true",
        help="thin the reference's counts to the slides' counts per cell before training (default: true)",
    )
    parser.add_argument(
        "--max-genes",
        type=int,
        default=celltypist.DEFAULT_MAX_GENES,
        help="more shared genes than this: the reference's most variable ones are the model's (default: %(default)s)",
    )
    parser.add_argument(
        "--feature-selection",
        choices=("true", "false"),
        default="false",
        help="CellTypist's two-pass training on the --top-genes genes of largest weight per type (default: false)",
    )
    parser.add_argument(
        "--top-genes", type=int, default=300, help="genes kept per type by --feature-selection (default: 300)"
    )
    parser.add_argument(
        "--alpha", type=float, default=1e-4, help="L2 regularisation of the SGD classifier (default: %(default)s)"
    )
    parser.add_argument(
        "--mini-batch",
        choices=("auto", "true", "false"),
        default="auto",
        help=f"CellTypist's mini-batch SGD; auto: above {celltypist.MINI_BATCH_ABOVE} reference cells (default: auto)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the training (default: 0)")
    parser.add_argument("--threads", type=int, default=1, help="parallel one-vs-rest fits (default: 1)")
    parser.add_argument("--output", default="celltypist_model.pkl", help="model to write (default: %(default)s)")
    parser.add_argument(
        "--output-json", default="celltypist_model.json", help="training summary to write (default: %(default)s)"
    )
    parser.add_argument("--process-name", default="train_celltypist.py", help="process name in versions.yml")
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Train the model and write it with its summary."""
    import anndata as ad

    from spatialmap.methods import celltypist

    args = parse_args(argv)
    if args.max_genes < 1:
        raise cli.InputError(f"--max-genes must be at least 1, got {args.max_genes}")
    if not args.reference.is_file():
        raise cli.InputError(f"the reference file {args.reference} does not exist")
    model = celltypist.train(
        ad.read_h5ad(args.reference),
        args.label_key,
        slides=read_slides(args.slides, args.slide_gene_column),
        depth_matching=args.depth_matching == "true",
        max_genes=args.max_genes,
        feature_selection=args.feature_selection == "true",
        top_genes=args.top_genes,
        alpha=args.alpha,
        mini_batch=None if args.mini_batch == "auto" else args.mini_batch == "true",
        seed=args.seed,
        threads=args.threads,
    )
    with cli.atomic_path(args.output) as tmp:
        model.write(str(tmp))
    celltypist.write_training_json(args.output_json, model)
    cli.write_versions(args.versions, args.process_name, PACKAGES)
