"""The batched RCTD fit (``spatialmap.methods.rctd_batch``) is rctd-py's own fit.

Each engine fits the same ``rctd.RCTD`` object (platform effects and sigma fitted once by
rctd-py): the generated Visium HD 8 µm bins and Xenium cells (doublet mode, what
``--rctd_mode auto`` gives them), the Visium test slide (full mode) and some of the bins in multi
mode. Same first type on >= 99.5% of locations, same spot class on >= 99%, weights within 1e-3
(measured: identical types and classes, full-mode weights within ~1e-9, doublet weights ~1e-16). And through ``rctd.run``: the same
sigma, proportions and spot classes with ``engine="batched"`` as with ``engine="package"``.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.io import sdata as io_hd
from spatialmap.io import visium as io
from spatialmap.methods import rctd as rctd_method
from spatialmap.methods import rctd_batch

ASSETS = Path(__file__).resolve().parents[2] / "assets"
HD = ASSETS / "test_data_hd"


@pytest.fixture(scope="module")
def q_table(tmp_path_factory):
    """A small likelihood table (counts up to 40, sigma 1.0; ~6 s on one core): parity does not depend on the table."""
    return rctd_method.compute_rctd_q_matrix(tmp_path_factory.mktemp("rctd_q") / "q.npz", k_max=40, sigma_step=0)


@pytest.fixture(scope="module")
def reference():
    return ad.read_h5ad(ASSETS / "test_data" / "reference.h5ad")


@pytest.fixture(scope="module")
def slides():
    return {
        "hd_bins": io_hd.read_visium_hd(HD / "hd1" / "outs", "hd1", 8),
        "xenium_cells": io_hd.read_xenium(HD / "xenium1", "xenium1"),
        "visium": io.read_spaceranger(ASSETS / "test_data" / "slide1" / "outs", "slide1"),
    }


def _assert_same_fit(numbers: dict, mode: str) -> None:
    assert numbers["weights_max_diff"] <= 1e-3, numbers
    if mode == "doublet":
        assert numbers["first_type_same"] >= 0.995, numbers
        assert numbers["spot_class_same"] >= 0.99, numbers
        assert numbers["weights_doublet_max_diff"] <= 1e-3, numbers
    elif mode == "multi":
        assert numbers["first_type_same"] >= 0.995 and numbers["n_types_same"] >= 0.99, numbers
        assert numbers["sub_weights_max_diff"] <= 1e-3, numbers
    else:
        assert numbers["converged_same"] >= 0.99, numbers


@pytest.mark.parametrize(
    "name, mode, n",
    [
        ("hd_bins", "doublet", None),
        ("xenium_cells", "doublet", None),
        ("visium", "full", None),
        ("hd_bins", "multi", 250),
    ],
)
def test_batched_fit_is_the_package_fit(slides, reference, q_table, name, mode, n):
    slide = slides[name] if n is None else slides[name][:n].copy()
    model = rctd_method.fitted_model(slide, reference, "cell_type", q_table)
    package = rctd_method.package_fit(model, mode)
    batched = rctd_batch.fit(model, mode)
    numbers = rctd_batch.parity(batched, package, mode)
    assert numbers["locations"] == int(np.asarray(model._pixel_mask).sum()) > 150
    _assert_same_fit(numbers, mode)
    if mode == "doublet":  # every class rctd-py gives, and the batched one gives the same
        np.testing.assert_array_equal(batched.spot_class, package.spot_class)


@pytest.fixture(scope="module")
def q_table_sigmas(tmp_path_factory):
    """A table of five sigmas around 1.0 (counts up to 10; ~10 s), so that the sigma search can move."""
    from rctd._likelihood import build_x_vals, compute_q_matrix

    x = build_x_vals()
    path = tmp_path_factory.mktemp("rctd_q_sigmas") / "q.npz"
    arrays = {"X_vals": x, **{f"Q_{s}": compute_q_matrix(s / 100, x, K_val=10) for s in (84, 92, 100, 108, 116)}}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def test_sigma_search_is_rctd_pys_own(slides, reference, q_table_sigmas):
    """The batched search (rctd_batch.choose_sigma) picks the sigma rctd-py's choose_sigma picked."""
    from rctd._likelihood import load_cached_q_matrices

    model = rctd_method.fitted_model(slides["hd_bins"], reference, "cell_type", q_table_sigmas, UMI_min_sigma=150)
    with rctd_method.rctd_q_table(q_table_sigmas):
        tables = load_cached_q_matrices()
    x = tables.pop("X_vals")
    tables = {k.replace("Q_", ""): v for k, v in tables.items()}
    ours = rctd_batch.choose_sigma(model.counts, model.nUMI, model.norm_profiles, tables, x, model.config)
    assert ours == model.sigma != 100  # the package's choice, away from where the search starts


