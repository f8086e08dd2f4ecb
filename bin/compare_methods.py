#!/usr/bin/env python3
"""Compare the cell-type maps of cell2location and Tangram, per slide and cell type.

For every slide both methods mapped: the Pearson correlation across shared spots between
cell2location's 5% quantile abundance (normalised per spot to proportions) and Tangram's
proportions. A slide mapped by only one method is skipped with a log line.

Example::

    compare_methods.py --c2l a.cell2location_q05.csv b.cell2location_q05.csv --samples-c2l a b \\
        --tangram a.tangram_proportions.csv b.tangram_proportions.csv --samples-tangram a b
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spatialmap import cli

log = logging.getLogger("spatialmap.compare_methods")

PACKAGES = ["pandas", "numpy"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c2l", nargs="+", default=[], help="cell2location q05 abundance CSVs (index: barcode; columns: cell types)")
    parser.add_argument("--samples-c2l", nargs="+", default=[], help="sample name of each --c2l file, in the same order")
    parser.add_argument("--tangram", nargs="+", default=[], help="Tangram proportion CSVs (index: barcode; columns: cell types)")
    parser.add_argument("--samples-tangram", nargs="+", default=[], help="sample name of each --tangram file, in the same order")
    parser.add_argument("--output-csv", default="method_agreement.csv", help="long table: sample, cell_type, pearson_r, n_spots (default: method_agreement.csv)")
    parser.add_argument("--output-matrix", default="method_agreement_matrix.tsv", help="samples x cell types matrix of r (default: method_agreement_matrix.tsv)")
    parser.add_argument("--process-name", default=Path(__file__).name, help="process name in versions.yml (default: script name)")
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    return parser.parse_args(argv)


def read_tables(paths: list[str], samples: list[str], method: str) -> dict:
    """``{sample: table}`` from CSVs; names and files must pair up one to one."""
    import pandas as pd

    if len(paths) != len(samples):
        raise cli.InputError(f"{method}: {len(paths)} files but {len(samples)} sample names")
    duplicated = sorted({s for s in samples if samples.count(s) > 1})
    if duplicated:
        raise cli.InputError(f"{method}: sample names given more than once: {', '.join(duplicated)}")
    tables = {}
    for path, sample in zip(paths, samples):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{method} table of sample {sample}: no such file: {path}")
        table = pd.read_csv(path, index_col=0)
        table.index = table.index.astype(str)
        if table.shape[1] == 0 or len(table) == 0:
            raise cli.InputError(f"{method} table of sample {sample} ({path}) is empty")
        tables[sample] = table
    return tables


def main(argv: list[str] | None = None) -> None:
    """Compare the two methods' maps and write the long table and the matrix."""
    args = parse_args(argv)
    from spatialmap import agreement

    c2l = read_tables(args.c2l, args.samples_c2l, "cell2location")
    tangram = read_tables(args.tangram, args.samples_tangram, "Tangram")
    long, wide = agreement.compare_slides(c2l, tangram)
    with cli.atomic_path(args.output_csv) as tmp:
        long.to_csv(tmp, index=False, float_format="%.6g", na_rep="NA")
    with cli.atomic_path(args.output_matrix) as tmp:
        wide.to_csv(tmp, sep="\t", float_format="%.6g", na_rep="NA")
    cli.write_versions(args.versions, args.process_name, PACKAGES)
    log.info("wrote %s and %s", args.output_csv, args.output_matrix)


if __name__ == "__main__":
    cli.run(main)
