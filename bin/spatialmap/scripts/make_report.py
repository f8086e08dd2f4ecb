"""Turn the per-slide summaries and figures into MultiQC custom content.

Every mapping method is reported the same way from its QC JSONs (``<sample>.<method>_qc.json``,
see :mod:`spatialmap.report.multiqc`): a QC table, a mean proportions heatmap, a mean abundance
heatmap where it has one, and its headline numbers in the general statistics. Region summaries
(``<sample>.regions_qc.json``): the domains' shares per slide and the ambiguous locations; their
composition heatmaps (``<sample>.region_composition.png``) as figures, like the methods' maps.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from spatialmap import cli
from spatialmap.report import markers as marker_report
from spatialmap.report import multiqc as report

log = logging.getLogger("spatialmap.make_report")

#: MultiQC config with the order of the methods' sections (not custom content: no ``_mqc.`` in the name)
SECTION_ORDER_CONFIG = "spatialmap_section_order_mqc_config.yml"


def _files(paths: list[str] | None) -> list[Path]:
    return sorted(Path(p) for p in (paths or []))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qc", nargs="*", default=[], help="per-slide QC JSON files")
    parser.add_argument("--qc-images", nargs="*", default=[], help="QC figures (PNG)")
    parser.add_argument("--reference-files", nargs="*", default=[], help="reference summary and gene-overlap JSON")
    parser.add_argument(
        "--method-qc",
        nargs="*",
        default=[],
        help="every mapping method's per-slide QC JSON, named <sample>.<method>_qc.json",
    )
    parser.add_argument("--method-images", nargs="*", default=[], help="every mapping method's figures (PNG)")
    parser.add_argument(
        "--agreement",
        nargs="*",
        default=[],
        help="outputs of the method comparison: agreement tables (CSV/TSV), consensus summary, maps (PNG)",
    )
    parser.add_argument(
        "--regions",
        nargs="*",
        default=[],
        help="region summaries and marker genes: every slide's <sample>.regions_qc.json, <sample>.markers_qc.json "
        "and their figures (PNG)",
    )
    parser.add_argument("--versions-files", nargs="*", default=[], help="versions.yml files of every process")
    parser.add_argument("--nextflow-version", default="unknown", help="Nextflow version of the run")
    parser.add_argument("--pipeline-version", default="unknown", help="spatialmap version of the run")
    parser.add_argument("--outdir", default="mqc", help="folder for the MultiQC custom content")
    parser.add_argument("--process-name", default="REPORT_TABLES", help="process name for versions.yml")
    parser.add_argument("--versions", default="versions.yml", help="versions file to write")
    return parser.parse_args(argv)


def reference_sections(paths: list[Path]) -> dict:
    """Gene-overlap table and reference cell-type bar plot."""
    sections = {}
    for path in paths:
        if path.name.startswith("gene_overlap") and path.suffix == ".tsv":
            frame = pd.read_csv(path, sep="\t", index_col=0)
            sections["spatialmap_gene_overlap_mqc.yaml"] = report.table_section(
                "spatialmap_gene_overlap",
                "Reference gene overlap",
                "Genes shared between the single-cell reference and each slide, and for each cell type "
                "how many of its top markers are shared (markers: shared/checked).",
                frame,
            )
        elif path.suffix == ".json":
            summary = json.loads(path.read_text())
            if "cells_per_label" in summary:
                sections["spatialmap_reference_mqc.yaml"] = report.reference_section(summary)
        else:
            log.warning("report: ignoring unknown reference file %s", path.name)
    return sections


def main(argv: list[str] | None = None) -> None:
    """Write every MultiQC custom-content section, the figures and the collated versions."""
    args = parse_args(argv)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    qc = report.read_json(_files(args.qc))
    if not qc:
        raise cli.InputError("no slide QC summary was given to the report")
    methods = report.read_method_json(_files(args.method_qc))
    comparison = report.comparison_files(_files(args.agreement))

    sections = {
        "spatialmap_general_stats_mqc.yaml": report.general_stats(
            qc, methods, consensus=comparison.get("consensus_summary")
        ),
        "spatialmap_slide_qc_mqc.yaml": report.qc_table(qc),
        **report.warning_sections(qc),
    }
    sections.update(reference_sections(_files(args.reference_files)))
    for method, records in methods.items():
        sections.update(report.method_sections(method, records))
    sections.update(report.comparison_sections(comparison))
    try:
        regions = report.region_records(_files(args.regions))
        sections.update(report.region_sections(regions))
        sections.update(marker_report.marker_sections(marker_report.marker_records(_files(args.regions)), regions))
    except ValueError as err:
        raise cli.InputError(str(err)) from None
    for name, content in sections.items():
        report.write_yaml(outdir / name, content)
    # where the methods' sections go in the report (MULTIQC passes this file as a second --config)
    report.write_yaml(outdir / SECTION_ORDER_CONFIG, report.section_order(methods))

    images = report.copy_images(
        _files(args.qc_images) + _files(args.method_images) + _files(args.agreement) + _files(args.regions), outdir
    )

    versions = report.collate_versions(
        _files(args.versions_files),
        {"Workflow": {"Nextflow": args.nextflow_version, "spatialmap": args.pipeline_version}},
    )
    own = cli.package_versions(["multiqc", "pandas"])
    versions.setdefault(args.process_name.split(":")[-1], {}).update(own)
    report.write_yaml(outdir / "spatialmap_software_mqc_versions.yml", versions)
    log.info("wrote %d sections, %d figures, versions of %d processes", len(sections), len(images), len(versions))
    cli.write_versions(args.versions, args.process_name, ["multiqc", "pandas", "pyyaml"])
