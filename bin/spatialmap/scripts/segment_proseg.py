"""ProSeg cell segmentation of one slide through sopa: Visium HD 2 µm bins (refining a prior) or Xenium transcripts."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from spatialmap import cli
from spatialmap.segmentation import proseg

log = logging.getLogger("spatialmap.segment_proseg")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", required=True, help="sample name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--visium-hd-dir", type=Path, help="Visium HD Space Ranger 'outs' folder (binned_outputs/square_002um)"
    )
    source.add_argument(
        "--xenium-dir", type=Path, help="Xenium output bundle (transcripts.parquet; its cells are the prior)"
    )
    parser.add_argument(
        "--prior", type=Path, default=None,
        help="Visium HD: cells file (GeoParquet, full-resolution pixels) of the prior segmentation; default: Space "
        "Ranger 4's segmented_outputs/cell_segmentations.geojson",
    )  # fmt: skip
    parser.add_argument(
        "--proseg-args", default="", help="extra ProSeg options, appended to sopa's command line (quoted)"
    )
    parser.add_argument("--threads", type=int, default=1, help="ProSeg threads (default: %(default)s)")
    parser.add_argument("--output", required=True, type=Path, help="cells file to write (<sample>.cells.parquet)")
    parser.add_argument(
        "--qc", type=Path, default=None, help="segmentation QC JSON to write (default: <sample>.proseg_qc.json)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("proseg_work"), help="scratch folder for sopa's cache (removed)"
    )
    parser.add_argument("--process-name", default="segment_proseg.py", help="process name written to the versions file")
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads < 1:
        raise cli.InputError(f"sample {args.sample}: --threads must be >= 1 (got {args.threads})")
    if args.xenium_dir is not None and args.prior is not None:
        raise cli.InputError(f"sample {args.sample}: --prior is for Visium HD; Xenium uses the platform's cells")
    if args.visium_hd_dir is not None:
        cells, qc = proseg.segment_visium_hd(
            args.visium_hd_dir, args.sample, args.workdir, prior=args.prior, extra_args=args.proseg_args,
            threads=args.threads,
        )  # fmt: skip
    else:
        cells, qc = proseg.segment_xenium(args.xenium_dir, args.sample, args.workdir, args.proseg_args, args.threads)
    log.info("sample %s: ProSeg %s", args.sample, json.dumps(qc))
    proseg.write_cells(cells, args.output)
    qc_path = args.qc or Path(f"{args.sample}.proseg_qc.json")
    with cli.atomic_path(qc_path) as tmp:
        tmp.write_text(json.dumps(qc, indent=2) + "\n")
    versions = cli.package_versions(["sopa", "spatialdata", "geopandas", "shapely"]) | {"proseg": qc["proseg_version"]}
    with cli.atomic_path(args.versions) as tmp:
        tmp.write_text("\n".join([f'"{args.process_name}":'] + [f'    {k}: "{v}"' for k, v in versions.items()]) + "\n")
    log.info("wrote %s (%d cells)", args.output, len(cells))
