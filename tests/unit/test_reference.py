"""The reference: checks, gene names, MT removal, gene overlap with slides, the gene filter, two scripts."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from spatialmap.cli import InputError
from spatialmap.methods import registry
from spatialmap.reference import prepare as reference
from spatialmap.scripts import check_overlap, prepare_reference

TYPES = ["Bcell", "Tcell", "Mac"]
GENES = [f"G{i:02d}" for i in range(30)] + ["MT-CO1", "mt-Nd1", "MTOR"]
# Markers: Bcell G00-G04, Tcell G05-G09, Mac G10-G14; the rest are shared background.
MARKERS = {t: [f"G{i:02d}" for i in range(5 * k, 5 * k + 5)] for k, t in enumerate(TYPES)}


def make_reference(cells_per_type=(12, 12, 12), seed=0) -> ad.AnnData:
    """Poisson counts: background 2 per gene, markers 30 in their own type."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(TYPES, cells_per_type)
    rate = np.full((len(labels), len(GENES)), 2.0)
    for t, genes in MARKERS.items():
        rate[np.ix_(labels == t, [GENES.index(g) for g in genes])] = 30.0
    counts = rng.poisson(rate).astype(np.float32)
    adata = ad.AnnData(
        X=sparse.csr_matrix(counts),
        obs=pd.DataFrame(
            {"cell_type": labels, "batch": np.where(np.arange(len(labels)) % 2, "b1", "b2")},
            index=[f"cell{i}" for i in range(len(labels))],
        ),
        var=pd.DataFrame({"gene_ids": [f"ENSG{i:03d}" for i in range(len(GENES))]}, index=GENES),
    )
    return adata


@pytest.fixture
def ref() -> ad.AnnData:
    return make_reference()


@pytest.fixture
def ref_file(tmp_path, ref):
    path = tmp_path / "ref.h5ad"
    ref.write_h5ad(path)
    return path


def _slide(genes, n=5) -> ad.AnnData:
    return ad.AnnData(
        X=sparse.csr_matrix(np.ones((n, len(genes)), dtype=np.float32)),
        var=pd.DataFrame(index=genes),
        obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]),
    )


# --- loading and checks ------------------------------------------------------------------


def test_load_reference_keeps_counts_and_makes_labels_categorical(ref_file, ref):
    adata = reference.load_reference(ref_file, "cell_type", batch_key="batch", min_cells_per_label=10)
    assert adata.shape == ref.shape
    assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert sorted(adata.obs["cell_type"].cat.categories) == sorted(TYPES)
    assert sparse.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), ref.X.toarray())


def test_missing_label_column_is_named(ref_file):
    with pytest.raises(InputError, match=r"'celltype' not in the cell annotation.*available: cell_type, batch"):
        reference.load_reference(ref_file, "celltype")


def test_missing_batch_and_covariate_columns_are_named(ref_file):
    with pytest.raises(InputError, match=r"'donor', 'chem'"):
        reference.load_reference(ref_file, "cell_type", batch_key="donor", covariate_keys=["chem"])


def test_small_labels_are_named_with_their_counts(tmp_path):
    path = tmp_path / "r.h5ad"
    make_reference(cells_per_type=(12, 4, 7)).write_h5ad(path)
    with pytest.raises(InputError) as err:
        reference.load_reference(path, "cell_type", min_cells_per_label=10)
    message = str(err.value)
    assert "2 label(s)" in message and "Tcell (4)" in message and "Mac (7)" in message
    assert "Bcell" not in message


def test_normalised_counts_are_refused(tmp_path, ref):
    ref.X = ref.X * 0.37
    path = tmp_path / "r.h5ad"
    ref.write_h5ad(path)
    with pytest.raises(InputError, match="raw integer counts"):
        reference.load_reference(path, "cell_type")


def test_counts_layer_is_used_when_x_is_normalised(tmp_path, ref):
    raw = ref.X.copy()
    ref.layers["counts"] = raw
    ref.X = ref.X * 0.37
    path = tmp_path / "r.h5ad"
    ref.write_h5ad(path)
    adata = reference.load_reference(path, "cell_type")
    np.testing.assert_array_equal(adata.X.toarray(), raw.toarray())


