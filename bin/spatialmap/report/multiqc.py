"""MultiQC custom content built from the per-slide JSON summaries.

Every table is written as a ``*_mqc.yaml`` custom-content file; figures are
copied as ``*_mqc.png``; software versions are collated into one
``*_mqc_versions.yml``. MultiQC then renders them into one report.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import pandas as pd
import yaml

QC_COLUMNS = {
    "spots_in_tissue": dict(
        title="Spots in tissue", description="In-tissue spots read from the slide", format="{:,.0f}", scale="Blues"
    ),
    "spots_kept": dict(
        title="Spots kept", description="Spots passing the QC filters", format="{:,.0f}", scale="Greens"
    ),
    "median_umis": dict(
        title="Median UMIs", description="Median UMIs per spot (all genes)", format="{:,.0f}", scale="Purples"
    ),
    "median_genes": dict(
        title="Median genes", description="Median detected genes per spot", format="{:,.0f}", scale="Oranges"
    ),
    "pct_mt": dict(
        title="% MT",
        description="Share of counts in mitochondrial genes (removed from X)",
        suffix="%",
        max=100,
        min=0,
        format="{:,.1f}",
        scale="RdYlGn-rev",
    ),
}


def read_json(paths: Iterable[str | Path]) -> list[dict]:
    """Load JSON summaries, sorted by their ``sample`` (or file name)."""
    records = [json.loads(Path(p).read_text()) for p in paths]
    return sorted(records, key=lambda r: str(r.get("sample", "")))


def write_yaml(path: Path, content: dict) -> None:
    from spatialmap.cli import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))


def _headers(columns: dict, data: dict) -> dict:
    present = {key for row in data.values() for key in row}
    return {key: conf for key, conf in columns.items() if key in present}


# Slide QC fields beyond QC_COLUMNS that other slide readers (Visium HD, Xenium) may add; each shows
# up as a general-statistics column when some slide has it. Any other scalar field of the QC JSON
# still appears in the slide QC table.
QC_EXTRA_COLUMNS = {
    "bins_kept": dict(title="Bins kept", description="Visium HD bins passing QC", format="{:,.0f}", scale="Greens"),
    "cells_kept": dict(title="Cells kept", description="Segmented cells passing QC", format="{:,.0f}", scale="Greens"),
    "median_transcripts": dict(
        title="Median transcripts", description="Median transcripts per cell or bin", format="{:,.0f}", scale="Purples"
    ),
    # segmentation QC (Visium HD cells, Xenium)
    "cells_found": dict(
        title="Cells found", description="Cells segmented (before QC)", format="{:,.0f}", scale="Greens"
    ),
    "median_cell_area_um2": dict(
        title="Median cell area", description="Median cell area (µm²)", format="{:,.1f}", scale="Blues"
    ),
    "median_bins_per_cell": dict(
        title="Bins per cell", description="Median 2 µm bins per cell (Visium HD)", format="{:,.0f}", scale="Blues"
    ),
    "pct_transcripts_in_cells": dict(
        title="% transcripts in cells",
        description="Share of the transcripts (Visium HD: 2 µm bin counts; Xenium: Q20 transcripts) inside a cell",
        format="{:,.1f}",
        min=0,
        max=100,
        suffix="%",
        scale="RdYlGn",
    ),
    "pct_bins_in_cells": dict(
        title="% bins in cells",
        description="Share of the in-tissue 2 µm bins inside a cell (Visium HD)",
        format="{:,.1f}",
        min=0,
        max=100,
        suffix="%",
        scale="RdYlGn",
        hidden=True,
    ),
}
CONSENSUS_COLUMNS = {
    "n_methods": dict(
        title="Consensus methods",
        description="mapping methods combined in the consensus",
        format="{:,.0f}",
        scale="Greys",
    ),
    "mean_disagreement": dict(
        title="Disagreement",
        description="mean over spots of the methods' mean Jensen-Shannon divergence to the consensus (0 = identical, 1 = disjoint)",
        format="{:,.3f}",
        min=0,
        max=1,
        scale="OrRd",
    ),
}
QC_TABLE_FIRST = [
    "spots_in_tissue",
    "spots_kept",
    "median_umis",
    "median_genes",
    "pct_mt",
    "n_mt_genes_removed",
    "genes",
]


def general_stats(
    qc: list[dict], methods: dict[str, list[dict]] | None = None, consensus: list[dict] | None = None
) -> dict:
    """One general-statistics row per slide: QC, each method's headline numbers, the consensus.

    Parameters
    ----------
    qc
        Slide QC records (``QC_COLUMNS``, and ``QC_EXTRA_COLUMNS`` where present).
    methods
        ``{method: records}`` of every mapping method (:func:`read_method_json`): the keys each
        record's ``headline`` names, as columns ``<method>_<key>`` (:func:`method_headlines`).
    consensus
        Per-slide consensus summaries (``sample``, ``n_methods``, ``mean_disagreement``).
    """
    data: dict[str, dict] = defaultdict(dict)
    headers = {**QC_COLUMNS, **QC_EXTRA_COLUMNS}
    for record in qc:
        data[record["sample"]].update({k: record[k] for k in {**QC_COLUMNS, **QC_EXTRA_COLUMNS} if k in record})
    method_headers, method_data = method_headlines(methods or {})
    headers.update(method_headers)
    for sample, row in method_data.items():
        data[sample].update(row)
    for record in consensus or []:
        data[str(record["sample"])].update({f"consensus_{k}": record[k] for k in CONSENSUS_COLUMNS if k in record})
    headers.update({f"consensus_{k}": conf for k, conf in CONSENSUS_COLUMNS.items()})
    data = {sample: row for sample, row in sorted(data.items())}
    return {
        "id": "spatialmap_general_stats",
        "plot_type": "generalstats",
        "headers": _headers(headers, data),
        "data": data,
    }


def qc_table(qc: list[dict]) -> dict:
    """Full per-slide QC table: the standard columns, then every other scalar field present."""
    extra = [k for r in qc for k, v in r.items() if k not in QC_TABLE_FIRST and k != "sample" and _scalar(v)]
    columns = QC_TABLE_FIRST + list(dict.fromkeys(extra))
    data = {r["sample"]: {c: r[c] for c in columns if c in r} for r in qc}
    return {
        "id": "spatialmap_slide_qc",
        "section_name": "Slide QC",
        "description": "Per-slide spot QC. Mitochondrial genes are removed from the count matrix "
        "(their counts are kept in obsm['MT']); spots are filtered with the QC thresholds.",
        "plot_type": "table",
        "pconfig": {"id": "spatialmap_slide_qc_table", "title": "spatialmap: slide QC"},
        "data": data,
    }


WARNING_KEYS = ("segmentation_warning",)  # QC fields holding a warning the report shows at its top


def warning_sections(qc: list[dict]) -> dict:
    """``{file name: section}``: the slides whose QC holds a warning (:data:`WARNING_KEYS`), as an alert
    at the top of the report; empty when there is none."""
    import html

    rows = [(str(r.get("sample", "")), str(r[key])) for r in qc for key in WARNING_KEYS if r.get(key)]
    if not rows:
        return {}
    items = "".join(f"<li><b>{html.escape(sample)}</b>: {html.escape(text)}</li>" for sample, text in rows)
    return {
        "spatialmap_warnings_mqc.yaml": {
            "id": "spatialmap_warnings",
            "section_name": "Warnings",
            "description": "Results the pipeline finished but doubts: read these before the numbers below.",
            "plot_type": "html",
            "data": f'<div class="alert alert-warning"><ul>{items}</ul></div>',
        }
    }


def heatmap(
    section_id: str,
    name: str,
    description: str,
    matrix: pd.DataFrame,
    *,
    title: str,
    zlab: str,
    zmin: float | None = None,
    zmax: float | None = None,
) -> dict:
    """A MultiQC heatmap of a samples x categories matrix."""
    pconfig = {
        "id": f"{section_id}_plot",
        "title": title,
        "xlab": "cell type",
        "ylab": "slide",
        "zlab": zlab,
        "square": False,
    }
    if zmin is not None:
        pconfig["min"] = zmin
    if zmax is not None:
        pconfig["max"] = zmax
    values = matrix.astype(float).round(4)
    return {
        "id": section_id,
        "section_name": name,
        "description": description,
        "plot_type": "heatmap",
        "pconfig": pconfig,
        "xcats": [str(c) for c in values.columns],
        "ycats": [str(i) for i in values.index],
        "data": [[None if pd.isna(v) else float(v) for v in row] for row in values.to_numpy()],
    }


def reference_section(summary: dict) -> dict:
    """Bar plot of reference cells per cell type, with the reference's headline numbers."""
    description = (
        f"Reference: {summary.get('n_cells', '?')} cells, {summary.get('n_genes', '?')} genes after removing "
        f"{len(summary.get('mt_genes_removed', []))} mitochondrial genes; labels from "
        f"<code>{summary.get('label_key', '?')}</code>"
    )
    if summary.get("batch_key"):
        description += f", batches from <code>{summary['batch_key']}</code> ({len(summary.get('cells_per_batch', {}))})"
    return {
        "id": "spatialmap_reference",
        "section_name": "Reference cell types",
        "description": description + ".",
        "plot_type": "bargraph",
        "pconfig": {"id": "spatialmap_reference_plot", "title": "Reference cells per cell type", "ylab": "cells"},
        "data": {str(label): {"cells": int(n)} for label, n in summary["cells_per_label"].items()},
    }


