"""Segmentation inputs checked before use (issue 25): the StarDist model folder, the downloads a run may
attempt, the plausibility of a segmentation, Visium HD bins whose files do not belong together."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import h5py
import numpy as np
import pytest

from spatialmap import downloads
from spatialmap.cli import InputError
from spatialmap.io import samplesheet
from spatialmap.report import multiqc as report
from spatialmap.segmentation import models, plausibility

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "assets" / "stardist_synth_he"
HD_OUTS = REPO / "assets" / "test_data_hd" / "hd1" / "outs"


def _model_copy(tmp_path: Path, files=("config.json", "thresholds.json", "weights_best.h5")) -> Path:
    folder = tmp_path / "he_model"
    folder.mkdir()
    for name in files:
        shutil.copy(MODEL / name, folder / name)
    return folder


# --- the model folder ------------------------------------------------------------------------------------------------


def test_complete_model_passes():
    assert models.check_stardist_model(MODEL, "sample hd1") == MODEL / "weights_best.h5"


def test_model_without_weights_is_refused_naming_sample_folder_and_file(tmp_path):
    """The issue's half-copied download: config.json but no weights_best.h5."""
    folder = _model_copy(tmp_path, ("config.json", "thresholds.json"))
    with pytest.raises(InputError) as err:
        models.check_stardist_model(folder, "sample hd1")
    assert str(err.value) == (
        f"sample hd1: --stardist_model {folder} has config.json but no weights_best.h5 (no *.h5 weights at all): "
        "StarDist would segment with an untrained network; copy the whole model folder (config.json and "
        "weights_best.h5)"
    )


