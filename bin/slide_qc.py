#!/usr/bin/env python3
"""Spot QC of one slide: metrics, mitochondrial genes moved out of X, spot filters, maps."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import anndata as ad

from spatialmap import cli, keys
from spatialmap.io import sdata as io_hd
from spatialmap.io import visium as io
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
    parser.add_argument("--process-name", default="slide_qc.py", help="process name written to the versions file")
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
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
    with cli.atomic_path(args.output_json) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    with cli.atomic_path(args.output_h5ad) as tmp:
        after.write_h5ad(tmp, compression="gzip")
    cli.write_versions(args.versions, args.process_name, ["scanpy", "anndata", "matplotlib", "numpy"])


if __name__ == "__main__":
    cli.run(main)
