"""Check and prepare the single-cell reference: raw counts, labels, gene names, no MT genes."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from spatialmap import cli
from spatialmap.qc import slide as qc
from spatialmap.reference import prepare as reference

log = logging.getLogger("spatialmap.prepare_reference")


def split_keys(text: str | None) -> list[str]:
    """``'a,b'`` -> ``['a', 'b']``; empty -> ``[]``."""
    return [k.strip() for k in (text or "").split(",") if k.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", required=True, type=Path, help="reference .h5ad with raw counts in X")
    parser.add_argument("--label-key", required=True, help="obs column with the cell type of every cell")
    parser.add_argument("--batch-key", default=None, help="obs column with the batch (e.g. donor or run) of every cell")
    parser.add_argument(
        "--covariate-keys",
        default="",
        help="comma-separated obs columns of other technical covariates (e.g. chemistry)",
    )
    parser.add_argument(
        "--mt-prefix",
        default="MT-",
        help="case-insensitive symbol prefix of mitochondrial genes to remove; '' removes none (default: %(default)s)",
    )
    parser.add_argument(
        "--mt-genes", type=Path, default=None, help="file of mitochondrial genes, one per line; replaces --mt-prefix"
    )
    parser.add_argument(
        "--min-cells-per-label",
        type=int,
        default=reference.DEFAULT_MIN_CELLS_PER_LABEL,
        help="every label needs at least this many cells (default: %(default)s)",
    )
    parser.add_argument("--output", required=True, type=Path, help="prepared reference .h5ad to write")
    parser.add_argument("--output-json", required=True, type=Path, help="reference summary JSON to write")
    parser.add_argument(
        "--process-name", default="prepare_reference.py", help="process name written to the versions file"
    )
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    covariates = split_keys(args.covariate_keys)
    adata = reference.load_reference(
        args.reference, args.label_key, args.batch_key or None, covariates, args.min_cells_per_label
    )
    # gene names stay as they are: check_overlap.py matches them to the slides' (spatialmap.reference.genes)
    mt_list = qc.read_gene_list(args.mt_genes) if args.mt_genes else None
    adata, removed = reference.remove_mt_genes(adata, prefix=args.mt_prefix, mt_genes=mt_list)
    summary = reference.reference_summary(adata, args.label_key, args.batch_key or None)
    summary.update(
        {
            "source": args.reference.name,
            "covariate_keys": covariates,
            "mt_genes_removed": removed,
        }
    )
    log.info(
        "reference: %d cells x %d genes, %d labels; %d MT genes removed",
        summary["n_cells"],
        summary["n_genes"],
        summary["n_labels"],
        len(removed),
    )
    with cli.atomic_path(args.output_json) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    with cli.atomic_path(args.output) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
    cli.write_versions(args.versions, args.process_name, ["anndata", "scanpy", "numpy", "pandas"])