def test_partial_or_foreign_files_are_refused(tmp_path):
    folder = _model_copy(tmp_path)
    data = (MODEL / "weights_best.h5").read_bytes()
    (folder / "weights_best.h5").write_bytes(data[: len(data) // 2])  # a half-copied file
    with pytest.raises(InputError, match=r"sample hd1: --stardist_model .*: weights_best.h5 cannot be read .*partial"):
        models.check_stardist_model(folder, "sample hd1")
    with h5py.File(folder / "weights_best.h5", "w") as handle:  # an HDF5 file, but no network in it
        handle["x"] = np.zeros(3)
    with pytest.raises(InputError, match="weights_best.h5 holds no StarDist network weights .*prob, dist"):
        models.check_stardist_model(folder, "sample hd1")
    (folder / "config.json").write_text('{"n_dim": 2, "n_rays"')  # cut short
    with pytest.raises(InputError, match="config.json cannot be read"):
        models.check_stardist_model(folder, "sample hd1")
    (folder / "config.json").write_text('{"n_dim": 2, "n_rays": 32, "n_channel_in": 1}')
    with pytest.raises(InputError, match="is a 2D model of 1 input channel.*needs a 2D model of 3 \\(RGB\\)"):
        models.check_stardist_model(folder, "sample hd1")
    (folder / "config.json").unlink()
    with pytest.raises(InputError, match="not a StarDist model folder: no config.json"):
        models.check_stardist_model(folder, "sample hd1")
    with pytest.raises(InputError, match="does not exist or is not a folder"):
        models.check_stardist_model(tmp_path / "absent", "sample hd1")


def test_weights_are_the_file_stardist_loads(tmp_path):
    """As csbdeep: any *.h5, one named *best* first."""
    folder = _model_copy(tmp_path, ("config.json",))
    shutil.copy(MODEL / "weights_best.h5", folder / "weights_last.h5")
    assert models.stardist_weights(folder) == folder / "weights_last.h5"
    shutil.copy(MODEL / "weights_best.h5", folder / "weights_best.h5")
    assert models.stardist_weights(folder) == folder / "weights_best.h5"


def _slides(*segmentations: str) -> list[samplesheet.Slide]:
    return [
        samplesheet.Slide(sample=f"s{i}", input_type="visium_hd", path="/x", group="all", segmentation=seg)
        for i, seg in enumerate(segmentations, start=1)
    ]


def test_samplesheet_check_names_the_slides_that_use_the_model(tmp_path):
    folder = _model_copy(tmp_path, ("config.json",))
    with pytest.raises(InputError, match=r"^samples s1, s3: --stardist_model .* no weights_best.h5"):
        samplesheet.check_models(_slides("stardist", "spaceranger", "stardist_proseg"), folder)
    samplesheet.check_models(_slides("spaceranger", "proseg"), folder)  # no slide uses it: not checked
    samplesheet.check_models(_slides("stardist"), MODEL)


# --- downloads -------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """No name resolves (as on a machine without internet) and an empty Keras cache: nothing downloaded before."""

    def fail(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv(downloads.OFFLINE_ENV, raising=False)


def test_download_refused_offline_in_one_line_naming_the_parameter(no_network):
    with pytest.raises(InputError) as err:
        downloads.require(downloads.STARDIST_HE, "sample hd1")
    assert str(err.value) == (
        "sample hd1: StarDist's pretrained model 2D_versatile_he is not on this machine and cannot be downloaded "
        "from github.com (its name does not resolve: Temporary failure in name resolution); to run without internet "
        "give --stardist_model DIR (a local StarDist model folder: config.json and weights_best.h5)"
    )
    with pytest.raises(InputError, match=r"^samples a, b: .*2D_versatile_he.* give --stardist_model DIR"):
        samplesheet.check_models(
            [samplesheet.Slide("a", "visium_hd", "/x", "all", "stardist"), samplesheet.Slide("b", "visium_hd", "/x", "all", "stardist_proseg")]
        )  # fmt: skip
    samplesheet.check_models(_slides("stardist"), downloads_allowed=False)  # -stub: no check


def test_download_not_needed_when_cached_and_refused_when_offline_is_set(no_network, monkeypatch):
    cached = downloads.STARDIST_HE.cached()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"zip")
    assert downloads.require(downloads.STARDIST_HE, "sample hd1") == "cached"
    cached.unlink()
    monkeypatch.setenv(downloads.OFFLINE_ENV, "1")
    with pytest.raises(
        InputError, match=r"\(SPATIALMAP_OFFLINE is set\); to run without internet give --stardist_model"
    ):
        downloads.require(downloads.STARDIST_HE, "sample hd1")


def test_the_library_download_fails_in_one_line(no_network):
    """StarDist's own download (Keras' get_file), tried for real with no name resolving: one line, no traceback."""
    pytest.importorskip("stardist")
    pytest.importorskip("sopa")
    from spatialmap.segmentation import stardist as segmentation

    with pytest.raises(InputError) as err:
        segmentation.stardist_method(None, where="sample hd1")
    message = str(err.value)
    assert message.startswith("sample hd1: StarDist's pretrained model 2D_versatile_he is not on this machine")
    assert message.endswith("to run without internet give --stardist_model DIR (a local StarDist model folder: "
                            "config.json and weights_best.h5)") and "\n" not in message  # fmt: skip
    assert socket.getdefaulttimeout() is None  # restored


def test_every_download_names_a_parameter():
    for download in downloads.DOWNLOADS.values():
        assert download.avoid.startswith("--") and download.url.startswith("https://")


# --- plausibility ----------------------------------------------------------------------------------------------------


def test_plausibility_limits_on_the_issues_numbers_and_the_test_slide():
    # the issue's untrained model: 258,064 objects on a 512 x 512 px image (0.5 µm/px: 16,384 bins), 0.5 µm²
    with pytest.raises(InputError) as err:
        plausibility.check("hd1", "stardist", 258_064, 0.5, 16_384, "of the imaged patches")
    assert str(err.value).startswith(
        "sample hd1: the stardist segmentation is implausible, not used: 258,064 stardist cells with a median area "
        "of 0.5 µm² (below one 2 µm bin, 4 µm²: no nucleus is that small) and 15.8 cells per 2 µm bin of the imaged "
        "patches (at most 0.5 is possible); an untrained or unsuited StarDist model gives this: check --stardist_model"
    )
    # one object per in-tissue bin, of a normal size: the density alone stops it
    with pytest.raises(InputError, match="1 cells per 2 µm bin of the tissue"):
        plausibility.check("hd1", "stardist", 11_095, 20.0, 11_095)
    # the embedded slide: 350 nuclei of 18 µm² (small model: 16 µm²) on 11,095 in-tissue bins
    assert plausibility.check("hd1", "stardist", 350, 16.1, 11_095) is None
    warning = plausibility.check("hd1", "proseg", 3000, 8.0, 11_095)
    assert "8 µm² (the smallest nuclei are ~9.6 µm² or more)" in warning and "0.27 cells per 2 µm bin" in warning
    assert plausibility.check("x1", "xenium", 252, 51.3, None) is None  # no bins: area only


def test_report_shows_segmentation_warnings_first():
    assert report.warning_sections([{"sample": "hd1", "cells_found": 10}]) == {}
    sections = report.warning_sections([{"sample": "hd1", "segmentation_warning": "3,000 proseg cells with <x>"}])
    section = sections["spatialmap_warnings_mqc.yaml"]
    assert section["plot_type"] == "html" and "<b>hd1</b>: 3,000 proseg cells with &lt;x&gt;" in section["data"]


# --- Visium HD files that do not belong together; names with spaces --------------------------------------------------


@pytest.fixture
def hd_foreign_positions(tmp_path) -> Path:
    """hd1 with the 16 µm bins' positions copied into square_008um/ (the issue's case)."""
    outs = tmp_path / "hd1" / "outs"
    shutil.copytree(HD_OUTS, outs)
    spatial = outs / "binned_outputs"
    shutil.copy(spatial / "square_016um/spatial/tissue_positions.parquet", spatial / "square_008um/spatial")
    return outs


def test_hd_positions_of_another_bin_size_refused_by_the_samplesheet_check(hd_foreign_positions, tmp_path):
    sheet = tmp_path / "s.csv"
    sheet.write_text(f"sample,spaceranger_dir\nhd1,{hd_foreign_positions}\n")
    with pytest.raises(InputError) as err:
        samplesheet.read_samplesheet(sheet)
    assert str(err.value) == (
        f"samplesheet row 1 (sample 'hd1'): the positions do not match the bins in Visium HD folder "
        f"'{hd_foreign_positions}': square_008um/spatial/tissue_positions.parquet holds 16 µm bins "
        "(e.g. s_016um_00000_00000-1), not the 8 µm bins of its folder; copy square_008um/ again from the same "
        "Space Ranger run"
    )
    samplesheet.read_samplesheet(sheet, hd_bin_size=16)  # the 16 µm folder is whole


def test_hd_positions_not_matching_the_bins_named_by_the_reader(hd_foreign_positions):
    pytest.importorskip("sopa")
    from spatialmap.io import sdata as io_hd

    with pytest.raises(InputError) as err:
        io_hd.read_visium_hd(hd_foreign_positions, "hd1", 8)
    assert str(err.value) == (
        "sample hd1: the positions do not match the bins: 731 of 731 bins of square_008um/filtered_feature_bc_matrix.h5 "
        "(e.g. s_008um_00000_00006-1) have no position in square_008um/spatial/tissue_positions.parquet (which lists "
        "e.g. s_016um_00000_00000-1); copy square_008um/ again from the same Space Ranger run"
    )


def test_samplesheet_path_with_a_space_in_its_name(tmp_path):
    slide = tmp_path / "my slide.h5ad"
    slide.write_bytes(b"")
    sheet = tmp_path / "s.csv"
    sheet.write_text("sample,h5ad\ns1,my slide.h5ad\n")
    with pytest.raises(InputError, match=r"row 1 \(sample 's1'\): the h5ad name 'my slide.h5ad' contains a space"):
        samplesheet.read_samplesheet(sheet)
