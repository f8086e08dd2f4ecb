"""RCTD, FlashDeconv and NNLS on the embedded test data (known truth): accuracy, spots left out,
the RCTD likelihood table (computed once, read locally, no network), bad input, scripts."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.optimize import nnls

from conftest import BIN
from spatialmap import keys
from spatialmap.cli import InputError
from spatialmap.io import visium as io
from spatialmap.methods import base
from spatialmap.methods import flashdeconv as flashdeconv_method
from spatialmap.methods import nnls as nnls_method
from spatialmap.methods import rctd as rctd_method
from spatialmap.qc import slide as qc
from spatialmap.scripts import compute_rctd_q, map_flashdeconv, map_nnls, map_rctd

TEST_DATA = BIN.parent / "assets" / "test_data"
SLIDES = ("slide1", "slide2", "slide3")
# Per-type Pearson r with the true proportions, on every slide and type (seeds fixed). Measured
# minima: NNLS 0.87, FlashDeconv 0.86, RCTD 0.95 (full mode, the test table below).
MIN_PEARSON = {"nnls": 0.8, "flashdeconv": 0.8, "rctd": 0.9}
# A small likelihood table: counts up to 100, sigma 1.0 only (a second or two; the accuracy floors
# above were measured with it).
Q_SETTINGS = dict(k_max=100, sigma_step=0)
METHOD_MODULES = {"rctd": rctd_method, "flashdeconv": flashdeconv_method, "nnls": nnls_method}
METHODS = tuple(METHOD_MODULES)


def _no_network(monkeypatch):
    """Make every connection attempt and urllib download fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlretrieve", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="module")
def q_table(tmp_path_factory):
    """The RCTD likelihood table, computed once for the whole module with the network unreachable."""
    mp = pytest.MonkeyPatch()
    _no_network(mp)
    try:
        path = rctd_method.compute_rctd_q_matrix(
            tmp_path_factory.mktemp("rctd_q") / "rctd_q_matrices.npz", **Q_SETTINGS
        )
    finally:
        mp.undo()
    return path


@pytest.fixture(scope="module")
def reference():
    return ad.read_h5ad(TEST_DATA / "reference.h5ad")


def load_slide(sample: str) -> tuple[ad.AnnData, pd.DataFrame]:
    """An embedded slide as the pipeline maps it (mitochondrial genes out of X) and its truth."""
    raw = io.read_spaceranger(TEST_DATA / sample / "outs", sample)
    slide = raw[:, ~qc.find_mt_genes(raw.var_names)].copy()
    slide.obs[keys.SAMPLE] = sample
    truth = pd.read_csv(TEST_DATA / "truth" / f"{sample}_proportions.csv", index_col=0)
    return slide, truth


def pearson_per_type(estimate: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    truth = truth.loc[estimate.index, estimate.columns]
    return pd.Series({c: np.corrcoef(estimate[c], truth[c])[0, 1] for c in estimate.columns})


def run(method, slide, reference, q_table, **kw):
    if method == "rctd":
        return rctd_method.run(slide, reference, "cell_type", q_matrix_path=q_table, accelerator="cpu", threads=1, **kw)
    return METHOD_MODULES[method].run(slide, reference, "cell_type", **kw)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sample", SLIDES)
def test_every_method_recovers_the_true_proportions(method, sample, reference, q_table):
    slide, truth = load_slide(sample)
    result = run(method, slide, reference, q_table)
    props = result.proportions
    assert list(props.columns) == sorted(truth.columns)
    assert set(props.index) <= set(slide.obs_names) and props.index.is_unique
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-9)
    assert (props.to_numpy() >= 0).all()
    r = pearson_per_type(props, truth)
    assert (r >= MIN_PEARSON[method]).all(), r.round(3).to_dict()
    q = result.qc
    assert q["sample"] == sample and q["method"] == method and q["device"] == "cpu"
    assert q["spots_fitted"] == len(props) == slide.n_obs and q["spots_filtered"] == 0
    assert 0 < q["genes_used"] <= q["genes_shared"] <= slide.n_vars and q["seconds"] > 0
    assert set(q["mean_proportions"]) == set(truth.columns)


