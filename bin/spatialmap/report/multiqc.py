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
    from spatialmap.cli import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))


def _headers(columns: dict, data: dict) -> dict:
    present = {key for row in data.values() for key in row}
    return {key: conf for key, conf in columns.items() if key in present}


# Headline numbers of any mapping method beyond cell2location and Tangram: the general-statistics
# column, and the QC JSON keys it is read from (first present wins).
METHOD_HEADLINES = {
    "spots_fitted": (("n_spots_fitted", "spots_fitted", "n_spots"),
                     dict(title="spots fitted", description="spots the method fitted", format="{:,.0f}", scale="Greens")),
    "genes_used": (("n_genes_used", "genes_used", "n_genes"),
                   dict(title="genes used", description="genes the method used", format="{:,.0f}", scale="Blues", hidden=True)),
    "seconds": (("seconds", "runtime_seconds", "wall_seconds", "elapsed_seconds"),
                dict(title="seconds", description="wall time of the fit (seconds)", format="{:,.1f}", scale="Oranges")),
}
KNOWN_METHODS = ("cell2location", "tangram", "rctd", "flashdeconv", "nnls")
METHOD_TITLES = {"cell2location": "cell2location", "tangram": "Tangram", "rctd": "RCTD",
                 "flashdeconv": "FlashDeconv", "nnls": "NNLS"}
# Slide QC fields beyond QC_COLUMNS that other slide readers (Visium HD, Xenium) may add; each shows
# up as a general-statistics column when some slide has it. Any other scalar field of the QC JSON
# still appears in the slide QC table.
QC_EXTRA_COLUMNS = {
    "bins_kept": dict(title="Bins kept", description="Visium HD bins passing QC", format="{:,.0f}", scale="Greens"),
    "cells_kept": dict(title="Cells kept", description="Segmented cells passing QC", format="{:,.0f}", scale="Greens"),
    "median_transcripts": dict(title="Median transcripts", description="Median transcripts per cell or bin", format="{:,.0f}", scale="Purples"),
    # segmentation QC (Visium HD cells, Xenium)
    "cells_found": dict(title="Cells found", description="Cells segmented (before QC)", format="{:,.0f}", scale="Greens"),
    "median_cell_area_um2": dict(title="Median cell area", description="Median cell area (µm²)", format="{:,.1f}", scale="Blues"),
    "median_bins_per_cell": dict(title="Bins per cell", description="Median 2 µm bins per cell (Visium HD)", format="{:,.0f}", scale="Blues"),
    "pct_transcripts_in_cells": dict(title="% transcripts in cells", description="Share of the transcripts (Visium HD: 2 µm bin counts; Xenium: Q20 transcripts) inside a cell", format="{:,.1f}", min=0, max=100, suffix="%", scale="RdYlGn"),
    "pct_bins_in_cells": dict(title="% bins in cells", description="Share of the in-tissue 2 µm bins inside a cell (Visium HD)", format="{:,.1f}", min=0, max=100, suffix="%", scale="RdYlGn", hidden=True),
}
CONSENSUS_COLUMNS = {
    "n_methods": dict(title="Consensus methods", description="mapping methods combined in the consensus", format="{:,.0f}", scale="Greys"),
    "mean_disagreement": dict(title="Disagreement", description="mean over spots of the methods' mean Jensen-Shannon divergence to the consensus (0 = identical, 1 = disjoint)", format="{:,.3f}", min=0, max=1, scale="OrRd"),
}
QC_TABLE_FIRST = ["spots_in_tissue", "spots_kept", "median_umis", "median_genes", "pct_mt", "n_mt_genes_removed", "genes"]


def method_title(method: str) -> str:
    """Display name of a mapping method (``rctd`` -> ``RCTD``)."""
    return METHOD_TITLES.get(method, method)


def method_of(path: str | Path, record: dict) -> str:
    """Mapping method of a QC JSON: its ``method`` field, else the ``.<method>_qc.json`` file suffix."""
    if record.get("method"):
        return str(record["method"])
    name = Path(path).name
    if not name.endswith("_qc.json"):
        raise ValueError(f"{name}: a method QC file must be named <sample>.<method>_qc.json")
    stem = name[: -len("_qc.json")]
    for method in sorted(KNOWN_METHODS, key=len, reverse=True):
        if stem.endswith("." + method):
            return method
    return stem.rsplit(".", 1)[-1]