def test_cells_without_label_are_dropped(ref):
    ref.obs["cell_type"] = ref.obs["cell_type"].astype(object)
    ref.obs.iloc[:2, 0] = np.nan
    adata = reference.check_reference(ref, "cell_type", min_cells_per_label=5)
    assert adata.n_obs == ref.n_obs - 2
    assert adata.obs["cell_type"].value_counts()["Bcell"] == 10


def test_single_label_is_refused(ref):
    ref.obs["cell_type"] = "Bcell"
    with pytest.raises(InputError, match="only one label"):
        reference.check_reference(ref, "cell_type")


# --- gene names and MT genes -------------------------------------------------------------


def test_use_gene_column_renames_and_keeps_old_names(ref):
    renamed = reference.use_gene_column(ref, "gene_ids")
    assert renamed.var_names[0] == "ENSG000"
    assert renamed.var["original_name"].iloc[0] == "G00"
    assert reference.use_gene_column(ref, None) is ref


def test_use_gene_column_makes_duplicates_unique(ref):
    ref.var["symbol"] = ["A", "A"] + GENES[2:]
    renamed = reference.use_gene_column(ref, "symbol")
    assert renamed.var_names.is_unique
    assert list(renamed.var_names[:2]) == ["A", "A-1"]


def test_use_gene_column_missing_column(ref):
    with pytest.raises(InputError, match="gene column 'ensembl' not in"):
        reference.use_gene_column(ref, "ensembl")


def test_mt_genes_removed_by_prefix_any_case(ref):
    cleaned, removed = reference.remove_mt_genes(ref)
    assert removed == ["MT-CO1", "mt-Nd1"]
    assert "MTOR" in cleaned.var_names and cleaned.n_vars == len(GENES) - 2


def test_mt_genes_removed_by_list_and_symbol_column(ref):
    renamed = reference.use_gene_column(ref, "gene_ids")
    _, removed = reference.remove_mt_genes(renamed, gene_symbols="original_name")
    assert removed == [f"ENSG{GENES.index('MT-CO1'):03d}", f"ENSG{GENES.index('mt-Nd1'):03d}"]
    _, removed = reference.remove_mt_genes(ref, mt_genes=["MTOR"])
    assert removed == ["MTOR"]


# --- overlap -----------------------------------------------------------------------------


def test_rank_markers_finds_the_raised_genes(ref):
    markers = reference.rank_markers(ref, "cell_type", n_markers=5)
    assert {t: sorted(g) for t, g in markers.items()} == MARKERS


def test_gene_overlap_counts_genes_and_markers(ref):
    slide_a = _slide(GENES[:20])  # all markers of Bcell and Tcell, Mac's G10-G14 too (20 genes)
    slide_b = _slide(["G00", "G01", "G05"] + [f"G{i}" for i in range(15, 30)] + ["OTHER"])
    result = reference.gene_overlap(ref, {"A": slide_a, "B": slide_b}, "cell_type", n_markers=5, min_shared_genes=10)
    table = result.table
    assert list(table.index) == ["A", "B"]
    assert table.loc["A", "shared_genes"] == 20 and table.loc["A", "reference_genes"] == len(GENES)
    assert table.loc["B", "shared_genes"] == 3 + 15 and table.loc["B", "slide_genes"] == 19
    assert table.loc["A", "markers:Mac"] == "5/5"
    assert table.loc["B", "markers:Bcell"] == "2/5"
    assert table.loc["B", "markers:Tcell"] == "1/5"
    assert table.loc["B", "markers:Mac"] == "0/5"
    info = result.to_json()
    assert sorted(info["slides"]["B"]["markers"]["Bcell"]["missing"]) == ["G02", "G03", "G04"]


def test_gene_overlap_stops_below_minimum_naming_the_slide(ref):
    slides = {"good": _slide(GENES), "poor": _slide(GENES[:7])}
    with pytest.raises(InputError, match=r"reference ref.h5ad and slide poor share 7 genes \(minimum 10") as err:
        reference.gene_overlap(ref, slides, "cell_type", n_markers=5, min_shared_genes=10, reference_name="ref.h5ad")
    assert "slide good" not in str(err.value)


