"""ProSeg through sopa: the missing-binary message, the options check, the cells file, and (with the
binary on PATH) ProSeg on the generated Visium HD slide and Xenium region against the true cells."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

pytest.importorskip("sopa")

from spatialmap import keys  # noqa: E402
from spatialmap.cli import InputError  # noqa: E402
from spatialmap.io import sdata as io_hd
from spatialmap.segmentation import proseg  # noqa: E402

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "test_data_hd"
needs_proseg = pytest.mark.skipif(
    shutil.which("proseg") is None,
    reason="no proseg binary on PATH: `bash tools/setup.sh --with-proseg` and add ~/.cache/spatialmap/proseg/bin to PATH",
)


def test_missing_binary_names_the_sample_and_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"sample hd1: --segmentation proseg needs the proseg binary") as err:
        proseg.segment_visium_hd(ASSETS / "hd1" / "outs", "hd1", tmp_path / "work")
    assert f"cargo install proseg --version {proseg.PROSEG_VERSION} --locked" in str(err.value)
    assert "tools/setup.sh --with-proseg" in str(err.value)


def test_options_set_by_the_pipeline_are_refused():
    assert proseg.split_args("--samples 100 --ncomponents 5", "s") == "--samples 100 --ncomponents 5"
    with pytest.raises(InputError, match="sample s: ProSeg options --cell-id-column are set by the pipeline"):
        proseg.split_args("--cell-id-column foo", "s")
    with pytest.raises(InputError, match="cannot parse"):
        proseg.split_args("--samples '100", "s")


def test_cells_file_layout(tmp_path):
    square = shapely.Polygon([(0, 0), (2, 0), (2, 2), (0, 2)])
    cells = gpd.GeoDataFrame(geometry=[square, shapely.affinity.translate(square, 5)], index=[3, 7])
    proseg.write_cells(cells, tmp_path / "s.cells.parquet")
    back = gpd.read_parquet(tmp_path / "s.cells.parquet")
    assert back.index.name == "cell_id" and list(back.index) == ["3", "7"] and back.crs is None
    assert list(back.columns) == ["geometry"] and (back.geom_type == "Polygon").all()
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_match_cells_is_one_to_one():
    square = shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)])
    cells = gpd.GeoDataFrame(geometry=[square, shapely.affinity.translate(square, 10)])
    found = proseg.match_cells(cells, np.array([1.0, 3.0, 11.0, 30.0]), np.array([1.0, 3.0, 1.0, 30.0]))
    # the first polygon holds two true centres: neither is matched; the third centre is; the last is outside
    assert found["matched"] == 1 and list(found["match"]) == [-1, -1, 1, -1]


def _platform_cells(path: Path) -> Path:
    bounds = pd.read_parquet(ASSETS / "xenium1" / "cell_boundaries.parquet")
    polygons = {
        cid: shapely.Polygon(g[["vertex_x", "vertex_y"]].to_numpy()) for cid, g in bounds.groupby("cell_id", sort=False)
    }
    cells = gpd.GeoDataFrame(geometry=list(polygons.values()), index=list(polygons))
    proseg.write_cells(cells, path)
    return path


def test_xenium_cells_from_polygons_count_the_transcripts(tmp_path):
    """The platform's own polygons as the cells file give back the platform's cell matrix (within 10%)."""
    adata = io_hd.read_xenium_cells(
        ASSETS / "xenium1", "xenium1", _platform_cells(tmp_path / "x.cells.parquet"), "test"
    )
    platform = io_hd.read_xenium(ASSETS / "xenium1", "xenium1")
    platform.obs_names = platform.obs["cell_id"].astype(str)
    assert adata.n_obs == platform.n_obs == 252 and set(adata.obs_names) == set(platform.obs_names)
    ours = np.asarray(adata.X.sum(axis=1)).ravel()
    theirs = np.asarray(platform[adata.obs_names].X.sum(axis=1)).ravel()
    assert np.corrcoef(ours, theirs)[0, 1] > 0.99 and 0.9 < ours.sum() / theirs.sum() <= 1.0
    assert np.abs(adata.obsm[keys.SPATIAL] - platform[adata.obs_names].obsm[keys.SPATIAL]).max() < 0.01  # pixels
    info = adata.uns[keys.UNS_PLATFORM]
    assert info["segmentation"] == "test" and info["cells_found"] == 252 and 85 < info["pct_transcripts_in_cells"] < 100


@pytest.fixture
def stand_in_proseg(monkeypatch, tmp_path):
    """A `proseg` on PATH that only prints its version, and sopa's runner writing ProSeg's output
    (proseg-output.zarr) with the given circles (µm) instead of running it."""
    import anndata
    import spatialdata
    from sopa.segmentation.methods import _proseg
    from spatialdata.models import ShapesModel

    binary = tmp_path / "bin" / "proseg"
    binary.parent.mkdir()
    binary.write_text(f"#!/bin/sh\necho 'proseg {proseg.PROSEG_VERSION}'\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary.parent}:{__import__('os').environ['PATH']}")
    commands = []

    def use(x_um, y_um, r_um):
        def run(command, cwd):
            commands.append(command)
            circles = [shapely.Point(x, y).buffer(r) for x, y, r in zip(x_um, y_um, r_um)]
            shapes_ = ShapesModel.parse(gpd.GeoDataFrame(geometry=circles))
            table = anndata.AnnData(np.ones((len(circles), 3), dtype=np.float32))
            sdata = spatialdata.SpatialData(shapes={"cell_boundaries": shapes_}, tables={"table": table})
            sdata.write(Path(cwd) / "proseg-output.zarr")

        monkeypatch.setattr(_proseg, "_run_proseg", run)
        return commands

    return use


def test_visium_hd_cells_come_back_in_full_resolution_pixels(stand_in_proseg, tmp_path):
    """ProSeg writes µm (sopa's bin centres x 0.5 µm/px); the cells file is in full-resolution pixels."""
    truth = pd.read_csv(ASSETS / "truth" / "hd1_cells.csv")
    commands = stand_in_proseg(truth["x_px"] * 0.5, truth["y_px"] * 0.5, truth["radius_um"])
    cells, qc = proseg.segment_visium_hd(ASSETS / "hd1" / "outs", "hd1", tmp_path / "work", threads=2,
                                         extra_args="--samples 50")  # fmt: skip
    found = proseg.match_cells(cells, truth["x_px"].to_numpy(), truth["y_px"].to_numpy())
    assert found["matched"] == len(truth) == qc["cells_found"] == qc["prior_cells"]
    assert qc["median_cell_area_um2"] == pytest.approx(np.median(np.pi * truth["radius_um"] ** 2), rel=0.02)
    assert (
        "--anndata /" in commands[0] and "--cell-id-column sopa_prior" in commands[0]
    )  # absolute path: proseg runs in the cache
    assert "--nthreads 2 --samples 50" in commands[0] and "--voxel-size 2" in commands[0]
    assert not (tmp_path / "work").exists()


def test_xenium_cells_come_back_in_microns_and_are_counted(stand_in_proseg, tmp_path):
    truth = pd.read_csv(ASSETS / "truth" / "xenium1_cells.csv")
    commands = stand_in_proseg(truth["x_um"], truth["y_um"], truth["radius_um"])
    cells, qc = proseg.segment_xenium(ASSETS / "xenium1", "xenium1", tmp_path / "work", threads=2)
    found = proseg.match_cells(cells, truth["x_um"].to_numpy(), truth["y_um"].to_numpy())
    assert found["matched"] == len(truth) == qc["cells_found"] == qc["prior_cells"]
    assert "--qv-column qv --min-qv 20.0" in commands[0] and "--compartment-column overlaps_nucleus" in commands[0]
    proseg.write_cells(cells, tmp_path / "x.cells.parquet")
    adata = io_hd.read_xenium_cells(ASSETS / "xenium1", "xenium1", tmp_path / "x.cells.parquet")
    assert adata.n_obs == len(truth) and adata.uns[keys.UNS_PLATFORM]["segmentation"] == "proseg"
    assert 90 < adata.uns[keys.UNS_PLATFORM]["pct_transcripts_in_cells"] < 100


@pytest.fixture(scope="module")
def hd_proseg(tmp_path_factory):
    return proseg.segment_visium_hd(
        ASSETS / "hd1" / "outs", "hd1", tmp_path_factory.mktemp("proseg_hd") / "work", threads=2
    )


@needs_proseg
def test_proseg_visium_hd_finds_the_true_cells(hd_proseg):
    cells, qc = hd_proseg
    truth = pd.read_csv(ASSETS / "truth" / "hd1_cells.csv")
    found = proseg.match_cells(cells, truth["x_px"].to_numpy(), truth["y_px"].to_numpy())
    assert abs(len(cells) - len(truth)) <= 0.1 * len(truth), (len(cells), len(truth))
    assert found["matched_fraction"] >= 0.85, found["matched_fraction"]
    assert qc["prior"] == "segmented_outputs/cell_segmentations.geojson" and qc["prior_cells"] == len(truth)
    assert (cells.geom_type == "Polygon").all() and cells.index.is_unique
    assert 20 < qc["median_cell_area_um2"] < 120  # true cells: radius 3.6-4.4 µm, 41-61 µm²


@needs_proseg
def test_proseg_xenium_finds_the_true_cells(tmp_path):
    cells, qc = proseg.segment_xenium(ASSETS / "xenium1", "xenium1", tmp_path / "work", threads=2)
    truth = pd.read_csv(ASSETS / "truth" / "xenium1_cells.csv")
    found = proseg.match_cells(cells, truth["x_um"].to_numpy(), truth["y_um"].to_numpy())
    assert abs(len(cells) - len(truth)) <= 0.1 * len(truth), (len(cells), len(truth))
    assert found["matched_fraction"] >= 0.85, found["matched_fraction"]
    assert not (tmp_path / "work").exists()  # sopa's cache removed


# --- ProSeg refining wrong Space Ranger 4 boundaries (synth_hd.generate_perturbed_hd: hd1 again with 10% of the
# cells merged in pairs, 10% split, 10% shifted 3 µm), scored against the true cells at IoU ≥ 0.5 -----------------

# thresholds fixed before ProSeg was first run on the perturbed prior
PROSEG_MIN_SHIFTED_MATCHED = 0.5  # shifted prior cells (none matched in the prior) that ProSeg brings back
PROSEG_MIN_SHIFTED_IOU_GAIN = 0.15  # their mean best IoU rises by at least this much over the prior's
PROSEG_MIN_UNTOUCHED_MATCHED = 0.8  # cells whose prior was right stay matched
# measured after, on a run of its own (proseg 3.2.0, not seeded; the test passed on another): shifted 33/35 matched,
# mean best IoU 0.58 (prior 0 / 0.37); untouched 0.94 matched; whole slide 0.81 matched (prior 0.70); the merges
# stay (17 of 18: ProSeg keeps the prior's cell count), splits fall from 35 to 12. From the true prior: 0.95.


def _by_kind(score: dict, kind: np.ndarray, which: str) -> tuple[float, float]:
    """Matched share and mean best IoU of the true cells of one perturbation kind."""
    pick = kind == which
    return float((score["match"][pick] >= 0).mean()), float(score["best_iou"][pick].mean())


@needs_proseg
def test_proseg_brings_perturbed_boundaries_back_towards_the_truth(perturbed_hd, tmp_path):
    from testdata import synth_hd

    outs, truth = perturbed_hd
    cells, qc = proseg.segment_visium_hd(outs, "hd1_perturbed", tmp_path / "work", threads=2)
    prior_polygons = synth_hd.spaceranger_cell_polygons(outs)
    assert qc["prior"] == "segmented_outputs/cell_segmentations.geojson" and qc["prior_cells"] == len(prior_polygons)
    true = synth_hd.true_cell_polygons(truth)
    refined, prior = synth_hd.score_segmentation(cells, true), synth_hd.score_segmentation(prior_polygons, true)
    kind = truth["perturbation"].to_numpy()
    report = {
        name: {"all": (round(s["matched_fraction"], 3), round(s["mean_best_iou"], 3)),
               **{k: tuple(round(v, 3) for v in _by_kind(s, kind, k)) for k in ("none", "merged", "split", "shifted")},
               "merges": s["merges"], "splits": s["splits"]}
        for name, s in (("proseg", refined), ("prior", prior))
    }  # fmt: skip
    shifted, shifted_iou = _by_kind(refined, kind, "shifted")
    assert shifted >= PROSEG_MIN_SHIFTED_MATCHED, report
    assert shifted_iou >= _by_kind(prior, kind, "shifted")[1] + PROSEG_MIN_SHIFTED_IOU_GAIN, report
    assert _by_kind(refined, kind, "none")[0] >= PROSEG_MIN_UNTOUCHED_MATCHED, report
    # on the whole slide ProSeg loses no ground against the prior it refines
    assert refined["matched_fraction"] >= prior["matched_fraction"], report
