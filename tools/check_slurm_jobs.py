#!/usr/bin/env python3
"""Checks of tools/test_slurm.sh: every task of a run was a SLURM job, requesting what its label says.

For each task in the run's trace: the native id is a SLURM job id, the task finished, and its
``.command.run`` carries ``#SBATCH`` directives whose CPUs and memory are those of the
process's label in conf/base.config (first attempt), capped by --max_cpus / --max_memory.
With --gpu-run: the job scripts of the process_gpu steps, and only those, request a GPU.
With --test-data: the run is the full test profile, so its results are checked as a user would:
every slide mapped by every method that maps spots (all five) and the consensus (proportions summing to 1, per-type
Pearson r with the generated truth at least MIN_PEARSON), cell2location stopped at convergence,
the MultiQC report written.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from spatialmap.methods import registry

REPO = Path(__file__).resolve().parents[1]

GPU_REQUEST = re.compile(r"^#SBATCH\s+--gres[ =]gpu:1\s*$", re.M)
# every method that maps spots (the test profile's Visium slides): CellTypist, a classifier of single
# cells, refuses them
METHODS = tuple(m.name for m in registry.METHODS if not m.refuses("spot"))
#: per-type Pearson r with the truth that every method and the consensus reach on the test data
#: (the pipeline tests hold each method to more: tests/workflow/test_pipeline_outputs.py)
MIN_PEARSON = 0.8


def process_labels(repo: Path) -> dict[str, str]:
    """``{PROCESS: label}`` from modules/local/*/main.nf."""
    labels = {}
    for path in (repo / "modules" / "local").glob("*/main.nf"):
        text = path.read_text()
        for name, label in re.findall(r"process\s+(\w+)\s*\{.*?label\s+'(\w+)'", text, flags=re.S):
            labels[name] = label
    return labels


def label_requests(repo: Path) -> dict[str, tuple[int, int]]:
    """``{label: (cpus, memory GB)}`` of a first attempt, from conf/base.config."""
    text = (repo / "conf" / "base.config").read_text()
    requests = {}
    for label, body in re.findall(r"withLabel:\s*'(\w+)'\s*\{(.*?)\n    \}", text, flags=re.S):
        cpus = int(re.search(r"cpus\s*=\s*\{\s*(\d+)", body).group(1))
        memory = int(re.search(r"memory\s*=\s*\{\s*(\d+)\.GB", body).group(1))
        requests[label] = (cpus, memory)
    return requests


def tasks(results: Path, work: Path) -> list[tuple[dict, Path]]:
    """(trace row, work dir) of every task of the run."""
    trace = sorted((results / "pipeline_info").glob("execution_trace_*.txt"))[-1]
    rows = pd.read_csv(trace, sep="\t", dtype=str).to_dict("records")
    out = []
    for row in rows:
        found = list(work.glob(row["hash"] + "*"))
        assert len(found) == 1, f"{row['name']}: no single work dir for {row['hash']}"
        out.append((row, found[0]))
    return out


