"""Match the reference's gene names to the slides', then report the genes shared with each slide
and how many top markers of each cell type survive.

Writes the reference with its genes named as the slides name theirs (every later step matches
genes by var_names), the overlap table and its details, and (``--output-markers``) each cell type's
marker genes among those every slide has, for the marker-gene scores when no ``--markers`` is given
(:func:`spatialmap.markers.genes.derive_markers`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import anndata as ad

from spatialmap import cli, keys
from spatialmap.markers.genes import derive_markers, write_markers
from spatialmap.reference import genes
from spatialmap.reference import prepare as reference

log = logging.getLogger("spatialmap.check_overlap")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", required=True, type=Path, help="prepared reference .h5ad (prepare_reference.py)")
    parser.add_argument("--slides", required=True, nargs="+", type=Path, help="QC'd slide .h5ad files")
    parser.add_argument(
        "--samples",
        nargs="+",
        default=None,
        help="sample names of the slides, in the same order; default: each slide's obs['sample'] (one value)",
    )
    parser.add_argument(
        "--ref-gene-column",
        default=None,
        help="match on this var column of the reference (or 'var_names'); default: the naming sharing the most genes",
    )
    parser.add_argument(
        "--slide-gene-column",
        default=None,
        help="match on this var column of the slides (e.g. gene_ids, or 'var_names'); default: the naming sharing the most genes",
    )
    parser.add_argument("--label-key", required=True, help="obs column of the reference with the cell types")
    parser.add_argument(
        "--n-markers", type=int, default=50, help="top markers per cell type to look for (default: %(default)s)"
    )
    parser.add_argument(
        "--min-shared-genes",
        type=int,
        default=100,
        help="stop when a slide shares fewer genes with the reference (default: %(default)s)",
    )
    parser.add_argument(
        "--slide-qc",
        nargs="*",
        default=[],
        type=Path,
        help="the slides' QC JSONs (slide_qc.py): each slide must share at least the minimum of genes "
        "expressed in both of every method its plan (method_plan) runs",
    )
    parser.add_argument(
        "--reference-name",
        default=None,
        help="the reference as the user named it, for the messages (default: the --reference file name)",
    )
    parser.add_argument(
        "--output-reference",
        required=True,
        type=Path,
        help="reference .h5ad to write, genes named as on the slides",
    )
    parser.add_argument(
        "--output-markers",
        default=None,
        type=Path,
        help="marker sets to write (CSV: cell_type, gene), the top --marker-genes per type among every slide's genes",
    )
    parser.add_argument(
        "--marker-genes", type=int, default=10, help="genes per cell type in --output-markers (default: %(default)s)"
    )
    parser.add_argument("--output-tsv", required=True, type=Path, help="overlap table to write, one row per slide")
    parser.add_argument(
        "--output-json", required=True, type=Path, help="overlap details (markers, missing ones) to write"
    )
    parser.add_argument("--process-name", default="check_overlap.py", help="process name written to the versions file")
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def sample_name(slide: ad.AnnData, path: Path) -> str:
    """The slide's obs['sample'] (one value); the file name is never read for it."""
    found = sorted(set(slide.obs[keys.SAMPLE].astype(str))) if keys.SAMPLE in slide.obs else []
    if len(found) != 1:
        held = f"holds several samples ({', '.join(found)})" if found else f"has no obs['{keys.SAMPLE}']"
        raise cli.InputError(f"{path.name}: {held}; give --samples")
    return found[0]


def read_slides(paths: list[Path], samples: list[str] | None) -> dict[str, ad.AnnData]:
    """``{sample: slide}`` (genes only: the counts are not needed here)."""
    if samples is not None and len(samples) != len(paths):
        raise cli.InputError(f"{len(paths)} slides but {len(samples)} sample names")
    slides = {}
    for i, path in enumerate(paths):
        if not path.is_file():
            raise cli.InputError(f"slide file {path} does not exist")
        slide = ad.read_h5ad(path)
        sample = samples[i] if samples else sample_name(slide, path)
        if sample in slides:
            raise cli.InputError(f"sample {sample} is given twice")
        slides[sample] = slide
    return slides


def planned_methods(paths: list[Path]) -> dict[str, list[str]]:
    """``{sample: methods}`` of the slides' plans, read from their QC JSONs (``sample``, ``method_plan``)."""
    plans = {}
    for path in paths:
        record = json.loads(path.read_text())
        if "sample" not in record or "method_plan" not in record:
            raise cli.InputError(f"{path.name}: not a slide QC JSON with a method plan (sample, method_plan)")
        plans[str(record["sample"])] = list(record["method_plan"]["methods"])
    return plans


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    methods = planned_methods(args.slide_qc)
    reference_name = args.reference_name or args.reference.name
    if not args.reference.is_file():
        raise cli.InputError(f"reference file {args.reference} does not exist")
    ref = ad.read_h5ad(args.reference)
    slides = read_slides(args.slides, args.samples)
    ref, match = genes.match_genes(ref, slides, args.ref_gene_column or None, args.slide_gene_column or None)
    try:
        result = reference.gene_overlap(
            ref, slides, args.label_key, args.n_markers, args.min_shared_genes, methods, reference_name
        )
    except cli.InputError as err:
        tried = "; ".join(f"{k}: {n}" for k, n in match.candidates.items())
        raise cli.InputError(f"{err}. Shared genes by each naming tried ({reference_name}): {tried}") from err
    result.table.insert(0, "genes_matched_by", match.description)
    result.table.insert(1, "duplicate_names_made_unique", match.duplicates["reference"] + match.duplicates["slides"])
    for sample, row in result.table.iterrows():
        worst = min(
            result.markers, key=lambda label: len(result.markers[label]) - len(result.missing_markers[sample][label])
        )
        log.info(
            "slide %s: %d shared genes; fewest shared markers: %s %s",
            sample,
            row["shared_genes"],
            worst,
            row[f"markers:{worst}"],
        )
    with cli.atomic_path(args.output_tsv) as tmp:
        result.table.to_csv(tmp, sep="\t")
    with cli.atomic_path(args.output_json) as tmp:
        tmp.write_text(json.dumps({"gene_matching": match.to_json(), **result.to_json()}, indent=2) + "\n")
    if args.output_markers:
        every = set.intersection(*(set(slide.var_names.astype(str)) for slide in slides.values()))
        derived = derive_markers(ref, args.label_key, every, args.marker_genes)
        log.info("marker sets derived from the reference: %d types, %d genes each at most", len(derived), args.marker_genes)  # fmt: skip
        with cli.atomic_path(args.output_markers) as tmp:
            write_markers(derived, tmp)
    with cli.atomic_path(args.output_reference) as tmp:
        ref.write_h5ad(tmp, compression="gzip")
    cli.write_versions(args.versions, args.process_name, ["anndata", "numpy", "pandas"])
