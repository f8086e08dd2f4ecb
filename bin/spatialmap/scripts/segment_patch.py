"""StarDist nuclei on one image patch of a MAKE_PATCHES store (sopa's stardist method); the patch's polygons as GeoParquet."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from spatialmap import cli
from spatialmap.segmentation import stardist as segmentation

log = logging.getLogger("spatialmap.segment_patch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", required=True, help="sample name")
    parser.add_argument(
        "--store", required=True, type=Path, help="S.patches.zarr written by make_patches.py (read only)"
    )
    parser.add_argument("--patch", required=True, type=Path, help="patch_<i>.json written by make_patches.py")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="local StarDist2D model folder; without it StarDist's pretrained 2D_versatile_he (downloaded on first use)",
    )
    parser.add_argument(
        "--prob-thresh", type=float, default=0.2, help="StarDist probability threshold (default: %(default)s)"
    )
    parser.add_argument(
        "--nms-thresh", type=float, default=0.6, help="StarDist NMS overlap threshold (default: %(default)s)"
    )
    parser.add_argument("--min-area", type=float, default=0, help="smallest cell kept, µm² (default: %(default)s)")
    parser.add_argument("--output", required=True, type=Path, help="GeoParquet of the patch's polygons to write")
    parser.add_argument("--process-name", default="segment_patch.py", help="process name written to the versions file")
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        info = json.loads(args.patch.read_text())
        index, mpp = int(info["index"]), float(info["microns_per_pixel"])
    except (OSError, ValueError, KeyError) as err:
        raise cli.InputError(f"sample {args.sample}: cannot read the patch file {args.patch}: {err}") from err
    segmentation.segment_patch(
        args.store, index, args.output, args.sample, model=args.model, prob_thresh=args.prob_thresh,
        nms_thresh=args.nms_thresh, min_area_px=args.min_area / mpp**2,
    )  # fmt: skip
    cli.write_versions(args.versions, args.process_name, ["sopa", "stardist", "csbdeep", "tensorflow"])