def test_nnls_batch_gives_scipy_nnls_answer():
    rng = np.random.default_rng(0)
    profiles = rng.gamma(1.0, 2.0, size=(5, 60))
    counts = rng.poisson(rng.gamma(1.0, 1.0, size=(40, 5)) @ profiles).astype(float)
    counts[3] = 0
    coef, resid = nnls_method.nnls_batch(profiles, sparse.csr_matrix(counts))
    for i, y in enumerate(counts):
        expected, rnorm = nnls(profiles.T, y)
        np.testing.assert_allclose(coef[i], expected, atol=1e-8)
        assert resid[i] == pytest.approx(rnorm, abs=1e-6)
    assert not coef[3].any()
    collinear = np.vstack([profiles, profiles[0]])  # singular Gram matrix: the full problem per spot
    coef2, _ = nnls_method.nnls_batch(collinear, counts[:5])
    np.testing.assert_allclose(coef2 @ collinear, coef[:5] @ profiles, rtol=1e-6, atol=1e-6)


def test_flashdeconv_is_deterministic(reference):
    slide, _ = load_slide("slide2")
    a = flashdeconv_method.run(slide, reference, "cell_type", seed=3)
    b = flashdeconv_method.run(slide, reference, "cell_type", seed=3)
    pd.testing.assert_frame_equal(a.proportions, b.proportions)
    assert a.qc["settings"]["sketch_dim"] == 512 and a.qc["settings"]["lambda_spatial"] == "auto"
    assert a.qc["convergence"]["converged"]


# --------------------------------------------------------------------------- RCTD table and modes


def test_q_table_has_rctd_layout_and_is_read_locally(q_table, reference, tmp_path, monkeypatch):
    info = rctd_method.read_q_table_info(q_table)
    assert info["sigmas"] == [100] and info["k_max"] == 100
    with np.load(q_table) as z:
        assert set(z.files) == {"X_vals", "Q_100"} and z["Q_100"].shape == (103, len(z["X_vals"]))
    assert json.loads(q_table.with_suffix(".json").read_text())["k_max"] == 100

    # RCTD on every slide with the network unreachable and an empty HOME: the table is read from
    # the path given (rctd-py's RCTD_Q_MATRICES), never downloaded, never recomputed per slide.
    import rctd._likelihood
    import rctd._rctd

    _no_network(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(rctd_method.Q_ENV, raising=False)
    loads, computed = [], []
    original = rctd._rctd.load_cached_q_matrices
    monkeypatch.setattr(
        rctd._rctd,
        "load_cached_q_matrices",
        lambda *a, **k: loads.append(__import__("os").environ.get(rctd_method.Q_ENV)) or original(*a, **k),
    )
    monkeypatch.setattr(rctd._likelihood, "compute_q_matrix", lambda *a, **k: computed.append(a))
    for sample in SLIDES:
        slide, _ = load_slide(sample)
        result = run("rctd", slide, reference, q_table)
        assert result.qc["q_matrix"]["path"] == str(Path(q_table).resolve())
        assert result.qc["sigma"] == 1.0
    assert loads == [str(Path(q_table).resolve())] * len(SLIDES)
    assert not computed
    assert not (tmp_path / ".cache" / "rctd").exists()
    assert rctd_method.Q_ENV not in __import__("os").environ  # restored after each run


@pytest.mark.parametrize("mode", ["doublet", "multi"])
def test_rctd_doublet_and_multi_modes(mode, reference, q_table):
    slide, truth = load_slide("slide3")
    slide = slide[:90].copy()
    result = run("rctd", slide, reference, q_table, mode=mode)
    props = result.proportions
    np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-9)
    assert result.qc["mode"] == mode and len(props) == 90
    per_spot = (props > 0).sum(axis=1)
    if mode == "doublet":
        assert per_spot.max() <= 2
        assert set(result.spot_qc[keys.RCTD_SPOT_CLASS]) <= {
            "reject",
            "singlet",
            "doublet_certain",
            "doublet_uncertain",
        }
    else:
        assert per_spot.max() <= 4 and result.spot_qc[keys.RCTD_N_TYPES].between(1, 4).all()
    # the main type of a spot is mostly the true main type
    agree = (props.idxmax(axis=1) == truth.loc[props.index].idxmax(axis=1)).mean()
    assert agree > 0.6, agree


