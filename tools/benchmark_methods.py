#!/usr/bin/env python3
"""Benchmark every mapping method and the consensus rules on silver-standard slides of real cells.

For each reference (``--scenario``) and seed (``--seeds``), :func:`testdata.silver.make_silver`
splits the labelled reference per type into spot cells and reference cells and sums the spot
cells into a grid of pseudo-spots with smooth, region-wise compositions (Spotless-style); only
the reference cells are given to the methods. Scenarios:

``lymph_node``
    ``<data-dir>/reference.h5ad``: 330 real human lymph node cells, 11 types x 30.
``generated``
    ``assets/test_data/reference.h5ad``: the project's generated reference (``testdata.synth``),
    8 types x 120 cells, mitochondrial genes removed first.
``pbmc68k``
    scanpy's bundled ``datasets/10x_pbmc68k_reduced.h5ad`` (installed with scanpy from PyPI): 700
    real human blood cells of 10x Genomics' 68k PBMC data, the 765 genes it keeps, labels
    ``obs['bulk_labels']`` (each cell's best-correlated FACS-sorted population). Its ``raw`` holds
    log1p of counts normalised to 10,000 per cell; the integer counts are recovered exactly
    (:func:`testdata.silver.counts_from_log_normalised`).

Types with fewer than ``--min-type-cells`` cells are dropped first (pbmc68k: CD34+, 13 cells, and
CD4+/CD45RA+/CD25- naive T, 8 cells), so that half of each type is at least RCTD's ``cell_min``.

Methods, through the package functions the pipeline's scripts call: cell2location
(``signatures.estimate_signatures`` regression on the reference cells after
``reference.permissive_gene_filter``, then ``c2l.run``; 5% quantile abundance
normalised per spot), Tangram (``tangram_map.run``, cells mode), and RCTD, FlashDeconv
and NNLS (``spatialmap.methods.rctd.run`` / ``flashdeconv.run`` / ``nnls.run``). Every consensus rule of
:mod:`spatialmap.consensus.rules` is then formed from all methods that ran.

Metrics per method and slide against the true proportions: mean over spots of the per-spot
Pearson r across types (``spot_r``), RMSE over all spots and types, mean per-spot Jensen-Shannon
divergence (base 2), median over types of the per-type Pearson r across spots (``type_r``), and
wall time of the call (``time.perf_counter``; consensus times exclude the methods). Writes
``<out>.tsv`` (one row per scenario, seed and method) and ``<out>.md`` (markdown tables of the
means over seeds).

Out of sample (``--choose CHOOSE.tsv --report REPORT.tsv``, no method is run): the consensus rule
and temperature are chosen on the rows of one run (:func:`choose_rule`: the lowest mean rank
over the choose slides and the four metrics) and that choice, with the pipeline's default and every
other rule, is reported on the rows of another run (new seeds, another reference), metric by
metric against every single method (:func:`compare`), losses listed. Writes ``<out>.selection.tsv``,
``<out>.comparison.tsv`` and ``<out>.md``.

Example (small)::

    tools/benchmark_methods.py --scenario lymph_node --seeds 0 --methods nnls,flashdeconv --out /tmp/bench
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from spatialmap import keys
from spatialmap.consensus import agreement
from spatialmap.consensus import rules as consensus
from spatialmap.methods import registry
from testdata import silver

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("spatialmap.benchmark_methods")

SCENARIOS = ("lymph_node", "generated", "pbmc68k")
METHODS = registry.NAMES
LABEL_KEY = "cell_type"
COLUMNS = [
    "scenario",
    "seed",
    "method",
    "n_spots",
    "n_genes",
    "n_types",
    "spot_r",
    "rmse",
    "jsd",
    "type_r",
    "wall_s",
    "notes",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--scenario", default="lymph_node,generated", help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data" / "lymph_node",
        help="folder holding the lymph node reference.h5ad",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to run")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds: one silver slide (and fit) per seed")
    parser.add_argument("--grid", type=int, default=20, help="pseudo-spots per side of the grid")
    parser.add_argument("--regions", type=int, default=5, help="regions of the silver slide")
    parser.add_argument("--min-cells", type=int, default=2, help="fewest cells per pseudo-spot")
    parser.add_argument("--max-cells", type=int, default=15, help="most cells per pseudo-spot")
    parser.add_argument(
        "--spot-fraction", type=float, default=0.5, help="share of each type's cells held out for the spots"
    )
    parser.add_argument(
        "--min-type-cells",
        type=int,
        default=15,
        help="drop cell types with fewer cells (half of each type goes to the spots)",
    )
    parser.add_argument(
        "--top-genes",
        type=int,
        default=2000,
        help="keep the reference's most-counted genes (a panel of the size of a typical Visium subset); 0: all",
    )
    parser.add_argument(
        "--capture",
        type=float,
        default=0.2,
        help="binomial thinning of summed counts (spot capture relative to single cells)",
    )
    parser.add_argument("--c2l-epochs", type=int, default=3000, help="cell2location training epochs")
    parser.add_argument("--ref-epochs", type=int, default=250, help="regression (signature) epochs")
    parser.add_argument("--tangram-epochs", type=int, default=1000, help="Tangram epochs")
    parser.add_argument(
        "--rctd-q-matrix",
        type=Path,
        default=None,
        help="RCTD likelihood table (.npz from rctd.compute_rctd_q_matrix); computed small when absent",
    )
    parser.add_argument("--rctd-cell-min", type=int, default=5, help="RCTD: fewest reference cells per type")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    parser.add_argument(
        "--temperatures",
        type=lambda t: [float(v) for v in t.split(",")],
        default=[0.02, 0.01, 0.005],
        help="temperatures of the reconstruction-weighted rules to compare",
    )
    parser.add_argument(
        "--from-tables",
        action="store_true",
        help="do not run the methods: reuse the tables and rows of an earlier run with the same --out "
        "(<out>.tables/, <out>.tsv) and recompute only the consensus rules",
    )
    parser.add_argument(
        "--rows",
        default=None,
        help="--from-tables: comma-separated TSVs of earlier runs whose single-method rows are kept "
        "(default <out>.tsv); e.g. runs of different methods whose tables were copied into <out>.tables/",
    )
    parser.add_argument(
        "--choose",
        type=Path,
        default=None,
        help="out of sample: rows (<out>.tsv of a run) on which the consensus rule is chosen; needs --report",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="out of sample: rows of other seeds / references on which the choice is reported",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmark_methods"), help="output prefix (.tsv, .md)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- data


def load_pbmc68k():
    """scanpy's bundled reduced 68k PBMC cells with their integer counts recovered from ``raw``."""
    import anndata as ad
    import scanpy

    path = Path(scanpy.__file__).parent / "datasets" / "10x_pbmc68k_reduced.h5ad"
    full = ad.read_h5ad(path)
    counts = silver.counts_from_log_normalised(full.raw.X)
    obs = pd.DataFrame({LABEL_KEY: full.obs["bulk_labels"].astype(str).to_numpy()}, index=full.obs_names.copy())
    return ad.AnnData(X=counts.astype(np.float32), obs=obs, var=pd.DataFrame(index=full.raw.var_names.copy())), path