def test_gene_overlap_with_no_shared_gene_shows_names_of_both_sides(ref):
    slide = _slide([f"ENSG{i:011d}" for i in range(12)])
    with pytest.raises(InputError) as err:
        reference.gene_overlap(
            ref, {"S1": slide}, "cell_type", n_markers=5, min_shared_genes=1, reference_name="r.h5ad"
        )
    message = str(err.value)
    assert "reference r.h5ad and slide S1 share 0 genes (minimum 1" in message
    assert "reference genes not on the slide: G00, G01, G02 and 30 more" in message
    assert "slide genes not in the reference: ENSG00000000000, ENSG00000000001, ENSG00000000002 and 9 more" in message


def test_gene_overlap_stops_below_a_methods_minimum(ref):
    """40 genes pass --min_shared_genes 20 and the deconvolution methods' 10, not cell2location's 50."""
    big = ad.AnnData(
        X=sparse.csr_matrix(np.ones((ref.n_obs, 60), dtype=np.float32)),
        obs=ref.obs.copy(),
        var=pd.DataFrame(index=[f"H{i:02d}" for i in range(60)]),
    )
    slide = _slide([f"H{i:02d}" for i in range(40)])
    result = reference.gene_overlap(big, {"S1": slide}, "cell_type", 5, 20, methods=["nnls", "rctd"])
    assert result.table.loc["S1", "shared_genes"] == 40
    with pytest.raises(
        InputError,
        match=r"share 40 genes, 40 of them expressed in both: too few for "
        r"cell2location \(cell2location needs 50\)",
    ):
        reference.gene_overlap(big, {"S1": slide}, "cell_type", 5, 20, methods=["nnls", "cell2location"])


def test_gene_overlap_counts_only_genes_expressed_in_both_for_the_methods(ref):
    """A shared gene without a count on the slide gives a method nothing to fit."""
    slide = _slide(GENES)
    slide.X = sparse.csr_matrix(np.hstack([np.ones((5, 5)), np.zeros((5, len(GENES) - 5))]).astype(np.float32))
    with pytest.raises(InputError, match=r"5 of them expressed in both: too few for tangram \(tangram needs 10\)"):
        reference.gene_overlap(ref, {"S1": slide}, "cell_type", 5, 10, methods=["tangram"])


def test_method_minimums_are_the_ones_the_methods_apply():
    from spatialmap.methods import cell2location as c2l
    from spatialmap.methods import registry
    from spatialmap.methods import tangram as tangram_map

    assert registry.get("cell2location").min_genes == c2l.DEFAULT_MIN_SHARED_GENES == 50
    assert registry.get("tangram").min_genes == tangram_map.MIN_SHARED_GENES == 10
    # RCTD, FlashDeconv and NNLS read registry.get(method).min_genes itself (methods.base.prepare_inputs)


# --- gene filter -------------------------------------------------------------------------