@pytest.mark.parametrize(
    "platform, mode",
    [
        (None, "full"),  # standard Visium: the readers record no platform; 55 µm spots
        ({"platform": "visium_hd", "unit": "bin", "bin_size_um": 8}, "doublet"),
        ({"platform": "visium_hd", "unit": "bin", "bin_size_um": 16}, "full"),
        ({"platform": "visium_hd", "unit": "cell", "segmentation": "spaceranger"}, "doublet"),
        ({"platform": "xenium", "unit": "cell", "segmentation": "xenium"}, "doublet"),
        ({"platform": "spatialdata", "unit": "bin", "table": "square_008um"}, "doublet"),  # size unknown: as 8 µm
    ],
)
def test_rctd_auto_mode_follows_the_kind_of_location(platform, mode):
    slide = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    if platform is not None:
        slide.uns[keys.UNS_PLATFORM] = platform
    chosen, why = rctd_method.rctd_auto_mode(slide)
    assert chosen == mode and why.startswith("auto: ") and why.endswith(mode)


def test_rctd_auto_is_the_default_and_fits_8um_bins_in_doublet_mode(reference, q_table):
    slide, _ = load_slide("slide3")
    slide = slide[:90].copy()
    slide.uns[keys.UNS_PLATFORM] = {"platform": "visium_hd", "unit": "bin", "bin_size_um": 8}
    auto = run("rctd", slide, reference, q_table)
    assert auto.qc["mode"] == "doublet" and auto.qc["settings"]["mode_requested"] == "auto"
    assert auto.qc["mode_reason"] == "auto: 8 µm bins (one or two types each): doublet"
    asked = run("rctd", slide, reference, q_table, mode="doublet")
    assert asked.qc["mode_reason"] == "asked for"
    pd.testing.assert_frame_equal(auto.proportions, asked.proportions)
    pd.testing.assert_frame_equal(auto.spot_qc, asked.spot_qc)
    del slide.uns[keys.UNS_PLATFORM]  # the same spots as Visium spots: full mode
    assert run("rctd", slide, reference, q_table).qc["mode"] == "full"


def test_rctd_without_spots_to_estimate_sigma_names_the_slide(reference, q_table):
    slide, _ = load_slide("slide2")
    with pytest.raises(InputError, match=r"sample slide2: rctd: No pixels found with UMI > 1000000000"):
        run("rctd", slide, reference, q_table, umi_min_sigma=10**9)


def test_rctd_gets_only_its_gene_lists_and_gives_the_same_result(reference, q_table, monkeypatch):
    """rctd-py densifies spots x shared genes; it is handed only the genes of its lists (plus one column of
    the other counts, so each spot's nUMI is unchanged) and gives exactly what it gives on the whole slide."""
    import rctd

    slide, _ = load_slide("slide3")
    slide = slide[:90].copy()
    seen = []
    real_init = rctd.RCTD.__init__

    def spy(self, spatial, *args, **kwargs):
        seen.append(spatial)
        real_init(self, spatial, *args, **kwargs)

    monkeypatch.setattr(rctd.RCTD, "__init__", spy)
    lean = run("rctd", slide, reference, q_table, mode="doublet")
    handed = seen[-1]
    assert handed.var_names[-1] == rctd_method.RCTD_OTHER_COUNTS
    assert handed.n_vars - 1 < slide.n_vars  # only the listed genes are densified
    totals = np.asarray(slide.X.sum(axis=1)).ravel()
    np.testing.assert_array_equal(np.asarray(handed.X.sum(axis=1)).ravel(), totals)  # nUMI unchanged
    assert lean.qc["genes_common"] == len(set(slide.var_names) & set(reference.var_names))

    monkeypatch.setattr(rctd_method, "rctd_slide_genes", lambda s, r, c: (rctd_method._light(s), 0))
    whole = run("rctd", slide, reference, q_table, mode="doublet")
    assert seen[-1].n_vars == slide.n_vars
    pd.testing.assert_frame_equal(lean.proportions, whole.proportions)
    pd.testing.assert_frame_equal(lean.spot_qc, whole.spot_qc)
    assert lean.qc["sigma"] == whole.qc["sigma"] and lean.qc["genes_used"] == whole.qc["genes_used"]