def load_reference(scenario: str, data_dir: Path, top_genes: int = 0, min_type_cells: int = 0):
    """The labelled reference of a scenario, mitochondrial genes removed, its ``top_genes`` most-counted genes."""
    import anndata as ad

    from spatialmap.reference import prepare as reference

    if scenario == "pbmc68k":
        ref, path = load_pbmc68k()
    else:
        path = (
            data_dir / "reference.h5ad"
            if scenario == "lymph_node"
            else REPO / "assets" / "test_data" / "reference.h5ad"
        )
        ref = ad.read_h5ad(path)
    ref, removed = reference.remove_mt_genes(ref)
    sizes = ref.obs[LABEL_KEY].astype(str).value_counts()
    small = sorted(sizes.index[sizes < min_type_cells])
    if small:
        log.info(
            "%s: dropping cell types with fewer than %d cells: %s",
            scenario,
            min_type_cells,
            ", ".join(f"{t} ({sizes[t]})" for t in small),
        )
        ref = ref[~ref.obs[LABEL_KEY].astype(str).isin(small)].copy()
    # labels as the pipeline's reference preparation leaves them (string categories, sorted): the
    # regression signatures mislabel types when the categories are not in sorted order
    ref.obs[LABEL_KEY] = pd.Categorical(ref.obs[LABEL_KEY].astype(str))
    if 0 < top_genes < ref.n_vars:
        totals = np.asarray(ref.X.sum(axis=0)).ravel()
        ref = ref[:, np.sort(np.argsort(-totals, kind="stable")[:top_genes])].copy()
    log.info(
        "%s: reference %s, %d cells x %d genes (%d MT genes removed)",
        scenario,
        path,
        ref.n_obs,
        ref.n_vars,
        len(removed),
    )
    return ref


