#!/usr/bin/env python3
"""Full-slide Visium HD benchmark in bins mode: wall time and peak memory of every step.

Generates a full-size slide (``make_hd_test_data.py --big-hd-side``: N x N 8 µm bins,
``--n-genes`` genes) and runs the pipeline's own scripts on it, one process per step as
Nextflow would, each under ``/usr/bin/time -v``: read (sopa.io.visium_hd), slide QC, FlashDeconv,
NNLS, spatial outputs (new SpatialData zarr, labels, composition, map). Writes a TSV (step,
wall seconds, peak RSS GB) and prints it as a Markdown table with the accuracy against the
truth::

    ~/.cache/spatialmap/env/bin/python tools/benchmark_hd.py --workdir /tmp/hdbench --side 550 --n-genes 5000
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / "bin"


def run_step(name: str, cmd: list[str], cwd: Path, log) -> dict:
    """Run ``cmd`` under /usr/bin/time -v; wall seconds and peak RSS (GB)."""
    env = dict(os.environ, PYTHONPATH=str(BIN), SPATIALMAP_LOG_LEVEL="INFO")
    t0 = time.time()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    log.write(f"## {name}\n$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n")
    log.flush()
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    row = {"step": name, "wall_s": round(wall, 1), "peak_rss_gb": round(int(peak.group(1)) / 1024**2, 2) if peak else None,
           "exit": proc.returncode}  # fmt: skip
    print(row, flush=True)
    if proc.returncode:
        raise SystemExit(f"step {name} failed (exit {proc.returncode}); see the log")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the data and the outputs")
    parser.add_argument("--side", type=int, default=550, help="bins per side (550: 302,500 bins of 8 µm)")
    parser.add_argument("--n-genes", type=int, default=5000, help="genes (default: 5000)")
    parser.add_argument("--out", type=Path, default=None, help="TSV to write (default: <workdir>/benchmark_hd.tsv)")
    parser.add_argument("--skip-generate", action="store_true", help="reuse the data already in --workdir")
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    rows = []
    with open(work / "benchmark_hd.log", "a") as log:
        if not args.skip_generate:
            rows.append(run_step("generate", [py, str(BIN / "make_hd_test_data.py"), "--outdir", str(work / "data"),
                                              "--big-hd-side", str(args.side), "--n-genes", str(args.n_genes)], work, log))  # fmt: skip
        outs, ref = work / "data" / "hdbig" / "outs", work / "data" / "reference.h5ad"
        steps = [
            ("read (sopa.io.visium_hd)", [py, str(BIN / "read_slide.py"), "--sample", "hdbig", "--visium-hd-dir", str(outs),
                                          "--hd-bin-size", "8", "--output", "hdbig.raw.h5ad"]),
            ("slide QC", [py, str(BIN / "slide_qc.py"), "--input", "hdbig.raw.h5ad", "--sample", "hdbig", "--output-h5ad",
                          "hdbig.qc.h5ad", "--output-json", "hdbig.qc.json", "--output-png", "hdbig.qc_maps.png"]),
            ("FlashDeconv", [py, str(BIN / "map_flashdeconv.py"), "--slide", "hdbig.qc.h5ad", "--sample", "hdbig",
                             "--reference", str(ref)]),
            ("NNLS", [py, str(BIN / "map_nnls.py"), "--slide", "hdbig.qc.h5ad", "--sample", "hdbig", "--reference", str(ref)]),
            ("spatial outputs", [py, str(BIN / "spatial_outputs.py"), "--sample", "hdbig", "--input-type", "visium_hd",
                                 "--input", str(outs), "--qc-h5ad", "hdbig.qc.h5ad", "--mapped", "hdbig.flashdeconv.h5ad",
                                 "hdbig.nnls.h5ad", "--methods", "flashdeconv,nnls", "--outdir", "spatial"]),
        ]  # fmt: skip
        for name, cmd in steps:
            rows.append(run_step(name, cmd, work, log))
    accuracy = per_type_pearson(work)
    out = args.out or work / "benchmark_hd.tsv"
    with open(out, "w") as handle:
        handle.write("step\twall_s\tpeak_rss_gb\n")
        for row in rows:
            handle.write(f"{row['step']}\t{row['wall_s']}\t{row['peak_rss_gb']}\n")
    print("| step | wall (s) | peak RSS (GB) |\n|---|---|---|")
    for row in rows:
        print(f"| {row['step']} | {row['wall_s']} | {row['peak_rss_gb']} |")
    print(accuracy)


def per_type_pearson(work: Path) -> str:
    """Median and minimum per-type Pearson r of each method's bin proportions with the truth."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    truth = pd.read_csv(work / "data" / "truth" / "hdbig_bins_008um_proportions.csv", index_col=0)
    lines = []
    for method in ("flashdeconv", "nnls"):
        props = ad.read_h5ad(work / f"hdbig.{method}.h5ad").obsm[f"{method}_proportions"].dropna()
        t = truth.loc[props.index]
        r = [np.corrcoef(props[c], t[c])[0, 1] for c in props.columns]
        lines.append(f"{method}: {len(props)} bins, per-type Pearson r median {np.median(r):.3f}, min {np.min(r):.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