def check_run(repo: Path, results: Path, work: Path, max_cpus: int, max_memory_gb: int, gpu: bool) -> list[str]:
    labels, requests = process_labels(repo), label_requests(repo)
    problems = []
    seen_gpu = 0
    for row, task_dir in tasks(results, work):
        name = row["name"].split(" ")[0].split(":")[-1]
        label = labels[name]
        script = (task_dir / ".command.run").read_text()
        if row["status"] != "COMPLETED":
            problems.append(f"{row['name']}: status {row['status']}")
        if not str(row["native_id"]).isdigit():
            problems.append(f"{row['name']}: native id {row['native_id']!r} is not a SLURM job id")
        if not re.search(r"^#SBATCH -J nf-", script, re.M):
            problems.append(f"{row['name']}: no #SBATCH job name in {task_dir}/.command.run")
        cpus, memory = requests[label]
        cpus, memory = min(cpus, max_cpus), min(memory, max_memory_gb)
        found_cpus = re.search(r"^#SBATCH -c (\d+)", script, re.M)
        found_cpus = int(found_cpus.group(1)) if found_cpus else 1
        found_mem = re.search(r"^#SBATCH --mem (\d+)M", script, re.M)
        if found_cpus != cpus:
            problems.append(f"{row['name']} ({label}): {found_cpus} CPUs requested, expected {cpus}")
        if not found_mem or int(found_mem.group(1)) != memory * 1024:
            problems.append(
                f"{row['name']} ({label}): memory {found_mem and found_mem.group(0)}, expected {memory * 1024}M"
            )
        wants_gpu = bool(GPU_REQUEST.search(script))
        if wants_gpu != (gpu and label == "process_gpu"):
            problems.append(f"{row['name']} ({label}): GPU request {'present' if wants_gpu else 'absent'}")
        seen_gpu += label == "process_gpu"
        print(
            f"{'gpu ' if gpu else ''}job {row['native_id']:>5} {row['name']:<60} {label:<15} "
            f"cpus {found_cpus} mem {found_mem.group(1) if found_mem else '?'}M gpu {wants_gpu}"
        )
    if not seen_gpu:
        problems.append("no process_gpu task ran")
    return problems


def _proportions(results: Path, method: str, sample: str) -> pd.DataFrame:
    if method == "cell2location":  # abundances: normalised per spot
        table = pd.read_csv(results / method / sample / f"{sample}.cell2location_q05.csv", index_col=0)
        return table.div(table.sum(axis=1), axis=0)
    return pd.read_csv(results / method / sample / f"{sample}.{method}_proportions.csv", index_col=0)


def check_test_profile(results: Path, test_data: Path) -> list[str]:
    """The test profile's results of the SLURM run, checked against the generated truth."""
    import json

    import numpy as np

    problems = []
    samples = pd.read_csv(test_data / "samplesheet.csv")["sample"].astype(str)
    for sample in samples:
        truth = pd.read_csv(test_data / "truth" / f"{sample}_proportions.csv", index_col=0)
        for method in METHODS + ("consensus",):
            try:
                table = _proportions(results, method, sample)
            except FileNotFoundError as err:
                problems.append(f"{sample}: no {method} result ({err.filename})")
                continue
            if not np.allclose(table.sum(axis=1), 1, atol=1e-4):
                problems.append(f"{sample}: {method} proportions do not sum to 1")
            t = truth.loc[table.index, table.columns]
            r = min(np.corrcoef(table[c], t[c])[0, 1] for c in table.columns)
            print(f"{sample} {method:<14} min per-type r with the truth {r:.3f}")
            if not r >= MIN_PEARSON:
                problems.append(f"{sample}: {method} min per-type r {r:.3f} < {MIN_PEARSON}")
        qc = json.loads((results / "cell2location" / sample / f"{sample}.cell2location_qc.json").read_text())
        print(f"{sample} cell2location stop {qc['stop_reason']} at epoch {qc['epochs_run']}")
        if qc["stop_reason"] != "converged":
            problems.append(f"{sample}: cell2location stopped {qc['stop_reason']}, not converged")
    if not (results / "multiqc" / "multiqc_report.html").is_file():
        problems.append("no MultiQC report")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--run", required=True, help="RESULTS:WORK of the run without the gpu profile")
    parser.add_argument("--gpu-run", default=None, help="RESULTS:WORK of the run with the gpu profile")
    parser.add_argument("--max-cpus", type=int, required=True)
    parser.add_argument("--max-memory-gb", type=int, required=True)
    parser.add_argument(
        "--test-data",
        type=Path,
        default=None,
        help="assets/test_data: the --run is the full test profile; check its results",
    )
    args = parser.parse_args()
    problems = []
    if args.test_data:
        problems += check_test_profile(Path(args.run.split(":")[0]), args.test_data)
    for spec, gpu in ((args.run, False), (args.gpu_run, True)):
        if spec:
            results, work = (Path(p) for p in spec.split(":"))
            problems += check_run(args.repo, results, work, args.max_cpus, args.max_memory_gb, gpu)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
