"""Find the spatial domains of a samplesheet group's slides (Novae, or SpatialLeiden), at several levels.

The slides (``--h5ad``, the QC step's h5ad, one per ``--samples`` name in the same order) are
handled together: one model and one set of labels (``D1..Dk``, numbered by size over the group).
Outputs, per sample S:

- ``S.domains.csv``: ``location`` (the h5ad's obs_names, same order), ``domain`` (``--domain_level``),
  ``domain_L<k>`` for each level;
- ``S.domains_qc.json``: sample, group, method, levels {k: domains found}, chosen level, domains at
  it {label: locations}, unassigned, locations, seconds, training details;
- ``S.domains_map.png``: the chosen level's map;

and, where Novae trained a model, ``<group>.novae_model/`` (reusable with ``--novae_model``).

Example::

    find_domains.py --samples s1 s2 --h5ad s1.qc.h5ad s2.qc.h5ad --group G --method novae --levels 5..15 --level 7
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

from spatialmap import cli

log = logging.getLogger("spatialmap.find_domains")

PACKAGES = ["novae", "spatialleiden", "scanpy", "anndata", "torch"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    from spatialmap.domains import common, run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", required=True, help="sample names (comma or space separated)")
    parser.add_argument("--h5ad", nargs="+", required=True, help="each sample's QC'd h5ad, in the order of --samples")
    parser.add_argument("--group", required=True, help="the slides' samplesheet group (names the Novae model folder)")
    parser.add_argument(
        "--method", choices=run.METHODS, default="spatialleiden", help="domain method (default: spatialleiden)"
    )
    parser.add_argument(
        "--levels",
        default=common.DEFAULT_LEVELS,
        help=f"levels: a range or comma list (default: {common.DEFAULT_LEVELS})",
    )
    parser.add_argument(
        "--level",
        type=int,
        default=common.DEFAULT_LEVEL,
        help=f"the level of 'domain' (default: {common.DEFAULT_LEVEL})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random generator (default: 0)")
    parser.add_argument(
        "--novae-model", default=None, help="a pretrained Novae: local folder, or a hub name (needs internet)"
    )
    parser.add_argument(
        "--novae-max-epochs",
        type=int,
        default=run.DEFAULT_NOVAE_MAX_EPOCHS,
        help=f"Novae training: at most this many epochs (default: {run.DEFAULT_NOVAE_MAX_EPOCHS})",
    )
    parser.add_argument(
        "--novae-train-locations",
        type=int,
        default=run.DEFAULT_NOVAE_TRAIN_LOCATIONS,
        help=f"Novae training: at most this many locations, whole tiles (default: {run.DEFAULT_NOVAE_TRAIN_LOCATIONS})",
    )
    parser.add_argument(
        "--novae-max-locations",
        type=int,
        default=run.DEFAULT_NOVAE_MAX_LOCATIONS,
        help=f"above this many locations in a group, SpatialLeiden instead (default: {run.DEFAULT_NOVAE_MAX_LOCATIONS})",
    )
    parser.add_argument("--outdir", default=".", help="output folder (default: .)")
    parser.add_argument(
        "--process-name", default=Path(__file__).name, help="process name in versions.yml (default: script name)"
    )
    parser.add_argument("--versions", default="versions.yml", help="versions file to write (default: versions.yml)")
    args = parser.parse_args(argv)
    args.samples = [s for item in args.samples for s in item.split(",") if s]
    return args


def qc_summary(sample: str, group: str, result, table, levels: list[int], level: int, seconds: float) -> dict:
    """The slide's ``domains_qc.json``."""
    from spatialmap.domains.common import UNASSIGNED

    chosen = table["domain"]
    counts = chosen[chosen != UNASSIGNED].value_counts()
    order = sorted(counts.index, key=lambda name: int(name[1:]))
    return {
        "sample": sample,
        "group": group,
        "method": result.method,
        "levels": {str(k): int(table[f"domain_L{k}"].loc[lambda s: s != UNASSIGNED].nunique()) for k in levels},
        "chosen_level": level,
        "domains": {name: int(counts[name]) for name in order},
        "unassigned": int((chosen == UNASSIGNED).sum()),
        "locations": int(len(table)),
        "seconds": round(seconds, 1),
        "training": result.details,
        # the report's table of the domains (REPORT_TABLES reads it as it reads the methods' QC JSONs)
        "label": f"Spatial domains ({result.method})",
        "report_columns": {
            "group": "samplesheet group (slides handled together)",
            "chosen_level": "level of the domain column",
            "n_domains": "domains found at that level",
            "unassigned": "locations without a domain",
            "locations": "locations",
            "seconds": "seconds (the whole group)",
        },
        "n_domains": int(len(counts)),
    }


def main(argv: list[str] | None = None) -> None:
    """Read the group's slides, find their domains, write every output (nothing half-written)."""
    args = parse_args(argv)
    import json

    import anndata as ad
    import pandas as pd

    from spatialmap.domains import common, run
    from spatialmap.report.plotting import plot_spatial_values

    started = time.monotonic()
    if len(args.samples) != len(args.h5ad):
        raise cli.InputError(f"group {args.group}: {len(args.samples)} samples but {len(args.h5ad)} h5ad files")
    levels = common.parse_levels(args.levels)
    common.check_level(args.level, levels)
    slides = {}
    for sample, path in zip(args.samples, args.h5ad):
        if not Path(path).is_file():
            raise FileNotFoundError(f"sample {sample}: no such h5ad: {path}")
        slides[sample] = ad.read_h5ad(path)
    result = run.find_domains(
        slides, levels, args.level, method=args.method, seed=args.seed, novae_model=args.novae_model,
        novae_max_epochs=args.novae_max_epochs, novae_train_locations=args.novae_train_locations,
        novae_max_locations=args.novae_max_locations,
    )  # fmt: skip
    seconds = time.monotonic() - started
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for sample, table in result.tables.items():
        with cli.atomic_path(outdir / f"{sample}.domains.csv") as tmp:
            table.to_csv(tmp, index_label="location")
        summary = qc_summary(sample, args.group, result, table, levels, args.level, seconds)
        with cli.atomic_path(outdir / f"{sample}.domains_qc.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        title = f"{sample}: {result.method} domains, level {args.level} ({summary['levels'][str(args.level)]} found)"
        values = pd.DataFrame({"domain": pd.Categorical(table["domain"])}, index=table.index)
        plot_spatial_values(slides[sample], values, outdir / f"{sample}.domains_map.png", title, seed=args.seed)
        log.info("sample %s: %d domains at level %d, %d unassigned", sample, len(summary["domains"]), args.level, summary["unassigned"])  # fmt: skip
    if result.model is not None:
        final = outdir / f"{args.group}.novae_model"
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=outdir))
        try:
            result.model.save_pretrained(str(staging))
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    cli.write_versions(Path(args.outdir) / args.versions, args.process_name, PACKAGES)