def table_section(
    section_id: str, name: str, description: str, frame: pd.DataFrame, headers: dict | None = None
) -> dict:
    """A MultiQC table from a data frame (index = row names); ``headers``: column id -> MultiQC header
    settings (title, description, format), for the columns present."""
    data = {
        str(idx): {str(k): (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in row.items()}
        for idx, row in frame.iterrows()
    }
    section = {
        "id": section_id,
        "section_name": name,
        "description": description,
        "plot_type": "table",
        "pconfig": {"id": f"{section_id}_table", "title": f"spatialmap: {name}"},
        "data": data,
    }
    if headers:
        section["headers"] = {str(c): headers[c] for c in frame.columns if c in headers}
    return section


def collate_versions(paths: Iterable[str | Path], extra: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Merge nf-core style ``versions.yml`` files: ``{process: {tool: version}}``.

    Process names are shortened to their last ``:`` part, as nf-core does.
    """
    merged: dict[str, dict[str, str]] = {}
    for path in paths:
        content = yaml.safe_load(Path(path).read_text()) or {}
        for process, tools in content.items():
            merged.setdefault(str(process).split(":")[-1], {}).update(
                {str(k): str(v) for k, v in (tools or {}).items()}
            )
    merged = dict(sorted(merged.items()))
    merged.update(extra)
    return merged


def copy_images(paths: Iterable[str | Path], outdir: Path) -> list[Path]:
    """Copy PNG figures as MultiQC image sections (``<name>_mqc.png``)."""
    copied = []
    for path in sorted(Path(p) for p in paths):
        if path.suffix.lower() != ".png":
            continue
        target = outdir / f"{path.stem.replace('.', '_')}_mqc.png"
        shutil.copyfile(path, target)
        copied.append(target)
    return copied


# --------------------------------------------------------------------------- mapping methods
#
# Every method is reported the same way, from its per-slide QC JSON (``<sample>.<method>_qc.json``):
# ``method`` (id), ``sample``, ``label`` (display name), ``report_columns`` ({qc key: description},
# ordered: its QC table), ``headline`` (one to three of those keys: general-statistics columns),
# ``mean_proportions`` ({type: value}: a heatmap) and, where the method estimates cells,
# ``mean_abundance`` (another heatmap). A JSON without them still reports: method from the file
# name, label = method id, columns = its scalar keys, no headline.

#: keys of the QC JSON that describe it rather than the slide's mapping (never table columns)
CONTRACT_KEYS = ("sample", "method", "label", "report_columns", "headline", "mean_proportions", "mean_abundance")
#: MultiQC order of the first method's sections; each next method's come 10 lower (above the
#: agreement sections, 600)
METHOD_SECTION_ORDER = 800


def method_of(path: str | Path, record: dict) -> str:
    """Mapping method of a QC JSON: its ``method`` field (every method writes it; the file name is not read)."""
    for key in ("method", "sample"):
        if not record.get(key):
            raise ValueError(f"{Path(path).name}: a method QC JSON must hold its '{key}'")
    return str(record["method"])


def read_method_json(paths: Iterable[str | Path]) -> dict[str, list[dict]]:
    """``{method: [QC records sorted by sample]}`` from the methods' QC JSONs (each holds its ``method``
    and ``sample``), methods in name order."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        record = json.loads(Path(path).read_text())
        by_method[method_of(path, record)].append(record)
    return {m: sorted(by_method[m], key=lambda r: str(r["sample"])) for m in sorted(by_method)}


def method_label(method: str, records: list[dict]) -> str:
    """Display name of a method: the ``label`` of its QC JSON, else its id."""
    return next((str(r["label"]) for r in records if r.get("label")), method)


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def report_columns(records: list[dict]) -> dict[str, str]:
    """``{qc key: description}`` of a method's QC table: the records' ``report_columns`` (in order,
    merged), else every scalar key of the records (description: the key)."""
    columns: dict[str, str] = {}
    for record in records:
        given = record.get("report_columns")
        if isinstance(given, dict):
            columns.update({str(k): str(v) for k, v in given.items() if k not in columns})
    if columns:
        return columns
    return {k: k for r in records for k, v in r.items() if k not in CONTRACT_KEYS and _scalar(v)}


def column_header(key: str, description: str, values: Iterable, label: str | None = None) -> dict:
    """MultiQC header of a column: title from the key (``epochs_run`` -> ``Epochs run``), the
    description, and a number format fitted to the values."""
    title = key.replace("_", " ").strip().capitalize()
    header = {
        "title": f"{label} {title[:1].lower()}{title[1:]}" if label else title,
        "description": f"{label}: {description}" if label else description,
    }
    numbers = [v for v in values if v is not None]
    if numbers and all(_number(v) for v in numbers):
        if all(isinstance(v, int) or float(v).is_integer() for v in numbers) and max(map(abs, numbers)) >= 10:
            header["format"] = "{:,.0f}"
        elif max(map(abs, numbers)) >= 100:
            header["format"] = "{:,.1f}"
        else:
            header["format"] = "{:,.3g}"
    return header


def method_qc_table(method: str, records: list[dict]) -> dict:
    """Mapping QC table of one method: its :func:`report_columns` (those some slide has), one row per slide."""
    described = report_columns(records)
    columns = [c for c in described if any(_scalar(r.get(c)) and r.get(c) is not None for r in records)]
    frame = pd.DataFrame(
        [{c: (r.get(c) if _scalar(r.get(c)) else None) for c in columns} for r in records],
        index=[str(r["sample"]) for r in records],
        columns=columns,
    )
    headers = {c: column_header(c, described[c], frame[c].tolist()) for c in columns}
    label = method_label(method, records)
    return table_section(
        f"spatialmap_{method}_qc",
        f"{label}: mapping QC",
        f"Per slide: {label}'s mapping QC, from its QC JSON (<code>&lt;sample&gt;.{method}_qc.json</code>); "
        "hover over a column title for what it holds.",
        frame,
        headers=headers,
    )


def _means(records: list[dict], key: str) -> pd.DataFrame:
    """Slides x cell types of a per-type mean field (``mean_proportions``, ``mean_abundance``)."""
    rows = {str(r["sample"]): r[key] for r in records if isinstance(r.get(key), dict) and r[key]}
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


def method_sections(method: str, records: list[dict]) -> dict:
    """``{file name: section}`` of one method: its QC table, its mean proportions heatmap and, where
    its QC JSON has ``mean_abundance``, its mean abundance heatmap."""
    if not records:
        return {}
    label = method_label(method, records)
    sections = {f"spatialmap_{method}_qc_mqc.yaml": method_qc_table(method, records)}
    proportions = _means(records, "mean_proportions")
    if not proportions.empty:
        sections[f"spatialmap_{method}_proportions_mqc.yaml"] = heatmap(
            f"spatialmap_{method}_proportions",
            f"{label}: mean proportions",
            f"Mean {label} cell-type proportion per spot for each slide and cell type.",
            proportions,
            title=f"{label} mean proportion per spot",
            zlab="proportion",
            zmin=0,
            zmax=1,
        )
    abundance = _means(records, "mean_abundance")
    if not abundance.empty:
        sections[f"spatialmap_{method}_abundance_mqc.yaml"] = heatmap(
            f"spatialmap_{method}_abundance",
            f"{label}: mean abundance",
            f"Mean {label} cell abundance per spot for each slide and cell type.",
            abundance,
            title=f"{label} mean abundance per spot",
            zlab="cells per spot",
            zmin=0,
        )
    return sections


def section_order(methods: Iterable[str]) -> dict:
    """MultiQC ``report_section_order`` of the methods' sections: after the reference, before the
    agreement; per method its QC table, proportions, abundance."""
    order = {}
    for i, method in enumerate(methods):
        base = METHOD_SECTION_ORDER - 10 * i
        for j, kind in enumerate(("qc", "proportions", "abundance")):
            order[f"spatialmap_{method}_{kind}"] = {"order": base - j}
    return {"report_section_order": order}


def method_headlines(methods: dict[str, list[dict]]) -> tuple[dict, dict]:
    """General-statistics ``(headers, data)`` of the methods: per method, its QC JSON's ``headline``
    keys as columns ``<method>_<key>``."""
    headers: dict[str, dict] = {}
    data: dict[str, dict] = defaultdict(dict)
    for method, records in methods.items():
        label = method_label(method, records)
        described = report_columns(records)
        keys = list(dict.fromkeys(str(k) for r in records for k in (r.get("headline") or [])))
        for key in keys:
            values = {str(r["sample"]): r[key] for r in records if _scalar(r.get(key)) and r.get(key) is not None}
            if not values:
                continue
            headers[f"{method}_{key}"] = column_header(key, described.get(key, key), values.values(), label)
            for sample, value in values.items():
                data[sample][f"{method}_{key}"] = value
    return headers, data


# --------------------------------------------------------------------------- method comparison

COMPARISON_FILES = {
    "method_agreement_matrix.tsv": "matrix",
    "method_agreement_pairs.tsv": "pairs",
    "consensus_summary.tsv": "consensus_summary",
}


def comparison_files(paths: Iterable[str | Path]) -> dict:
    """Read the method comparison's tables the report uses.

    Returns ``{"matrix": DataFrame (slide pair x cell type r), "pairs": DataFrame (method x method
    median r), "consensus_summary": [per-slide dicts]}``, each only when its file was given; PNGs
    and per-slide CSVs are skipped here.
    """
    found: dict = {}
    for path in map(Path, paths):
        kind = COMPARISON_FILES.get(path.name)
        if kind is None:
            continue
        frame = pd.read_csv(path, sep="\t", index_col=0)
        if frame.empty:
            continue
        if kind == "consensus_summary":
            found[kind] = [
                {"sample": str(idx), **{k: (None if pd.isna(v) else v) for k, v in row.items()}}
                for idx, row in frame.iterrows()
            ]
        else:
            found[kind] = frame
    return found


def comparison_sections(found: dict) -> dict:
    """Agreement heatmaps (per slide pair and cell type; per method pair) and the consensus table."""
    sections = {}
    if "matrix" in found:
        sections["spatialmap_agreement_mqc.yaml"] = heatmap(
            "spatialmap_agreement",
            "Agreement between methods",
            "Pearson correlation across spots, per slide, pair of methods and cell type, between the two "
            "methods' proportions (abundances normalised per spot to proportions).",
            found["matrix"],
            title="Method agreement (Pearson r)",
            zlab="r",
            zmin=-1,
            zmax=1,
        )
        sections["spatialmap_agreement_mqc.yaml"]["pconfig"]["ylab"] = "slide: method pair"
    if "pairs" in found:
        pairs = found["pairs"]
        sections["spatialmap_agreement_pairs_mqc.yaml"] = heatmap(
            "spatialmap_agreement_pairs",
            "Agreement per method pair",
            "Median over slides and cell types of the per-type Pearson r between two methods.",
            pairs,
            title="Method agreement, median r",
            zlab="median r",
            zmin=-1,
            zmax=1,
        )
        sections["spatialmap_agreement_pairs_mqc.yaml"]["pconfig"].update(xlab="method", ylab="method")
    if "consensus_summary" in found:
        frame = pd.DataFrame(found["consensus_summary"]).set_index("sample")
        sections["spatialmap_consensus_mqc.yaml"] = table_section(
            "spatialmap_consensus",
            "Consensus map",
            "Per slide: the methods combined, the consensus rule, and the disagreement score per spot "
            "(mean Jensen-Shannon divergence, base 2, of each method's proportions to the consensus; "
            "0 = all methods identical, 1 = disjoint). Consensus and disagreement maps are below.",
            frame,
        )
    return sections


# --------------------------------------------------------------------------- region summaries

#: the regions QC JSON's counts shown in the report's ambiguity table, with their headers
REGION_COLUMNS = {
    "locations": dict(title="Locations", description="locations of the slide's domains table", format="{:,.0f}"),
    "domains": dict(title="Domains", description="spatial domains (Unassigned not counted)", format="{:,.0f}"),
    "unassigned_locations": dict(
        title="Unassigned", description="locations the domain method placed in no domain", format="{:,.0f}"
    ),
    "ambiguous_locations": dict(
        title="Ambiguous", description="locations given no single cell type (any reason)", format="{:,.0f}"
    ),
    "pct_ambiguous": dict(
        title="% ambiguous", description="share of the locations marked ambiguous", suffix="%", format="{:,.1f}"
    ),
    "ambiguous_methods_disagree": dict(
        title="Methods disagree",
        description="consensus disagreement above the threshold (--ambiguity_disagreement)",
        format="{:,.0f}",
    ),
    "ambiguous_low_confidence": dict(
        title="Low CellTypist confidence",
        description="CellTypist's label below --celltypist_min_confidence",
        format="{:,.0f}",
    ),
    "ambiguous_mixed": dict(
        title="Mixed",
        description="top two types within the margin (--ambiguity_mixed_margin): labelled with both",
        format="{:,.0f}",
    ),
    "locations_without_estimate": dict(
        title="No estimate", description="locations no method (or the consensus) estimated", format="{:,.0f}"
    ),
    "source": dict(title="Top type from", description="the consensus, or the only method that ran"),
    "disagreement_threshold": dict(title="Disagreement threshold", description="--ambiguity_disagreement"),
    "mixed_margin": dict(title="Mixed margin", description="--ambiguity_mixed_margin"),
}


def region_records(paths: Iterable[str | Path]) -> list[dict]:
    """The slides' regions QC JSONs (``<sample>.regions_qc.json``), by sample; other files are skipped."""
    found = [Path(p) for p in paths if Path(p).name.endswith(".regions_qc.json")]
    records = read_json(found)
    for path, record in zip(found, records):
        if not record.get("sample"):
            raise ValueError(f"{path.name}: a regions QC JSON must hold its 'sample'")
    return records


def region_sections(records: list[dict]) -> dict:
    """``{file name: section}``: the domains' shares per slide (a bar graph) and the ambiguous
    locations per slide and why (a table); empty without region summaries."""
    if not records:
        return {}
    bars = {str(r["sample"]): {str(d): int(n) for d, n in r.get("domain_locations", {}).items()} for r in records}
    frame = pd.DataFrame(
        [{k: r.get(k) for k in REGION_COLUMNS if k in r} for r in records], index=[str(r["sample"]) for r in records]
    )
    return {
        "spatialmap_regions_domains_mqc.yaml": {
            "id": "spatialmap_regions_domains",
            "section_name": "Spatial domains",
            "description": "Locations per spatial domain on each slide (Unassigned: placed in no domain); switch "
            "between counts and percentages. Each domain's mean composition per method is in the "
            "heatmaps below and in <code>regions/&lt;sample&gt;/&lt;sample&gt;.region_composition.csv</code>.",
            "plot_type": "bargraph",
            "pconfig": {
                "id": "spatialmap_regions_domains_plot",
                "title": "spatialmap: locations per spatial domain",
                "ylab": "locations",
                "cpswitch_c_active": False,
            },
            "data": bars,
        },
        "spatialmap_regions_ambiguity_mqc.yaml": table_section(
            "spatialmap_regions_ambiguity",
            "Ambiguous locations",
            "Per slide: the locations given no single cell type, and why (a location may have several "
            "reasons). They are kept in every table, marked, never forced into a label "
            "(<code>region_locations.csv</code>: <code>ambiguous</code>, <code>reason</code>).",
            frame,
            headers=REGION_COLUMNS,
        ),
        **domain_label_section(records),
    }


def domain_label_section(records: list[dict]) -> dict:
    """A table of every slide's domains (rows ``<sample> <domain>``): its label, by the elbow-gap of the
    per-domain ranking of the consensus (or the only method), and its locations; empty without labels."""
    rows = {}
    for record in records:
        counts = record.get("domain_locations", {})
        for domain, label in record.get("domain_labels", {}).items():
            rows[f"{record['sample']} {domain}"] = {
                "label": label,
                "locations": int(counts.get(domain, 0)),
                "source": record.get("source"),
            }
    if not rows:
        return {}
    headers = {
        "label": dict(title="Cell type(s)", description="elbow-gap of the domain's rising types; Unknown: none rises"),
        "locations": dict(title="Locations", description="locations in the domain", format="{:,.0f}"),
        "source": dict(title="From", description="the consensus, or the only method that ran"),
    }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    return {
        "spatialmap_regions_labels_mqc.yaml": table_section(
            "spatialmap_regions_labels",
            "Domain cell types",
            "Each spatial domain named by the cell types whose estimated share rises in it against the rest of "
            "the slide (one-vs-rest Wilcoxon rank-sum, BH-adjusted p below --domain_label_alpha), cut at the "
            "largest drop of their mean changes (elbow-gap); <code>Unknown</code> where none rises "
            "(<code>regions/&lt;sample&gt;/&lt;sample&gt;.domain_annotation.csv</code>, the full ranking in "
            "<code>domain_ranking.csv</code>).",
            frame,
            headers=headers,
        )
    }
