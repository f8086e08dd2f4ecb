#!/usr/bin/env python3
"""Full-slide Visium HD benchmark in bins mode: wall time and peak memory of every step.

Generates a full-size slide (``make_hd_test_data.py --big-hd-side``: N x N 8 µm bins,
``--n-genes`` genes) and runs the pipeline's own scripts on it, one process per step as
Nextflow would, each under ``/usr/bin/time -v``: read (sopa.io.visium_hd), slide QC, FlashDeconv,
NNLS, spatial outputs (new SpatialData zarr, labels, composition, map). Writes a TSV (step,
wall seconds, peak RSS GB) and prints it as a Markdown table with the accuracy against the
truth::

    ~/.cache/spatialmap/env/bin/python tools/benchmark_hd.py --workdir /tmp/hdbench --side 550 --n-genes 5000

``--nextflow`` runs the same generated slide through the pipeline instead, as a user would
(``bash tools/nextflow run . -profile local --hd_mode bins --hd_bin_size 8`` with ``--methods``,
``-with-trace`` and ``-with-report``, under ``nice -n 10``), then prints wall time and peak RSS per
task from the trace, the outputs' sizes and whether the MultiQC report has the slide's row::

    ~/.cache/spatialmap/env/bin/python tools/benchmark_hd.py --workdir /tmp/hdbench --nextflow \
        --methods flashdeconv,nnls,cell2location

``--from-trace TRACE --results DIR`` prints the same tables from a run already made. Both also print
the whole run's span and largest peak RSS from the trace, and the accuracy of every method's (and the
consensus's) bin proportions against the generator's truth (per-type Pearson r, median and minimum;
``--truth``, default ``<workdir>/data/truth/hdbig_bins_008um_proportions.csv``).
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


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _seconds(text: str) -> float | None:
    """Nextflow's trace durations ('793ms', '54.3s', '1m 36s', '1h 2m 3s') in seconds."""
    parts = re.findall(r"([\d.]+)\s*(ms|s|m|h|d)\b", text)
    return sum(float(v) * _UNITS[u] for v, u in parts) if parts else None


def _gigabytes(text: str) -> float | None:
    """Nextflow's trace sizes ('15 MB', '1.3 GB') in GB (GiB)."""
    match = re.match(r"([\d.]+)\s*([KMGT]?B)", text.strip())
    return float(match.group(1)) * _BYTES[match.group(2)] / 1024**3 if match else None


def trace_table(trace: Path) -> list[dict]:
    """Task, status, wall (realtime) seconds, peak RSS GB and %CPU of every task of a trace file."""
    import csv

    rows = []
    with open(trace) as handle:
        for rec in csv.DictReader(handle, delimiter="\t"):
            rows.append({"task": rec["name"].replace("SPATIALMAP:", ""), "status": rec["status"],
                         "wall_s": _seconds(rec.get("realtime", "")), "peak_rss_gb": _gigabytes(rec.get("peak_rss", "")),
                         "cpu": rec.get("%cpu", "")})  # fmt: skip
    return rows