def read_method_json(paths: Iterable[str | Path]) -> dict[str, list[dict]]:
    """``{method: [QC records sorted by sample]}`` from ``<sample>.<method>_qc.json`` files.

    A record without a ``sample`` field gets the file name before ``.<method>_qc.json``.
    Methods come in :data:`KNOWN_METHODS` order, then any other in name order.
    """
    by_method: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        record = json.loads(Path(path).read_text())
        method = method_of(path, record)
        if "sample" not in record:
            record["sample"] = Path(path).name[: -len(f".{method}_qc.json")]
        by_method[method].append(record)
    order = [m for m in KNOWN_METHODS if m in by_method] + sorted(set(by_method) - set(KNOWN_METHODS))
    return {m: sorted(by_method[m], key=lambda r: str(r["sample"])) for m in order}


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _headline(record: dict, aliases: tuple[str, ...]):
    for key in aliases:
        if key in record and isinstance(record[key], (int, float)) and not isinstance(record[key], bool):
            return record[key]
    return None


def general_stats(qc: list[dict], c2l: list[dict] | None = None, tangram: list[dict] | None = None,
                  methods: dict[str, list[dict]] | None = None, consensus: list[dict] | None = None) -> dict:
    """One general-statistics row per slide: QC, then each method's headline numbers.

    Parameters
    ----------
    qc
        Slide QC records (``QC_COLUMNS``, and ``QC_EXTRA_COLUMNS`` where present).
    c2l, tangram
        cell2location and Tangram QC records (their own columns); also taken from ``methods``.
    methods
        ``{method: records}`` of every mapping method (:func:`read_method_json`); methods other
        than cell2location and Tangram get ``<method>_spots_fitted``, ``_genes_used``, ``_seconds``.
    consensus
        Per-slide consensus summaries (``sample``, ``n_methods``, ``mean_disagreement``).
    """
    methods = dict(methods or {})
    c2l = list(c2l or []) + methods.pop("cell2location", [])
    tangram = list(tangram or []) + methods.pop("tangram", [])
    data: dict[str, dict] = defaultdict(dict)
    headers = {**QC_COLUMNS, **QC_EXTRA_COLUMNS, **C2L_COLUMNS, **TANGRAM_COLUMNS}
    for record in qc:
        data[record["sample"]].update({k: record[k] for k in {**QC_COLUMNS, **QC_EXTRA_COLUMNS} if k in record})
    for record in c2l:
        data[record["sample"]].update({k: record[k] for k in C2L_COLUMNS if k in record})
    for record in tangram:
        data[record["sample"]].update({k: record[k] for k in TANGRAM_COLUMNS if k in record})
    for method, records in methods.items():
        for key, (aliases, conf) in METHOD_HEADLINES.items():
            column = f"{method}_{key}"
            headers[column] = {**conf, "title": f"{method_title(method)} {conf['title']}",
                               "description": f"{method_title(method)}: {conf['description']}"}
            for record in records:
                value = _headline(record, aliases)
                if value is not None:
                    data[record["sample"]][column] = value
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


def method_qc_table(method: str, records: list[dict]) -> dict:
    """Mapping QC table of one method: every scalar field of its QC JSON, one row per slide."""
    columns = list(dict.fromkeys(k for r in records for k, v in r.items()
                                 if k not in ("sample", "method") and _scalar(v)))
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in records],
                         index=[str(r["sample"]) for r in records], columns=columns)
    title = method_title(method)
    return table_section(f"spatialmap_{method}_qc", f"{title}: mapping QC",
                         f"Per slide: what {title} fitted (device, genes used, spots fitted, convergence, "
                         "seconds), from its QC JSON.", frame)


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


def table_section(section_id: str, name: str, description: str, frame: pd.DataFrame,
                  headers: dict | None = None) -> dict:
    """A MultiQC table from a data frame (index = row names); ``headers``: column id -> MultiQC header
    settings (title, description, format), for the columns present."""
    data = {str(idx): {str(k): (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v))
                       for k, v in row.items()} for idx, row in frame.iterrows()}
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


