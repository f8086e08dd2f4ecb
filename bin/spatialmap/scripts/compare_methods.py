"""Compare the mapping methods' cell-type maps of one slide, and combine them into its consensus map.

Each table (``--proportions``) is named by its method (``--methods``, in the same order; the file
names are not read): spots x cell types, proportions or abundances (cell2location's, normalised per
spot here). Outputs, for sample S (``--sample``):

- ``S.method_agreement.csv``: sample, cell_type, method_a, method_b, pearson_r, n_spots (every pair;
  full precision: summarise_agreement.py gathers the slides' tables)
- ``S.consensus_summary.json``: the slide's row of the consensus summary
- ``S.consensus_proportions.csv``, ``S.consensus_disagreement.csv`` and, with ``--slide``,
  ``S.consensus_maps.png`` and ``S.consensus_disagreement.png``.

Example::

    compare_methods.py --sample a --methods cell2location tangram rctd --proportions a.cell2location_q05.csv \\
        a.tangram_proportions.csv a.rctd_proportions.csv --slide a.qc.h5ad --rule mean
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spatialmap import cli

log = logging.getLogger("spatialmap.compare_methods")

PACKAGES = ["pandas", "numpy", "anndata", "matplotlib"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    from spatialmap.consensus.rules import DEFAULT_RULE, RULES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", required=True, help="sample name; prefix of every output file")
    parser.add_argument(
        "--methods", nargs="+", required=True, help="the method of each --proportions table, in the same order"
    )
    parser.add_argument(
        "--proportions",
        nargs="+",
        required=True,
        help="each method's table of the slide (index: barcode; columns: cell types)",
    )
    parser.add_argument(
        "--slide",
        default=None,
        help="the slide's h5ad: spot positions for the maps, counts for the reconstruction-based rules",
    )
    parser.add_argument(
        "--signatures",
        default=None,
        help="genes x cell types expected counts per cell (CSV), for the drop_worst and weighted rules",
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="labelled reference h5ad (raw counts): per-type mean counts as the signatures, instead of --signatures",
    )
    parser.add_argument("--label-key", default="cell_type", help="obs column of --reference with the cell types")
    parser.add_argument("--rule", choices=RULES, default=DEFAULT_RULE, help=f"consensus rule (default: {DEFAULT_RULE})")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0025,
        help="reconstruction-based rules: weights exp((score - best) / temperature) (default: 0.0025)",
    )
    parser.add_argument("--outdir", default=".", help="output folder (default: .)")
    parser.add_argument(
        "--process-name", default=Path(__file__).name, help="process name in versions.yml (default: script name)"
    )
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    return parser.parse_args(argv)


def read_tables(sample: str, methods: list[str], paths: list[str]) -> dict:
    """``{method: table}`` of one slide, each table named by its method (``--methods``)."""
    import pandas as pd

    if len(methods) != len(paths):
        raise cli.InputError(f"sample {sample}: {len(methods)} methods but {len(paths)} tables")
    tables: dict = {}
    for method, path in zip(methods, paths):
        if method in tables:
            raise cli.InputError(f"sample {sample}: two {method} tables given")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{method} table of sample {sample}: no such file: {path}")
        table = pd.read_csv(path, index_col=0)
        table.index = table.index.astype(str)
        if table.shape[1] == 0 or len(table) == 0:
            raise cli.InputError(f"{method} table of sample {sample} ({path}) is empty")
        tables[method] = table
    return tables


def write_slide(outdir: Path, sample: str, result, slide_h5ad: Path | None) -> None:
    """The slide's consensus and disagreement tables, and maps when its positions are known."""
    with cli.atomic_path(outdir / f"{sample}.consensus_proportions.csv") as tmp:
        result.proportions.to_csv(tmp, index_label="barcode", float_format="%.6g")
    with cli.atomic_path(outdir / f"{sample}.consensus_disagreement.csv") as tmp:
        result.disagreement.to_csv(tmp, index_label="barcode", float_format="%.6g")
    if slide_h5ad is None:
        log.warning("sample %s: no slide file given, so no consensus maps are drawn", sample)
        return
    import anndata as ad

    from spatialmap.report.plotting import plot_spatial_values

    slide = ad.read_h5ad(slide_h5ad, backed="r")
    names = slide.obs_names
    methods = ", ".join(result.weights)
    plot_spatial_values(
        slide,
        result.proportions.reindex(names),
        outdir / f"{sample}.consensus_maps.png",
        f"{sample}: consensus cell-type proportions ({result.rule} of {methods})",
    )
    scores = result.disagreement
    if scores["n_methods"].nunique() == 1:  # every method reported every spot: nothing to show
        scores = scores.drop(columns="n_methods")
    plot_spatial_values(
        slide,
        scores.reindex(names),
        outdir / f"{sample}.consensus_disagreement.png",
        f"{sample}: where methods disagree (Jensen-Shannon divergence to the consensus)",
        cmap="magma",
        vmax_quantile=0.99,
    )
    slide.file.close()


