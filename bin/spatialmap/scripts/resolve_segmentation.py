"""Merge the segmented patches of one slide (sopa's solve_conflicts on the overlaps) into <sample>.cells.parquet."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from spatialmap import cli
from spatialmap.segmentation import stardist as segmentation

log = logging.getLogger("spatialmap.resolve_segmentation")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "patches", nargs="+", type=Path, help="the patches' polygons (GeoParquet, from segment_patch.py)"
    )
    parser.add_argument("--sample", required=True, help="sample name")
    parser.add_argument("--method", default="stardist", help="segmentation name for the summary (default: %(default)s)")
    parser.add_argument(
        "--output", required=True, type=Path, help="S.cells.parquet to write (cell polygons, full-res pixels)"
    )
    parser.add_argument(
        "--patch-info",
        type=Path,
        default=None,
        help="folder of the patch_<i>.json files of make_patches.py: with it the cells are checked for plausibility "
        "(median area, cells per 2 µm bin of the imaged patches) before they are written",
    )
    parser.add_argument("--summary", required=True, type=Path, help="S.segmentation.json to write (cells, patches)")
    parser.add_argument(
        "--process-name", default="resolve_segmentation.py", help="process name written to the versions file"
    )
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    mpp, area_px, n_patches = None, None, None
    if args.patch_info is not None:
        mpp, area_px, n_patches = segmentation.patches_imaged(sorted(args.patch_info.glob("patch_*.json")), args.sample)
    summary = segmentation.resolve_patches(
        args.patches, args.output, args.sample, microns_per_pixel=mpp, imaged_area_px=area_px, method=args.method,
        n_patches=n_patches,
    )  # fmt: skip
    summary.update({"sample": args.sample, "method": args.method})
    with cli.atomic_path(args.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    cli.write_versions(args.versions, args.process_name, ["sopa", "geopandas", "shapely"])
