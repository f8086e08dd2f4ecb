#!/usr/bin/env python3
"""Benchmark the mapping steps: accuracy and wall time of cell2location and Tangram.

Two scenarios, each run through the package functions the pipeline's ``bin/`` scripts call
(nothing scientific is re-implemented here):

``generated``
    Larger synthetic data from :func:`testdata.synth.generate` (known truth). Slides are
    read and QC'd (mitochondrial genes moved out), reference signatures are estimated once
    (regression), then cell2location maps all slides jointly at several epoch counts (each a
    fresh fit with the same seed) and Tangram maps each slide at several epoch counts.
    Accuracy: per cell type and slide, the Pearson r across spots between the estimate and
    the true number of cells (cell2location: 5% quantile abundance, the map the pipeline
    publishes; Tangram: expected cell counts), summarised as min / median / mean over all
    types and slides; also the median r of per-spot proportions, and for cell2location the
    RMSE (cells per spot) of the posterior mean abundance.

``lymph_node``
    The real pair in ``--data-dir`` (``reference.h5ad`` + ``spatial.h5ad``). No truth: the
    gene overlap report, wall times, cell2location's reconstruction r and cells per spot,
    Tangram's held-out gene median r.

Wall time is measured with ``time.perf_counter`` around one whole mapping call (model set-up,
training and posterior export / result computation). With ``--compare-cpu`` on a machine with
a GPU every configuration runs on both devices.

Writes a TSV (``--out``) and prints a markdown table headed by the machine's details. Not a
test: it takes minutes to hours depending on the settings.

Example (small)::

    tools/benchmark_mapping.py --scenario generated --grid 12 --n-genes 300 \\
        --c2l-epochs 50,100 --tangram-epochs 50 --out /tmp/bench.tsv
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from spatialmap import cli, keys
from spatialmap.consensus import agreement
from spatialmap.io import visium as io
from spatialmap.methods import cell2location as c2l
from spatialmap.qc import slide as qc
from spatialmap.reference import prepare as reference
from spatialmap.reference import signatures
from testdata import synth

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("spatialmap.benchmark")

SCENARIOS = ("generated", "lymph_node")
METHODS = ("cell2location", "tangram")
LABEL_KEY = "cell_type"
GENERATED_BATCH_KEY = "batch"  # synth writes obs['batch'] (batch2 has per-gene effects)
LYMPH_SAMPLE = "lymph_node"
LYMPH_EXPECTED_SHARED = 558  # the data's README: only 558 genes are shared
# Defaults of the expected cells per spot: the generator's mean; the lymph node tutorial's value.
DEFAULT_CELLS_PER_SPOT = {"generated": synth.MEAN_CELLS_PER_SPOT, "lymph_node": 30.0}

COLUMNS = [
    "scenario",
    "method",
    "epochs",
    "device",
    "threads",
    "wall_s",
    "n_slides",
    "n_spots",
    "n_genes",
    "n_types",
    "r_min",
    "r_median",
    "r_mean",
    "r_prop_median",
    "rmse",
    "cells_per_spot",
    "true_cells_per_spot",
    "recon_r",
    "heldout_r_median",
    "heldout_r_p90",
    "training_score",
    "notes",
]


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    """``'250,500,1000'`` -> ``[250, 500, 1000]`` (argparse type); empty -> ``[]``."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got '{text}'") from err
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"epoch counts must be at least 1, got '{text}'")
    return values