def counts_of(sample: str, slide_h5ad: Path | None):
    """The slide's counts for the reconstruction-based rules."""
    import anndata as ad

    if slide_h5ad is None:
        raise cli.InputError(f"sample {sample}: this consensus rule needs the slide file (--slide)")
    return ad.read_h5ad(slide_h5ad)


def slide_consensus(by_method: dict, sample: str, args: argparse.Namespace, slide, signatures):
    """The slide's consensus with ``--rule``; the mean, with a warning, where the slide's counts
    cannot be scored (e.g. too few genes shared with the reference)."""
    from spatialmap.consensus import rules as consensus

    try:
        return consensus.slide_consensus(
            by_method, sample, args.rule, slide=slide, signatures=signatures, temperature=args.temperature
        )
    except ValueError as err:
        if args.rule not in consensus.NEEDS_COUNTS or "at least 2 methods" in str(err):
            raise cli.InputError(str(err)) from None
        log.warning("%s; the %s rule cannot score the methods, so this slide gets the mean consensus", err, args.rule)
        result = consensus.slide_consensus(by_method, sample, "mean")
        result.rule = f"mean (fallback from {args.rule})"
        return result


def read_signatures(args: argparse.Namespace):
    """Genes x types expected counts per cell: ``--signatures``, or the per-type means of ``--reference``."""
    import pandas as pd

    if args.signatures:
        return pd.read_csv(args.signatures, index_col=0)
    if args.reference:
        import anndata as ad

        from spatialmap.reference.signatures import cluster_means

        reference = ad.read_h5ad(args.reference)
        if args.label_key not in reference.obs:
            raise cli.InputError(f"reference {args.reference}: no label column '{args.label_key}'")
        return cluster_means(reference, args.label_key)
    raise cli.InputError(f"the '{args.rule}' consensus rule needs --signatures or --reference")


def main(argv: list[str] | None = None) -> None:
    """Agreement over every pair of the slide's methods (two or more), and its consensus."""
    args = parse_args(argv)
    import json

    from spatialmap.consensus import agreement
    from spatialmap.consensus import rules as consensus

    sample = args.sample
    tables = read_tables(sample, args.methods, args.proportions)
    if len(tables) < 2:
        raise cli.InputError(f"sample {sample}: comparing methods needs at least 2, got {', '.join(tables)}")
    slide_h5ad = Path(args.slide) if args.slide else None
    signatures = read_signatures(args) if args.rule in consensus.NEEDS_COUNTS else None
    outdir = Path(args.outdir)
    long = agreement.slide_agreement(tables, sample)
    slide = counts_of(sample, slide_h5ad) if args.rule in consensus.NEEDS_COUNTS else None
    result = slide_consensus(tables, sample, args, slide, signatures)
    write_slide(outdir, sample, result, slide_h5ad)
    # full precision: the run's tables are written once, from every slide's (summarise_agreement.py)
    with cli.atomic_path(outdir / f"{sample}.method_agreement.csv") as tmp:
        long.to_csv(tmp, index=False)
    with cli.atomic_path(outdir / f"{sample}.consensus_summary.json") as tmp:
        tmp.write_text(json.dumps(consensus.summary(sample, result), indent=2) + "\n")
    cli.write_versions(args.versions, args.process_name, PACKAGES)
    log.info("sample %s: compared %d methods; consensus rule %s", sample, len(tables), result.rule)