# cell2location's mapping QC table: column -> MultiQC header, in table order. The training columns
# (epochs run, why it stopped, final loss, learning rate) come from TrainResult.as_qc (c2l_train);
# the learning rate, a nested object in the QC JSON, is flattened into lr_final / lr_dropped_at_epoch.
C2L_QC_TABLE = {
    "group": dict(title="Group", description="cell2location group the slide was mapped in (one training run per group)"),
    "device": dict(title="Device", description="device cell2location trained on"),
    "n_spots": dict(title="Spots", description="spots of the slide mapped", format="{:,.0f}"),
    "n_genes_used": dict(title="Genes used", description="genes shared by the slide and the signatures", format="{:,.0f}"),
    "epochs_run": dict(title="Epochs run", description="training epochs of the slide's group run", format="{:,.0f}"),
    "stop_reason": dict(title="Stop reason", description="why training stopped: converged (the mean -ELBO of the last "
                        "window improved by less than the tolerance) or max_epochs (the epoch cap was reached first)"),
    "final_loss": dict(title="Final loss", description="-ELBO of the last training epoch", format="{:,.1f}"),
    "lr_final": dict(title="Final lr", description="learning rate at the end of training", format="{:,.4g}"),
    "lr_dropped_at_epoch": dict(title="lr drop epoch", description="epoch at which the learning rate dropped from "
                                "its start value to the final one (empty: no drop)", format="{:,.0f}"),
    "train_seconds": dict(title="Train s", description="training time of the group run (seconds)", format="{:,.1f}"),
    "mean_total_cells_per_spot": dict(title="Cells/spot", description="mean total cells per spot (posterior mean)",
                                      format="{:,.2f}"),
    "most_abundant_type": dict(title="Top type", description="most abundant cell type on the slide"),
    "detection_sensitivity": dict(title="Detection", description="mean detection sensitivity per spot", format="{:,.3f}"),
    "reconstruction_r": dict(title="Recon. r", description="Pearson r of observed vs expected counts",
                             format="{:,.3f}", min=0, max=1),
}


def c2l_qc_frame(records: list[dict]) -> pd.DataFrame:
    """cell2location's mapping QC, one row per slide, in :data:`C2L_QC_TABLE` column order.

    Every slide of a group shares the group's training numbers (epochs run, stop reason, final
    loss, learning rate, seconds). Columns no record has are left out.
    """
    rows = {}
    for record in records:
        row = {k: v for k, v in record.items() if k in C2L_QC_TABLE}
        rate = record.get("learning_rate")
        if isinstance(rate, dict):
            row["lr_final"] = rate.get("final")
            row["lr_dropped_at_epoch"] = rate.get("dropped_at_epoch")
        rows[str(record["sample"])] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    present = [c for c in C2L_QC_TABLE if c in frame.columns and frame[c].notna().any()]
    return frame.reindex(columns=present).sort_index()


def c2l_qc_table(records: list[dict]) -> dict:
    """cell2location's mapping QC table: training (epochs run, stop reason, final loss, learning
    rate) and the mapping's headline numbers, one row per slide."""
    return table_section(
        "spatialmap_c2l_qc", "cell2location: mapping QC",
        "Per slide: the group's training run (epochs run, why it stopped, the final -ELBO loss, the "
        "learning rate), device, genes used, total cells per spot, detection sensitivity and "
        "reconstruction accuracy. The loss curve is in the training loss figure.",
        c2l_qc_frame(records), headers=C2L_QC_TABLE)


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
            found[kind] = [{"sample": str(idx), **{k: (None if pd.isna(v) else v) for k, v in row.items()}}
                           for idx, row in frame.iterrows()]
        else:
            found[kind] = frame
    return found


def comparison_sections(found: dict) -> dict:
    """Agreement heatmaps (per slide pair and cell type; per method pair) and the consensus table."""
    sections = {}
    if "matrix" in found:
        sections["spatialmap_agreement_mqc.yaml"] = heatmap(
            "spatialmap_agreement", "Agreement between methods",
            "Pearson correlation across spots, per slide, pair of methods and cell type, between the two "
            "methods' proportions (cell2location: 5% quantile abundance normalised per spot).",
            found["matrix"], title="Method agreement (Pearson r)", zlab="r", zmin=-1, zmax=1)
        sections["spatialmap_agreement_mqc.yaml"]["pconfig"]["ylab"] = "slide: method pair"
    if "pairs" in found:
        pairs = found["pairs"]
        sections["spatialmap_agreement_pairs_mqc.yaml"] = heatmap(
            "spatialmap_agreement_pairs", "Agreement per method pair",
            "Median over slides and cell types of the per-type Pearson r between two methods.",
            pairs, title="Method agreement, median r", zlab="median r", zmin=-1, zmax=1)
        sections["spatialmap_agreement_pairs_mqc.yaml"]["pconfig"].update(xlab="method", ylab="method")
    if "consensus_summary" in found:
        frame = pd.DataFrame(found["consensus_summary"]).set_index("sample")
        sections["spatialmap_consensus_mqc.yaml"] = table_section(
            "spatialmap_consensus", "Consensus map",
            "Per slide: the methods combined, the consensus rule, and the disagreement score per spot "
            "(mean Jensen-Shannon divergence, base 2, of each method's proportions to the consensus; "
            "0 = all methods identical, 1 = disjoint). Consensus and disagreement maps are below.", frame)
    return sections
