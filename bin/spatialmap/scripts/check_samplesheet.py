"""Check the samplesheet and write it back with absolute paths."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spatialmap import cli
from spatialmap.io.samplesheet import SEGMENTATIONS, check_models, read_samplesheet, write_checked

log = logging.getLogger("spatialmap.check_samplesheet")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "samplesheet", help="CSV with columns sample, one of spaceranger_dir / h5ad / xenium_dir / zarr, [group]"
    )
    parser.add_argument("--base-dir", help="folder that relative paths are taken from (default: the samplesheet's)")
    parser.add_argument(
        "--hd-bin-size",
        type=int,
        default=8,
        choices=(8, 16),
        help="bin size (µm) Visium HD slides are read at; its binned_outputs folder must exist (default: 8)",
    )
    parser.add_argument(
        "--hd-mode",
        default="bins",
        choices=("bins", "cells"),
        help="Visium HD units; cells need the 2 µm bins (default: bins)",
    )
    parser.add_argument(
        "--segmentation",
        default="auto",
        choices=SEGMENTATIONS,
        help="cell boundaries of Visium HD cells mode and Xenium: auto = the platform's own when present, "
        "else StarDist on the H&E (default: auto)",
    )
    parser.add_argument(
        "--stardist-model",
        default=None,
        help="--stardist_model folder, checked (config.json, weights) when a slide is segmented by StarDist",
    )
    parser.add_argument(
        "--celltypist-model",
        default=None,
        help="--celltypist_model file, checked to be a CellTypist model (its pickle read without running it)",
    )
    parser.add_argument(
        "--markers",
        default=None,
        help="--markers file, checked to be readable marker sets (YAML or CSV: cell type -> genes)",
    )
    parser.add_argument(
        "--no-download-check",
        action="store_true",
        help="do not check that a model to download (StarDist's 2D_versatile_he) can be downloaded (-stub runs)",
    )
    parser.add_argument("--output", default="samplesheet.valid.csv", help="checked samplesheet to write")
    parser.add_argument("--process-name", default="CHECK_SAMPLESHEET", help="process name for versions.yml")
    parser.add_argument("--versions", default="versions.yml", help="versions file to write")
    args = parser.parse_args(argv)

    slides = read_samplesheet(
        args.samplesheet,
        base_dir=args.base_dir,
        hd_bin_size=args.hd_bin_size,
        hd_mode=args.hd_mode,
        segmentation=args.segmentation,
    )
    check_models(slides, args.stardist_model, downloads_allowed=not args.no_download_check)
    if args.celltypist_model:
        from spatialmap.methods.celltypist import check_model_file

        check_model_file(args.celltypist_model)
    if args.markers:
        from spatialmap.markers.genes import read_markers

        sets = read_markers(args.markers)
        log.info("markers file %s: %d cell types, %d genes", Path(args.markers).name, len(sets), sum(map(len, sets.values())))  # fmt: skip
    with cli.atomic_path(args.output) as tmp:
        write_checked(slides, tmp)
    groups = sorted({s.group for s in slides})
    platforms = ", ".join(
        f"{s.sample}: {s.input_type}" + (f" (segmentation {s.segmentation})" if s.segmentation != "none" else "")
        for s in slides
    )
    log.info(
        "samplesheet OK: %d slide(s) in %d group(s): %s (%s)", len(slides), len(groups), ", ".join(groups), platforms
    )
    cli.write_versions(args.versions, args.process_name, [])
