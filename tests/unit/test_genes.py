"""Gene names matched between reference and slides (spatialmap.reference.genes.match_genes)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmap.cli import InputError
from spatialmap.reference import genes

SYMBOLS = [f"G{i:02d}" for i in range(20)]
IDS = [f"ENSG{i:05d}" for i in range(20)]


def _adata(names, var=None, n_obs=4):
    X = np.arange(n_obs * len(names), dtype=np.float32).reshape(n_obs, len(names))
    return ad.AnnData(X=X, var=pd.DataFrame(var or {}, index=pd.Index(names, dtype=object)))


def _space_ranger_slide(n=20):
    """Symbols as var_names, Ensembl IDs in var['gene_ids'] (what io.read_spaceranger gives)."""
    return _adata(SYMBOLS[:n], {"gene_ids": IDS[:n]})


def test_same_naming_keeps_the_reference():
    ref = _adata(SYMBOLS)
    matched, match = genes.match_genes(ref, {"s1": _space_ranger_slide()})
    assert (match.reference_key, match.slide_key) == ("var_names", "var_names")
    assert list(matched.var_names) == SYMBOLS and match.renamed == 0
    assert "original_name" not in matched.var


def test_ensembl_reference_matched_through_slide_gene_ids():
    ref = _adata(IDS[::-1])
    matched, match = genes.match_genes(ref, {"s1": _space_ranger_slide(), "s2": _space_ranger_slide(15)})
    assert (match.reference_key, match.slide_key) == ("var_names", "gene_ids")
    assert list(matched.var_names) == SYMBOLS[::-1]
    assert list(matched.var["original_name"]) == IDS[::-1]
    assert match.shared == {"s1": 20, "s2": 15}
    assert match.description == "reference var_names = slide var['gene_ids']"
    assert matched.uns[genes.UNS_KEY]["slide_key"] == "gene_ids"
    np.testing.assert_array_equal(matched.X, ref.X)  # counts untouched


def test_symbol_reference_matched_to_ensembl_slides_through_a_reference_column():
    ref = _adata(SYMBOLS, {"ensembl": IDS})
    slide = _adata(IDS[:18])
    matched, match = genes.match_genes(ref, {"s1": slide})
    assert (match.reference_key, match.slide_key) == ("ensembl", "var_names")
    assert list(matched.var_names[:18]) == IDS[:18]
    # genes the slides lack keep their name
    assert list(matched.var_names[18:]) == SYMBOLS[18:]


def test_duplicate_symbols_made_unique_and_counted():
    ref = _adata(IDS)
    slide = _adata(["A", "A"] + SYMBOLS[2:], {"gene_ids": IDS})
    slide.var_names_make_unique()
    matched, match = genes.match_genes(ref, {"s1": slide})
    assert list(matched.var_names[:2]) == ["A", "A-1"]
    # reference names repeated in the matched naming are made unique as scanpy does
    ref2 = _adata(SYMBOLS, {"symbol": ["X", "X"] + SYMBOLS[2:]})
    _, match2 = genes.match_genes(ref2, {"s1": _adata(["X", "X-1"] + SYMBOLS[2:])}, reference_column="symbol")
    assert match2.duplicates["reference"] == 1
    assert match2.shared["s1"] == 20


def test_explicit_columns_override():
    ref = _adata(SYMBOLS, {"gene_ids": IDS})
    _, match = genes.match_genes(ref, {"s1": _space_ranger_slide()}, "gene_ids", "gene_ids")
    assert (match.reference_key, match.slide_key) == ("gene_ids", "gene_ids")
    with pytest.raises(InputError, match="gene column 'ensembl' not in"):
        genes.match_genes(ref, {"s1": _space_ranger_slide()}, "ensembl")
