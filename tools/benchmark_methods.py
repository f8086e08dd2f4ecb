#!/usr/bin/env python3
"""Benchmark every mapping method and the consensus rules on silver-standard slides of real cells.

For each reference (``--scenario``) and seed (``--seeds``), :func:`spatialmap.silver.make_silver`
splits the labelled reference per type into spot cells and reference cells and sums the spot
cells into a grid of pseudo-spots with smooth, region-wise compositions (Spotless-style); only
the reference cells are given to the methods. Scenarios:

``lymph_node``
    ``<data-dir>/reference.h5ad``: 330 real human lymph node cells, 11 types x 30.
``generated``
    ``assets/test_data/reference.h5ad``: the project's generated reference (``spatialmap.synth``),
    8 types x 120 cells, mitochondrial genes removed first.

Methods, through the package functions the pipeline's scripts call: cell2location
(``signatures.estimate_signatures`` regression on the reference cells after
``reference.permissive_gene_filter``, then ``c2l.map_cell2location``; 5% quantile abundance
normalised per spot), Tangram (``tangram_map.run_tangram``, cells mode), and RCTD, FlashDeconv
and NNLS (``deconv.run_rctd`` / ``run_flashdeconv`` / ``run_nnls``). Every consensus rule of
:mod:`spatialmap.consensus` is then formed from all methods that ran.

Metrics per method and slide against the true proportions: mean over spots of the per-spot
Pearson r across types (``spot_r``), RMSE over all spots and types, mean per-spot Jensen-Shannon
divergence (base 2), median over types of the per-type Pearson r across spots (``type_r``), and
wall time of the call (``time.perf_counter``; consensus times exclude the methods). Writes
``<out>.tsv`` (one row per scenario, seed and method) and ``<out>.md`` (markdown tables of the
means over seeds).

Example (small)::

    tools/benchmark_methods.py --scenario lymph_node --seeds 0 --methods nnls,flashdeconv --out /tmp/bench
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "bin") not in sys.path:
    sys.path.insert(0, str(REPO / "bin"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from spatialmap import agreement, consensus, keys, silver  # noqa: E402

log = logging.getLogger("spatialmap.benchmark_methods")

SCENARIOS = ("lymph_node", "generated")
METHODS = ("cell2location", "tangram", "rctd", "flashdeconv", "nnls")
LABEL_KEY = "cell_type"
COLUMNS = ["scenario", "seed", "method", "n_spots", "n_genes", "n_types", "spot_r", "rmse", "jsd", "type_r",
           "wall_s", "notes"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scenario", default="lymph_node,generated", help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "lymph_node",
                        help="folder holding the lymph node reference.h5ad")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to run")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds: one silver slide (and fit) per seed")
    parser.add_argument("--grid", type=int, default=20, help="pseudo-spots per side of the grid")
    parser.add_argument("--regions", type=int, default=5, help="regions of the silver slide")
    parser.add_argument("--min-cells", type=int, default=2, help="fewest cells per pseudo-spot")
    parser.add_argument("--max-cells", type=int, default=15, help="most cells per pseudo-spot")
    parser.add_argument("--spot-fraction", type=float, default=0.5, help="share of each type's cells held out for the spots")
    parser.add_argument("--top-genes", type=int, default=2000,
                        help="keep the reference's most-counted genes (a panel of the size of a typical Visium subset); 0: all")
    parser.add_argument("--capture", type=float, default=0.2,
                        help="binomial thinning of summed counts (spot capture relative to single cells)")
    parser.add_argument("--c2l-epochs", type=int, default=3000, help="cell2location training epochs")
    parser.add_argument("--ref-epochs", type=int, default=250, help="regression (signature) epochs")
    parser.add_argument("--tangram-epochs", type=int, default=1000, help="Tangram epochs")
    parser.add_argument("--rctd-q-matrix", type=Path, default=None,
                        help="RCTD likelihood table (.npz from deconv.compute_rctd_q_matrix); computed small when absent")
    parser.add_argument("--rctd-cell-min", type=int, default=5, help="RCTD: fewest reference cells per type")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    parser.add_argument("--temperatures", type=lambda t: [float(v) for v in t.split(",")], default=[0.02, 0.01, 0.005],
                        help="temperatures of the reconstruction-weighted rules to compare")
    parser.add_argument("--from-tables", action="store_true",
                        help="do not run the methods: reuse the tables and rows of an earlier run with the same --out "
                             "(<out>.tables/, <out>.tsv) and recompute only the consensus rules")
    parser.add_argument("--out", type=Path, default=Path("benchmark_methods"), help="output prefix (.tsv, .md)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- data


def load_reference(scenario: str, data_dir: Path, top_genes: int = 0):
    """The labelled reference of a scenario, mitochondrial genes removed, its ``top_genes`` most-counted genes."""
    import anndata as ad

    from spatialmap import reference

    path = data_dir / "reference.h5ad" if scenario == "lymph_node" else REPO / "assets" / "test_data" / "reference.h5ad"
    ref = ad.read_h5ad(path)
    ref, removed = reference.remove_mt_genes(ref)
    # labels as the pipeline's reference preparation leaves them (string categories, sorted): the
    # regression signatures mislabel types when the categories are not in sorted order
    ref.obs[LABEL_KEY] = pd.Categorical(ref.obs[LABEL_KEY].astype(str))
    if 0 < top_genes < ref.n_vars:
        totals = np.asarray(ref.X.sum(axis=0)).ravel()
        ref = ref[:, np.sort(np.argsort(-totals, kind="stable")[:top_genes])].copy()
    log.info("%s: reference %s, %d cells x %d genes (%d MT genes removed)", scenario, path, ref.n_obs, ref.n_vars, len(removed))
    return ref


def metrics(estimate: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Per-spot Pearson, RMSE, JSD and per-type Pearson of proportions against the truth."""
    est = agreement.to_proportions(estimate, "estimate")
    tru = truth.loc[est.index, est.columns].to_numpy()
    values = est.to_numpy()
    spot_r = [agreement.pearson(a, b) for a, b in zip(values, tru)]
    type_r = [agreement.pearson(values[:, k], tru[:, k]) for k in range(values.shape[1])]
    return {"n_spots": len(est), "n_types": est.shape[1], "spot_r": float(np.nanmean(spot_r)),
            "rmse": float(np.sqrt(((values - tru) ** 2).mean())),
            "jsd": float(consensus.jsd(values, tru).mean()), "type_r": float(np.nanmedian(type_r))}


