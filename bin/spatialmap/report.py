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
    "spots_in_tissue": dict(title="Spots in tissue", description="In-tissue spots read from the slide", format="{:,.0f}", scale="Blues"),
    "spots_kept": dict(title="Spots kept", description="Spots passing the QC filters", format="{:,.0f}", scale="Greens"),
    "median_umis": dict(title="Median UMIs", description="Median UMIs per spot (all genes)", format="{:,.0f}", scale="Purples"),
    "median_genes": dict(title="Median genes", description="Median detected genes per spot", format="{:,.0f}", scale="Oranges"),
    "pct_mt": dict(title="% MT", description="Share of counts in mitochondrial genes (removed from X)", suffix="%", max=100, min=0, format="{:,.1f}", scale="RdYlGn-rev"),
}
C2L_COLUMNS = {
    "mean_total_cells_per_spot": dict(title="c2l cells/spot", description="cell2location: mean total cells per spot (posterior mean)", format="{:,.1f}", scale="YlGn"),
    "most_abundant_type": dict(title="c2l top type", description="cell2location: most abundant cell type on the slide"),
    "reconstruction_r": dict(title="c2l recon. r", description="cell2location: Pearson r of observed vs expected counts", format="{:,.2f}", min=0, max=1, scale="RdYlGn"),
}
TANGRAM_COLUMNS = {
    "heldout_median": dict(title="Tangram held-out median", description="Tangram: median spatial correlation of held-out genes", format="{:,.2f}", min=0, max=1, scale="RdYlGn"),
    "heldout_p90": dict(title="Tangram held-out p90", description="Tangram: 90th percentile of held-out gene correlation", format="{:,.2f}", min=0, max=1, scale="RdYlGn"),
}


def read_json(paths: Iterable[str | Path]) -> list[dict]:
    """Load JSON summaries, sorted by their ``sample`` (or file name)."""
    records = [json.loads(Path(p).read_text()) for p in paths]
    return sorted(records, key=lambda r: str(r.get("sample", "")))


def write_yaml(path: Path, content: dict) -> None:
    path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))


def _headers(columns: dict, data: dict) -> dict:
    present = {key for row in data.values() for key in row}
    return {key: conf for key, conf in columns.items() if key in present}


def general_stats(qc: list[dict], c2l: list[dict], tangram: list[dict]) -> dict:
    """One general-statistics row per slide: QC, then each method's headline numbers."""
    data: dict[str, dict] = defaultdict(dict)
    for record in qc:
        data[record["sample"]].update({k: record[k] for k in QC_COLUMNS if k in record})
    for record in c2l:
        data[record["sample"]].update({k: record[k] for k in C2L_COLUMNS if k in record})
    for record in tangram:
        data[record["sample"]].update({k: record[k] for k in TANGRAM_COLUMNS if k in record})
    data = {sample: row for sample, row in sorted(data.items())}
    return {
        "id": "spatialmap_general_stats",
        "plot_type": "generalstats",
        "headers": _headers({**QC_COLUMNS, **C2L_COLUMNS, **TANGRAM_COLUMNS}, data),
        "data": data,
    }


def qc_table(qc: list[dict]) -> dict:
    """Full per-slide QC table."""
    columns = ["spots_in_tissue", "spots_kept", "median_umis", "median_genes", "pct_mt", "n_mt_genes_removed", "genes"]
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


def heatmap(section_id: str, name: str, description: str, matrix: pd.DataFrame, *, title: str, zlab: str,
            zmin: float | None = None, zmax: float | None = None) -> dict:
    """A MultiQC heatmap of a samples x categories matrix."""
    pconfig = {"id": f"{section_id}_plot", "title": title, "xlab": "cell type", "ylab": "slide", "zlab": zlab,
               "square": False}
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


def c2l_abundance_matrix(c2l: list[dict]) -> pd.DataFrame:
    """Slides x cell types: mean abundance per spot (5% quantile)."""
    rows = {r["sample"]: r.get("mean_abundance", {}) for r in c2l}
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


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


def table_section(section_id: str, name: str, description: str, frame: pd.DataFrame) -> dict:
    """A MultiQC table from a data frame (index = row names)."""
    data = {str(idx): {str(k): (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v))
                       for k, v in row.items()} for idx, row in frame.iterrows()}
    return {
        "id": section_id,
        "section_name": name,
        "description": description,
        "plot_type": "table",
        "pconfig": {"id": f"{section_id}_table", "title": f"spatialmap: {name}"},
        "data": data,
    }


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
