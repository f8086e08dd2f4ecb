#!/usr/bin/env python3
"""Turn the per-slide summaries and figures into MultiQC custom content."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from spatialmap import cli
from spatialmap.report import multiqc as report

log = logging.getLogger("spatialmap.make_report")


def _files(paths: list[str] | None) -> list[Path]:
    return sorted(Path(p) for p in (paths or []))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qc", nargs="*", default=[], help="per-slide QC JSON files")
    parser.add_argument("--qc-images", nargs="*", default=[], help="QC figures (PNG)")
    parser.add_argument("--reference-files", nargs="*", default=[], help="reference summary and gene-overlap JSON")
    parser.add_argument("--method-qc", nargs="*", default=[],
                        help="every mapping method's per-slide QC JSON, named <sample>.<method>_qc.json")
    parser.add_argument("--method-images", nargs="*", default=[], help="every mapping method's figures (PNG)")
    parser.add_argument("--c2l", nargs="*", default=[], help="per-slide cell2location QC JSON files (also accepted in --method-qc)")
    parser.add_argument("--c2l-images", nargs="*", default=[], help="cell2location and signature figures (PNG)")
    parser.add_argument("--tangram", nargs="*", default=[], help="per-slide Tangram QC JSON files (also accepted in --method-qc)")
    parser.add_argument("--tangram-genes", nargs="*", default=[], help="per-slide Tangram held-out gene tables")
    parser.add_argument("--tangram-images", nargs="*", default=[], help="Tangram figures (PNG)")
    parser.add_argument("--agreement", nargs="*", default=[],
                        help="outputs of the method comparison: agreement tables (CSV/TSV), consensus summary, maps (PNG)")
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
                "spatialmap_gene_overlap", "Reference gene overlap",
                "Genes shared between the single-cell reference and each slide, and for each cell type "
                "how many of its top markers are shared (markers: shared/checked).", frame)
        elif path.suffix == ".json":
            summary = json.loads(path.read_text())
            if "cells_per_label" in summary:
                sections["spatialmap_reference_mqc.yaml"] = report.reference_section(summary)
        else:
            log.warning("report: ignoring unknown reference file %s", path.name)
    return sections


def c2l_sections(c2l: list[dict]) -> dict:
    """cell2location abundance heatmap and mapping QC table (training: epochs run, stop reason, final loss)."""
    if not c2l:
        return {}
    matrix = report.c2l_abundance_matrix(c2l)
    sections = {"spatialmap_c2l_abundance_mqc.yaml": report.heatmap(
        "spatialmap_c2l_abundance", "cell2location: mean abundance",
        "Mean cell abundance per spot (5% posterior quantile) for each slide and cell type.",
        matrix, title="cell2location mean abundance per spot", zlab="cells per spot", zmin=0)}
    sections["spatialmap_c2l_qc_mqc.yaml"] = report.c2l_qc_table(c2l)
    return sections


def tangram_sections(tangram: list[dict]) -> dict:
    """Tangram held-out gene validation table."""
    if not tangram:
        return {}
    tg = pd.DataFrame(tangram).set_index("sample")
    keep = [c for c in ("mode", "device", "n_training_genes", "n_heldout_genes", "heldout_median",
                        "heldout_p90", "training_score", "cells_used") if c in tg]
    return {"spatialmap_tangram_qc_mqc.yaml": report.table_section(
        "spatialmap_tangram_qc", "Tangram: held-out gene validation",
        "Spatial correlation between measured and projected expression of genes Tangram never "
        "saw in training: median and 90th percentile per slide.", tg[keep])}


def other_method_sections(methods: dict[str, list[dict]]) -> dict:
    """A mapping QC table (and a mean proportion heatmap where given) for every other method."""
    sections = {}
    for method, records in methods.items():
        if method in ("cell2location", "tangram") or not records:
            continue
        sections[f"spatialmap_{method}_qc_mqc.yaml"] = report.method_qc_table(method, records)
        means = {str(r["sample"]): r["mean_proportions"] for r in records if isinstance(r.get("mean_proportions"), dict)}
        if means:
            title = report.method_title(method)
            sections[f"spatialmap_{method}_proportions_mqc.yaml"] = report.heatmap(
                f"spatialmap_{method}_proportions", f"{title}: mean proportions",
                f"Mean {title} cell-type proportion per spot for each slide and cell type.",
                pd.DataFrame.from_dict(means, orient="index").sort_index(),
                title=f"{title} mean proportion per spot", zlab="proportion", zmin=0, zmax=1)
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
    c2l = report.read_json(_files(args.c2l)) + methods.get("cell2location", [])
    tangram = report.read_json(_files(args.tangram)) + methods.get("tangram", [])
    comparison = report.comparison_files(_files(args.agreement))

    sections = {"spatialmap_general_stats_mqc.yaml": report.general_stats(
                    qc, c2l, tangram, methods={m: r for m, r in methods.items() if m not in ("cell2location", "tangram")},
                    consensus=comparison.get("consensus_summary")),
                "spatialmap_slide_qc_mqc.yaml": report.qc_table(qc)}
    sections.update(reference_sections(_files(args.reference_files)))
    sections.update(c2l_sections(c2l))
    sections.update(tangram_sections(tangram))
    sections.update(other_method_sections(methods))
    sections.update(report.comparison_sections(comparison))
    for name, content in sections.items():
        report.write_yaml(outdir / name, content)

    images = report.copy_images(_files(args.qc_images) + _files(args.method_images) + _files(args.c2l_images)
                                + _files(args.tangram_images) + _files(args.agreement), outdir)

    versions = report.collate_versions(
        _files(args.versions_files),
        {"Workflow": {"Nextflow": args.nextflow_version, "spatialmap": args.pipeline_version}},
    )
    own = cli.package_versions(["multiqc", "pandas"])
    versions.setdefault(args.process_name.split(":")[-1], {}).update(own)
    report.write_yaml(outdir / "spatialmap_software_mqc_versions.yml", versions)
    log.info("wrote %d sections, %d figures, versions of %d processes", len(sections), len(images), len(versions))
    cli.write_versions(args.versions, args.process_name, ["multiqc", "pandas", "pyyaml"])


if __name__ == "__main__":
    cli.run(main)