def trace_span(trace: Path) -> tuple[float, float]:
    """Seconds from the first task's submission to the last task's end, and the largest peak RSS (GB), of a trace."""
    import csv
    from datetime import datetime

    starts, ends, rss = [], [], []
    with open(trace) as handle:
        for rec in csv.DictReader(handle, delimiter="\t"):
            if rec.get("submit", "-") in ("-", ""):
                continue
            start = datetime.strptime(rec["submit"], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            starts.append(start)
            ends.append(start + (_seconds(rec.get("duration", "")) or 0.0))
            rss.append(_gigabytes(rec.get("peak_rss", "")) or 0.0)
    return (max(ends) - min(starts), max(rss)) if starts else (0.0, 0.0)


def accuracy_table(results: Path, truth_csv: Path, sample: str = "hdbig") -> str:
    """Markdown: every method's and the consensus's bin proportions against the true share of the bins' counts.

    Per cell type, Pearson r over the bins the method fitted (rows without NaN); median and minimum over the
    types, as in the earlier full-slide sections of tools/BENCHMARKS.md.
    """
    import numpy as np
    import pandas as pd

    truth = pd.read_csv(truth_csv, index_col=0)
    truth.index = truth.index.astype(str)
    tables = sorted(results.glob(f"*/{sample}/{sample}.*_proportions.csv"))
    tables += sorted(results.glob(f"*/{sample}/{sample}.cell2location_q05.csv"))
    lines = ["| method | bins fitted | per-type r median | per-type r min | RMSE |", "|---|---|---|---|---|"]
    for table in tables:
        method = table.name[len(sample) + 1 :].replace("_proportions.csv", "").replace(".csv", "")
        props = pd.read_csv(table, index_col=0).dropna()
        props.index = props.index.astype(str)
        types = [c for c in props.columns if c in truth.columns]
        props = props[types].div(props[types].sum(axis=1), axis=0)  # cell2location abundances -> shares
        t = truth.loc[props.index, types]
        r = [float(np.corrcoef(props[c], t[c])[0, 1]) for c in types]
        rmse = float(np.sqrt(((props.to_numpy() - t.to_numpy()) ** 2).mean()))
        lines.append(f"| {method} | {len(props):,} | {np.median(r):.3f} | {np.min(r):.3f} | {rmse:.4f} |")
    return "\n".join(lines)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def report_run(trace: Path, results: Path, sample: str = "hdbig", truth: Path | None = None) -> str:
    """Markdown: per-task wall time and peak RSS, the run's span, outputs' sizes, the MultiQC report's row for
    the slide, and (with ``truth``) every method's accuracy against it."""
    lines = ["| task | status | wall (s) | peak RSS (GB) | %CPU |", "|---|---|---|---|---|"]
    for row in trace_table(trace):
        wall = f"{row['wall_s']:.1f}" if row["wall_s"] is not None else ""
        rss = f"{row['peak_rss_gb']:.2f}" if row["peak_rss_gb"] is not None else ""
        lines.append(f"| {row['task']} | {row['status']} | {wall} | {rss} | {row['cpu']} |")
    span, peak = trace_span(trace)
    lines.append(f"| **tasks, first submitted to last done** | | **{span:.0f}** | max {peak:.2f} | |")
    selection = results / "multiqc" / "multiqc_data" / "multiqc_spatialmap_method_selection.txt"
    if selection.is_file():
        lines += ["", "Method selection: " + "; ".join(selection.read_text().strip().splitlines()[1:])]
    if truth is not None and truth.is_file():
        lines += ["", accuracy_table(results, truth, sample)]
    lines += ["", "| output | size (MB) |", "|---|---|"]
    spatial = results / "spatial" / sample
    for path in sorted(spatial.iterdir()) if spatial.is_dir() else []:
        lines.append(f"| spatial/{sample}/{path.name} | {_size(path) / 1e6:.1f} |")
    for path in sorted(results.glob(f"*/{sample}/*")):
        if path.parent != spatial and path.is_file():
            lines.append(f"| {path.relative_to(results)} | {_size(path) / 1e6:.1f} |")
    report = results / "multiqc" / "multiqc_report.html"
    if report.is_file():
        general = results / "multiqc" / "multiqc_data" / "multiqc_general_stats.txt"
        row = ""
        if general.is_file():
            row = next((line for line in general.read_text().splitlines() if line.split("\t")[0] == sample), "")
        lines.append("")
        lines.append(f"MultiQC report {report.stat().st_size / 1e6:.1f} MB; slide {sample} "
                     f"{'in' if sample in report.read_text(errors='replace') else 'NOT in'} the report; "
                     f"general statistics row: {row.split(chr(9))[1:] if row else 'none'}")  # fmt: skip
    return "\n".join(lines)


def run_nextflow(work: Path, methods: str, extra: list[str]) -> tuple[Path, Path]:
    """The generated slide through ``nextflow run`` as a user would; returns the trace and the results folder."""
    data = work / "data"
    results, trace = work / "results", work / "results" / "pipeline_info" / "trace_full.txt"
    cmd = ["nice", "-n", "10", "bash", str(REPO / "tools" / "nextflow"), "run", str(REPO), "-profile", "local",
           "--input", str(data / "samplesheet.csv"), "--reference", str(data / "reference.h5ad"),
           "--hd_mode", "bins", "--hd_bin_size", "8", "--methods", methods, "--outdir", str(results),
           "-work-dir", str(work / "work"), "-with-trace", str(trace),
           "-with-report", str(results / "pipeline_info" / "report_full.html"), *extra]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=work)
    print(f"nextflow exit {proc.returncode}, wall {time.time() - t0:.0f} s", flush=True)
    if proc.returncode:
        raise SystemExit(f"nextflow run failed (exit {proc.returncode}); see {work}/.nextflow.log")
    return trace, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the data and the outputs")
    parser.add_argument("--side", type=int, default=550, help="bins per side (550: 302,500 bins of 8 µm)")
    parser.add_argument("--n-genes", type=int, default=5000, help="genes (default: 5000)")
    parser.add_argument("--out", type=Path, default=None, help="TSV to write (default: <workdir>/benchmark_hd.tsv)")
    parser.add_argument("--skip-generate", action="store_true", help="reuse the data already in --workdir")
    parser.add_argument(
        "--nextflow",
        action="store_true",
        help="run the slide through `nextflow run` (bins mode, 8 µm) instead of each script alone",
    )
    parser.add_argument(
        "--methods", default="flashdeconv,nnls", help="--methods of the nextflow run (default: %(default)s)"
    )
    parser.add_argument("--nextflow-args", default="", help="more arguments for the nextflow run (one string)")
    parser.add_argument("--from-trace", type=Path, default=None, help="only print the tables of a run already made")
    parser.add_argument("--results", type=Path, default=None, help="with --from-trace: the run's --outdir")
    parser.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="true bin proportions (default: <workdir>/data/truth/hdbig_bins_008um_proportions.csv)",
    )
    args = parser.parse_args()
    truth = args.truth or args.workdir.resolve() / "data" / "truth" / "hdbig_bins_008um_proportions.csv"
    if args.from_trace:
        print(report_run(args.from_trace, args.results or args.from_trace.parents[1], truth=truth))
        return
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    if args.nextflow:
        if not args.skip_generate:
            with open(work / "benchmark_hd.log", "a") as log:
                run_step("generate", [py, str(REPO / "tools" / "make_hd_test_data.py"), "--outdir", str(work / "data"),
                                      "--big-hd-side", str(args.side), "--n-genes", str(args.n_genes)], work, log)  # fmt: skip
        trace, results = run_nextflow(work, args.methods, args.nextflow_args.split())
        print(report_run(trace, results, truth=truth))
        return
    rows = []
    with open(work / "benchmark_hd.log", "a") as log:
        if not args.skip_generate:
            rows.append(run_step("generate", [py, str(REPO / "tools" / "make_hd_test_data.py"), "--outdir", str(work / "data"),
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
