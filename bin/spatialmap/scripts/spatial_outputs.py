"""Per-slide outputs of a Visium HD / Xenium / SpatialData slide: a new SpatialData zarr with the
mapping results, the mapped h5ad, a cell-type composition table, one label per unit and a map."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import anndata as ad

from spatialmap import cli, keys
from spatialmap.io import outputs as so

log = logging.getLogger("spatialmap.io.outputs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", required=True, help="sample name")
    parser.add_argument(
        "--input-type", required=True, choices=("visium_hd", "xenium", "zarr"), help="platform of the input"
    )
    parser.add_argument(
        "--input", required=True, type=Path, help="the slide's input (outs/, Xenium bundle or .zarr); only read"
    )
    parser.add_argument("--qc-h5ad", required=True, type=Path, help="QC'd bins or cells (S.qc.h5ad)")
    parser.add_argument(
        "--mapped", nargs="*", type=Path, default=[], help="mapping results of the slide (h5ad per method)"
    )
    parser.add_argument(
        "--methods",
        default="",
        help="mapping methods in order of preference for the label (comma-separated; the slide plan's "
        "label_methods); default: the registry's label preference",
    )
    parser.add_argument("--hd-bin-size", type=int, default=8, help="Visium HD bin size in µm (default: %(default)s)")
    parser.add_argument(
        "--hd-mode", default="bins", choices=("bins", "cells"), help="Visium HD units (default: %(default)s)"
    )
    parser.add_argument(
        "--cells",
        type=Path,
        default=None,
        help="the pipeline's cell polygons (S.cells.parquet) when it segmented the slide",
    )
    parser.add_argument(
        "--consensus",
        type=Path,
        default=None,
        help="the methods' consensus proportions of the slide (S.consensus_proportions.csv), with --disagreement",
    )
    parser.add_argument(
        "--disagreement",
        type=Path,
        default=None,
        help="the methods' per-unit disagreement (S.consensus_disagreement.csv), with --consensus",
    )
    parser.add_argument(
        "--domains",
        type=Path,
        default=None,
        help="the slide's spatial domains (S.domains.csv): every level as obs columns of the table",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the figure's subsample (default: %(default)s)")
    parser.add_argument("--outdir", type=Path, default=Path("."), help="folder to write into (default: here)")
    parser.add_argument(
        "--process-name", default="spatial_outputs.py", help="process name written to the versions file"
    )
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    methods = so.label_methods([m.strip() for m in args.methods.split(",")])
    slide = ad.read_h5ad(args.qc_h5ad)
    mapped = [ad.read_h5ad(path) for path in args.mapped]
    results = so.collect_results(slide, mapped, methods)
    if (args.consensus is None) != (args.disagreement is None):
        raise cli.InputError(f"sample {args.sample}: give both --consensus and --disagreement, or neither")
    consensus = None
    if args.consensus is not None:
        try:
            consensus = so.read_consensus(args.consensus, args.disagreement, slide.obs_names, args.sample)
        except ValueError as err:
            raise cli.InputError(str(err)) from None
    annotated, label_method = so.annotate(slide, results, methods, consensus)
    if args.domains is not None:
        from spatialmap.io.domains import read_domains

        try:
            domains = read_domains(args.domains, args.sample, annotated.obs_names)
        except ValueError as err:
            raise cli.InputError(str(err)) from None
        so.add_domains(annotated, domains)
    prefix = args.outdir / args.sample
    labels = annotated.obs[[so.PREDICTED_TYPE, so.PREDICTED_PROBABILITY]] if label_method else None
    table = so.composition(
        args.sample, results, labels, label_method, consensus.proportions if consensus is not None else None
    )
    with cli.atomic_path(f"{prefix}.composition.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    if labels is not None:
        with cli.atomic_path(f"{prefix}.cell_types.csv") as tmp:
            labels.assign(method=label_method).to_csv(tmp, index_label="unit", float_format="%.6g")
        unit = annotated.uns.get("spatialmap_platform", {}).get("unit", "unit")
        so.plot_predicted(
            annotated,
            f"{prefix}.cell_types_map.png",
            seed=args.seed,
            title=f"{args.sample}: predicted cell type per {unit} ({label_method})",
        )
    with cli.atomic_path(f"{prefix}.mapped.h5ad") as tmp:
        annotated.write_h5ad(tmp, compression="gzip")
    elements = so.read_elements(
        args.input_type,
        args.input,
        args.hd_bin_size,
        args.hd_mode,
        args.cells,
        table=slide.uns.get(keys.UNS_PLATFORM, {}).get("table"),
    )
    sd_table = so.build_table(annotated, elements.shape_key, elements.instance)
    store = so.write_store(f"{prefix}.spatialdata.zarr", elements.images, elements.shapes, sd_table, elements.points)
    log.info(
        "sample %s: %d units, methods %s, labels from %s, %s; wrote %s (images %s, shapes %s, points %s)",
        args.sample,
        annotated.n_obs,
        ", ".join(results) or "none",
        label_method,
        "consensus and disagreement in the table" if consensus is not None else "no consensus (fewer than 2 methods)",
        store,
        ", ".join(elements.images) or "none",
        ", ".join(elements.shapes) or "none",
        ", ".join(elements.points) or "none",
    )
    cli.write_versions(
        args.versions, args.process_name, ["sopa", "spatialdata", "spatialdata-io", "anndata", "matplotlib"]
    )