def test_rctd_reports_the_spots_it_leaves_out(reference, q_table, tmp_path):
    slide, _ = load_slide("slide1")
    totals = np.asarray(slide.X.sum(axis=1)).ravel()
    cutoff = int(np.quantile(totals, 0.1))
    result = run("rctd", slide, reference, q_table, umi_min=cutoff)
    low = set(slide.obs_names[totals < cutoff])
    assert len(low) > 5
    assert set(result.filtered().index) == low and not low & set(result.proportions.index)
    reason = f"fewer than {cutoff} UMIs (RCTD UMI_min)"
    assert result.qc["spots_filtered"] == len(low) and result.qc["spots_filtered_by_reason"] == {reason: len(low)}
    assert result.qc["spots_fitted"] == slide.n_obs - len(low)
    paths = base.write_outputs(slide, result, rctd_method, "slide1", outdir=tmp_path)
    out = ad.read_h5ad(paths["h5ad"])
    frame = out.obsm[keys.RCTD_PROPORTIONS]
    assert frame.loc[sorted(low)].isna().all().all() and frame.drop(index=sorted(low)).notna().all().all()
    assert (out.obs[keys.DECONV_STATUS["rctd"]] == reason).sum() == len(low)
    assert out.X.sum() == slide.X.sum()  # raw counts untouched
    table = pd.read_csv(paths["filtered"], index_col=0)
    assert set(table.index) == low and set(table["reason"]) == {reason}
    assert len(pd.read_csv(paths["csv"], index_col=0)) == slide.n_obs - len(low)


def test_rctd_never_downloads_without_a_table(reference, tmp_path, monkeypatch):
    _no_network(monkeypatch)
    slide, _ = load_slide("slide1")
    with pytest.raises(InputError, match="sample slide1: rctd: no likelihood table given"):
        rctd_method.run(slide, reference, "cell_type", q_matrix_path=None)
    with pytest.raises(InputError, match="RCTD likelihood table not found"):
        rctd_method.run(slide, reference, "cell_type", q_matrix_path=tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="is not an RCTD likelihood table"):
        rctd_method.run(slide, reference, "cell_type", q_matrix_path=bad)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("method", METHODS)
def test_no_shared_gene_names_the_sample(method, reference, q_table):
    slide, _ = load_slide("slide2")
    renamed = reference.copy()
    renamed.var_names = [f"other{i}" for i in range(renamed.n_vars)]
    with pytest.raises(InputError, match=f"sample slide2: {method}: no gene is shared with the reference"):
        run(method, slide, renamed, q_table)


@pytest.mark.parametrize("method,minimum", [("rctd", 25), ("flashdeconv", 3), ("nnls", 3)])
def test_a_type_below_the_minimum_names_the_sample(method, minimum, reference, q_table):
    slide, _ = load_slide("slide3")
    labels = reference.obs["cell_type"].astype(str)
    plasma = np.flatnonzero(labels == "Plasma")
    keep = np.setdiff1d(np.arange(reference.n_obs), plasma[minimum - 1 :])
    small = reference[keep].copy()
    with pytest.raises(
        InputError,
        match=rf"sample slide3: {method} needs at least {minimum} reference cells "
        rf"per cell type; too few: Plasma \({minimum - 1}\)",
    ):
        run(method, slide, small, q_table)


def test_missing_label_column_names_the_sample(reference):
    slide, _ = load_slide("slide1")
    with pytest.raises(InputError, match="sample slide1: nnls: the reference has no label column 'celltype'"):
        nnls_method.run(slide, reference, "celltype")


