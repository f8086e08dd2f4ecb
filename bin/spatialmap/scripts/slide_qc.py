"""Spot QC of one slide: metrics, mitochondrial genes moved out of X, spot filters, maps; and the slide's
method plan (which mapping methods run on it and why, from its size and kind of location), in its QC JSON."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import anndata as ad

from spatialmap import cli, keys
from spatialmap.io import sdata as io_hd
from spatialmap.io import visium as io
from spatialmap.methods import registry
from spatialmap.qc import slide as qc

log = logging.getLogger("spatialmap.slide_qc")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True, type=Path, help="slide h5ad written by read_slide.py")
    parser.add_argument("--sample", required=True, help="sample name; must match obs['sample'] of the input")
    parser.add_argument("--output-h5ad", required=True, type=Path, help="QC'd slide to write (S.qc.h5ad)")
    parser.add_argument("--output-json", required=True, type=Path, help="QC summary to write (S.qc.json)")
    parser.add_argument("--output-png", required=True, type=Path, help="QC spatial maps to write (S.qc_maps.png)")
    parser.add_argument(
        "--mt-prefix",
        default="MT-",
        help="case-insensitive gene symbol prefix of mitochondrial genes (MT- matches human MT- and mouse mt-); "
        "'' marks none (default: %(default)s)",
    )
    parser.add_argument(
        "--mt-genes",
        type=Path,
        help="file of mitochondrial genes, one symbol or ID per line; replaces --mt-prefix",
    )
    parser.add_argument(
        "--min-counts", type=float, default=0, help="minimum UMIs per spot, MT included; 0: off (default: %(default)s)"
    )
    parser.add_argument(
        "--min-genes", type=int, default=0, help="minimum detected genes per spot; 0: off (default: %(default)s)"
    )
    parser.add_argument(
        "--max-pct-mt",
        type=float,
        default=100,
        help="maximum %% of a spot's counts in MT genes; 100: off (default: %(default)s)",
    )
    plan = parser.add_argument_group("method plan", "which mapping methods run on the slide (registry.plan)")
    plan.add_argument(
        "--methods",
        default=registry.AUTO,
        help=f"auto (chosen from the slide's size and kind) or a comma-separated list of {', '.join(registry.NAMES)} "
        "(default: %(default)s)",
    )
    for name, default in registry.SETTINGS.items():
        plan.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(default),
            default=default,
            help=f"--{name} of the pipeline (default: %(default)s)",
        )
    parser.add_argument(
        "--plan-only",
        action="store_true",
        help="write only the sample and its method plan for an empty slide to --output-json (stub runs)",
    )
    parser.add_argument(
        "--plan-kind",
        choices=registry.KINDS,
        default="spot",
        help="--plan-only: the slide's kind of location, from its samplesheet row (default: %(default)s)",
    )
    parser.add_argument("--process-name", default="slide_qc.py", help="process name written to the versions file")
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def method_plan(args: argparse.Namespace, locations: int, kind: str) -> dict:
    """The slide's method plan as its QC JSON holds it (``method_plan``); logged as one line."""
    settings = {name: getattr(args, name) for name in registry.SETTINGS}
    plan = registry.plan(args.methods, locations, kind, settings)
    line = (
        f"sample {args.sample}: {locations} locations; methods {', '.join(plan.methods) or 'none'} ({plan.selection})"
    )
    (log.warning if "skipped" in plan.selection else log.info)(line)
    return plan.to_json()


def write_json(path: Path, summary: dict) -> None:
    with cli.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plan_only:
        write_json(args.output_json, {"sample": args.sample, "method_plan": method_plan(args, 0, args.plan_kind)})
        return
    if not args.input.is_file():
        raise cli.InputError(f"sample {args.sample}: the slide file {args.input} does not exist")
    adata = ad.read_h5ad(args.input)
    if keys.SAMPLE in adata.obs:
        found = sorted(set(adata.obs[keys.SAMPLE].astype(str)))
        if found != [args.sample]:
            raise cli.InputError(f"sample {args.sample}: {args.input} holds sample(s) {', '.join(found)}")
    else:
        adata.obs[keys.SAMPLE] = args.sample
    io.check_raw_counts(adata, args.sample)

    mt_list = qc.read_gene_list(args.mt_genes) if args.mt_genes else None
    mask = qc.find_mt_genes(
        adata.var_names,
        mt_genes=mt_list,
        gene_ids=adata.var[keys.GENE_IDS] if keys.GENE_IDS in adata.var else None,
        prefix=args.mt_prefix,
    )
    if not mask.any():
        log.warning(
            "sample %s: no mitochondrial gene found (%s)",
            args.sample,
            f"list {args.mt_genes}" if mt_list else f"prefix '{args.mt_prefix}'",
        )
    before = qc.compute_qc(adata, mask)
    filters = {"min_counts": args.min_counts, "min_genes": args.min_genes, "max_pct_mt": args.max_pct_mt}
    kept = qc.spots_passing(before, **filters)
    after = qc.filter_spots(qc.remove_mt_genes(before, mask), **filters)

    summary = {"sample": args.sample, **qc.qc_summary(before, after, filters), **io_hd.platform_summary(before, after)}
    after.uns[keys.UNS_QC] = summary
    log.info(
        "sample %s: %d of %d spots kept; median %.0f UMIs and %.0f genes per spot; %.1f%% of counts in %d MT genes "
        "(moved to obsm['%s']); %d genes left",
        args.sample,
        summary["spots_kept"],
        summary["spots_in_tissue"],
        summary["median_umis"],
        summary["median_genes"],
        summary["pct_mt"],
        summary["n_mt_genes_removed"],
        keys.MT,
        summary["genes"],
    )

    qc.plot_qc_maps(before, args.output_png, kept=kept)
    # the plan goes into the JSON only: the QC'd h5ad stays as it was
    write_json(
        args.output_json, {**summary, "method_plan": method_plan(args, after.n_obs, summary.get("unit", "spot"))}
    )
    with cli.atomic_path(args.output_h5ad) as tmp:
        after.write_h5ad(tmp, compression="gzip")
    cli.write_versions(args.versions, args.process_name, ["scanpy", "anndata", "matplotlib", "numpy"])
