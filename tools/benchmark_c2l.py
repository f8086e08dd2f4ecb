#!/usr/bin/env python3
"""Benchmark cell2location's package default against the pipeline's fast engine, side by side.

Arms (each a fresh fit with the same data, signatures and seed, through
``spatialmap.methods.cell2location.run``):

``package``
    ``engine='package'``: ``Cell2location.train(max_epochs=--package-epochs)`` then
    ``export_posterior(num_samples=1000)``. A Lightning callback reads the guide's w_sf
    parameters every ``--snapshot-every`` epochs (read only, training untouched), so the
    package's own accuracy-vs-epochs curve comes from the same run.
``fast``
    ``engine='fast'``: the lean loop to convergence (``--min-epochs``, ``--window``, ``--tol``),
    closed-form export. With ``--fast-curve`` it trains to ``--fast-max-epochs`` without stopping
    and snapshots every ``--snapshot-every`` epochs, so every (window, tol) can be scored offline
    (``--rules``): the evidence for the default rule.

Scenarios: ``test_data`` (assets/test_data, regression signatures as the test profile makes
them), ``lymph_node`` (the real pair, regression signatures), ``generated`` (synth.generate;
``--grid 73 --n-genes 10000 --n-cell-types 30`` is the 4,000-spot x 10,000-gene x 30-type slide;
``--n-slides 10`` the joint group; per-type mean signatures, to save the regression's time).

Each arm writes ``<outdir>/<scenario>.<arm>.npz`` (w_sf mean, q05, sd; loss history;
snapshots) and ``.json`` (wall and CPU seconds of training and export, epochs, stop reason).
``--report`` reads what is there and prints the markdown table: wall time to the final
posterior, epochs, speed-up, parity of the fast arm against the package arm (Pearson r per cell
type of mean and q05, mean |difference| / mean posterior SD) and accuracy against the truth.
Where ``--package-epochs`` is below 30,000 the package time is also extrapolated to 30,000
epochs from its measured per-epoch cost (set-up + export measured, training scaled), and the
table says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from spatialmap import cli
from spatialmap.io import visium as io
from spatialmap.methods import c2l_train
from spatialmap.methods import cell2location as c2l
from spatialmap.reference import signatures
from testdata import synth

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("spatialmap.benchmark_c2l")
SCENARIOS = ("test_data", "lymph_node", "generated")
CELLS_PER_SPOT = {"test_data": 8.0, "lymph_node": 30.0, "generated": synth.MEAN_CELLS_PER_SPOT}
DEFAULT_EPOCHS = 30000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--scenario", choices=SCENARIOS, required=True)
    p.add_argument("--outdir", type=Path, required=True, help="folder of the per-arm results")
    p.add_argument("--arms", default="package,fast", help="comma-separated: package, fast")
    p.add_argument("--report", action="store_true", help="only print the table from the saved arms")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "lymph_node")
    p.add_argument("--grid", type=int, default=73)
    p.add_argument("--n-genes", type=int, default=10000)
    p.add_argument("--n-cell-types", type=int, default=30)
    p.add_argument("--cells-per-type", type=int, default=60)
    p.add_argument("--n-slides", type=int, default=1)
    p.add_argument("--package-epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--snapshot-every", type=int, default=500)
    p.add_argument("--fast-max-epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--fast-curve", action="store_true", help="fast arm: no early stop, snapshots for --rules")
    p.add_argument("--min-epochs", type=int, default=c2l_train.DEFAULT_MIN_EPOCHS)
    p.add_argument("--window", type=int, default=c2l_train.DEFAULT_WINDOW)
    p.add_argument("--tol", type=float, default=c2l_train.DEFAULT_TOL)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--lr-start",
        type=float,
        default=c2l_train.DEFAULT_LR_START,
        help="fast arm: first learning rate (0: the package's 0.002 throughout)",
    )
    p.add_argument(
        "--tag", default="", help="suffix of the fast arm's result files (several fast settings side by side)"
    )
    p.add_argument(
        "--rules",
        default="500:1e-3,500:3e-4,500:1e-4,1000:3e-4,1000:1e-4,1000:3e-5,2000:1e-4,2000:3e-5",
        help="window:tol pairs scored on a --fast-curve run (min epochs = --min-epochs)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def load(args) -> tuple[dict, pd.DataFrame, dict | None]:
    """(slides after QC, signatures, truth per slide or None); signatures cached in outdir."""
    import benchmark_mapping as bm

    sig_path = args.outdir / f"{args.scenario}.signatures.csv"
    truth = None
    if args.scenario == "test_data":
        root = REPO / "assets" / "test_data"
        sheet = pd.read_csv(root / "samplesheet.csv")
        slides = {
            s: bm.qc_slide(io.read_spaceranger(root / d, s), s)
            for s, d in zip(sheet["sample"], sheet["spaceranger_dir"])
        }
        truth = {s: pd.read_csv(root / "truth" / f"{s}_abundance.csv", index_col=0) for s in slides}
        ref_path, batch_key = root / "reference.h5ad", "batch"
    elif args.scenario == "lymph_node":
        slides = {
            bm.LYMPH_SAMPLE: bm.qc_slide(
                io.read_h5ad_slide(args.data_dir / "spatial.h5ad", bm.LYMPH_SAMPLE), bm.LYMPH_SAMPLE
            )
        }
        ref_path, batch_key = args.data_dir / "reference.h5ad", None
    else:
        work = args.outdir / f"generated_{args.grid}_{args.n_genes}_{args.n_cell_types}_{args.n_slides}"
        paths = synth.generate(
            work,
            seed=args.seed,
            n_slides=args.n_slides,
            grid=args.grid,
            n_genes=args.n_genes,
            n_cell_types=args.n_cell_types,
            cells_per_type=args.cells_per_type,
        )
        slides = {s: bm.qc_slide(io.read_spaceranger(f["outs"], s), s) for s, f in paths["slides"].items()}
        truth = {s: pd.read_csv(paths["truth"][s]["abundance"], index_col=0) for s in slides}
        ref_path, batch_key = paths["reference"], "batch"
        sig_path = work / "signatures_means.csv"
    if truth is not None:
        for t in truth.values():
            t.index = t.index.astype(str)
    if sig_path.is_file():
        sig = pd.read_csv(sig_path, index_col=0)
    else:
        from spatialmap.reference import prepare as reference

        ref = bm.prepare_reference(ref_path, batch_key)
        if args.scenario == "generated":
            sig = signatures.cluster_means(ref, bm.LABEL_KEY)
        else:
            filtered = reference.permissive_gene_filter(ref)
            sig = signatures.estimate_signatures(
                filtered,
                method="regression",
                label_key=bm.LABEL_KEY,
                batch_key=batch_key,
                max_epochs=250,
                batch_size=2500,
                seed=args.seed,
                accelerator="cpu",
                threads=args.threads,
            ).signatures
        sig.to_csv(sig_path)
    return slides, sig, truth


# --------------------------------------------------------------------------------------------
# arms
# --------------------------------------------------------------------------------------------


def _snapshot(guide) -> tuple[np.ndarray, np.ndarray]:
    """w_sf posterior mean and q05 read from the guide (closed form), without touching training."""
    import torch

    with torch.no_grad():
        loc, scale = (t.detach().cpu().double().numpy() for t in guide._get_loc_and_scale("w_sf"))
    return np.exp(loc + scale**2 / 2), np.exp(loc - 1.6448536269514722 * scale)


def run_arm(arm: str, slides, sig, args) -> None:
    """One fit; saves npz + json."""
    import torch

    torch.set_num_threads(args.threads)
    snaps: dict[int, tuple] = {}
    kwargs = dict(
        n_cells_per_location=CELLS_PER_SPOT[args.scenario],
        seed=args.seed,
        accelerator="cpu",
        threads=args.threads,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
    )
    if arm == "package":
        kwargs.update(engine="package", max_epochs=args.package_epochs)
        from lightning.pytorch.callbacks import Callback

        class Snap(Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                e = trainer.current_epoch + 1
                if e % args.snapshot_every == 0:
                    snaps[e] = _snapshot(pl_module.module.guide)

        orig = c2l.quiet_trainer_kwargs

        def with_snap(max_epochs):
            kw = orig(max_epochs)
            kw["callbacks"] = kw["callbacks"] + [Snap()]
            return kw

        c2l.quiet_trainer_kwargs = with_snap
    else:
        tol = 0.0 if args.fast_curve else args.tol
        kwargs.update(
            engine="fast",
            max_epochs=args.fast_max_epochs,
            min_epochs=args.min_epochs,
            convergence_window=args.window,
            convergence_tol=tol,
            lr_start=args.lr_start or None,
        )
        if args.fast_curve:
            _patch_fast_snapshots(snaps, args.snapshot_every)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = c2l.run(slides, sig, **kwargs)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    tr = result.training
    cols = [str(f) for f in result.model.factor_names_]
    obs = result.combined.obs_names.astype(str)
    sm = result.summaries
    name = f"{args.scenario}.{arm}{'_curve' if (arm == 'fast' and args.fast_curve) else ''}{args.tag if arm == 'fast' else ''}"
    np.savez_compressed(
        args.outdir / f"{name}.npz",
        mean=sm["means"]["w_sf"],
        q05=sm["q05"]["w_sf"],
        sd=sm["stds"]["w_sf"],
        history=tr.history,
        obs=np.asarray(obs, dtype=str),
        types=np.asarray(cols, dtype=str),
        snap_epochs=np.asarray(sorted(snaps), dtype=int),
        snap_mean=np.asarray([snaps[e][0] for e in sorted(snaps)]) if snaps else np.zeros(0),
        snap_q05=np.asarray([snaps[e][1] for e in sorted(snaps)]) if snaps else np.zeros(0),
    )
    info = {
        "arm": arm,
        "scenario": args.scenario,
        "wall_s": wall,
        "cpu_s": cpu,
        "train_s": tr.train_seconds,
        "epochs_run": tr.epochs_run,
        "stop_reason": tr.stop_reason,
        "final_loss": tr.final_loss,
        "engine": tr.engine,
        "n_spots": int(result.combined.n_obs),
        "n_genes": len(result.genes_used),
        "n_types": len(cols),
        "n_slides": len(slides),
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "settings": {k: v for k, v in result.settings.items()},
    }
    (args.outdir / f"{name}.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    log.info("%s: %.1f s wall, %.1f s CPU, %d epochs (%s)", arm, wall, cpu, tr.epochs_run, tr.stop_reason)


def _patch_fast_snapshots(snaps: dict, every: int) -> None:
    """Snapshots of the fast loop: wrap the convergence check (called every few epochs)."""
    rule_cls = c2l_train.ConvergenceRule
    orig = rule_cls.converged
    state = {"model": None}
    from cell2location.models import Cell2location

    init = Cell2location.__init__

    def patched(self, *a, **kw):
        init(self, *a, **kw)
        state["model"] = self

    Cell2location.__init__ = patched

    def converged(self, losses):
        e = len(losses)
        if e % every == 0 and state["model"] is not None:
            snaps[e] = _snapshot(state["model"].module.guide)
        return orig(self, losses)

    rule_cls.converged = converged


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def per_type_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = []
    for k in range(a.shape[1]):
        x, y = a[:, k], b[:, k]
        out.append(np.corrcoef(x, y)[0, 1] if x.std() > 0 and y.std() > 0 else np.nan)
    return np.asarray(out)


def truth_matrix(truth, obs, types) -> np.ndarray | None:
    if truth is None:
        return None
    rows = []
    for name in obs:
        sample, barcode = name.split("::", 1)
        rows.append(truth[sample].loc[barcode, list(types)].to_numpy(dtype=float))
    return np.vstack(rows)


def accuracy(est: np.ndarray, true: np.ndarray | None, obs) -> float | None:
    """Median over slides x types of Pearson r (q05 vs truth), as benchmark_mapping reports it."""
    if true is None:
        return None
    samples = np.asarray([o.split("::", 1)[0] for o in obs])
    rs = [per_type_r(est[samples == s], true[samples == s]) for s in np.unique(samples)]
    return float(np.nanmedian(np.concatenate(rs)))


def parity(fast: dict, ref: dict) -> dict:
    r_mean = per_type_r(fast["mean"], ref["mean"])
    r_q05 = per_type_r(fast["q05"], ref["q05"])
    sd = float(np.mean(ref["sd"]))
    return {
        "r_mean_min": float(np.nanmin(r_mean)),
        "r_q05_min": float(np.nanmin(r_q05)),
        "mad_mean_sd": float(np.mean(np.abs(fast["mean"] - ref["mean"])) / sd),
        "mad_q05_sd": float(np.mean(np.abs(fast["q05"] - ref["q05"])) / sd),
    }


def score_rules(fast: dict, ref: dict | None, true, obs, rules: str, min_epochs: int) -> list[str]:
    """Where each (window, tol) rule stops on the recorded fast curve, and the map there."""
    epochs = list(fast["snap_epochs"])
    if not epochs:
        return []
    lines = [
        "| window | tol | stop epoch | r vs truth (median, q05) | min r vs last snapshot (q05) | "
        "min r vs package (q05) | mean abs diff vs package (mean) / SD |",
        "|---|---|---|---|---|---|---|",
    ]
    last_q05 = fast["snap_q05"][-1]
    for item in rules.split(","):
        w, tol = item.split(":")
        rule = c2l_train.ConvergenceRule(min_epochs=min_epochs, window=int(w), tol=float(tol))
        stop = rule.first_stop(fast["history"], every=max(1, min(int(w) // 10, 100)))
        at = stop if stop is not None else epochs[-1]
        k = int(np.searchsorted(epochs, at))  # first snapshot at or after the stop
        k = min(k, len(epochs) - 1)
        q05, mean = fast["snap_q05"][k], fast["snap_mean"][k]
        acc = accuracy(q05, true, obs)
        vs_last = float(np.nanmin(per_type_r(q05, last_q05)))
        vs_pkg = mad = ""
        if ref is not None:
            vs_pkg = f"{np.nanmin(per_type_r(q05, ref['q05'])):.4f}"
            mad = f"{np.mean(np.abs(mean - ref['mean'])) / np.mean(ref['sd']):.3f}"
        lines.append(
            f"| {w} | {tol} | {stop if stop else 'none (' + str(epochs[-1]) + ')'} (snapshot {epochs[k]}) | "
            f"{'' if acc is None else f'{acc:.4f}'} | {vs_last:.4f} | {vs_pkg} | {mad} |"
        )
    return lines


def load_arm(args, arm: str) -> dict | None:
    npz, meta = args.outdir / f"{args.scenario}.{arm}.npz", args.outdir / f"{args.scenario}.{arm}.json"
    if not npz.is_file():
        return None
    data = dict(np.load(npz, allow_pickle=True))  # files this script wrote
    data.update(json.loads(meta.read_text()))
    return data


def report(args) -> str:
    _, _, truth = (None, None, None)
    if args.scenario != "lymph_node":
        truth = load(args)[2]
    fast_names = sorted(
        f.name[len(args.scenario) + 1 : -len(".npz")]
        for f in args.outdir.glob(f"{args.scenario}.fast*.npz")
        if not f.name.startswith(f"{args.scenario}.fast_curve")
    )
    arms = {a: load_arm(args, a) for a in ["package", *fast_names]}
    curve = load_arm(args, "fast_curve")
    ref, fast = arms["package"], arms.get("fast") or next((arms[a] for a in fast_names), None)
    any_arm = ref or fast or curve
    if any_arm is None:
        return "(no saved arm)"
    obs, types = any_arm["obs"], any_arm["types"]
    true = truth_matrix(truth, obs, types)
    lines = [
        f"### {args.scenario}: {any_arm['n_slides']} slide(s), {any_arm['n_spots']} spots, "
        f"{any_arm['n_genes']} genes, {any_arm['n_types']} types",
        "",
        "| arm | epochs | stop | train s | wall s (to final posterior) | CPU s | r vs truth (median, q05) | "
        "min r mean vs package | min r q05 vs package | mean abs diff mean / SD | mean abs diff q05 / SD |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, d in arms.items():
        if d is None:
            continue
        acc = accuracy(d["q05"], true, obs)
        par = parity(d, ref) if (arm != "package" and ref is not None) else {}
        lines.append(
            f"| {arm} | {d['epochs_run']} | {d['stop_reason']} | {d['train_s']:.1f} | {d['wall_s']:.1f} | "
            f"{d['cpu_s']:.1f} | {'' if acc is None else f'{acc:.4f}'} | "
            + " | ".join(
                f"{par[k]:.4f}" if k in par else "" for k in ("r_mean_min", "r_q05_min", "mad_mean_sd", "mad_q05_sd")
            )
            + " |"
        )
    if ref is not None and fast is not None:
        for arm in fast_names:
            d = arms[arm]
            lines += [
                "",
                f"Speed-up of {arm} (wall, to the final posterior): **{ref['wall_s'] / d['wall_s']:.1f}x**; "
                f"CPU: {ref['cpu_s'] / d['cpu_s']:.1f}x",
            ]
        if ref["epochs_run"] < DEFAULT_EPOCHS:
            per_epoch = ref["train_s"] / ref["epochs_run"]
            extra = ref["wall_s"] - ref["train_s"]
            est = extra + per_epoch * DEFAULT_EPOCHS
            lines.append(
                f"Package run measured over {ref['epochs_run']} epochs ({per_epoch * 1000:.0f} ms/epoch "
                f"training, {extra:.1f} s set-up + export); EXTRAPOLATED to 30,000 epochs: {est:.0f} s, "
                f"{est / fast['wall_s']:.1f}x the fast arm."
            )
    if curve is not None and len(curve["snap_epochs"]):
        lines += [
            "",
            f"Stopping rules scored on a fast run without early stop ({curve['epochs_run']} epochs, "
            f"min epochs {args.min_epochs}):",
            "",
        ]
        lines += score_rules(curve, ref, true, obs, args.rules, args.min_epochs)
    if ref is not None and len(ref["snap_epochs"]):
        lines += [
            "",
            "Package arm, guide read during training (closed-form, same run):",
            "",
            "| epoch | r vs truth (median, q05) | min r q05 vs package final |",
            "|---|---|---|",
        ]
        for e, q in zip(ref["snap_epochs"], ref["snap_q05"]):
            acc = accuracy(q, true, obs)
            lines.append(
                f"| {e} | {'' if acc is None else f'{acc:.4f}'} | {np.nanmin(per_type_r(q, ref['q05'])):.4f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    args = parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    if args.report:
        print(report(args))
        return
    slides, sig, _ = load(args)
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        run_arm(arm, slides, sig, args)
    print(report(args))


if __name__ == "__main__":
    cli.run(main)
