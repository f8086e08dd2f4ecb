"""The one shape of every ``map_<method>.py`` script: its common options, reading and checking the
inputs, writing the outputs. A script adds its method's own options and calls its ``run``.

- a per-slide method (registry ``scope`` ``slide``): ``--slide``, ``--sample``; :func:`read_inputs`
  gives the slide and the reference, :func:`finish` writes :func:`base.write_outputs` (with the
  method's hooks: its own ``annotate_slide``, ``map_title`` and ``extra_tables``, e.g. Tangram's
  expected counts, held-out genes and assignment);
- a group method (``scope`` ``group``, cell2location): several ``--slide`` / ``--sample`` and a
  ``--group``; :func:`read_group` gives the slides and the signatures, :func:`finish_group` writes
  the group's files and each slide's (the method's ``write_group_outputs``, ``write_slide_outputs``);
- a method that maps from a trained model (registry ``needs`` ``model``, CellTypist): ``--model``
  instead of ``--reference``; :func:`read_slide` gives the slide.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import ModuleType

import anndata as ad

from spatialmap import cli, keys
from spatialmap.methods import base, registry

log = logging.getLogger("spatialmap.methods.script")


def common_parser(description: str, method: str, *, device: bool = False) -> argparse.ArgumentParser:
    """An argument parser with the options every mapping script takes (by the method's registry
    entry: one slide or a group's slides; the reference or the signatures); ``device``: also
    ``--accelerator`` and ``--threads``."""
    entry = registry.get(method)
    parser = argparse.ArgumentParser(description=description)
    if entry.scope == "group":
        parser.add_argument(
            "--slide",
            required=True,
            nargs="+",
            help="the group's slides after QC (.h5ad, raw counts), one per --sample",
        )
        parser.add_argument(
            "--sample",
            required=True,
            nargs="+",
            help="each slide's sample name, in the same order; prefix of its files",
        )
        parser.add_argument("--group", required=True, help="group name; names the model and the group figures")
    else:
        parser.add_argument("--slide", required=True, help="slide after QC (.h5ad, raw counts in X, obsm['spatial'])")
        parser.add_argument("--sample", required=True, help="sample name; prefix of every output file")
    if entry.needs == "signatures":
        parser.add_argument(
            "--signatures",
            required=True,
            type=Path,
            help="signatures CSV: genes x cell types (expected counts per cell)",
        )
    elif entry.needs == "model":
        parser.add_argument(
            "--model", required=True, type=Path, help="the trained model (CellTypist: a .pkl), trained once per run"
        )
    else:
        parser.add_argument(
            "--reference", required=True, help="prepared single-cell reference (.h5ad, raw counts in X)"
        )
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
    if device:
        add_device_options(parser)
    parser.add_argument("--outdir", type=Path, default=Path("."), help="folder to write into (default: current folder)")
    parser.add_argument("--process-name", default=f"map_{method}.py", help="process name in versions.yml")
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    return parser


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--accelerator`` and ``--threads`` (the methods that run on torch)."""
    from spatialmap.device import ACCELERATORS

    parser.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default="auto",
        help="auto: the GPU when torch sees one, else the CPU; gpu: fail without one (default: auto)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch; give the task's CPUs (default: 1)"
    )


