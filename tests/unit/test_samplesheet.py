"""The samplesheet check: each problem names the row, the sample and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from spatialmap.cli import InputError
from spatialmap.io.samplesheet import read_samplesheet, write_checked


@pytest.fixture
def outs(tmp_path: Path) -> Path:
    """A minimal Space Ranger outs/ layout (the check only looks for the files)."""
    folder = tmp_path / "s1" / "outs"
    (folder / "spatial").mkdir(parents=True)
    (folder / "filtered_feature_bc_matrix.h5").write_bytes(b"")
    (folder / "spatial" / "tissue_positions.csv").write_text("barcode\n")
    return folder


def _sheet(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "samplesheet.csv"
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_samplesheet_folder(tmp_path, outs):
    (tmp_path / "x.h5ad").write_bytes(b"")
    sheet = _sheet(tmp_path, "sample,spaceranger_dir,h5ad,group\nA,s1/outs,,g1\nB,,x.h5ad,\n")
    slides = read_samplesheet(sheet)
    assert [(s.sample, s.input_type, s.group) for s in slides] == [("A", "spaceranger", "g1"), ("B", "h5ad", "all")]
    assert slides[0].path == str(outs.resolve())
    out = tmp_path / "checked.csv"
    write_checked(slides, out)
    assert out.read_text().splitlines()[0] == "sample,input_type,path,group,segmentation"


def test_byte_order_mark_and_blank_lines_are_accepted(tmp_path, outs):
    sheet = _sheet(tmp_path, "\ufeffsample,spaceranger_dir\n\nA,s1/outs\n\n")
    assert [s.sample for s in read_samplesheet(sheet)] == ["A"]


def test_remote_paths_pass_unchecked(tmp_path):
    sheet = _sheet(tmp_path, "sample,spaceranger_dir\nA,s3://bucket/a/outs\n")
    assert read_samplesheet(sheet)[0].path == "s3://bucket/a/outs"


@pytest.mark.parametrize(
    "text, message",
    [
        ("sample,spaceranger_dir,colour\nA,s1/outs,red\n", "unknown column(s) 'colour'"),
        ("spaceranger_dir\ns1/outs\n", "missing required column 'sample'"),
        ("sample,group\nA,g\n", "missing column 'spaceranger_dir' or 'h5ad'"),
        ("sample,spaceranger_dir\n", "no slide rows"),
        (
            "sample,spaceranger_dir\nA,s1/outs\nA,s1/outs\n",
            "row 2 (sample 'A'): duplicate sample name, already used in row 1",
        ),
        ("sample,spaceranger_dir\nslide 1,s1/outs\n", "row 1 (sample 'slide 1'): malformed sample name"),
        ("sample,spaceranger_dir\n,s1/outs\n", "row 1: the sample name is empty"),
        ("sample,spaceranger_dir\nA,nowhere/outs\n", "row 1 (sample 'A'): spaceranger_dir"),
        ("sample,spaceranger_dir,h5ad\nA,s1/outs,x.h5ad\n", "give exactly one of spaceranger_dir or h5ad"),
        ("sample,h5ad\nA,missing.h5ad\n", "row 1 (sample 'A'): h5ad file"),
        ("sample,h5ad\nA,table.csv\n", "does not end in .h5ad"),
        ("sample,spaceranger_dir,group\nA,s1/outs,bad group\n", "malformed group name 'bad group'"),
        ("sample,spaceranger_dir\nA,s1/outs,extra\n", "row 1: has 3 fields, the header has 2"),
    ],
)
def test_bad_samplesheets_name_row_and_problem(tmp_path, outs, text, message):
    with pytest.raises(InputError) as err:
        read_samplesheet(_sheet(tmp_path, text))
    assert message in str(err.value)


def test_outs_without_matrix_or_positions(tmp_path, outs):
    (outs / "spatial" / "tissue_positions.csv").unlink()
    with pytest.raises(InputError, match="no spot positions file"):
        read_samplesheet(_sheet(tmp_path, "sample,spaceranger_dir\nA,s1/outs\n"))
    (outs / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(InputError, match="no count matrix"):
        read_samplesheet(_sheet(tmp_path, "sample,spaceranger_dir\nA,s1/outs\n"))


def test_positions_in_1x_form_are_accepted(tmp_path, outs):
    (outs / "spatial" / "tissue_positions.csv").rename(outs / "spatial" / "tissue_positions_list.csv")
    assert read_samplesheet(_sheet(tmp_path, "sample,spaceranger_dir\nA,s1/outs\n"))[0].sample == "A"


# --- Visium HD, Xenium, SpatialData stores --------------------------------------------------

HD_ASSETS = Path(__file__).resolve().parents[2] / "assets" / "test_data_hd"


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_platforms_are_recognised(tmp_path):
    _copy(HD_ASSETS / "hd1", tmp_path / "hd1")
    _copy(HD_ASSETS / "xenium1", tmp_path / "xen")
    store = tmp_path / "s.zarr"
    (store / "tables").mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    sheet = _sheet(
        tmp_path,
        "sample,spaceranger_dir,xenium_dir,zarr\nH,hd1/outs,,\nX,,xen,\nZ,,,s.zarr\n",
    )
    slides = read_samplesheet(sheet)
    assert [(s.sample, s.input_type) for s in slides] == [("H", "visium_hd"), ("X", "xenium"), ("Z", "zarr")]


@pytest.mark.parametrize(
    "remove, message",
    [
        ("hd1/outs/binned_outputs/square_008um", "has no binned_outputs/square_008um"),
        (
            "hd1/outs/binned_outputs/square_008um/spatial/tissue_positions.parquet",
            "has no binned_outputs/square_008um/spatial/tissue_positions.parquet",
        ),
        ("hd1/outs/feature_slice.h5", "has no feature_slice.h5"),
        ("xen/transcripts.parquet", "Xenium folder '{tmp}/xen' has no transcripts.parquet"),
        ("xen/cells.zarr.zip", "has no cells.zarr.zip"),
        ("xen/morphology_focus", "has no morphology image"),
    ],
)
def test_incomplete_hd_and_xenium_folders_name_row_and_file(tmp_path, remove, message):
    import shutil

    _copy(HD_ASSETS / "hd1", tmp_path / "hd1")
    _copy(HD_ASSETS / "xenium1", tmp_path / "xen")
    target = tmp_path / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    sheet = _sheet(tmp_path, "sample,spaceranger_dir,xenium_dir\nH,hd1/outs,\nX,,xen\n")
    with pytest.raises(InputError) as err:
        read_samplesheet(sheet)
    text = str(err.value)
    row = "row 1 (sample 'H')" if remove.startswith("hd1") else "row 2 (sample 'X')"
    assert row in text and message.format(tmp=tmp_path.resolve()) in text


def test_hd_bin_size_16_needs_its_folder(tmp_path):
    import shutil

    _copy(HD_ASSETS / "hd1", tmp_path / "hd1")
    shutil.rmtree(tmp_path / "hd1/outs/binned_outputs/square_016um")
    sheet = _sheet(tmp_path, "sample,spaceranger_dir\nH,hd1/outs\n")
    assert read_samplesheet(sheet)[0].input_type == "visium_hd"
    with pytest.raises(InputError, match="has no binned_outputs/square_016um"):
        read_samplesheet(sheet, hd_bin_size=16)


def test_zarr_without_tables_is_refused(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / ".zgroup").write_text("{}")
    with pytest.raises(InputError, match=r"row 1 \(sample 'Z'\).*has no tables/"):
        read_samplesheet(_sheet(tmp_path, "sample,zarr\nZ,s.zarr\n"))


def test_committed_hd_samplesheet_mixes_three_platforms():
    slides = read_samplesheet(HD_ASSETS / "samplesheet.csv")
    assert [s.input_type for s in slides] == ["spaceranger", "visium_hd", "xenium"]


def test_hd_cells_mode_needs_the_2um_bins_and_the_segmentation(tmp_path):
    import shutil

    _copy(HD_ASSETS / "hd1", tmp_path / "hd1")
    sheet = _sheet(tmp_path, "sample,spaceranger_dir\nH,hd1/outs\n")
    assert read_samplesheet(sheet, hd_mode="cells")[0].input_type == "visium_hd"
    shutil.rmtree(tmp_path / "hd1/outs/segmented_outputs")
    assert read_samplesheet(sheet)[0].input_type == "visium_hd"  # bins mode does not need it
    with pytest.raises(InputError, match=r"row 1 \(sample 'H'\).*has no segmented_outputs/cell_segmentations.geojson"):
        read_samplesheet(sheet, hd_mode="cells", segmentation="spaceranger")
    # auto: no platform boundaries, so StarDist segments the H&E
    assert read_samplesheet(sheet, hd_mode="cells")[0].segmentation == "stardist"
    # ProSeg on Visium HD refines a prior: without Space Ranger's boundaries, StarDist's nuclei found first
    assert read_samplesheet(sheet, hd_mode="cells", segmentation="proseg")[0].segmentation == "stardist_proseg"


@pytest.mark.parametrize(
    "hd_mode, segmentation, expected",
    [
        ("cells", "auto", ["none", "spaceranger", "xenium"]),
        ("cells", "stardist", ["none", "stardist", "xenium"]),  # Xenium has no H&E: its platform cells
        ("cells", "spaceranger", ["none", "spaceranger", "xenium"]),
        ("cells", "xenium", ["none", "spaceranger", "xenium"]),
        ("cells", "proseg", ["none", "proseg", "proseg"]),
        ("cells", "stardist_proseg", ["none", "stardist_proseg", "proseg"]),  # Xenium: ProSeg on the platform's cells
        ("bins", "auto", ["none", "none", "xenium"]),
    ],
)
def test_segmentation_per_slide(hd_mode, segmentation, expected):
    slides = read_samplesheet(HD_ASSETS / "samplesheet.csv", hd_mode=hd_mode, segmentation=segmentation)
    assert [s.segmentation for s in slides] == expected


def test_stardist_on_hd_only_sheet(tmp_path):
    _copy(HD_ASSETS / "hd1", tmp_path / "hd1")
    sheet = _sheet(tmp_path, "sample,spaceranger_dir\nH,hd1/outs\n")
    assert read_samplesheet(sheet, hd_mode="cells", segmentation="stardist")[0].segmentation == "stardist"
