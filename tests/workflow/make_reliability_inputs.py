#!/usr/bin/env python3
"""Variant inputs for the reliability pipeline tests, made from assets/test_data at test time
(nothing big is committed).

    make_reliability_inputs.py duplicate-spots DIR   slide1 as .h5ad with a repeated spot name
    make_reliability_inputs.py ensembl-reference DIR reference named by Ensembl IDs only
    make_reliability_inputs.py ensembl-slides DIR    slides as .h5ad named by Ensembl IDs, and a
                                                     reference named by symbols (one repeated)
                                                     with the IDs in var['gene_ids']
    make_reliability_inputs.py foreign-reference DIR a reference sharing no gene with slide1: symbols
                                                     and Ensembl IDs renamed (mouse-like), one slide
    make_reliability_inputs.py few-genes-reference DIR a reference keeping 40 of slide1's genes: above
                                                     --min_shared_genes 20, below cell2location's 50
    make_reliability_inputs.py hd-foreign-positions DIR the Visium HD slide hd1 with the 16 µm bins'
                                                     tissue_positions.parquet in square_008um/ (as a bad copy)
    make_reliability_inputs.py model-without-weights DIR  the small StarDist model's config.json alone in
                                                     DIR/he_model (a half-copied model folder), and a
                                                     samplesheet of hd1
    make_reliability_inputs.py untrained-model DIR  DIR/he_model: the small StarDist model's config.json with
                                                     its weights re-initialised as Keras initialises a new
                                                     network (complete and loadable, but untrained)
Each writes DIR/samplesheet.csv (and DIR/reference.h5ad where it changes the reference).
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import anndata as ad
import pandas as pd

from spatialmap import keys
from spatialmap.io import visium as io

REPO = Path(__file__).resolve().parents[2]

TEST_DATA = REPO / "assets" / "test_data"
SLIDES = ("slide1", "slide2", "slide3")


def _slide_h5ad(sample: str) -> ad.AnnData:
    return io.read_spaceranger(TEST_DATA / sample / "outs", sample)


def duplicate_spots(out: Path) -> None:
    slide = _slide_h5ad("slide1")
    names = list(slide.obs_names)
    names[1] = names[0]
    slide.obs_names = names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slide.write_h5ad(out / "slide1.h5ad")
    (out / "samplesheet.csv").write_text("sample,h5ad\nslide1,slide1.h5ad\n")


def ensembl_reference(out: Path) -> None:
    ref = ad.read_h5ad(TEST_DATA / "reference.h5ad")
    ref.var_names = ref.var[keys.GENE_IDS].astype(str).to_numpy()
    ref.var = ref.var.drop(columns=[keys.GENE_IDS])  # no symbols left anywhere
    ref.write_h5ad(out / "reference.h5ad")
    rows = [f"{s},{TEST_DATA / s / 'outs'},all" for s in SLIDES]
    (out / "samplesheet.csv").write_text("sample,spaceranger_dir,group\n" + "\n".join(rows) + "\n")


def ensembl_slides(out: Path) -> None:
    rows = []
    for sample in SLIDES:
        slide = _slide_h5ad(sample)
        slide.var_names = slide.var[keys.GENE_IDS].astype(str).to_numpy()
        slide.var = slide.var.drop(columns=[keys.GENE_IDS])
        del slide.uns[keys.UNS_SPATIAL]
        slide.write_h5ad(out / f"{sample}.h5ad")
        rows.append(f"{sample},{sample}.h5ad,all")
    (out / "samplesheet.csv").write_text("sample,h5ad,group\n" + "\n".join(rows) + "\n")
    ref = ad.read_h5ad(TEST_DATA / "reference.h5ad")
    names = list(ref.var_names)
    names[1] = names[0]  # a repeated symbol, as in real annotations
    ref.var_names = pd.Index(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.write_h5ad(out / "reference.h5ad")


def _one_slide_sheet(out: Path) -> None:
    (out / "samplesheet.csv").write_text(f"sample,spaceranger_dir\nslide1,{TEST_DATA / 'slide1' / 'outs'}\n")


def foreign_reference(out: Path) -> None:
    ref = ad.read_h5ad(TEST_DATA / "reference.h5ad")
    ref.var_names = pd.Index([f"Mm{name.capitalize()}" for name in ref.var_names.astype(str)])
    ref.var[keys.GENE_IDS] = [f"ENSMUSG{i:011d}" for i in range(ref.n_vars)]
    ref.write_h5ad(out / "reference.h5ad")
    _one_slide_sheet(out)


def few_genes_reference(out: Path) -> None:
    ref = ad.read_h5ad(TEST_DATA / "reference.h5ad")
    slide_genes = set(_slide_h5ad("slide1").var_names)
    keep = [g for g in ref.var_names if g in slide_genes][:40]
    ref[:, keep].copy().write_h5ad(out / "reference.h5ad")
    _one_slide_sheet(out)


def hd_foreign_positions(out: Path) -> None:
    shutil.copytree(REPO / "assets" / "test_data_hd" / "hd1", out / "hd1")
    bins = out / "hd1" / "outs" / "binned_outputs"
    shutil.copy(bins / "square_016um/spatial/tissue_positions.parquet", bins / "square_008um/spatial")
    (out / "samplesheet.csv").write_text("sample,spaceranger_dir\nhd1,hd1/outs\n")


def model_without_weights(out: Path) -> None:
    (out / "he_model").mkdir()
    shutil.copy(REPO / "assets" / "stardist_synth_he" / "config.json", out / "he_model")
    hd1 = REPO / "assets" / "test_data_hd" / "hd1" / "outs"
    (out / "samplesheet.csv").write_text(f"sample,spaceranger_dir\nhd1,{hd1}\n")


def untrained_model(out: Path) -> None:
    from testdata import stardist_models

    model_without_weights(out)
    stardist_models.untrained_model(out / "he_model")


if __name__ == "__main__":
    kind, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    {
        "duplicate-spots": duplicate_spots,
        "ensembl-reference": ensembl_reference,
        "ensembl-slides": ensembl_slides,
        "foreign-reference": foreign_reference,
        "few-genes-reference": few_genes_reference,
        "hd-foreign-positions": hd_foreign_positions,
        "model-without-weights": model_without_weights,
        "untrained-model": untrained_model,
    }[kind](out)
