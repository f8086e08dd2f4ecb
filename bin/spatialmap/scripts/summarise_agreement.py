"""Gather the slides' method agreement and consensus summaries (compare_methods.py, one per slide) into
the run's tables.

Writes ``method_agreement.csv`` (every slide's pairs: sample, cell_type, method_a, method_b,
pearson_r, n_spots), ``method_agreement_matrix.tsv`` (``<sample>: <a> vs <b>`` x cell types, for the
heatmap), ``method_agreement_pairs.tsv`` (methods x methods, median r over slides and cell types) and
``consensus_summary.tsv`` (one row per slide). Slides come in sample order; each file says its sample.

Example::

    summarise_agreement.py --agreement a.method_agreement.csv b.method_agreement.csv \\
        --consensus-summary a.consensus_summary.json b.consensus_summary.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from spatialmap import cli

log = logging.getLogger("spatialmap.summarise_agreement")

PACKAGES = ["pandas", "numpy"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agreement", nargs="+", required=True, type=Path, help="every slide's S.method_agreement.csv")
    parser.add_argument(
        "--consensus-summary", nargs="+", required=True, type=Path, help="every slide's S.consensus_summary.json"
    )
    parser.add_argument("--outdir", default=".", type=Path, help="output folder (default: .)")
    parser.add_argument(
        "--process-name", default=Path(__file__).name, help="process name in versions.yml (default: script name)"
    )
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Concatenate the slides' tables (in sample order) and derive the matrix and the pairs from them."""
    args = parse_args(argv)
    import pandas as pd

    from spatialmap.consensus import agreement

    text = {"sample": str, "cell_type": str, "method_a": str, "method_b": str}
    parts = [pd.read_csv(path, dtype=text) for path in args.agreement]
    rows = [json.loads(path.read_text()) for path in args.consensus_summary]
    for what, samples in (("agreement", [p["sample"].iloc[0] for p in parts if len(p)]), ("summary", rows)):
        names = [s if isinstance(s, str) else s["sample"] for s in samples]
        if len(set(names)) != len(names):
            raise cli.InputError(f"a slide's {what} is given twice: {', '.join(sorted(names))}")
    parts.sort(key=lambda p: str(p["sample"].iloc[0]) if len(p) else "")
    rows.sort(key=lambda r: str(r["sample"]))
    long = pd.concat(parts, ignore_index=True)[agreement.LONG_COLUMNS]
    matrix, pairs = agreement.agreement_matrix(long), agreement.pair_matrix(long)
    for name, frame, kwargs in (
        ("method_agreement.csv", long, dict(index=False)),
        ("method_agreement_matrix.tsv", matrix, dict(sep="\t")),
        ("method_agreement_pairs.tsv", pairs, dict(sep="\t")),
        ("consensus_summary.tsv", pd.DataFrame(rows).set_index("sample"), dict(sep="\t")),
    ):
        with cli.atomic_path(args.outdir / name) as tmp:
            frame.to_csv(tmp, float_format="%.6g", na_rep="NA", **kwargs)
    cli.write_versions(args.versions, args.process_name, PACKAGES)
    log.info("agreement of %d methods over %d slides", len(pairs), long["sample"].nunique())