# --------------------------------------------------------------------------- scripts and outputs


def test_scripts_write_every_output(reference, q_table, tmp_path, monkeypatch):
    slide, truth = load_slide("slide1")
    slide.write_h5ad(tmp_path / "slide1.qc.h5ad")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    monkeypatch.chdir(tmp_path)
    common = ["--slide", "slide1.qc.h5ad", "--sample", "slide1", "--reference", "ref.h5ad", "--selection", "auto: test"]
    map_nnls.main(common)
    map_flashdeconv.main(common + ["--sketch-dim", "256", "--lambda-spatial", "auto"])
    map_rctd.main(common + ["--q-matrix", str(q_table), "--accelerator", "cpu"])
    for method in METHODS:
        props = pd.read_csv(f"slide1.{method}_proportions.csv", index_col=0)
        assert props.index.name == "barcode" and list(props.index) == list(slide.obs_names)
        np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-5)
        assert (pearson_per_type(props, truth) >= MIN_PEARSON[method]).all()
        record = json.loads(Path(f"slide1.{method}_qc.json").read_text())
        for key in (
            "sample",
            "method",
            "device",
            "genes_used",
            "spots_fitted",
            "spots_filtered",
            "spots_filtered_by_reason",
            "convergence",
            "seconds",
            "settings",
            "selection",
        ):
            assert key in record, (method, key)
        assert record["selection"] == "auto: test"
        module = METHOD_MODULES[method]
        assert record["label"] == module.LABEL and record["headline"] == list(module.HEADLINE)
        assert "selection" in record["report_columns"] and set(record["report_columns"]) <= set(record)
        assert record["mean_proportions"] == pytest.approx(props.mean().to_dict(), abs=1e-5)
        out = ad.read_h5ad(f"slide1.{method}.h5ad")
        np.testing.assert_allclose(out.obsm[keys.DECONV_PROPORTIONS[method]].to_numpy(), props.to_numpy(), atol=1e-5)
        assert out.uns[keys.UNS_DECONV[method]]["method"] == method
        assert Path(f"slide1.{method}_maps.png").stat().st_size > 1000
    assert json.loads(Path("slide1.flashdeconv_qc.json").read_text())["settings"]["sketch_dim"] == 256
    assert json.loads(Path("slide1.rctd_qc.json").read_text())["mode"] == "full"  # --mode auto on Visium spots
    assert '"map_rctd.py":' in Path("versions.yml").read_text()


def test_script_refuses_a_slide_of_another_sample(reference, tmp_path):
    slide, _ = load_slide("slide1")
    slide.write_h5ad(tmp_path / "s.h5ad")
    reference.write_h5ad(tmp_path / "ref.h5ad")
    with pytest.raises(InputError, match=r"sample X: .* holds sample\(s\) slide1"):
        map_nnls.main(["--slide", str(tmp_path / "s.h5ad"), "--sample", "X", "--reference", str(tmp_path / "ref.h5ad")])


def test_maps_of_large_slides_draw_a_sample(reference, tmp_path):
    slide, _ = load_slide("slide2")
    result = nnls_method.run(slide, reference, "cell_type")
    png = base.plot_maps(slide, result, nnls_method.LABEL, tmp_path / "maps.png", max_spots=50)
    assert png.stat().st_size > 1000


def test_compute_q_script(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.chdir(tmp_path)
    compute_rctd_q.main(["--output", "q.npz", "--k-max", "12", "--sigma-step", "0"])
    assert rctd_method.read_q_table_info(tmp_path / "q.npz") == {
        "path": str((tmp_path / "q.npz").resolve()),
        "sigmas": [100],
        "k_max": 12,
    }
    assert rctd_method.rctd_sigma_grid(1)[:3] == [10, 11, 12] and len(rctd_method.rctd_sigma_grid(1)) == 126
    assert 100 in rctd_method.rctd_sigma_grid(8) and len(rctd_method.rctd_sigma_grid(8)) == 16
    with pytest.raises(InputError, match="sigma step"):
        rctd_method.rctd_sigma_grid(9)
