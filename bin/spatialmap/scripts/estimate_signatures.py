"""Estimate reference expression signatures (genes x cell types) for cell2location."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from spatialmap import cli, device
from spatialmap.reference import prepare as reference
from spatialmap.reference import signatures

log = logging.getLogger("spatialmap.estimate_signatures")


def optional_int(text: str) -> int | None:
    """``''`` or ``'none'`` -> None, else an int (argparse type)."""
    return None if text.strip().lower() in ("", "none", "null") else int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", required=True, type=Path, help="prepared reference .h5ad (prepare_reference.py)")
    parser.add_argument(
        "--method",
        choices=signatures.METHODS,
        default="regression",
        help="regression: cell2location's negative binomial regression (models batches); "
        "means: average counts per cell type (default: %(default)s)",
    )
    parser.add_argument("--label-key", required=True, help="obs column with the cell types")
    parser.add_argument("--batch-key", default=None, help="obs column with the batch of every cell (regression only)")
    parser.add_argument(
        "--covariate-keys", default="", help="comma-separated obs columns of technical covariates (regression only)"
    )
    parser.add_argument(
        "--cell-count-cutoff",
        type=float,
        default=5,
        help="gene filter: drop genes detected in this many cells or fewer (default: %(default)s)",
    )
    parser.add_argument(
        "--cell-percentage-cutoff2",
        type=float,
        default=0.03,
        help="gene filter: keep every gene detected in more than this fraction of cells (default: %(default)s)",
    )
    parser.add_argument(
        "--nonz-mean-cutoff",
        type=float,
        default=1.12,
        help="gene filter: between the two cutoffs, keep genes whose mean non-zero count exceeds this (default: %(default)s)",
    )
    parser.add_argument("--max-epochs", type=int, default=250, help="regression training epochs (default: %(default)s)")
    parser.add_argument(
        "--batch-size",
        type=optional_int,
        default=2500,
        help="regression minibatch size in cells; '' = all cells at once (default: %(default)s)",
    )
    parser.add_argument("--lr", type=float, default=0.002, help="regression learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--accelerator",
        choices=device.ACCELERATORS,
        default="auto",
        help="auto: GPU when one is visible, else CPU (default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch; give the task's CPUs (default: %(default)s)"
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=1000,
        help="posterior samples drawn to summarise the regression (default: %(default)s)",
    )
    parser.add_argument("--output-csv", required=True, type=Path, help="signatures CSV to write (genes x cell types)")
    parser.add_argument("--output-model-dir", required=True, type=Path, help="folder to save the trained model into")
    parser.add_argument(
        "--output-prefix",
        required=True,
        help="prefix of the figures: PREFIX.gene_filter.png, PREFIX.training_loss.png, PREFIX.reconstruction.png",
    )
    parser.add_argument(
        "--process-name", default="estimate_signatures.py", help="process name written to the versions file"
    )
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in task logs
    args = parse_args(argv)
    covariates = [k.strip() for k in args.covariate_keys.split(",") if k.strip()]
    if args.method == "means" and (args.batch_key or covariates):
        log.warning("method 'means' ignores the batch and covariate columns")
    adata = reference.load_reference(args.reference, args.label_key, args.batch_key or None, covariates, 1)
    adata = reference.permissive_gene_filter(
        adata,
        cell_count_cutoff=args.cell_count_cutoff,
        cell_percentage_cutoff2=args.cell_percentage_cutoff2,
        nonz_mean_cutoff=args.nonz_mean_cutoff,
        out_png=f"{args.output_prefix}.gene_filter.png",
    )
    result = signatures.estimate_signatures(
        adata,
        method=args.method,
        label_key=args.label_key,
        batch_key=args.batch_key or None,
        covariate_keys=covariates,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        accelerator=args.accelerator,
        num_samples=args.num_samples,
        threads=args.threads,
    )
    sig = result.signatures
    log.info("signatures: %d genes x %d cell types (%s)", sig.shape[0], sig.shape[1], args.method)
    if result.model is not None:
        signatures.plot_training_loss(
            result.history,
            f"{args.output_prefix}.training_loss.png",
            f"reference regression ({args.max_epochs} epochs)",
        )
        signatures.save_model_dir(result.model, args.output_model_dir)
    else:
        log.info("method 'means' trains no model: no training loss figure; the model folder holds a note")
        args.output_model_dir.mkdir(parents=True, exist_ok=True)
        with cli.atomic_path(args.output_model_dir / "NOTE.txt") as tmp:
            tmp.write_text(
                "Signatures were computed as per cell type mean counts (--method means); no model was trained.\n"
            )
    r = signatures.plot_reconstruction(result, adata, f"{args.output_prefix}.reconstruction.png", seed=args.seed)
    log.info("reconstruction: Pearson r of observed vs expected counts %.3f", r)
    with cli.atomic_path(args.output_csv) as tmp:
        sig.to_csv(tmp, index_label="gene")
    cli.write_versions(
        args.versions, args.process_name, ["cell2location", "scvi-tools", "pyro-ppl", "torch", "anndata", "scanpy"]
    )