def method_list(text: str) -> list[str]:
    """``'cell2location,tangram'`` (argparse type); ``c2l`` is accepted for cell2location."""
    aliases = {"c2l": "cell2location", "cell2location": "cell2location", "tangram": "tangram"}
    out = []
    for name in (v.strip().lower() for v in text.split(",") if v.strip()):
        if name not in aliases:
            raise argparse.ArgumentTypeError(f"unknown method '{name}'; choose from {', '.join(METHODS)}")
        out.append(aliases[name])
    if not out:
        raise argparse.ArgumentTypeError("give at least one method")
    return list(dict.fromkeys(out))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` except where the default is None or False (the help says what happens)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_HelpFormatter)
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="generated",
        help="generated: synthetic data with known truth; lymph_node: the real pair in --data-dir",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data" / "lymph_node",
        help="lymph_node scenario: folder holding reference.h5ad and spatial.h5ad",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmark_results.tsv"),
        help="TSV of the results, one row per run; per-type correlations go to <out>.per_type.tsv",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="also write the markdown report (printed to stdout anyway) to this file",
    )
    parser.add_argument(
        "--methods",
        type=method_list,
        default=",".join(METHODS),
        help="comma-separated methods to run: cell2location (or c2l), tangram",
    )

    gen = parser.add_argument_group("generated data (synth.generate)")
    gen.add_argument("--grid", type=int, default=30, help="spots per side of each slide's grid (~75%% under tissue)")
    gen.add_argument("--n-genes", type=int, default=1000, help="nuclear genes (13 mitochondrial genes are added)")
    gen.add_argument("--n-cell-types", type=int, default=12, help="cell types")
    gen.add_argument("--cells-per-type", type=int, default=150, help="reference cells per type")
    gen.add_argument("--n-slides", type=int, default=2, help="slides, mapped jointly by cell2location")
    gen.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the generated files (default: a temporary folder, removed at the end)",
    )
    gen.add_argument("--keep-workdir", action="store_true", help="keep the temporary folder of generated files")

    sig = parser.add_argument_group("reference signatures (regression, estimated once)")
    sig.add_argument("--ref-epochs", type=int, default=250, help="RegressionModel training epochs")
    sig.add_argument("--ref-batch-size", type=int, default=2500, help="RegressionModel minibatch size in cells")

    cl = parser.add_argument_group("cell2location")
    cl.add_argument(
        "--c2l-epochs",
        type=int_list,
        default="250,500,1000,2000,4000",
        help="comma-separated epoch counts; each is a fresh fit with the same seed",
    )
    cl.add_argument(
        "--n-cells-per-location",
        type=float,
        default=None,
        help="prior expected cells per spot (default: 8 for generated data, as generated; "
        "30 for lymph_node, as in the cell2location tutorial)",
    )
    cl.add_argument("--detection-alpha", type=float, default=20, help="regularisation of per-spot detection")
    cl.add_argument(
        "--num-samples",
        type=int,
        default=1000,
        help="posterior samples drawn for the mean and quantiles, by cell2location and by the "
        "signature regression (part of the timed export)",
    )

    tg = parser.add_argument_group("Tangram (cells mode)")
    tg.add_argument(
        "--tangram-epochs",
        type=int_list,
        default="300,1000",
        help="comma-separated epoch counts; each slide is mapped separately, times are summed",
    )
    tg.add_argument(
        "--tangram-max-cells-per-type",
        type=int,
        default=500,
        help="at most this many reference cells per type (seeded draw)",
    )
    tg.add_argument("--tangram-n-markers", type=int, default=100, help="training marker genes per cell type")

    run = parser.add_argument_group("devices and randomness")
    run.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="auto: the GPU when torch sees one, else the CPU",
    )
    run.add_argument(
        "--compare-cpu",
        action="store_true",
        help="when the runs use a GPU, run every configuration on the CPU as well and report both times",
    )
    run.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's default, all visible cores)"
    )
    run.add_argument(
        "--numba-threads",
        type=int,
        default=None,
        help="numba threads (scanpy's marker ranking in Tangram runs numba code); numba's OpenMP "
        "layer sets torch's thread count to this, so give --threads here too to keep Tangram's "
        "training at --threads (default: numba's own, all cores)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the generated data and of every fit")
    run.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the untimed 1-epoch warm-up of each method and device (imports, JIT compilation "
        "and first-call set-up then land in the first timed run)",
    )
    args = parser.parse_args(argv)

    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.numba_threads is not None and args.numba_threads < 1:
        parser.error(f"--numba-threads must be at least 1, got {args.numba_threads}")
    if args.n_cells_per_location is None:
        args.n_cells_per_location = DEFAULT_CELLS_PER_SPOT[args.scenario]
    if args.n_cells_per_location <= 0:
        parser.error("--n-cells-per-location must be positive")
    if args.ref_epochs < 1:
        parser.error("--ref-epochs must be at least 1")
    return args


# --------------------------------------------------------------------------------------------
# machine and devices
# --------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int | None, numba_threads: int | None) -> dict[str, str]:
    """What the numbers depend on: CPUs, load, library versions, GPU (sets the thread counts first)."""
    from importlib import metadata

    import numba
    import torch

    if numba_threads is not None:
        numba.set_num_threads(numba_threads)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": f"{os.cpu_count()} ({usable} usable by this process)",
        "torch_threads": str(torch.get_num_threads()),
        "numba_threads": str(numba.get_num_threads()),
        "load_average_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for package in ("cell2location", "scvi-tools", "pyro-ppl", "tangram-sc"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible to torch"
    return info


def set_threads(threads: int | None) -> None:
    """Pin torch's CPU threads before every run (a fit can leave torch with another count)."""
    import torch

    if threads is not None and torch.get_num_threads() != threads:
        log.info("torch threads were %d; setting %d", torch.get_num_threads(), threads)
        torch.set_num_threads(threads)


def devices_to_run(device: str, compare_cpu: bool) -> list[str]:
    """The devices every configuration runs on: ``['gpu', 'cpu']``, ``['gpu']`` or ``['cpu']``."""
    import torch

    has_gpu = torch.cuda.is_available()
    if device == "gpu" and not has_gpu:
        raise cli.InputError("--device gpu was asked for but torch sees no GPU; use --device auto or cpu")
    first = "gpu" if device == "gpu" or (device == "auto" and has_gpu) else "cpu"
    if compare_cpu and first == "cpu":
        log.warning("--compare-cpu: no GPU in use, so only CPU times are recorded")
    return [first, "cpu"] if compare_cpu and first == "gpu" else [first]


# --------------------------------------------------------------------------------------------
# accuracy against the truth
# --------------------------------------------------------------------------------------------


def per_type_r(estimate: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Pearson r across spots, per cell type, of ``estimate`` vs ``truth`` (aligned by spot and type)."""
    spots = truth.index.intersection(estimate.index)
    types = [t for t in truth.columns if t in estimate.columns]
    if len(spots) < 2 or not types:
        raise ValueError("the estimate and the truth share too few spots or no cell type")
    return pd.Series(
        {t: agreement.pearson(estimate.loc[spots, t].to_numpy(), truth.loc[spots, t].to_numpy()) for t in types}
    )


def proportions(values: pd.DataFrame) -> pd.DataFrame:
    """Rows scaled to sum 1 (all-zero rows become zero, not dropped, so spots stay aligned)."""
    totals = values.sum(axis=1).replace(0, np.nan)
    return values.div(totals, axis=0).fillna(0.0)


def summarise_r(per_slide: dict[str, pd.Series]) -> dict[str, float]:
    """min / median / mean of the per-type r over all types and slides (NaN r left out)."""
    values = pd.concat(per_slide.values()).dropna()
    if values.empty:
        return {"r_min": math.nan, "r_median": math.nan, "r_mean": math.nan}
    return {"r_min": float(values.min()), "r_median": float(values.median()), "r_mean": float(values.mean())}


def per_type_rows(run: dict, per_slide: dict[str, pd.Series], measure: str) -> list[dict]:
    """Long rows ``(method, epochs, device, measure, sample, cell_type, pearson_r)``."""
    return [
        {
            "method": run["method"],
            "epochs": run["epochs"],
            "device": run["device"],
            "measure": measure,
            "sample": sample,
            "cell_type": cell_type,
            "pearson_r": float(r),
        }
        for sample, series in per_slide.items()
        for cell_type, r in series.items()
    ]


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def qc_slide(slide, sample: str):
    """The pipeline's slide QC: metrics, mitochondrial genes moved to obsm, no spot filter."""
    io.check_raw_counts(slide, sample)
    mask = qc.find_mt_genes(
        slide.var_names,
        gene_ids=slide.var[keys.GENE_IDS] if keys.GENE_IDS in slide.var else None,
        prefix="MT-",
    )
    before = qc.compute_qc(slide, mask)
    after = qc.filter_spots(qc.remove_mt_genes(before, mask))
    log.info(
        "sample %s: %d spots, %d genes after QC (%d MT genes removed)",
        sample,
        after.n_obs,
        after.n_vars,
        int(mask.sum()),
    )
    return after


def prepare_reference(path: Path, batch_key: str | None):
    """The pipeline's reference preparation: checks, MT genes removed (prepare_reference.py)."""
    ref = reference.load_reference(path, LABEL_KEY, batch_key, ())
    ref, _ = reference.remove_mt_genes(ref, prefix="MT-")
    return ref


def load_generated(args: argparse.Namespace, workdir: Path):
    """Generate the data set; return (slides after QC, prepared reference, truth per slide)."""
    start = time.perf_counter()
    paths = synth.generate(
        workdir,
        seed=args.seed,
        n_slides=args.n_slides,
        grid=args.grid,
        n_genes=args.n_genes,
        n_cell_types=args.n_cell_types,
        cells_per_type=args.cells_per_type,
    )
    log.info("generated the data in %.1f s under %s", time.perf_counter() - start, workdir)
    slides, truth = {}, {}
    for sample, files in paths["slides"].items():
        slides[sample] = qc_slide(io.read_spaceranger(files["outs"], sample), sample)
        truth[sample] = pd.read_csv(paths["truth"][sample]["abundance"], index_col=0)
        truth[sample].index = truth[sample].index.astype(str)
    ref = prepare_reference(paths["reference"], GENERATED_BATCH_KEY)
    return slides, ref, truth


def load_lymph_node(args: argparse.Namespace):
    """Read the real pair; return (slides after QC, prepared reference)."""
    ref_path, slide_path = args.data_dir / "reference.h5ad", args.data_dir / "spatial.h5ad"
    for path in (ref_path, slide_path):
        if not path.is_file():
            raise cli.InputError(f"lymph_node: {path} does not exist; give the folder with --data-dir")
    slide = qc_slide(io.read_h5ad_slide(slide_path, LYMPH_SAMPLE), LYMPH_SAMPLE)
    ref = prepare_reference(ref_path, None)
    return {LYMPH_SAMPLE: slide}, ref


def overlap_report(ref, slides, expected: int | None) -> tuple[list[str], int]:
    """Markdown lines of the gene overlap report (reference.gene_overlap) and the shared gene count."""
    overlap = reference.gene_overlap(ref, slides, LABEL_KEY, n_markers=50, min_shared_genes=1)
    lines = ["## Gene overlap (reference.gene_overlap, top 50 markers per type)", ""]
    shared = int(overlap.table["shared_genes"].min())
    for sample, row in overlap.table.iterrows():
        lines.append(
            f"- slide {sample}: **{int(row['shared_genes'])} shared genes** of {int(row['reference_genes'])} "
            f"reference genes and {int(row['slide_genes'])} slide genes "
            f"({100 * float(row['shared_fraction']):.1f}% of the reference)"
        )
        markers = ", ".join(f"{label} {row[f'markers:{label}']}" for label in overlap.markers)
        lines.append(f"  - markers on the slide per type: {markers}")
    if expected is not None:
        verdict = "as expected" if shared == expected else f"EXPECTED {expected}"
        lines.append(f"- shared genes: {shared} ({verdict})")
    lines.append("")
    return lines, shared


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def run_signatures(ref, args: argparse.Namespace, device: str, batch_key: str | None):
    """Gene filter + regression signatures, timed (the filter is not timed)."""
    filtered = reference.permissive_gene_filter(ref)
    set_threads(args.threads)
    start = time.perf_counter()
    result = signatures.estimate_signatures(
        filtered,
        method="regression",
        label_key=LABEL_KEY,
        batch_key=batch_key,
        max_epochs=args.ref_epochs,
        batch_size=args.ref_batch_size,
        seed=args.seed,
        accelerator=device,
        num_samples=args.num_samples,
        threads=args.threads,
    )
    wall = time.perf_counter() - start
    row = {
        "method": "signatures",
        "epochs": args.ref_epochs,
        "device": device,
        "wall_s": wall,
        "n_genes": result.signatures.shape[0],
        "n_types": result.signatures.shape[1],
        "notes": f"RegressionModel, {filtered.n_obs} cells, batch key {batch_key or 'none'}",
    }
    log.info("signatures (%s, %d epochs): %.1f s", device, args.ref_epochs, wall)
    return result.signatures, row


def run_c2l(
    slides, sig: pd.DataFrame, epochs: int, device: str, args: argparse.Namespace, truth: dict[str, pd.DataFrame] | None
) -> tuple[dict, list[dict]]:
    """One joint cell2location fit of all slides, timed, scored against the truth when given."""
    set_threads(args.threads)
    start = time.perf_counter()
    result = c2l.run(
        slides,
        sig,
        n_cells_per_location=args.n_cells_per_location,
        detection_alpha=args.detection_alpha,
        max_epochs=epochs,
        batch_size=None,
        seed=args.seed,
        accelerator=device,
        num_samples=args.num_samples,
        threads=args.threads,
    )
    wall = time.perf_counter() - start
    qcs = result.qc.values()
    row = {
        "method": "cell2location",
        "epochs": epochs,
        "device": device,
        "wall_s": wall,
        "n_spots": sum(s.n_obs for s in result.slides.values()),
        "n_genes": len(result.genes_used),
        "n_types": sig.shape[1],
        "cells_per_spot": float(np.mean([q["mean_total_cells_per_spot"] for q in qcs])),
        "recon_r": float(np.mean([q["reconstruction_r"] for q in qcs if q["reconstruction_r"] is not None])),
        "notes": f"joint fit, N_cells_per_location {args.n_cells_per_location:g}, final -ELBO "
        f"{float(np.asarray(result.history).ravel()[-1]):.4g}",
    }
    detail: list[dict] = []
    if truth is not None:
        r_abund, r_prop, sq, n = {}, {}, 0.0, 0
        for sample, mapped in result.slides.items():
            t = truth[sample].loc[mapped.obs_names.astype(str)]
            q05 = mapped.obsm[keys.C2L_Q05].copy()
            mean = mapped.obsm[keys.C2L_MEAN].copy()
            q05.index = mean.index = mapped.obs_names.astype(str)
            r_abund[sample] = per_type_r(q05, t)
            r_prop[sample] = per_type_r(proportions(q05), proportions(t))
            diff = mean[t.columns].to_numpy() - t.to_numpy()
            sq += float((diff**2).sum())
            n += diff.size
        row.update(summarise_r(r_abund))
        row["r_prop_median"] = float(pd.concat(r_prop.values()).median())
        row["rmse"] = math.sqrt(sq / n)
        row["true_cells_per_spot"] = float(np.mean([truth[s].sum(axis=1).mean() for s in result.slides]))
        detail = per_type_rows(row, r_abund, "abundance_q05") + per_type_rows(row, r_prop, "proportions")
    log.info(
        "cell2location (%s, %d epochs): %.1f s; r median %s",
        device,
        epochs,
        wall,
        f"{row['r_median']:.3f}" if "r_median" in row else "n/a",
    )
    return row, detail


def run_tangram_all(
    slides, ref, epochs: int, device: str, args: argparse.Namespace, truth: dict[str, pd.DataFrame] | None
) -> tuple[dict, list[dict]]:
    """Tangram on every slide (one after another), times summed, scored against the truth when given."""
    from spatialmap.methods import tangram as tangram_map

    wall, results = 0.0, {}
    for sample, slide in slides.items():
        set_threads(args.threads)
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Tangram prints its scores; keep stdout for the report
            results[sample] = tangram_map.run(
                slide,
                ref,
                LABEL_KEY,
                sample=sample,
                n_markers=args.tangram_n_markers,
                mode="cells",
                num_epochs=epochs,
                max_cells_per_type=args.tangram_max_cells_per_type,
                cells_per_spot=args.n_cells_per_location,
                seed=args.seed,
                accelerator=device,
                threads=args.threads,
            )
        wall += time.perf_counter() - start
    qcs = [r.qc for r in results.values()]
    row = {
        "method": "tangram",
        "epochs": epochs,
        "device": device,
        "wall_s": wall,
        "n_spots": sum(q["n_spots"] for q in qcs),
        "n_genes": int(np.mean([q["n_shared_genes"] for q in qcs])),
        "n_types": len(qcs[0]["cell_types"]),
        "heldout_r_median": float(np.nanmean([q["heldout_median"] for q in qcs])),
        "heldout_r_p90": float(np.nanmean([q["heldout_p90"] for q in qcs])),
        "training_score": float(np.nanmean([q["training_score"] for q in qcs])),
        "notes": f"cells mode, {qcs[0]['cells_used']} cells, {int(np.mean([q['n_training_genes'] for q in qcs]))} "
        "training genes" + (" (held-out genes include markers)" if any(q["heldout_from_markers"] for q in qcs) else ""),
    }
    detail: list[dict] = []
    if truth is not None:
        r_abund, r_prop = {}, {}
        for sample, res in results.items():
            t = truth[sample].loc[res.abundances.index]
            r_abund[sample] = per_type_r(res.abundances, t)
            r_prop[sample] = per_type_r(res.proportions, proportions(t))
        row.update(summarise_r(r_abund))
        row["r_prop_median"] = float(pd.concat(r_prop.values()).median())
        detail = per_type_rows(row, r_abund, "expected_counts") + per_type_rows(row, r_prop, "proportions")
    log.info("tangram (%s, %d epochs): %.1f s; held-out median r %.3f", device, epochs, wall, row["heldout_r_median"])
    return row, detail


def warm_up(slides, ref, sig: pd.DataFrame | None, device: str, args: argparse.Namespace) -> None:
    """Untimed 1-epoch runs, so one-time costs (imports, numba/torch first calls) are not timed."""
    start = time.perf_counter()
    first = dict(list(slides.items())[:1])
    set_threads(args.threads)
    if sig is not None:
        c2l.run(
            first,
            sig,
            n_cells_per_location=args.n_cells_per_location,
            max_epochs=1,
            seed=args.seed,
            accelerator=device,
            num_samples=2,
            threads=args.threads,
        )
    if "tangram" in args.methods:
        from spatialmap.methods import tangram as tangram_map

        sample, slide = next(iter(first.items()))
        with contextlib.redirect_stdout(sys.stderr):
            tangram_map.run(
                slide,
                ref,
                LABEL_KEY,
                sample=sample,
                n_markers=args.tangram_n_markers,
                num_epochs=1,
                max_cells_per_type=args.tangram_max_cells_per_type,
                seed=args.seed,
                accelerator=device,
                threads=args.threads,
            )
    log.info("warm-up on %s: %.1f s (not counted)", device, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def fmt(value, digits: int = 3) -> str:
    """A table cell: blank for missing, fixed digits for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(results: pd.DataFrame, scenario: str) -> list[str]:
    """Markdown lines of the result table; columns chosen by scenario."""
    if scenario == "generated":
        cols = [
            ("method", "method", 0),
            ("epochs", "epochs", 0),
            ("device", "device", 0),
            ("wall_s", "wall s", 1),
            ("r_min", "r min", 3),
            ("r_median", "r median", 3),
            ("r_mean", "r mean", 3),
            ("r_prop_median", "r median (proportions)", 3),
            ("rmse", "RMSE cells/spot", 3),
            ("cells_per_spot", "cells/spot", 2),
            ("recon_r", "recon. r", 3),
            ("heldout_r_median", "held-out r median", 3),
            ("heldout_r_p90", "held-out r p90", 3),
        ]
    else:
        cols = [
            ("method", "method", 0),
            ("epochs", "epochs", 0),
            ("device", "device", 0),
            ("wall_s", "wall s", 1),
            ("n_genes", "genes used", 0),
            ("cells_per_spot", "cells/spot", 2),
            ("recon_r", "recon. r", 3),
            ("heldout_r_median", "held-out r median", 3),
            ("heldout_r_p90", "held-out r p90", 3),
            ("training_score", "training score", 3),
        ]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, row in results.iterrows():
        cells = []
        for key, _, digits in cols:
            value = row.get(key)
            if isinstance(value, (float, np.floating)) and not math.isnan(value) and digits == 0:
                value = int(value)
            cells.append(fmt(float(value) if isinstance(value, np.floating) else value, max(digits, 1)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(args: argparse.Namespace, info: dict, overlap_lines: list[str], results: pd.DataFrame, command: str) -> str:
    lines = [f"# Mapping benchmark: {args.scenario}", "", f"Command: `{command}`", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines.append("")
    if args.scenario == "generated":
        lines += [
            f"Data: synth.generate seed {args.seed}, {args.n_slides} slides of a {args.grid}x{args.grid} grid, "
            f"{args.n_genes} genes, {args.n_cell_types} cell types, {args.cells_per_type} reference cells per type.",
            "",
            "r: Pearson r across spots between estimate and true cells per spot, per cell type and slide "
            "(cell2location: 5% quantile abundance; Tangram: expected counts); min / median / mean over "
            "all types and slides. r median (proportions): the same on per-spot proportions. RMSE: "
            "cell2location posterior mean abundance vs truth, cells per spot. Wall s: one whole mapping "
            "call (set-up, training, export), all slides.",
            "",
        ]
    lines += overlap_lines
    lines += ["## Results", ""] + markdown_table(results, args.scenario) + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = parse_args(argv)
    command = " ".join(["tools/benchmark_mapping.py"] + (argv if argv is not None else sys.argv[1:]))
    info = machine_info(args.threads, args.numba_threads)
    devices = devices_to_run(args.device, args.compare_cpu)
    log.info("devices: %s", ", ".join(devices))

    tmp_root = None
    truth = None
    try:
        if args.scenario == "generated":
            workdir = args.workdir
            if workdir is None:
                tmp_root = Path(tempfile.mkdtemp(prefix="spatialmap-bench-"))
                workdir = tmp_root
            slides, ref, truth = load_generated(args, workdir)
            batch_key, expected = GENERATED_BATCH_KEY, None
        else:
            slides, ref = load_lymph_node(args)
            batch_key, expected = None, LYMPH_EXPECTED_SHARED
        overlap_lines, _ = overlap_report(ref, slides, expected)
        print("\n".join(overlap_lines), file=sys.stderr)

        rows, details = [], []
        sig = None
        for device in devices:
            if "cell2location" in args.methods:
                if not args.no_warmup:
                    warm_up(slides, ref, signatures.cluster_means(ref, LABEL_KEY), device, args)
                device_sig, row = run_signatures(ref, args, device, batch_key)
                rows.append(row)
                sig = device_sig if sig is None else sig  # map with the first device's signatures
                for epochs in args.c2l_epochs:
                    row, detail = run_c2l(slides, sig, epochs, device, args, truth)
                    rows.append(row)
                    details += detail
            elif not args.no_warmup:
                warm_up(slides, ref, None, device, args)
            if "tangram" in args.methods:
                for epochs in args.tangram_epochs:
                    row, detail = run_tangram_all(slides, ref, epochs, device, args, truth)
                    rows.append(row)
                    details += detail
    finally:
        if tmp_root is not None and not args.keep_workdir:
            shutil.rmtree(tmp_root, ignore_errors=True)
        elif tmp_root is not None:
            log.info("generated files kept in %s", tmp_root)

    results = pd.DataFrame(rows)
    results.insert(0, "scenario", args.scenario)
    results["threads"] = info["torch_threads"]
    results["n_slides"] = len(slides)
    results = results.reindex(columns=COLUMNS)
    with cli.atomic_path(args.out) as tmp:
        results.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    if details:
        per_type = args.out.with_suffix(".per_type.tsv")
        with cli.atomic_path(per_type) as tmp:
            pd.DataFrame(details).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    text = report(args, info, overlap_lines, results, command)
    print(text)
    if args.markdown is not None:
        with cli.atomic_path(args.markdown) as tmp:
            tmp.write_text(text)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    cli.run(main)