def test_engines_through_run_give_the_same_sigma_and_proportions(slides, reference, q_table):
    slide = slides["hd_bins"][:300].copy()
    runs = {
        engine: rctd_method.run(
            slide, reference, "cell_type", q_matrix_path=q_table, accelerator="cpu", threads=1, engine=engine
        )  # fmt: skip
        for engine in ("batched", "package")
    }
    batched, package = runs["batched"], runs["package"]
    assert batched.qc["mode"] == "doublet"  # auto on 8 µm bins
    assert batched.qc["sigma"] == package.qc["sigma"]
    assert batched.qc["settings"]["engine_used"].startswith("batched")
    assert package.qc["settings"]["engine_used"].startswith("package")
    pd.testing.assert_index_equal(batched.proportions.index, package.proportions.index)
    assert np.abs(batched.proportions.to_numpy() - package.proportions.to_numpy()).max() <= 1e-3
    column = keys.RCTD_SPOT_CLASS
    assert (batched.spot_qc[column].astype(str) == package.spot_qc[column].astype(str)).mean() >= 0.99


def test_auto_engine_is_batched_on_the_cpu_and_the_package_on_a_gpu():
    assert rctd_batch.choose_engine("auto", "cpu", "float64")[0]
    assert not rctd_batch.choose_engine("auto", "cuda", "float64")[0]
    assert not rctd_batch.choose_engine("auto", "cpu", "float32")[0]
    assert not rctd_batch.choose_engine("package", "cpu", "float64")[0]
    with pytest.raises(ValueError, match="float64"):
        rctd_batch.choose_engine("batched", "cpu", "float32")
    with pytest.raises(InputError, match="sample s1: rctd: RCTD engine must be one of auto, batched, package"):
        rctd_method._choose_engine("fast", "cpu", "float64", "s1")


def test_likelihood_is_rctd_pys_own():
    """Log-likelihood and its derivatives at any count and lambda are those of rctd-py's calc_q_all (its
    spline interval found with the same float32 step), to the last bits."""
    import torch
    from rctd._likelihood import _calc_q_all_impl, build_x_vals, compute_q_matrix, compute_spline_coefficients

    from spatialmap.methods import rctd_batch_kernels as kern

    x = build_x_vals()
    q = compute_q_matrix(0.8, x, K_val=12)
    sq = compute_spline_coefficients(q, x)
    rng = np.random.default_rng(0)
    lam = np.concatenate([np.geomspace(1e-5, 2000.0, 4000), x[1:-1], np.nextafter(x[1:-1], 0), [0.0, 1e-4]])
    y = rng.integers(0, 16, len(lam)).astype(np.float64)  # counts above the table's 12 are clamped to it
    d0, d1, d2 = (t.numpy() for t in _calc_q_all_impl(torch.tensor(y), torch.tensor(lam), torch.tensor(q),
                                                      torch.tensor(sq), torch.tensor(x)))  # fmt: skip
    terms, mtab = rctd_batch.spline_terms(q, sq, x), rctd_batch.grid_index_table()
    mine = np.array([kern._derivatives(a, b, terms, x, mtab, 12, x[-1] - 1e-4) for a, b in zip(y, lam)])
    mine0 = np.array([kern._log_likelihood(a, b, terms, x, mtab, 12, x[-1] - 1e-4) for a, b in zip(y, lam)])
    np.testing.assert_allclose(mine[:, 0], d1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mine[:, 1], d2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mine0, d0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows", [rctd_method.BULK_SUM_ROWS, 7])
def test_bulk_fit_with_sums_in_blocks_is_the_packages_to_the_bit(rows, monkeypatch):
    """rctd-py's fit_bulk copies the bulk counts to long double whole (5.2 GB on a full HD slide);
    summed a block at a time the platform effects are the same to the bit, and the package's own
    sum is back in place after the block."""
    import torch
    from rctd import _normalize, fit_bulk

    monkeypatch.setattr(rctd_method, "BULK_SUM_ROWS", rows)
    rng = np.random.default_rng(3)
    counts = rng.poisson(rng.gamma(0.5, 2.0, size=60), size=(40_000, 60)).astype(np.float32)
    numi = (counts.sum(axis=1) + rng.poisson(80, size=40_000)).astype(np.float32)
    profiles = rng.dirichlet(np.ones(60), size=5).T.astype(np.float32)
    args = (torch.tensor(profiles), torch.tensor(counts), torch.tensor(numi))
    original = _normalize._longdouble_sum
    want = fit_bulk(*args)
    with rctd_method.bulk_sums_in_blocks():
        assert _normalize._longdouble_sum is not original
        got = fit_bulk(*args)
    assert _normalize._longdouble_sum is original
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    blocks = rctd_method._longdouble_sum_in_blocks(args[1], 0)
    assert torch.equal(blocks, original(args[1], 0))
