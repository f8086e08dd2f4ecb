"""Cut a Visium HD slide's full-resolution H&E into sopa's overlapping patches (a new store + one JSON per patch)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spatialmap import cli
from spatialmap.segmentation import stardist as segmentation

log = logging.getLogger("spatialmap.make_patches")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", required=True, help="sample name")
    parser.add_argument("--visium-hd-dir", required=True, type=Path, help="Visium HD Space Ranger outs/ (read only)")
    parser.add_argument("--store", required=True, type=Path, help="new SpatialData store to write (S.patches.zarr)")
    parser.add_argument("--patch-dir", required=True, type=Path, help="folder for one patch_<i>.json per patch")
    parser.add_argument(
        "--patch-width", type=int, default=2000, help="patch side, full-resolution pixels (default: %(default)s)"
    )
    parser.add_argument(
        "--patch-overlap", type=int, default=50, help="overlap of neighbouring patches, pixels (default: %(default)s)"
    )
    parser.add_argument("--process-name", default="make_patches.py", help="process name written to the versions file")
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.visium_hd_dir.is_dir():
        raise cli.InputError(f"sample {args.sample}: Visium HD folder {args.visium_hd_dir} does not exist")
    segmentation.make_patches(
        args.visium_hd_dir, args.sample, args.store, args.patch_dir, args.patch_width, args.patch_overlap
    )
    cli.write_versions(args.versions, args.process_name, ["sopa", "spatialdata", "spatialdata-io"])
