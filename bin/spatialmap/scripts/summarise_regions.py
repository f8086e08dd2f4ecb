"""Summarise one slide per spatial domain: each method's mean composition, the domains' shares, and the locations no single label fits.

Each table (``--proportions``) is named by its method (``--methods``, in the same order; the file
names are not read): locations x cell types, proportions or abundances (cell2location's, normalised
per location here). ``--domains``: the slide's domains table (``location``, ``domain``, then
``domain_L<k>`` per level; ``domain`` is the level summarised). With two or more methods, their
consensus and its disagreement (``--consensus``, ``--disagreement``); where CellTypist ran, its
per-cell labels (``--celltypist``). Outputs, for sample S (``--sample``):

- ``S.region_composition.csv``: sample, domain, method, cell_type, mean_proportion, locations
- ``S.domain_proportions.csv``: sample, domain, locations, fraction
- ``S.region_locations.csv``: location, domain, source, top_type, top_share, second_type,
  second_share, disagreement, celltypist_label, celltypist_confidence, ambiguous, reason, label
- ``S.region_composition.png``: domains x cell types, one panel per method, the consensus first
- ``S.regions_qc.json``: locations, domains, ambiguous locations and why (the report's numbers)

With the slide's marker scores (``--marker-scores``, from the marker-gene step), the check of every
method's shares against them (:mod:`spatialmap.regions.validation`):

- ``S.marker_agreement.csv``: sample, method, cell_type, spearman, pvalue, locations, agrees
- ``S.marker_agreement.png``: methods x cell types, the correlations below the bound marked

Example::

    summarise_regions.py --sample a --domains a.domains.csv --methods rctd nnls \\
        --proportions a.rctd_proportions.csv a.nnls_proportions.csv \\
        --consensus a.consensus_proportions.csv --disagreement a.consensus_disagreement.csv
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spatialmap import cli

log = logging.getLogger("spatialmap.summarise_regions")

PACKAGES = ["decoupler", "pandas", "numpy", "matplotlib"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    from spatialmap.regions.summary import DEFAULT_DISAGREEMENT, DEFAULT_MIXED_MARGIN
    from spatialmap.regions.validation import DEFAULT_MIN_RHO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", required=True, help="sample name; prefix of every output file")
    parser.add_argument("--domains", required=True, help="the slide's domains table (CSV: location, domain, ...)")
    parser.add_argument(
        "--methods", nargs="+", required=True, help="the method of each --proportions table, in the same order"
    )
    parser.add_argument(
        "--proportions", nargs="+", required=True, help="each method's table of the slide (index: location)"
    )
    parser.add_argument("--consensus", default=None, help="the methods' consensus proportions (two or more methods)")
    parser.add_argument("--disagreement", default=None, help="the consensus' per-location disagreement table")
    parser.add_argument(
        "--celltypist", default=None, help="CellTypist's per-cell labels (<sample>.celltypist_labels.csv)"
    )
    parser.add_argument("--marker-scores", default=None, help="the slide's marker scores (<sample>.marker_scores.csv)")
    parser.add_argument(
        "--marker-agreement-min",
        type=float,
        default=DEFAULT_MIN_RHO,
        help=f"a type whose share's Spearman correlation with its marker score is below this is flagged (default: {DEFAULT_MIN_RHO})",
    )
    parser.add_argument(
        "--disagreement-threshold",
        type=float,
        default=DEFAULT_DISAGREEMENT,
        help=f"a location whose disagreement is above this is ambiguous (default: {DEFAULT_DISAGREEMENT})",
    )
    parser.add_argument(
        "--mixed-margin",
        type=float,
        default=DEFAULT_MIXED_MARGIN,
        help=f"a location whose top two types' shares are within this is ambiguous; 0: never (default: {DEFAULT_MIXED_MARGIN})",
    )
    parser.add_argument(
        "--domain-label-alpha",
        type=float,
        default=0.05,
        help="adjusted p-value under which a type rises in a domain (its elbow-gap label; default: 0.05)",
    )
    parser.add_argument("--outdir", default=".", help="output folder (default: .)")
    parser.add_argument(
        "--process-name", default=Path(__file__).name, help="process name in versions.yml (default: script name)"
    )
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    return parser.parse_args(argv)


def _csv(path: str, sample: str, what: str):
    import pandas as pd

    if not Path(path).is_file():
        raise FileNotFoundError(f"sample {sample}: {what}: no such file: {path}")
    try:
        return pd.read_csv(path, index_col=0)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise cli.InputError(f"sample {sample}: {what} ({path}) cannot be read as CSV: {err}") from None


def read_inputs(args: argparse.Namespace) -> dict:
    """The slide's domains and every table on its locations (:mod:`spatialmap.regions.summary`)."""
    from spatialmap.regions import summary as regions
    from spatialmap.regions.validation import read_marker_scores

    sample = args.sample
    if len(args.methods) != len(args.proportions):
        raise cli.InputError(f"sample {sample}: {len(args.methods)} methods but {len(args.proportions)} tables")
    if (args.consensus is None) != (args.disagreement is None):
        raise cli.InputError(f"sample {sample}: --consensus and --disagreement come together")
    try:
        domains = regions.read_domains(_csv(args.domains, sample, "the domains table"), sample, args.domains)
        locations = domains.index
        regions.check_methods(list(args.methods), sample)
        tables = {
            m: regions.proportions_of(_csv(p, sample, f"the {m} table"), locations, sample, f"the {m} table ({p})")
            for m, p in zip(args.methods, args.proportions)
        }
        found = {"domains": domains, "tables": tables, "consensus": None, "disagreement": None, "celltypist": None}
        if args.consensus:
            what = f"the consensus ({args.consensus})"
            found["consensus"] = regions.proportions_of(_csv(args.consensus, sample, what), locations, sample, what)
            scores = _csv(args.disagreement, sample, "the disagreement table")
            what = f"the disagreement table ({args.disagreement})"
            if "disagreement" not in scores.columns:
                raise ValueError(f"sample {sample}: {what} has no 'disagreement' column")
            scores.index = scores.index.astype(str)
            regions.check_covers(scores.index, locations, sample, what)
            found["disagreement"] = scores["disagreement"].reindex(locations)
        if args.celltypist:
            labels = _csv(args.celltypist, sample, "CellTypist's labels")
            found["celltypist"] = regions.celltypist_flags(labels, locations, sample)
        found["marker_scores"] = (
            read_marker_scores(args.marker_scores, sample, locations) if args.marker_scores else None
        )
    except ValueError as err:
        raise cli.InputError(str(err)) from None
    return found


