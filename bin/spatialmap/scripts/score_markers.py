"""Score marker gene sets per location with Enrichmap over a samplesheet group, and name each spatial domain by them.

The slides (``--h5ad``, the QC step's h5ad, one per ``--samples`` name in the same order) are scored
together, one batch per slide (:mod:`spatialmap.markers.score`). ``--markers``: the sets (YAML or
CSV: cell type -> genes; the user's file, or the one derived from the reference). With the slides'
domains tables (``--domains``, same order) each domain is named by the sets whose score rises in it
against the rest of its slide (one-vs-rest Wilcoxon, the elbow-gap of :mod:`spatialmap.regions.annotate`).
Outputs, per sample S:

- ``S.marker_scores.csv``: location, one score per cell type, ``marker_label`` (the highest score),
  ``domain`` (with domains);
- ``S.marker_domain_annotation.csv``: sample, domain, label (``Unknown``: no set rises; ``A/B``: two
  lead together), candidates, enriched, source; ``S.marker_domain_ranking.csv``: the ranking it comes
  from (with domains; empty tables without);
- ``S.markers_qc.json``: the sets scored and dropped (with the missing genes), the domains' labels;
- ``S.marker_scores.png``: each domain's mean score per type (with domains), else the labels' map.

Example::

    score_markers.py --samples s1 s2 --h5ad s1.qc.h5ad s2.qc.h5ad --domains s1.domains.csv s2.domains.csv \\
        --markers markers.yaml --group G
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from spatialmap import cli

log = logging.getLogger("spatialmap.score_markers")

PACKAGES = ["enrichmap", "squidpy", "pygam", "decoupler", "scanpy", "anndata"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    from spatialmap.markers.score import AUTO_MIN_LOCATIONS, CORRECTION_MODES, DEFAULT_NEIGHBORS
    from spatialmap.regions.annotate import DEFAULT_ALPHA

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", required=True, help="sample names (comma or space separated)")
    parser.add_argument("--h5ad", nargs="+", required=True, help="each sample's QC'd h5ad, in the order of --samples")
    parser.add_argument("--domains", nargs="*", default=[], help="each sample's domains table, same order (optional)")
    parser.add_argument("--markers", required=True, help="marker sets: YAML (type: [genes]) or CSV (cell_type, gene)")
    parser.add_argument("--markers-name", default=None, help="the markers file as the user named it, for messages")
    parser.add_argument("--group", required=True, help="the slides' samplesheet group")
    parser.add_argument(
        "--n-neighbors",
        type=int,
        default=DEFAULT_NEIGHBORS,
        help=f"Enrichmap smooths each score over this many nearest locations (default: {DEFAULT_NEIGHBORS})",
    )
    parser.add_argument(
        "--spatial-correction",
        choices=CORRECTION_MODES,
        default="auto",
        help="Enrichmap removes each slide's spatial trend (a GAM of the coordinates): auto (default) where "
        f"every slide of the group has >= {AUTO_MIN_LOCATIONS:,} locations, true, false",
    )
    parser.add_argument(
        "--domain-label-alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"adjusted p-value under which a set rises in a domain (default: {DEFAULT_ALPHA})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the labels' map (default: 0)")
    parser.add_argument("--outdir", default=".", help="output folder (default: .)")
    parser.add_argument(
        "--process-name", default=Path(__file__).name, help="process name in versions.yml (default: script name)"
    )
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    args = parser.parse_args(argv)
    args.samples = [s for item in args.samples for s in item.split(",") if s]
    return args


def read_inputs(args: argparse.Namespace):
    """``({sample: slide}, {sample: domains or None}, markers)``, every input checked before any score."""
    import anndata as ad

    from spatialmap.io.domains import read_domains
    from spatialmap.markers.genes import read_markers

    if len(args.samples) != len(args.h5ad):
        raise cli.InputError(f"group {args.group}: {len(args.samples)} samples but {len(args.h5ad)} h5ad files")
    if args.domains and len(args.domains) != len(args.samples):
        raise cli.InputError(f"group {args.group}: {len(args.samples)} samples but {len(args.domains)} domains tables")
    markers = read_markers(args.markers)
    slides, domains = {}, {}
    for i, (sample, path) in enumerate(zip(args.samples, args.h5ad)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"sample {sample}: no such h5ad: {path}")
        slides[sample] = ad.read_h5ad(path)
        domains[sample] = (
            read_domains(args.domains[i], sample, slides[sample].obs_names)["domain"] if args.domains else None
        )
    return slides, domains, markers


def annotate(sample: str, scores, domains, alpha: float):
    """``(annotation, ranking)`` of the slide's domains by its scores, as the region summaries name them
    by the mapping (:func:`spatialmap.regions.summary.domain_annotation`); empty tables without domains."""
    import pandas as pd

    from spatialmap.markers.score import LABEL
    from spatialmap.regions.annotate import RANKING_COLUMNS
    from spatialmap.regions.summary import domain_annotation

    if domains is None:
        empty = pd.DataFrame(columns=["sample", "domain", "label", "candidates", "enriched", "source"])
        return empty, pd.DataFrame(columns=["sample", *RANKING_COLUMNS])
    ranking, named = domain_annotation(sample, domains, scores.drop(columns=[LABEL]), "marker genes", alpha)
    return named, ranking


def qc_summary(
    sample: str, group: str, found, scores, domains, annotation, seconds: float, correction: tuple[bool, str]
) -> dict:
    """The slide's ``markers_qc.json`` (a method-like record: the report's table reads ``report_columns``)."""
    from spatialmap.io.domains import UNASSIGNED
    from spatialmap.markers.score import LABEL
    from spatialmap.regions.annotate import UNKNOWN

    labels = dict(zip(annotation["domain"], annotation["label"]))
    counts = domains[domains != UNASSIGNED].value_counts() if domains is not None else {}
    markers = found.slide_json(sample)
    return {
        "sample": sample,
        "group": group,
        "method": "enrichmap",
        "label": "Marker genes (Enrichmap)",
        **markers,
        "n_types_dropped": len(markers["types_dropped"]),
        "locations": int(len(scores)),
        "location_labels": {str(k): int(v) for k, v in scores[LABEL].value_counts().sort_index().items()},
        "domain_labels": labels,
        "domain_locations": {str(k): int(v) for k, v in dict(counts).items()},
        "domains_named": int(sum(label != UNKNOWN for label in labels.values())),
        "domains_unknown": int(sum(label == UNKNOWN for label in labels.values())),
        "seconds": round(seconds, 1),
        "spatial_correction": correction[0],
        "spatial_correction_reason": correction[1],
        "report_columns": {
            "group": "samplesheet group (slides scored together)",
            "types_scored": "marker sets scored",
            "n_types_dropped": "marker sets dropped (fewer than two of their genes on the slides)",
            "domains_named": "domains named by a rising marker set",
            "domains_unknown": "domains where no marker set rises (Unknown)",
            "locations": "locations",
            "seconds": "seconds (the whole group)",
        },
    }


def plot(sample: str, slide, scores, domains, path: Path, seed: int) -> None:
    """Each domain's mean score per type (with domains), else the map of each location's label."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from spatialmap.io.domains import UNASSIGNED
    from spatialmap.markers.score import LABEL
    from spatialmap.report.plotting import plot_spatial_values

    if domains is None:
        values = pd.DataFrame({"marker label": pd.Categorical(scores[LABEL])}, index=scores.index)
        plot_spatial_values(slide, values, path, f"{sample}: each location's top marker set (Enrichmap)", seed=seed)
        return
    named = domains[domains != UNASSIGNED]
    means = scores.drop(columns=[LABEL]).loc[named.index].groupby(named.to_numpy()).mean()
    means = means.loc[sorted(means.index, key=lambda d: (len(d), d))]
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * means.shape[1], 1.2 + 0.35 * means.shape[0]))
    limit = float(abs(means.to_numpy()).max()) or 1.0
    image = ax.imshow(means.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(means.shape[1]), means.columns, rotation=90)
    ax.set_yticks(range(means.shape[0]), means.index)
    ax.set_title(f"{sample}\nmean marker score per domain (Enrichmap)", fontsize=9)
    fig.colorbar(image, ax=ax, label="score")
    fig.tight_layout()
    with cli.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Read the group's slides and sets, score them, name the domains, write every output."""
    args = parse_args(argv)
    from spatialmap.markers.score import score_group, spatial_correction_for

    started = time.monotonic()
    slides, domains, markers = read_inputs(args)
    source = args.markers_name or Path(args.markers).name
    correct, why = spatial_correction_for(args.spatial_correction, slides)
    log.info("spatial correction %s (%s)", "on" if correct else "off", why)
    tables, found = score_group(slides, markers, source, args.n_neighbors, correct)
    seconds = time.monotonic() - started
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for sample, scores in tables.items():
        annotation, ranking = annotate(sample, scores, domains[sample], args.domain_label_alpha)
        written = scores if domains[sample] is None else scores.assign(domain=domains[sample].reindex(scores.index))
        with cli.atomic_path(outdir / f"{sample}.marker_scores.csv") as tmp:
            written.to_csv(tmp, index_label="location")
        with cli.atomic_path(outdir / f"{sample}.marker_domain_annotation.csv") as tmp:
            annotation.to_csv(tmp, index=False)
        with cli.atomic_path(outdir / f"{sample}.marker_domain_ranking.csv") as tmp:
            ranking.to_csv(tmp, index=False)
        summary = qc_summary(sample, args.group, found, scores, domains[sample], annotation, seconds, (correct, why))
        with cli.atomic_path(outdir / f"{sample}.markers_qc.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        plot(sample, slides[sample], scores, domains[sample], outdir / f"{sample}.marker_scores.png", args.seed)
        log.info("sample %s: %d sets scored, domains: %s", sample, len(found.kept), summary["domain_labels"] or "none given")  # fmt: skip
    cli.write_versions(outdir / args.versions, args.process_name, PACKAGES)