# --------------------------------------------------------------------------- methods


def run_cell2location(slide, ref, args, seed: int) -> tuple[pd.DataFrame, dict]:
    """Regression signatures on the reference cells, then cell2location; q05 abundance."""
    from spatialmap import c2l, reference, signatures

    filtered = reference.permissive_gene_filter(ref)
    sig = signatures.estimate_signatures(filtered, "regression", LABEL_KEY, max_epochs=args.ref_epochs,
                                         seed=seed, accelerator="cpu", threads=args.threads)
    mean_cells = (args.min_cells + args.max_cells) / 2
    result = c2l.map_cell2location({"silver": slide}, sig.signatures, n_cells_per_location=mean_cells,
                                   max_epochs=args.c2l_epochs, seed=seed, accelerator="cpu",
                                   threads=args.threads, num_samples=200)
    q05 = result.slides["silver"].obsm[keys.C2L_Q05]
    q05 = pd.DataFrame(np.asarray(q05), index=slide.obs_names,
                       columns=getattr(q05, "columns", sig.signatures.columns))
    return q05, {"n_genes": len(result.genes_used),
                 "notes": f"regression {args.ref_epochs} epochs; c2l {args.c2l_epochs} epochs, N_cells {mean_cells}"}


def run_tangram(slide, ref, args, seed: int) -> tuple[pd.DataFrame, dict]:
    """Tangram, cells mode, the pipeline's defaults but the epochs."""
    from spatialmap import tangram_map

    result = tangram_map.run_tangram(slide, ref, LABEL_KEY, sample="silver", num_epochs=args.tangram_epochs,
                                     seed=seed, accelerator="cpu", threads=args.threads)
    return result.proportions, {"n_genes": result.qc.get("n_training_genes"), "notes": f"cells mode, {args.tangram_epochs} epochs"}


