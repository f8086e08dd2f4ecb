"""What the per-slide ``map_<method>.py`` scripts share (RCTD, FlashDeconv, NNLS; Tangram reads
its inputs here too): their common options, reading and checking the inputs, writing the outputs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import ModuleType

import anndata as ad

from spatialmap import cli, keys
from spatialmap.methods import base

log = logging.getLogger("spatialmap.methods.script")


def common_parser(description: str, method: str) -> argparse.ArgumentParser:
    """An argument parser with the options every deconvolution script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--slide", required=True, help="slide after QC (.h5ad, raw counts in X, obsm['spatial'])")
    parser.add_argument("--sample", required=True, help="sample name; prefix of every output file")
    parser.add_argument("--reference", required=True, help="prepared single-cell reference (.h5ad, raw counts in X)")
    parser.add_argument(
        "--label-key", default="cell_type", help="reference obs column with the cell types (default: cell_type)"
    )
    parser.add_argument(
        "--slide-gene-column",
        default=None,
        help="var column of the slide to name genes by, to match the reference (e.g. gene_ids); default: var_names",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    parser.add_argument(
        "--max-plot-spots",
        type=int,
        default=20_000,
        help="maps of larger slides draw a seeded sample of this many spots (default: 20000)",
    )
    parser.add_argument(
        "--selection",
        default=None,
        help="why this method runs on this slide (e.g. the --methods auto choice); kept in the QC JSON",
    )
    parser.add_argument("--process-name", default=f"map_{method}.py", help="process name in versions.yml")
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    return parser


def read_inputs(args: argparse.Namespace) -> tuple[ad.AnnData, ad.AnnData]:
    """The slide (genes renamed by ``--slide-gene-column``) and the reference; checks the sample."""
    from spatialmap.reference.prepare import use_gene_column

    for path in (args.slide, args.reference):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
    slide = ad.read_h5ad(args.slide)
    if keys.SAMPLE in slide.obs and slide.n_obs:
        names = set(slide.obs[keys.SAMPLE].astype(str))
        if names != {args.sample}:
            raise cli.InputError(
                f"sample {args.sample}: the slide {args.slide} holds sample(s) {', '.join(sorted(names))}"
            )
    slide = use_gene_column(slide, getattr(args, "slide_gene_column", None), f"slide {args.sample}")
    return slide, ad.read_h5ad(args.reference)


def finish(
    args: argparse.Namespace, slide: ad.AnnData, result: base.MethodResult, method: ModuleType, packages: list[str]
) -> None:
    """Write the method's outputs (:func:`base.write_outputs`) and versions.yml; log a one-line summary."""
    if args.selection:
        result.qc["selection"] = args.selection
    base.write_outputs(slide, result, method, args.sample, max_plot_spots=args.max_plot_spots, seed=args.seed)
    cli.write_versions(args.versions, args.process_name, packages)
    qc = result.qc
    log.info(
        "sample %s: %s fitted %d of %d spots on %d genes in %.1f s (%s); wrote %s.%s.* files",
        args.sample,
        method.NAME,
        qc["spots_fitted"],
        qc["spots_total"],
        qc["genes_used"],
        qc["seconds"],
        qc["device"],
        args.sample,
        method.NAME,
    )