def test_permissive_gene_filter_keeps_expected_genes(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    counts = np.zeros((n, 4), dtype=np.float32)
    counts[:, 0] = rng.poisson(5, n)  # everywhere: kept by the percentage rule
    counts[:3, 1] = 1  # in 3 cells: dropped (<= 5 cells)
    counts[:20, 2] = 1  # in 20 cells (10%) of mean 1: kept by the percentage rule (> 3%)
    counts[:5, 3] = 5  # in exactly 5 cells: dropped (cell count must exceed 5)
    adata = ad.AnnData(X=sparse.csr_matrix(counts), var=pd.DataFrame(index=["all", "rare", "mid", "five"]))
    png = tmp_path / "filter.png"
    kept = reference.permissive_gene_filter(adata, 5, 0.03, 1.12, out_png=png, min_genes=1)
    assert list(kept.var_names) == ["all", "mid"]
    assert png.stat().st_size > 1000


def test_gene_filter_too_strict_is_reported(ref):
    with pytest.raises(InputError, match="genes pass"):
        reference.permissive_gene_filter(ref, 1000, 2.0, 1000, min_genes=10)


# --- scripts -----------------------------------------------------------------------------


def test_prepare_reference_script(tmp_path, ref_file):
    script = prepare_reference
    out, js = tmp_path / "prep.h5ad", tmp_path / "prep.json"
    script.main(
        [
            "--reference",
            str(ref_file),
            "--label-key",
            "cell_type",
            "--batch-key",
            "batch",
            "--min-cells-per-label",
            "10",
            "--output",
            str(out),
            "--output-json",
            str(js),
            "--versions",
            str(tmp_path / "versions.yml"),
        ]
    )
    summary = json.loads(js.read_text())
    assert summary["n_genes"] == len(GENES) - 2
    assert summary["mt_genes_removed"] == ["MT-CO1", "mt-Nd1"]
    assert summary["cells_per_label"] == {"Bcell": 12, "Mac": 12, "Tcell": 12}
    assert ad.read_h5ad(out).n_vars == len(GENES) - 2
    assert "cell2location" not in (tmp_path / "versions.yml").read_text()


def test_check_overlap_script_writes_table_and_fails_below_minimum(tmp_path, ref_file):
    script = check_overlap
    slide = _slide(GENES[:20])
    slide.obs["sample"] = "S1"
    slide.write_h5ad(tmp_path / "S1.h5ad")
    tsv, js = tmp_path / "o.tsv", tmp_path / "o.json"
    common = [
        "--reference",
        str(ref_file),
        "--slides",
        str(tmp_path / "S1.h5ad"),
        "--label-key",
        "cell_type",
        "--n-markers",
        "5",
        "--output-tsv",
        str(tsv),
        "--output-json",
        str(js),
        "--output-reference",
        str(tmp_path / "matched.h5ad"),
        "--versions",
        str(tmp_path / "v.yml"),
    ]
    script.main(common + ["--min-shared-genes", "20"])
    table = pd.read_csv(tsv, sep="\t", index_col=0)
    assert table.loc["S1", "shared_genes"] == 20 and table.loc["S1", "markers:Tcell"] == "5/5"
    assert json.loads(js.read_text())["slides"]["S1"]["shared_genes"] == 20
    assert table.loc["S1", "genes_matched_by"] == "reference var_names = slide var_names"
    tsv.unlink()
    (tmp_path / "matched.h5ad").unlink()
    with pytest.raises(InputError, match=r"reference .*ref.* and slide S1 share 20 genes \(minimum 21"):
        script.main(common + ["--min-shared-genes", "21"])
    assert not tsv.exists()
    # the slide's plan (its QC JSON, slide_qc.py): every method its plan runs must find its minimum
    plan = registry.plan("auto", 243, "spot").to_json()
    (tmp_path / "S1.qc.json").write_text(json.dumps({"sample": "S1", "method_plan": plan}))
    with pytest.raises(
        InputError,
        match=r"reference my_atlas.h5ad and slide S1 share 20 genes, 20 of them expressed "
        r"in both: too few for cell2location",
    ):
        script.main(
            common
            + [
                "--min-shared-genes",
                "20",
                "--slide-qc",
                str(tmp_path / "S1.qc.json"),
                "--reference-name",
                "my_atlas.h5ad",
            ]
        )
    assert not tsv.exists() and not (tmp_path / "matched.h5ad").exists()
    # a plan without cell2location (a large slide under --methods auto): the 20 genes are enough
    plan = registry.plan("auto", 30000, "spot").to_json()
    (tmp_path / "S1.qc.json").write_text(json.dumps({"sample": "S1", "method_plan": plan}))
    script.main(common + ["--min-shared-genes", "20", "--slide-qc", str(tmp_path / "S1.qc.json")])
    assert tsv.exists()
    (tmp_path / "S1.qc.json").write_text(json.dumps({"sample": "S1"}))
    with pytest.raises(InputError, match="not a slide QC JSON with a method plan"):
        script.main(common + ["--slide-qc", str(tmp_path / "S1.qc.json")])


def test_gene_overlap_method_minimum_names_only_the_short_slide(ref):
    """Several slides: each is checked on its own genes, and only the one below a minimum is named."""
    slides = {"full": _slide(GENES), "poor": _slide(GENES[:8]), "also_full": _slide(GENES)}
    with pytest.raises(InputError) as err:
        reference.gene_overlap(ref, slides, "cell_type", 5, 5, methods=["nnls", "tangram"], reference_name="r.h5ad")
    message = str(err.value)
    assert (
        "slide poor share 8 genes, 8 of them expressed in both: too few for nnls, tangram (nnls needs 10, tangram needs 10)"
        in message
    )
    assert "slide full" not in message and "slide also_full" not in message
