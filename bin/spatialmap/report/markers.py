"""The report's marker-gene sections: what Enrichmap scored, the domains it named, and the check of the
mapping against the marker scores.

From each slide's ``<sample>.markers_qc.json`` (the marker step) and, where the slide was mapped, its
``<sample>.regions_qc.json`` (the region summaries: the consensus' domain names and the Spearman check).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from spatialmap.report.multiqc import read_json, table_section

SUFFIX = ".markers_qc.json"

MARKER_COLUMNS = {
    "source": dict(title="Marker sets", description="the --markers file, or reference_markers.csv (derived)"),
    "types_scored": dict(title="Types scored", description="marker sets Enrichmap scored", format="{:,.0f}"),
    "dropped": dict(
        title="Types dropped",
        description="sets with fewer than two of their genes on every slide of the group (missing genes in markers_qc.json)",
    ),
    "domains_named": dict(title="Domains named", description="domains where a marker set rises", format="{:,.0f}"),
    "domains_unknown": dict(title="Domains Unknown", description="domains where no marker set rises", format="{:,.0f}"),
    "spatial_correction": dict(
        title="Spatial trend removed",
        description="Enrichmap's GAM of the coordinates (--marker_spatial_correction; auto: slides of >= 10,000 locations)",
    ),
    "seconds": dict(title="Seconds", description="the whole group's scoring", format="{:,.1f}"),
}


def marker_records(paths: Iterable[str | Path]) -> list[dict]:
    """The slides' markers QC JSONs, by sample; other files are skipped."""
    found = sorted(Path(p) for p in paths if Path(p).name.endswith(SUFFIX))
    records = read_json(found)
    for path, record in zip(found, records):
        if not record.get("sample"):
            raise ValueError(f"{path.name}: a markers QC JSON must hold its 'sample'")
    return sorted(records, key=lambda r: str(r["sample"]))


def _first(label) -> str:
    return str(label).split("/")[0]


def marker_table(records: list[dict]) -> dict:
    """One row per slide: the sets scored and dropped, the domains named."""
    frame = pd.DataFrame(
        [
            {
                "source": r.get("source"),
                "types_scored": r.get("types_scored"),
                "dropped": ", ".join(r.get("types_dropped", [])) or "none",
                "domains_named": r.get("domains_named"),
                "domains_unknown": r.get("domains_unknown"),
                "spatial_correction": "yes" if r.get("spatial_correction") else "no",
                "seconds": r.get("seconds"),
            }
            for r in records
        ],
        index=[str(r["sample"]) for r in records],
    )
    warnings = [w for r in records for w in r.get("warnings", [])]
    note = (" <strong>Dropped:</strong> " + "; ".join(warnings[:10]) + ".") if warnings else ""
    return table_section(
        "spatialmap_markers",
        "Marker genes (Enrichmap)",
        "Each cell type's marker set scored per location by Enrichmap (weighted mean of its log-normalised genes, "
        "z-scored per slide, smoothed over neighbours, the slide's spatial trend removed where the table says so), "
        "one run per samplesheet group (<code>markers/&lt;sample&gt;.marker_scores.csv</code>)." + note,
        frame,
        headers=MARKER_COLUMNS,
    )


def domain_names(records: list[dict], regions: list[dict]) -> dict:
    """Rows ``<sample> <domain>``: the domain's name by its marker scores, and by the mapping where the
    slide was mapped (the region summaries' consensus), and whether their first types agree."""
    mapped = {str(r["sample"]): r.get("domain_labels", {}) for r in regions}
    rows = {}
    for record in records:
        sample = str(record["sample"])
        counts = record.get("domain_locations", {})
        for domain, label in record.get("domain_labels", {}).items():
            row = {"marker_label": label, "locations": int(counts.get(domain, 0))}
            if sample in mapped and domain in mapped[sample]:
                row["mapped_label"] = mapped[sample][domain]
                row["agree"] = "yes" if _first(label) == _first(mapped[sample][domain]) else "no"
            rows[f"{sample} {domain}"] = row
    if not rows:
        return {}
    headers = {
        "marker_label": dict(
            title="By marker genes", description="elbow-gap of the marker sets rising in the domain; Unknown: none"
        ),
        "mapped_label": dict(title="By the mapping", description="the region summaries' name (consensus shares)"),
        "agree": dict(title="Agree", description="the first cell type of both names is the same"),
        "locations": dict(title="Locations", description="locations in the domain", format="{:,.0f}"),
    }
    return {
        "spatialmap_markers_domains_mqc.yaml": table_section(
            "spatialmap_markers_domains",
            "Domain cell types by marker genes",
            "Each spatial domain named, without the reference, by the marker sets whose score rises in it against the "
            "rest of the slide (one-vs-rest Wilcoxon, BH-adjusted p below --domain_label_alpha, elbow-gap of the mean "
            "changes; <code>A/B</code>: two lead together), beside its name from the mapping where the slide was "
            "mapped (<code>markers/&lt;sample&gt;.marker_domain_annotation.csv</code>).",
            pd.DataFrame.from_dict(rows, orient="index"),
            headers=headers,
        )
    }


def agreement(regions: list[dict]) -> dict:
    """Rows ``<sample> <method>``: each type's Spearman correlation of its mapped share with its marker
    score, and the types below the bound (flagged)."""
    rows, bound = {}, None
    for record in regions:
        bound = record.get("marker_agreement_min_rho", bound)
        flagged = record.get("marker_disagreements", [])
        for method, values in record.get("marker_agreement", {}).items():
            low = [f.split(": ", 1)[1] for f in flagged if f.split(": ", 1)[0] == method]
            rows[f"{record['sample']} {method}"] = {"flagged": ", ".join(low) or "none", **values}
    if not rows:
        return {}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    headers = {
        column: dict(title=column, description=f"Spearman rho of {column}'s share and marker score", format="{:,.2f}")
        for column in frame.columns
        if column != "flagged"
    }
    headers["flagged"] = dict(
        title="Below the bound", description=f"types with rho below {bound} (--marker_agreement_min)"
    )
    return {
        "spatialmap_markers_agreement_mqc.yaml": table_section(
            "spatialmap_markers_agreement",
            "Mapping against marker genes",
            f"Per slide and method (the consensus first): Spearman's correlation, over the locations, of each cell "
            f"type's mapped share with its marker score. A type below {bound} (--marker_agreement_min) is flagged: "
            "the mapping places it where its markers are not raised, or the markers do not describe the reference's "
            "type (<code>regions/&lt;sample&gt;/&lt;sample&gt;.marker_agreement.csv</code> and its heatmap).",
            frame,
            headers=headers,
        )
    }


def marker_sections(records: list[dict], regions: list[dict]) -> dict:
    """``{file name: section}``: every marker-gene section; empty without marker scores."""
    if not records:
        return {}
    return {
        "spatialmap_markers_mqc.yaml": marker_table(records),
        **domain_names(records, regions),
        **agreement(regions),
    }