def _read_slide(path, sample: str) -> ad.AnnData:
    """A slide; its obs['sample'], when present, must be ``sample``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    slide = ad.read_h5ad(path)
    if keys.SAMPLE in slide.obs and slide.n_obs:
        names = set(slide.obs[keys.SAMPLE].astype(str))
        if names != {sample}:
            raise cli.InputError(f"sample {sample}: the slide {path} holds sample(s) {', '.join(sorted(names))}")
    return slide


def read_slide(args: argparse.Namespace) -> ad.AnnData:
    """The slide alone (a method that maps from a model: ``--model``), genes renamed by ``--slide-gene-column``."""
    from spatialmap.reference.prepare import use_gene_column

    slide = _read_slide(args.slide, args.sample)
    return use_gene_column(slide, getattr(args, "slide_gene_column", None), f"slide {args.sample}")


def read_inputs(args: argparse.Namespace) -> tuple[ad.AnnData, ad.AnnData]:
    """The slide (genes renamed by ``--slide-gene-column``) and the reference; checks the sample."""
    from spatialmap.reference.prepare import use_gene_column

    if not Path(args.reference).is_file():
        raise FileNotFoundError(f"no such file: {args.reference}")
    slide = _read_slide(args.slide, args.sample)
    slide = use_gene_column(slide, getattr(args, "slide_gene_column", None), f"slide {args.sample}")
    return slide, ad.read_h5ad(args.reference)


def read_group(args: argparse.Namespace):
    """A group's slides as given (``{sample: slide}``, obs['sample'] set), the same with genes renamed
    by ``--slide-gene-column``, and the signatures."""
    from spatialmap.reference.prepare import use_gene_column
    from spatialmap.reference.signatures import load_signatures_csv

    if len(args.slide) != len(args.sample):
        raise cli.InputError(f"{len(args.slide)} slides but {len(args.sample)} sample names")
    if len(set(args.sample)) != len(args.sample):
        raise cli.InputError(f"sample names repeat: {' '.join(args.sample)}")
    signatures = load_signatures_csv(args.signatures)
    slides = {}
    for path, sample in zip(args.slide, args.sample):
        if not Path(path).is_file():
            raise cli.InputError(f"sample {sample}: the slide file {path} does not exist")
        slides[sample] = _read_slide(path, sample)
        if keys.SAMPLE not in slides[sample].obs:
            slides[sample].obs[keys.SAMPLE] = sample
    renamed = {s: use_gene_column(a, args.slide_gene_column, f"slide {s}") for s, a in slides.items()}
    return slides, renamed, signatures


def finish(
    args: argparse.Namespace, slide: ad.AnnData, result: base.MethodResult, method: ModuleType, packages: list[str]
) -> None:
    """Write the method's outputs (:func:`base.write_outputs`) and versions.yml; log a one-line summary."""
    if args.selection:
        result.qc["selection"] = args.selection
    base.write_outputs(
        slide, result, method, args.sample, outdir=args.outdir, max_plot_spots=args.max_plot_spots, seed=args.seed
    )
    cli.write_versions(args.versions, args.process_name, packages)
    log.info(
        "sample %s: %s: %s; wrote %s.%s.* files",
        args.sample,
        method.NAME,
        summary(method, result),
        args.sample,
        method.NAME,
    )


def finish_group(
    args: argparse.Namespace, slides: dict[str, ad.AnnData], result, method: ModuleType, packages: list[str]
) -> None:
    """A group method's outputs: the group's (``method.write_group_outputs``) and, in a folder per
    slide, each slide's (``method.write_slide_outputs``, on the slide as given); versions.yml."""
    out = Path(args.outdir)
    method.write_group_outputs(result, args.group, out, seed=args.seed)
    for sample, slide_result in result.results.items():
        if args.selection:
            slide_result.qc["selection"] = args.selection
        method.write_slide_outputs(slides[sample], slide_result, args.group, out / sample, seed=args.seed)
        log.info(
            "sample %s: %s: %s; wrote %s/%s.%s.* files",
            sample,
            method.NAME,
            summary(method, slide_result),
            sample,
            sample,
            method.NAME,
        )
    cli.write_versions(args.versions, args.process_name, packages)


def summary(method: ModuleType, result: base.MethodResult) -> str:
    """The result's headline numbers (the method's ``HEADLINE`` keys of its QC), for the log."""
    shown = [f"{k} {result.qc[k]}" for k in method.HEADLINE if result.qc.get(k) is not None]
    return ", ".join(shown) or "done"


def optional_number(kind: type):
    """An argparse type: ``''`` or ``'none'`` -> None, else ``kind(text)``."""

    def parse(text: str):
        return None if text.strip().lower() in ("", "none", "null") else kind(text)

    parse.__name__ = kind.__name__
    return parse