def write_outputs(outdir: Path, sample: str, result) -> None:
    """The tables, the JSON and the heatmap, each written atomically."""
    import json

    from spatialmap.report.plotting import plot_region_composition

    for suffix, frame in (
        ("region_composition.csv", result.composition),
        ("domain_proportions.csv", result.domains),
        ("region_locations.csv", result.locations),
        ("domain_annotation.csv", result.annotation),
        ("domain_ranking.csv", result.ranking),
    ):
        with cli.atomic_path(outdir / f"{sample}.{suffix}") as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    with cli.atomic_path(outdir / f"{sample}.regions_qc.json") as tmp:
        tmp.write_text(json.dumps(result.qc, indent=2) + "\n")
    counts = result.domains.set_index("domain")["locations"]
    plot_region_composition(
        result.wide,
        counts,
        outdir / f"{sample}.region_composition.png",
        f"{sample}: mean cell-type proportion per domain ({result.qc['domains']} domains, {result.qc['locations']:,} locations)",
    )
    if result.agreement is not None:
        from spatialmap.regions.validation import plot_agreement

        with cli.atomic_path(outdir / f"{sample}.marker_agreement.csv") as tmp:
            result.agreement.to_csv(tmp, index=False, float_format="%.6g")
        min_rho = result.qc["marker_agreement_min_rho"]
        plot_agreement(sample, result.agreement, min_rho, outdir / f"{sample}.marker_agreement.png")


def main(argv: list[str] | None = None) -> None:
    """Region summaries of one slide from its domains and its methods' tables."""
    args = parse_args(argv)
    from spatialmap.regions import summary as regions

    found = read_inputs(args)
    thresholds = regions.Thresholds(args.disagreement_threshold, args.mixed_margin)
    try:
        result = regions.summarise(
            args.sample,
            found["domains"],
            found["tables"],
            consensus=found["consensus"],
            disagreement=found["disagreement"],
            celltypist=found["celltypist"],
            thresholds=thresholds,
            alpha=args.domain_label_alpha,
            marker_scores=found["marker_scores"],
            min_rho=args.marker_agreement_min,
        )
    except ValueError as err:
        raise cli.InputError(str(err)) from None
    write_outputs(Path(args.outdir), args.sample, result)
    cli.write_versions(args.versions, args.process_name, PACKAGES)
