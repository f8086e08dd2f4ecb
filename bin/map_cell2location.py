#!/usr/bin/env python3
"""Map reference cell types onto the slides of one group jointly with cell2location.

Writes the group's model and figures (``G.cell2location_model``, ``G.cell2location_*.png``) and, for
each sample S, in the folder ``S/``: ``S.cell2location.h5ad``, ``S.cell2location_q05.csv``,
``S.cell2location_maps.png`` and ``S.cell2location_qc.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import anndata as ad

from spatialmap import cli, device, keys
from spatialmap.methods import base, c2l_train
from spatialmap.methods import cell2location as c2l
from spatialmap.reference import prepare as reference
from spatialmap.reference import signatures
from spatialmap.report import plotting

log = logging.getLogger("spatialmap.map_cell2location")


def optional_int(text: str) -> int | None:
    """``''`` or ``'none'`` -> None, else an int (argparse type)."""
    return None if text.strip().lower() in ("", "none", "null") else int(text)


def optional_float(text: str) -> float | None:
    """``''`` or ``'none'`` -> None, else a float (argparse type)."""
    return None if text.strip().lower() in ("", "none", "null") else float(text)


# long: one add_argument per option of the cell2location step (a flat list, formatted one per line)
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--signatures", required=True, type=Path, help="signatures CSV: genes x cell types (expected counts per cell)"
    )
    parser.add_argument(
        "--slides", required=True, nargs="+", type=Path, help="QC'd slide .h5ad files of the group (raw counts)"
    )
    parser.add_argument("--samples", required=True, nargs="+", help="sample names of the slides, in the same order")
    parser.add_argument("--group", required=True, help="group name; names the model and the group figures")
    parser.add_argument(
        "--slide-gene-column",
        default=None,
        help="var column of the slides to name genes by, to match the signatures (e.g. gene_ids); default: var_names",
    )
    parser.add_argument(
        "--n-cells-per-location",
        type=float,
        default=8,
        help="expected cells per spot, a prior from histology (default: %(default)s)",
    )
    parser.add_argument(
        "--detection-alpha",
        type=float,
        default=20,
        help="regularisation of per-spot RNA detection: 20 for variable, 200 for even detection (default: %(default)s)",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=30000,
        help="cap on the training epochs; training stops earlier at convergence (default: %(default)s)",
    )
    parser.add_argument(
        "--engine",
        choices=c2l.ENGINES,
        default="fast",
        help="fast: lean training loop that stops at convergence, closed-form posterior export; "
        "package: cell2location's own train for --max-epochs and export_posterior (default: %(default)s)",
    )
    parser.add_argument(
        "--min-epochs",
        type=int,
        default=c2l_train.DEFAULT_MIN_EPOCHS,
        help="never stop before this many epochs (default: %(default)s)",
    )
    parser.add_argument(
        "--convergence-window",
        type=int,
        default=c2l_train.DEFAULT_WINDOW,
        help="epochs per window of the convergence check (default: %(default)s)",
    )
    parser.add_argument(
        "--convergence-tol",
        type=float,
        default=c2l_train.DEFAULT_TOL,
        help="stop when the mean -ELBO of the last window improved on the window before by less "
        "than this fraction; 0 = always train to --max-epochs (default: %(default)s)",
    )
    parser.add_argument(
        "--minibatch-above",
        type=int,
        default=c2l_train.DEFAULT_MINIBATCH_ABOVE,
        help="groups with more spots train in minibatches of "
        f"{c2l_train.DEFAULT_MINIBATCH_SIZE} spots unless --batch-size is given (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=optional_int,
        default=None,
        help="minibatch size in spots; '' = all spots every step, recommended (default: all)",
    )
    parser.add_argument(
        "--lr", type=float, default=0.002, help="learning rate; training ends at this rate (default: %(default)s)"
    )
    parser.add_argument(
        "--lr-start",
        type=optional_float,
        default=c2l_train.DEFAULT_LR_START,
        help="fast engine: start at this rate and drop to --lr when the -ELBO stops improving; "
        "'' = --lr throughout (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--accelerator",
        choices=device.ACCELERATORS,
        default="auto",
        help="auto: GPU when one is visible, else CPU (default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch; give the task's CPUs (default: %(default)s)"
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=1000,
        help="posterior samples drawn for the mean and 5%%/95%% quantiles (default: %(default)s)",
    )
    parser.add_argument(
        "--min-shared-genes",
        type=int,
        default=c2l.DEFAULT_MIN_SHARED_GENES,
        help="stop when fewer signature genes are on every slide (default: %(default)s)",
    )
    parser.add_argument("--outdir", type=Path, default=Path("."), help="folder to write into (default: current folder)")
    parser.add_argument(
        "--process-name", default="map_cell2location.py", help="process name written to the versions file"
    )
    parser.add_argument("--versions", default="versions.yml", type=Path, help="versions file to write")
    return parser.parse_args(argv)


def read_slides(paths: list[Path], samples: list[str]) -> dict[str, ad.AnnData]:
    """``{sample: slide}``; a slide's obs['sample'], when present, must match its name."""
    if len(paths) != len(samples):
        raise cli.InputError(f"{len(paths)} slides but {len(samples)} sample names")
    if len(set(samples)) != len(samples):
        raise cli.InputError(f"sample names repeat: {' '.join(samples)}")
    slides = {}
    for path, sample in zip(paths, samples):
        if not path.is_file():
            raise cli.InputError(f"sample {sample}: the slide file {path} does not exist")
        slide = ad.read_h5ad(path)
        if keys.SAMPLE in slide.obs:
            found = sorted(set(slide.obs[keys.SAMPLE].astype(str)))
            if found != [sample]:
                raise cli.InputError(f"sample {sample}: {path} holds sample(s) {', '.join(found)}")
        else:
            slide.obs[keys.SAMPLE] = sample
        slides[sample] = slide
    return slides


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in task logs
    args = parse_args(argv)
    sig = signatures.load_signatures_csv(args.signatures)
    originals = read_slides(args.slides, args.samples)
    renamed = {s: reference.use_gene_column(a, args.slide_gene_column, f"slide {s}") for s, a in originals.items()}
    result = c2l.run(
        renamed,
        sig,
        n_cells_per_location=args.n_cells_per_location,
        detection_alpha=args.detection_alpha,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        accelerator=args.accelerator,
        lr=args.lr,
        lr_start=args.lr_start,
        num_samples=args.num_samples,
        min_shared_genes=args.min_shared_genes,
        threads=args.threads,
        engine=args.engine,
        min_epochs=args.min_epochs,
        convergence_window=args.convergence_window,
        convergence_tol=args.convergence_tol,
        minibatch_above=args.minibatch_above,
    )
    out = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    c2l.save_model(result, out / f"{args.group}.cell2location_model")
    c2l.plot_training_loss(
        result,
        out / f"{args.group}.cell2location_training_loss.png",
        f"cell2location, group {args.group} (cap {args.max_epochs} epochs)",
    )
    c2l.plot_reconstruction(result, out / f"{args.group}.cell2location_reconstruction.png", seed=args.seed)

    for sample, method_result in result.results.items():
        mapped = method_result.extras["slide"]
        slide = originals[sample]  # keep the slide's own gene names
        for key in (keys.C2L_MEAN, keys.C2L_Q05, keys.C2L_Q95):
            slide.obsm[key] = mapped.obsm[key]
        for key in (keys.C2L_TOTAL_CELLS, keys.C2L_DETECTION):
            slide.obs[key] = mapped.obs[key].to_numpy()
        slide.uns[keys.UNS_C2L] = {**mapped.uns[keys.UNS_C2L], "group": args.group}
        qc = {"sample": sample, "group": args.group, **{k: v for k, v in method_result.qc.items() if k != "sample"}}
        log.info(
            "sample %s: %.1f cells per spot on average; most abundant: %s; detection %.3f; reconstruction r %.3f; "
            "%d epochs (%s)",
            sample,
            qc["mean_total_cells_per_spot"],
            qc["most_abundant_type"],
            qc["detection_sensitivity"],
            qc["reconstruction_r"] if qc["reconstruction_r"] is not None else float("nan"),
            qc["epochs_run"],
            qc["stop_reason"],
        )
        own = out / sample  # the slide's files, in a folder of its own (the group's beside them)
        plotting.plot_spatial_values(
            slide,
            slide.obsm[keys.C2L_Q05],
            own / f"{sample}.cell2location_maps.png",
            f"{sample}: cell2location abundance (cells per spot, 5% quantile)",
            vmax_quantile=0.992,
        )
        with cli.atomic_path(own / f"{sample}.cell2location_q05.csv") as tmp:
            slide.obsm[keys.C2L_Q05].to_csv(tmp, index_label="barcode")
        base.write_qc_json(own / f"{sample}.cell2location_qc.json", base.contract_fields(c2l, method_result, qc))
        with cli.atomic_path(own / f"{sample}.cell2location.h5ad") as tmp:
            slide.write_h5ad(tmp, compression="gzip")
    cli.write_versions(
        args.versions, args.process_name, ["cell2location", "scvi-tools", "pyro-ppl", "torch", "anndata", "matplotlib"]
    )


if __name__ == "__main__":
    cli.run(main)