def metrics(estimate: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Per-spot Pearson, RMSE, JSD and per-type Pearson of proportions against the truth."""
    est = agreement.to_proportions(estimate, "estimate")
    tru = truth.loc[est.index, est.columns].to_numpy()
    values = est.to_numpy()
    spot_r = [agreement.pearson(a, b) for a, b in zip(values, tru)]
    type_r = [agreement.pearson(values[:, k], tru[:, k]) for k in range(values.shape[1])]
    return {
        "n_spots": len(est),
        "n_types": est.shape[1],
        "spot_r": float(np.nanmean(spot_r)),
        "rmse": float(np.sqrt(((values - tru) ** 2).mean())),
        "jsd": float(consensus.jsd(values, tru).mean()),
        "type_r": float(np.nanmedian(type_r)),
    }


# --------------------------------------------------------------------------- methods


def run_cell2location(slide, ref, args, seed: int) -> tuple[pd.DataFrame, dict]:
    """Regression signatures on the reference cells, then cell2location; q05 abundance."""
    from spatialmap.methods import cell2location as c2l
    from spatialmap.reference import prepare as reference
    from spatialmap.reference import signatures

    filtered = reference.permissive_gene_filter(ref)
    sig = signatures.estimate_signatures(
        filtered,
        "regression",
        LABEL_KEY,
        max_epochs=args.ref_epochs,
        seed=seed,
        accelerator="cpu",
        threads=args.threads,
    )
    mean_cells = (args.min_cells + args.max_cells) / 2
    result = c2l.run(
        {"silver": slide},
        sig.signatures,
        n_cells_per_location=mean_cells,
        max_epochs=args.c2l_epochs,
        seed=seed,
        accelerator="cpu",
        threads=args.threads,
        num_samples=200,
    )
    q05 = result.slides["silver"].obsm[keys.C2L_Q05]
    q05 = pd.DataFrame(np.asarray(q05), index=slide.obs_names, columns=getattr(q05, "columns", sig.signatures.columns))
    return q05, {
        "n_genes": len(result.genes_used),
        "notes": f"regression {args.ref_epochs} epochs; c2l {args.c2l_epochs} epochs, N_cells {mean_cells}",
    }


def run_tangram(slide, ref, args, seed: int) -> tuple[pd.DataFrame, dict]:
    """Tangram, cells mode, the pipeline's defaults but the epochs."""
    from spatialmap.methods import tangram as tangram_map

    result = tangram_map.run(
        slide,
        ref,
        LABEL_KEY,
        sample="silver",
        num_epochs=args.tangram_epochs,
        seed=seed,
        accelerator="cpu",
        threads=args.threads,
    )
    return result.proportions, {
        "n_genes": result.qc.get("n_training_genes"),
        "notes": f"cells mode, {args.tangram_epochs} epochs",
    }


def run_deconv(method: str, slide, ref, args, seed: int) -> tuple[pd.DataFrame, dict]:
    """RCTD, FlashDeconv or NNLS through their spatialmap.methods module."""
    import importlib

    kwargs = {"seed": seed, "sample": "silver"}
    if method == "rctd":
        kwargs.update(
            q_matrix_path=args.rctd_q_matrix, cell_min=args.rctd_cell_min, accelerator="cpu", threads=args.threads
        )
    result = importlib.import_module(f"spatialmap.methods.{method}").run(slide, ref, LABEL_KEY, **kwargs)
    qc = result.qc
    n_genes = qc.get("n_genes_used", qc.get("genes_used"))
    notes = f"{qc.get('mode', '')} mode" if method == "rctd" else ""
    return result.proportions, {"n_genes": n_genes, "notes": notes}


def run_method(method: str, slide, ref, args, seed: int):
    """Run one method; ``(proportions or None, info)``; a failure is recorded, not raised."""
    t0 = time.perf_counter()
    try:
        if method == "cell2location":
            table, info = run_cell2location(slide, ref, args, seed)
        elif method == "tangram":
            table, info = run_tangram(slide, ref, args, seed)
        else:
            table, info = run_deconv(method, slide, ref, args, seed)
    except Exception as err:  # noqa: BLE001 - a benchmark row records the failure
        log.exception("%s failed", method)
        return None, {"wall_s": time.perf_counter() - t0, "notes": f"failed: {type(err).__name__}: {err}"[:200]}
    info["wall_s"] = time.perf_counter() - t0
    return table, info


# --------------------------------------------------------------------------- consensus


def consensus_rows(tables: dict, sil, scenario: str, seed: int, args) -> list[dict]:
    """Every consensus rule over all methods, and over all but each single method."""
    from spatialmap.reference import signatures

    sig = signatures.cluster_means(sil.reference, LABEL_KEY)
    rows = []
    for rule in consensus.RULES:
        for temperature in args.temperatures if rule in consensus.NEEDS_COUNTS and rule != "drop_worst" else [None]:
            t0 = time.perf_counter()
            result = consensus.slide_consensus(
                tables,
                "silver",
                rule,
                slide=sil.slide,
                signatures=sig,
                temperature=temperature or consensus.DEFAULT_TEMPERATURE,
            )
            weights = ", ".join(f"{m} {w:.2f}" for m, w in result.weights.items())
            name = f"consensus: {rule}" + (f" (T {temperature:g})" if temperature else "")
            rows.append(
                {
                    "scenario": scenario,
                    "seed": seed,
                    "method": name,
                    **metrics(result.proportions, sil.proportions),
                    "wall_s": time.perf_counter() - t0,
                    "notes": f"weights {weights}",
                }
            )
    if len(tables) >= 3:
        for left_out in tables:
            subset = {m: t for m, t in tables.items() if m != left_out}
            result = consensus.slide_consensus(subset, "silver", "mean")
            rows.append(
                {
                    "scenario": scenario,
                    "seed": seed,
                    "method": f"consensus: mean without {left_out}",
                    **metrics(result.proportions, sil.proportions),
                    "wall_s": 0.0,
                    "notes": "",
                }
            )
    return rows


# --------------------------------------------------------------------------- main


def run_scenario(scenario: str, seed: int, methods: list[str], args) -> list[dict]:
    """One silver slide: every method, then the consensus rules."""
    ref_all = load_reference(scenario, args.data_dir, args.top_genes, args.min_type_cells)
    sil = silver.make_silver(
        ref_all,
        LABEL_KEY,
        rows=args.grid,
        cols=args.grid,
        n_regions=args.regions,
        min_cells=args.min_cells,
        max_cells=args.max_cells,
        spot_fraction=args.spot_fraction,
        capture=args.capture,
        seed=seed,
    )
    umis = float(np.median(np.asarray(sil.slide.X.sum(axis=1)).ravel()))
    log.info(
        "%s seed %d: %d pseudo-spots, median %.0f UMIs; reference %d cells",
        scenario,
        seed,
        sil.slide.n_obs,
        umis,
        sil.reference.n_obs,
    )
    rows, tables = [], {}
    keep = Path(f"{args.out}.tables") / f"{scenario}_seed{seed}"
    keep.mkdir(parents=True, exist_ok=True)
    sil.proportions.to_csv(keep / "truth_proportions.csv.gz")
    if args.from_tables:
        return reuse_tables(scenario, seed, methods, sil, keep, args)
    for method in methods:
        table, info = run_method(method, sil.slide.copy(), sil.reference.copy(), args, seed)
        row = {"scenario": scenario, "seed": seed, "method": method, **info}
        if table is not None:
            tables[method] = table
            table.to_csv(keep / (agreement.table_suffix(method).lstrip(".") + ".gz"))
            row.update(metrics(table, sil.proportions))
        rows.append(row)
        log.info(
            "%s seed %d: %s", scenario, seed, {k: row.get(k) for k in ("method", "spot_r", "rmse", "jsd", "wall_s")}
        )
    if len(tables) >= 2:
        rows.extend(consensus_rows(tables, sil, scenario, seed, args))
    for row in rows:
        row["notes"] = f"{row.get('notes') or ''}; median {umis:.0f} UMIs/spot".lstrip("; ")
    return rows


def reuse_tables(scenario: str, seed: int, methods: list[str], sil, keep: Path, args) -> list[dict]:
    """The single-method rows of an earlier run and its saved tables; the consensus rows recomputed."""
    earlier = args.earlier
    earlier = earlier[(earlier["scenario"] == scenario) & (earlier["seed"] == seed) & earlier["method"].isin(methods)]
    tables = {}
    for method in methods:
        name = agreement.table_suffix(method).lstrip(".")
        for path in (keep / f"{name}.gz", keep / name):  # gzipped since 2026-12-03
            if path.is_file():
                tables[method] = pd.read_csv(path, index_col=0)
                break
    rows = earlier.to_dict("records")
    if len(tables) >= 2:
        rows.extend(consensus_rows(tables, sil, scenario, seed, args))
    return rows


# --------------------------------------------------------------------------- out of sample

METRICS = {"spot_r": True, "rmse": False, "jsd": False, "type_r": True}  # metric: higher is better
METRIC_NAMES = {"spot_r": "per-spot r", "rmse": "RMSE", "jsd": "JSD", "type_r": "per-type r (median)"}


def candidate_rules(frame: pd.DataFrame) -> list[str]:
    """The consensus rows a rule can be chosen from (not the leave-one-out means)."""
    names = frame["method"].drop_duplicates()
    return [m for m in names if m.startswith("consensus: ") and " without " not in m]


def single_methods(frame: pd.DataFrame) -> list[str]:
    """The single methods of a run, in their row order."""
    return [m for m in frame["method"].drop_duplicates() if not m.startswith("consensus")]


def choose_rule(choose: pd.DataFrame) -> pd.DataFrame:
    """Rank every consensus candidate on every slide and metric of the choose rows; best first.

    On each slide (scenario and seed) and metric the candidates are ranked (1 = best, ties share
    the mean rank); a candidate's score is its mean rank over all slides and metrics (``mean_rank``),
    ties broken by the higher mean per-spot r. Columns: ``mean_rank``, each metric's mean over the
    slides, and ``beats_best_single``: on how many of the slide x metric cells the candidate is
    at least as good as the best single method of that slide and metric.
    """
    candidates = candidate_rules(choose)
    singles = single_methods(choose)
    rows = {c: {"ranks": [], "beats": 0, "cells": 0} for c in candidates}
    for _, slide in choose.groupby(["scenario", "seed"], sort=False):
        cand = slide[slide["method"].isin(candidates)].set_index("method")
        single = slide[slide["method"].isin(singles)].set_index("method")
        for metric, higher in METRICS.items():
            ranks = cand[metric].rank(ascending=not higher, method="average")
            best = single[metric].max() if higher else single[metric].min()
            for c in candidates:
                if c not in cand.index or not np.isfinite(cand.at[c, metric]):
                    continue
                rows[c]["ranks"].append(ranks[c])
                rows[c]["cells"] += 1
                value = cand.at[c, metric]
                rows[c]["beats"] += int(value >= best if higher else value <= best)
    means = choose[choose["method"].isin(candidates)].groupby("method")[list(METRICS)].mean()
    table = pd.DataFrame(
        {
            "mean_rank": {c: float(np.mean(r["ranks"])) for c, r in rows.items()},
            "beats_best_single": {c: f"{r['beats']}/{r['cells']}" for c, r in rows.items()},
        }
    )
    table = table.join(means)
    table = table.sort_values(["mean_rank", "spot_r"], ascending=[True, False])
    table.index.name = "method"
    return table


def compare(report: pd.DataFrame, rule: str) -> pd.DataFrame:
    """``rule`` against every single method on every report slide and metric.

    One row per scenario, seed, metric and single method: both values, ``difference`` (rule minus
    method, signed so that > 0 is better for the rule), ``outcome`` (win / tie / loss; tie: equal
    to 4 decimals) and the rule's rank among the single methods and itself (1 = best; values equal to 4
    decimals share the better rank).
    """
    singles = single_methods(report)
    out = []
    for (scenario, seed), slide in report.groupby(["scenario", "seed"], sort=False):
        by = slide.set_index("method")
        if rule not in by.index:
            continue
        present = [m for m in singles if m in by.index and np.isfinite(by.at[m, "spot_r"])]
        for metric, higher in METRICS.items():
            values = by.loc[present + [rule], metric].round(4)  # equal to 4 decimals: a tie, as below
            rank = int(values.rank(ascending=not higher, method="min")[rule])
            for method in present:
                diff = by.at[rule, metric] - by.at[method, metric]
                diff = diff if higher else -diff
                outcome = "tie" if round(abs(diff), 4) == 0 else ("win" if diff > 0 else "loss")
                out.append(
                    {
                        "scenario": scenario,
                        "seed": seed,
                        "metric": metric,
                        "rule": rule,
                        "method": method,
                        "rule_value": by.at[rule, metric],
                        "method_value": by.at[method, metric],
                        "difference": diff,
                        "outcome": outcome,
                        "rule_rank": rank,
                        "n_ranked": len(present) + 1,
                    }
                )
    return pd.DataFrame(out)


def out_of_sample(choose: pd.DataFrame, report: pd.DataFrame, default: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Choose the rule on ``choose``, report it (and ``default``) on ``report``; tables and markdown."""
    selection = choose_rule(choose)
    chosen = selection.index[0]
    report_selection = choose_rule(report)
    rules = list(dict.fromkeys([chosen, default]))
    comparison = pd.concat([compare(report, r) for r in rules], ignore_index=True)
    slides = sorted({(s, int(d)) for s, d in zip(choose["scenario"], choose["seed"])})
    lines = [
        "### Choice on the choose set",
        "",
        f"Choose slides: {', '.join(f'{s} seed {d}' for s, d in slides)}. Candidates ranked on every slide and "
        "metric (1 = best); the lowest mean rank is chosen.",
        "",
        "| candidate | mean rank | per-spot r | RMSE | JSD | per-type r | >= best single (slide x metric) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in selection.iterrows():
        lines.append(
            f"| {name} | {r.mean_rank:.2f} | {r.spot_r:.3f} | {r.rmse:.4f} | {r.jsd:.4f} | {r.type_r:.3f} "
            f"| {r.beats_best_single} |"
        )
    lines += [
        "",
        f"**Chosen: {chosen}.** Pipeline default: {default} (rank "
        f"{list(selection.index).index(default) + 1 if default in selection.index else 'n/a'} of {len(selection)}).",
        "",
    ]
    lines += [
        "### Report set, means over seeds: the best single method against the rules",
        "",
        "| reference | metric | best single method | " + " | ".join(rules) + " |",
        "|---|---|---|" + "---|" * len(rules),
    ]
    means = report.groupby(["scenario", "method"], sort=False)[list(METRICS)].mean()
    singles = single_methods(report)
    for scenario in report["scenario"].drop_duplicates():
        part = means.loc[scenario]
        present = [m for m in singles if m in part.index and np.isfinite(part.at[m, "spot_r"])]
        for metric, higher in METRICS.items():
            best = part.loc[present, metric].idxmax() if higher else part.loc[present, metric].idxmin()
            cells = []
            for rule in rules:
                value, ref = round(part.at[rule, metric], 4), round(part.at[best, metric], 4)
                worse = value < ref if higher else value > ref
                cells.append(f"{value:.4f}" + (" (worse)" if worse else ""))
            lines.append(
                f"| {scenario} | {METRIC_NAMES[metric]} | {best} {part.at[best, metric]:.4f} | "
                + " | ".join(cells)
                + " |"
            )
    lines += ["", "### Report set: the choice against every single method", ""]
    for rule in rules:
        part = comparison[comparison["rule"] == rule]
        lines += [
            f"#### {rule}",
            "",
            "| reference | seed | metric | rank (of methods + rule) | wins | ties | losses | lost to |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (scenario, seed, metric), g in part.groupby(["scenario", "seed", "metric"], sort=False):
            lost = g[g["outcome"] == "loss"]
            lost_to = (
                ", ".join(
                    f"{m} ({a:.4g} vs {b:.4g})"
                    for m, a, b in zip(lost["method"], lost["rule_value"], lost["method_value"])
                )
                or "-"
            )
            lines.append(
                f"| {scenario} | {seed} | {METRIC_NAMES[metric]} | {g['rule_rank'].iloc[0]} of "
                f"{g['n_ranked'].iloc[0]} | {(g['outcome'] == 'win').sum()} | {(g['outcome'] == 'tie').sum()} "
                f"| {len(lost)} | {lost_to} |"
            )
        n = part.groupby(["scenario", "seed", "metric"])["rule_rank"].first()
        lines += [
            "",
            f"{rule}: best of the methods on {(n == 1).sum()} of {len(n)} slide x metric cells; "
            f"{(part['outcome'] == 'loss').sum()} losses in {len(part)} pairwise comparisons.",
            "",
        ]
    lines += [
        "### Report set: the same ranking as on the choose set (what would have been chosen here)",
        "",
        "| candidate | mean rank | per-spot r | RMSE | JSD | per-type r | >= best single (slide x metric) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report_selection.iterrows():
        lines.append(
            f"| {name} | {r.mean_rank:.2f} | {r.spot_r:.3f} | {r.rmse:.4f} | {r.jsd:.4f} | {r.type_r:.3f} "
            f"| {r.beats_best_single} |"
        )
    selection = selection.reset_index().assign(set="choose")
    selection = pd.concat([selection, report_selection.reset_index().assign(set="report")], ignore_index=True)
    return selection, comparison, "\n".join(lines) + "\n"


def per_seed_markdown(frame: pd.DataFrame) -> str:
    """Every row of every slide, one table per scenario and seed."""
    lines = []
    for (scenario, seed), part in frame.groupby(["scenario", "seed"], sort=False):
        lines += [
            f"#### {scenario}, seed {seed}",
            "",
            "| method | per-spot r | RMSE | JSD | per-type r (median) | wall s |",
            "|---|---|---|---|---|---|",
        ]
        for _, r in part.iterrows():
            lines.append(
                f"| {r.method} | {r.spot_r:.3f} | {r.rmse:.4f} | {r.jsd:.4f} | {r.type_r:.3f} | {r.wall_s:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def markdown(frame: pd.DataFrame) -> str:
    """Means over seeds per scenario and method, as markdown tables."""
    lines = []
    for scenario, part in frame.groupby("scenario", sort=False):
        grouped = part.groupby("method", sort=False)
        table = grouped[["spot_r", "rmse", "jsd", "type_r", "wall_s"]].mean()
        table["seeds"] = grouped["seed"].nunique()
        lines += [
            f"### {scenario}",
            "",
            "| method | per-spot r | RMSE | JSD | per-type r (median) | wall s | seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, r in table.iterrows():
            lines.append(
                f"| {method} | {r.spot_r:.3f} | {r.rmse:.4f} | {r.jsd:.4f} | {r.type_r:.3f} | {r.wall_s:.1f} | {int(r.seeds)} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every scenario and seed; write the TSV and the markdown tables."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.choose is not None or args.report is not None:
        if args.choose is None or args.report is None:
            raise SystemExit("--choose and --report go together")
        choose, report = (pd.read_csv(p, sep="\t") for p in (args.choose, args.report))
        default = f"consensus: {consensus.DEFAULT_RULE} (T {consensus.DEFAULT_TEMPERATURE:g})"
        selection, comparison, text = out_of_sample(choose, report, default)
        selection.to_csv(f"{args.out}.selection.tsv", sep="\t", index=False, float_format="%.5g")
        comparison.to_csv(f"{args.out}.comparison.tsv", sep="\t", index=False, float_format="%.5g")
        text += "\n### Report set, means over seeds\n\n" + markdown(report)
        text += "\n### Report set, every slide\n\n" + per_seed_markdown(report)
        Path(f"{args.out}.md").write_text(text)
        print(text)
        return
    import torch

    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(unknown)}")
    if "rctd" in methods and args.rctd_q_matrix is None and not args.from_tables:
        from spatialmap.methods import rctd

        args.rctd_q_matrix = Path(f"{args.out}.rctd_q.npz")
        if not args.rctd_q_matrix.exists():
            rctd.compute_rctd_q_matrix(args.rctd_q_matrix, k_max=200, sigma_step=8)
    if args.from_tables:
        sources = [s for s in (args.rows or f"{args.out}.tsv").split(",") if s]
        earlier = pd.concat([pd.read_csv(s, sep="\t") for s in sources], ignore_index=True)
        args.earlier = earlier[~earlier["method"].str.startswith("consensus")]
    else:
        args.earlier = None
    rows = []
    for scenario in [s.strip() for s in args.scenario.split(",") if s.strip()]:
        for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
            rows.extend(run_scenario(scenario, seed, methods, args))
            frame = pd.DataFrame(rows).reindex(columns=COLUMNS)
            frame.to_csv(f"{args.out}.tsv", sep="\t", index=False, float_format="%.5g")
    header = f"Python {platform.python_version()}, {platform.machine()}, threads {args.threads}\n\n"
    Path(f"{args.out}.md").write_text(header + markdown(frame))
    print(header + markdown(frame))


if __name__ == "__main__":
    main()
