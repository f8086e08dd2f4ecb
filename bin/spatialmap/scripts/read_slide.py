"""Read one slide (Visium / Visium HD outs/, Xenium bundle, SpatialData store or .h5ad) into a checked AnnData .h5ad."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spatialmap import cli, keys
from spatialmap.io import sdata as io_hd
from spatialmap.io import visium as io
from spatialmap.io.samplesheet import PIPELINE_SEGMENTATIONS

log = logging.getLogger("spatialmap.read_slide")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample", required=True, help="sample name (obs['sample'] and the image library key)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--spaceranger-dir",
        type=Path,
        help="Space Ranger 'outs' folder (filtered_feature_bc_matrix.h5 or filtered_feature_bc_matrix/, spatial/)",
    )
    source.add_argument(
        "--h5ad", type=Path, help="AnnData slide with raw counts in X and spot coordinates in obsm['spatial']"
    )
    source.add_argument(
        "--visium-hd-dir", type=Path, help="Visium HD Space Ranger 'outs' folder (binned_outputs/, feature_slice.h5)"
    )
    source.add_argument(
        "--xenium-dir", type=Path, help="Xenium output bundle (read with sopa.io.xenium; the platform's cells)"
    )
    source.add_argument("--zarr", type=Path, help="SpatialData store (read with spatialdata.read_zarr; not modified)")
    parser.add_argument(
        "--hd-mode",
        default="bins",
        choices=("bins", "cells"),
        help="Visium HD units: bins of --hd-bin-size, or cells (Space Ranger 4 boundaries, 2 µm bins aggregated "
        "with sopa.aggregate) (default: %(default)s)",
    )
    parser.add_argument(
        "--segmentation",
        default=None,
        choices=("spaceranger", "xenium", *PIPELINE_SEGMENTATIONS),
        help="the slide's cell boundaries (Visium HD cells mode, Xenium): the platform's own (spaceranger, xenium) "
        "or the pipeline's (stardist, proseg: given with --cells) (default: the platform's)",
    )
    parser.add_argument(
        "--cells",
        type=Path,
        default=None,
        help="<sample>.cells.parquet: cell polygons of the pipeline's segmentation (GeoParquet; Visium HD: "
        "full-resolution image pixels)",
    )
    parser.add_argument(
        "--nucleus-expand-ratio",
        type=float,
        default=1.0,
        help="StarDist nuclei are grown by this x their mean radius before 2 µm bins join them (sopa.aggregate's "
        "expand_radius_ratio); platform boundaries are not grown (default: %(default)s)",
    )
    parser.add_argument(
        "--hd-bin-size", type=int, default=8, choices=(2, 8, 16), help="Visium HD bin size in µm (default: %(default)s)"
    )
    parser.add_argument("--output", required=True, type=Path, help="h5ad file to write (e.g. S.raw.h5ad)")
    parser.add_argument("--process-name", default="read_slide.py", help="process name written to the versions file")
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    packages = ["scanpy", "anndata", "h5py", "pandas", "pyarrow"]
    if args.spaceranger_dir is not None:
        adata = io.read_spaceranger(args.spaceranger_dir, args.sample)
    elif args.visium_hd_dir is not None and args.hd_mode == "cells":
        if args.segmentation in PIPELINE_SEGMENTATIONS and args.cells is None:
            raise cli.InputError(
                f"sample {args.sample}: --segmentation {args.segmentation} needs --cells (the polygons)"
            )
        adata = io_hd.read_visium_hd_cells(
            args.visium_hd_dir,
            args.sample,
            cells=args.cells,
            method=args.segmentation or "spaceranger",
            expand_radius_ratio=args.nucleus_expand_ratio if args.segmentation == "stardist" else 0.0,
        )
    elif args.visium_hd_dir is not None:
        adata = io_hd.read_visium_hd(args.visium_hd_dir, args.sample, args.hd_bin_size)
    elif args.xenium_dir is not None and args.segmentation == "proseg":
        if args.cells is None:
            raise cli.InputError(f"sample {args.sample}: --segmentation proseg needs --cells (the polygons)")
        adata = io_hd.read_xenium_cells(args.xenium_dir, args.sample, args.cells, method="proseg")
    elif args.xenium_dir is not None:
        adata = io_hd.read_xenium(args.xenium_dir, args.sample)
    elif args.zarr is not None:
        adata = io_hd.read_spatialdata_zarr(args.zarr, args.sample, args.hd_bin_size)
    else:
        adata = io.read_h5ad_slide(args.h5ad, args.sample)
    if keys.UNS_PLATFORM in adata.uns:
        packages += ["sopa", "spatialdata", "spatialdata-io"]
        log.info("sample %s: %s", args.sample, adata.uns[keys.UNS_PLATFORM])
    io.check_raw_counts(adata, args.sample)

    library = adata.uns[keys.UNS_SPATIAL][args.sample]
    images = ", ".join(f"{k} {v.shape[1]}x{v.shape[0]}" for k, v in library["images"].items()) or "none"
    metadata = library.get("metadata", {})
    log.info(
        "sample %s: %d spots x %d genes, %.0f UMIs; source %s, positions %s; images: %s; scale factors: %s",
        args.sample,
        adata.n_obs,
        adata.n_vars,
        float(adata.X.sum()),
        metadata.get("source", "?"),
        metadata.get("positions_format", "obsm['spatial']"),
        images,
        ", ".join(sorted(library["scalefactors"])) or "none",
    )
    with cli.atomic_path(args.output) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
    cli.write_versions(args.versions, args.process_name, packages)
    log.info("wrote %s", args.output)
