"""Silver-standard pseudo-spots from real cells: determinism, truth, held-out cells, structure."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from testdata import silver


def identity_reference(cells_per_type: int = 20, n_types: int = 4) -> ad.AnnData:
    """Cell i expresses only gene i (count 1): a spot's counts say exactly which cells it holds."""
    n = cells_per_type * n_types
    labels = np.repeat([f"T{k}" for k in range(n_types)], cells_per_type)
    obs = pd.DataFrame({"cell_type": labels}, index=[f"cell{i}" for i in range(n)])
    return ad.AnnData(
        X=sp.identity(n, format="csr", dtype=np.float32), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n)])
    )


def test_same_seed_same_slide_other_seed_other_slide():
    ref = identity_reference()
    a, b = silver.make_silver(ref, seed=3, rows=8, cols=8), silver.make_silver(ref, seed=3, rows=8, cols=8)
    assert (a.slide.X != b.slide.X).nnz == 0
    pd.testing.assert_frame_equal(a.abundance, b.abundance)
    assert a.spot_cells == b.spot_cells
    c = silver.make_silver(ref, seed=4, rows=8, cols=8)
    assert not a.abundance.equals(c.abundance)


def test_truth_and_held_out_cells():
    ref = identity_reference()
    s = silver.make_silver(ref, rows=10, cols=10, min_cells=2, max_cells=15, seed=0)
    assert s.slide.n_obs == 100 and list(s.proportions.columns) == ["T0", "T1", "T2", "T3"]
    np.testing.assert_allclose(s.proportions.sum(axis=1), 1.0)
    n_cells = s.abundance.sum(axis=1)
    assert n_cells.between(2, 15).all() and (n_cells == s.slide.obs["n_cells"]).all()
    # held out: no spot cell is in the reference the methods get; together they are all cells
    assert not set(s.spot_cells) & set(s.reference.obs_names)
    assert sorted(set(s.spot_cells) | set(s.reference.obs_names)) == sorted(ref.obs_names)
    assert (s.reference.obs["cell_type"].value_counts() == 10).all()  # half of each type
    # every count of every spot comes from a held-out cell of the right type, as many as the truth says
    X = s.slide.X.toarray()
    np.testing.assert_allclose(X.sum(axis=1), n_cells)
    used = ref.obs_names[X.sum(axis=0) > 0]
    assert set(used) <= set(s.spot_cells)
    labels = ref.obs["cell_type"].to_numpy()
    for k, t in enumerate(s.abundance.columns):
        np.testing.assert_allclose(X[:, labels == t].sum(axis=1), s.abundance[t])


def test_compositions_are_spatially_smooth_with_dominant_types():
    ref = identity_reference(30, 6)
    s = silver.make_silver(ref, rows=20, cols=20, n_regions=4, seed=1)
    props = s.proportions.to_numpy()
    row, col = s.slide.obs["array_row"].to_numpy(), s.slide.obs["array_col"].to_numpy()
    right = {(r, c): i for i, (r, c) in enumerate(zip(row, col))}
    near = [
        np.abs(props[i] - props[right[(r, c + 1)]]).sum()
        for i, (r, c) in enumerate(zip(row, col))
        if (r, c + 1) in right
    ]
    rng = np.random.default_rng(0)
    far = np.abs(props - props[rng.permutation(len(props))]).sum(axis=1)
    assert np.mean(near) < 0.8 * np.mean(far)
    assert np.median(props.max(axis=1)) > 0.4  # a few types dominate each region
    assert s.slide.obsm["spatial"].shape == (400, 2)


def test_capture_thins_counts_and_bad_input():
    ref = identity_reference()
    ref.X = ref.X * 10
    full = silver.make_silver(ref, rows=6, cols=6, seed=2)
    thin = silver.make_silver(ref, rows=6, cols=6, seed=2, capture=0.3)
    ratio = thin.slide.X.sum() / full.slide.X.sum()
    assert 0.2 < ratio < 0.4
    assert np.allclose(thin.slide.X.data, np.round(thin.slide.X.data))
    with pytest.raises(ValueError, match="too few"):
        small = identity_reference(1, 3)
        silver.make_silver(small)
    with pytest.raises(ValueError, match="no label column"):
        silver.make_silver(ref, "label")
    with pytest.raises(ValueError, match="raw integer counts"):
        bad = ref.copy()
        bad.X = bad.X * 0.37
        silver.make_silver(bad)


def test_counts_from_log_normalised_recovers_counts():
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.8, size=(30, 50)).astype(float)
    counts[:, 0] = 1.0  # every cell has a gene counted once
    totals = counts.sum(axis=1, keepdims=True)
    lognorm = np.log1p(counts / totals * 1e4).astype(np.float32)  # as scanpy stores adata.raw.X
    back = silver.counts_from_log_normalised(sp.csr_matrix(lognorm))
    np.testing.assert_array_equal(back.toarray(), counts)
    with pytest.raises(ValueError, match="integer count"):
        silver.counts_from_log_normalised(np.log1p(np.array([[1.0, 1.5, 2.2]])))
    with pytest.raises(ValueError, match="non-negative"):
        silver.counts_from_log_normalised(np.array([[-1.0, 0.5]]))