def run_deconv(method: str, slide, ref, args, seed: int) -> tuple[pd.DataFrame, dict]:
    """RCTD, FlashDeconv or NNLS through spatialmap.deconv."""
    from spatialmap import deconv

    kwargs = {"seed": seed, "sample": "silver"}
    if method == "rctd":
        kwargs.update(q_matrix_path=args.rctd_q_matrix, cell_min=args.rctd_cell_min, accelerator="cpu",
                      threads=args.threads)
    result = getattr(deconv, f"run_{method}")(slide, ref, LABEL_KEY, **kwargs)
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
    from spatialmap import signatures

    sig = signatures.cluster_means(sil.reference, LABEL_KEY)
    rows = []
    for rule in consensus.RULES:
        for temperature in (args.temperatures if rule in consensus.NEEDS_COUNTS and rule != "drop_worst" else [None]):
            t0 = time.perf_counter()
            result = consensus.slide_consensus(tables, "silver", rule, slide=sil.slide, signatures=sig,
                                               temperature=temperature or consensus.DEFAULT_TEMPERATURE)
            weights = ", ".join(f"{m} {w:.2f}" for m, w in result.weights.items())
            name = f"consensus: {rule}" + (f" (T {temperature:g})" if temperature else "")
            rows.append({"scenario": scenario, "seed": seed, "method": name, **metrics(result.proportions, sil.proportions),
                         "wall_s": time.perf_counter() - t0, "notes": f"weights {weights}"})
    if len(tables) >= 3:
        for left_out in tables:
            subset = {m: t for m, t in tables.items() if m != left_out}
            result = consensus.slide_consensus(subset, "silver", "mean")
            rows.append({"scenario": scenario, "seed": seed, "method": f"consensus: mean without {left_out}",
                         **metrics(result.proportions, sil.proportions), "wall_s": 0.0, "notes": ""})
    return rows


# --------------------------------------------------------------------------- main


def run_scenario(scenario: str, seed: int, methods: list[str], args) -> list[dict]:
    """One silver slide: every method, then the consensus rules."""
    ref_all = load_reference(scenario, args.data_dir, args.top_genes)
    sil = silver.make_silver(ref_all, LABEL_KEY, rows=args.grid, cols=args.grid, n_regions=args.regions,
                             min_cells=args.min_cells, max_cells=args.max_cells, spot_fraction=args.spot_fraction,
                             capture=args.capture, seed=seed)
    umis = float(np.median(np.asarray(sil.slide.X.sum(axis=1)).ravel()))
    log.info("%s seed %d: %d pseudo-spots, median %.0f UMIs; reference %d cells", scenario, seed, sil.slide.n_obs, umis, sil.reference.n_obs)
    rows, tables = [], {}
    keep = Path(f"{args.out}.tables") / f"{scenario}_seed{seed}"
    keep.mkdir(parents=True, exist_ok=True)
    sil.proportions.to_csv(keep / "truth_proportions.csv")
    if args.from_tables:
        return reuse_tables(scenario, seed, methods, sil, keep, args)
    for method in methods:
        table, info = run_method(method, sil.slide.copy(), sil.reference.copy(), args, seed)
        row = {"scenario": scenario, "seed": seed, "method": method, **info}
        if table is not None:
            tables[method] = table
            table.to_csv(keep / agreement.TABLE_SUFFIXES[method].lstrip("."))
            row.update(metrics(table, sil.proportions))
        rows.append(row)
        log.info("%s seed %d: %s", scenario, seed, {k: row.get(k) for k in ("method", "spot_r", "rmse", "jsd", "wall_s")})
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
        path = keep / agreement.TABLE_SUFFIXES[method].lstrip(".")
        if path.is_file():
            tables[method] = pd.read_csv(path, index_col=0)
    rows = earlier.to_dict("records")
    if len(tables) >= 2:
        rows.extend(consensus_rows(tables, sil, scenario, seed, args))
    return rows


def markdown(frame: pd.DataFrame) -> str:
    """Means over seeds per scenario and method, as markdown tables."""
    lines = []
    for scenario, part in frame.groupby("scenario", sort=False):
        grouped = part.groupby("method", sort=False)
        table = grouped[["spot_r", "rmse", "jsd", "type_r", "wall_s"]].mean()
        table["seeds"] = grouped["seed"].nunique()
        lines += [f"### {scenario}", "", "| method | per-spot r | RMSE | JSD | per-type r (median) | wall s | seeds |",
                  "|---|---|---|---|---|---|---|"]
        for method, r in table.iterrows():
            lines.append(f"| {method} | {r.spot_r:.3f} | {r.rmse:.4f} | {r.jsd:.4f} | {r.type_r:.3f} | {r.wall_s:.1f} | {int(r.seeds)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every scenario and seed; write the TSV and the markdown tables."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(unknown)}")
    if "rctd" in methods and args.rctd_q_matrix is None and not args.from_tables:
        from spatialmap import deconv

        args.rctd_q_matrix = Path(f"{args.out}.rctd_q.npz")
        if not args.rctd_q_matrix.exists():
            deconv.compute_rctd_q_matrix(args.rctd_q_matrix, k_max=200, sigma_step=8)
    args.earlier = pd.read_csv(f"{args.out}.tsv", sep="\t") if args.from_tables else None
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
