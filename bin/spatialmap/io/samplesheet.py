"""Checking the samplesheet before any heavy work.

One row per slide: ``sample``, then exactly one input: ``spaceranger_dir`` (a
Space Ranger ``outs/`` folder; a Visium HD one is recognised by its
``binned_outputs/`` folder), ``xenium_dir`` (a Xenium output bundle), ``zarr`` (a
SpatialData store) or ``h5ad`` (an AnnData file with raw counts and
``obsm['spatial']``), and an optional ``group`` (slides of one group are
mapped jointly by cell2location). Relative paths are taken relative to the
samplesheet's folder; remote URIs (``s3://``, ``gs://`` ...) are passed on
unchecked.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from spatialmap.cli import InputError

REQUIRED = ("sample",)
INPUT_COLUMNS = ("spaceranger_dir", "h5ad", "xenium_dir", "zarr")
OPTIONAL = ("group",)
ALLOWED = REQUIRED + INPUT_COLUMNS + OPTIONAL
DEFAULT_GROUP = "all"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")

MATRIX_CANDIDATES = ("filtered_feature_bc_matrix.h5", "filtered_feature_bc_matrix")
POSITION_CANDIDATES = (
    "spatial/tissue_positions.csv",
    "spatial/tissue_positions_list.csv",
    "spatial/tissue_positions.parquet",
)
HD_BIN_FILES = ("filtered_feature_bc_matrix.h5", "spatial/tissue_positions.parquet", "spatial/scalefactors_json.json")
XENIUM_FILES = (
    "experiment.xenium",
    "transcripts.parquet",
    "cells.parquet",
    "cell_feature_matrix.h5",
    "cell_boundaries.parquet",
    "cells.zarr.zip",
)
XENIUM_IMAGES = ("morphology_focus", "morphology_focus.ome.tif", "morphology_mip.ome.tif")
HD_BIN_SIZES = (8, 16)
SEGMENTATIONS = ("auto", "stardist", "proseg", "stardist_proseg", "spaceranger", "xenium")  # --segmentation
PIPELINE_SEGMENTATIONS = ("stardist", "proseg", "stardist_proseg")  # per slide: the pipeline draws the cells
HD_CELLS_GEOJSON = "segmented_outputs/cell_segmentations.geojson"


@dataclass(frozen=True)
class Slide:
    """One checked samplesheet row."""

    sample: str
    input_type: str  # "spaceranger", "visium_hd", "xenium", "zarr" or "h5ad"
    path: str
    group: str
    segmentation: str = "none"  # per slide: none, spaceranger, xenium, stardist or proseg


def _resolve(value: str, base_dir: Path) -> str:
    if URI_RE.match(value):
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return str(path.resolve())


def _check_spaceranger_dir(where: str, path: str, hd_bin_size: int = 8, hd_mode: str = "bins") -> str:
    """Check a Space Ranger ``outs/``; returns ``visium_hd`` when it holds ``binned_outputs/``."""
    if URI_RE.match(path):
        return "spaceranger"
    outs = Path(path)
    if not outs.is_dir():
        raise InputError(f"{where}: spaceranger_dir '{path}' does not exist or is not a folder")
    if (outs / "binned_outputs").is_dir():
        _check_visium_hd(where, outs, 2 if hd_mode == "cells" else hd_bin_size)
        return "visium_hd"
    if not any((outs / name).exists() for name in MATRIX_CANDIDATES):
        raise InputError(
            f"{where}: no count matrix in '{path}' "
            f"(expected {' or '.join(MATRIX_CANDIDATES)}; give the Space Ranger outs/ folder)"
        )
    if not any((outs / name).is_file() for name in POSITION_CANDIDATES):
        raise InputError(
            f"{where}: no spot positions file in '{path}' (expected one of {', '.join(POSITION_CANDIDATES)})"
        )
    return "spaceranger"


def resolve_segmentation(where: str, input_type: str, path: str, hd_mode: str, segmentation: str) -> str:
    """The segmentation a slide gets: ``none``, ``spaceranger``, ``xenium``, ``stardist``, ``proseg``
    (ProSeg refining the platform's cells) or ``stardist_proseg`` (ProSeg refining StarDist's nuclei).

    Parameters
    ----------
    where
        Row and sample, for messages.
    input_type
        The slide's platform (``visium_hd``, ``xenium``, ...).
    path
        The slide's folder.
    hd_mode
        ``bins`` or ``cells``: only Visium HD in cells mode and Xenium are segmented.
    segmentation
        ``--segmentation``: ``auto`` (the platform's own boundaries when the input has them,
        otherwise StarDist on the H&E), ``stardist``, ``proseg`` (ProSeg refining Space Ranger 4's
        boundaries, or StarDist's nuclei on a Visium HD slide without them), ``stardist_proseg``
        (ProSeg refining StarDist's nuclei), or ``spaceranger`` / ``xenium`` (the platform's own
        boundaries, both names meaning "the platform's").

    A Xenium slide keeps the platform's cells under ``stardist`` (StarDist runs on an H&E;
    a Xenium bundle has a DAPI morphology image), and ProSeg refines the platform's cells under
    ``proseg`` and ``stardist_proseg``.

    Raises
    ------
    InputError
        A Visium HD slide without Space Ranger 4 boundaries when they are asked for.
    """
    if segmentation not in SEGMENTATIONS:
        raise InputError(f"--segmentation '{segmentation}': expected one of {', '.join(SEGMENTATIONS)}")
    if input_type == "xenium":
        # StarDist segments an H&E: a Xenium bundle has none (DAPI morphology), so it keeps the platform's cells
        return "proseg" if segmentation in ("proseg", "stardist_proseg") else "xenium"
    if input_type != "visium_hd" or hd_mode != "cells":
        return "none"
    has_boundaries = URI_RE.match(path) is not None or (Path(path) / HD_CELLS_GEOJSON).is_file()
    if segmentation == "proseg" and not has_boundaries:
        return "stardist_proseg"  # ProSeg refines a prior segmentation: StarDist's nuclei, found first
    if segmentation in PIPELINE_SEGMENTATIONS:
        return segmentation
    if segmentation == "auto":
        return "spaceranger" if has_boundaries else "stardist"
    if not has_boundaries:
        raise InputError(
            f"{where}: --hd_mode cells with --segmentation {segmentation} needs Space Ranger 4's cell segmentation; "
            f"Visium HD folder '{path}' has no {HD_CELLS_GEOJSON} (use --segmentation stardist or auto to segment the H&E)"
        )
    return "spaceranger"


def _check_visium_hd(where: str, outs: Path, hd_bin_size: int) -> None:
    """A Visium HD ``outs/``: the bins of the chosen size, the 2 µm bins, ``feature_slice.h5``."""
    for size in (hd_bin_size,):
        folder = f"binned_outputs/square_{size:03d}um"
        if not (outs / folder).is_dir():
            raise InputError(f"{where}: Visium HD folder '{outs}' has no {folder}")
        for name in HD_BIN_FILES:
            if not (outs / folder / name).is_file():
                raise InputError(f"{where}: Visium HD folder '{outs}' has no {folder}/{name}")
        _check_hd_bin_size(where, outs, size)
    if not any(p.name.endswith("feature_slice.h5") for p in outs.iterdir()):
        raise InputError(
            f"{where}: Visium HD folder '{outs}' has no feature_slice.h5 (the Space Ranger file whose "
            "metadata the reader needs)"
        )


HD_BARCODE_RE = re.compile(r"^s_(\d{3})um_")  # Space Ranger's bin barcodes: s_008um_<row>_<col>-1
HD_MATRIX = "filtered_feature_bc_matrix.h5"
HD_POSITIONS = "spatial/tissue_positions.parquet"


def hd_first_barcodes(folder: Path, n: int = 5) -> dict[str, list[str]]:
    """The first ``n`` bin barcodes of a Visium HD ``square_XXXum`` folder's matrix and positions file
    (``{file name: barcodes}``), read without loading either file.

    Raises
    ------
    OSError, ValueError, KeyError
        A file that cannot be read (e.g. a partial copy).
    """
    import h5py
    import pyarrow.parquet as pq

    with h5py.File(folder / HD_MATRIX, "r") as handle:
        matrix = [b.decode() if isinstance(b, bytes) else str(b) for b in handle["matrix/barcodes"][:n]]
    batch = next(pq.ParquetFile(folder / HD_POSITIONS).iter_batches(batch_size=n, columns=["barcode"]), None)
    positions = [] if batch is None else [str(b) for b in batch.column("barcode").to_pylist()]
    return {HD_MATRIX: matrix, HD_POSITIONS: positions[:n]}


def _check_hd_bin_size(where: str, outs: Path, size: int) -> None:
    """The matrix and the positions of ``square_<size>um`` are of ``size`` µm bins (their barcodes say so):
    a file copied from another bin size's folder is refused, naming it."""
    folder = outs / "binned_outputs" / f"square_{size:03d}um"
    try:
        first = hd_first_barcodes(folder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(
            f"{where}: Visium HD folder '{outs}': {folder.name}/{HD_MATRIX} or {HD_POSITIONS} cannot be read "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); a partial copy? copy {folder.name}/ again"
        ) from err
    for name, barcodes in first.items():
        sizes = {int(m.group(1)) for m in map(HD_BARCODE_RE.match, barcodes) if m}
        if sizes and sizes != {size}:
            other = f"{sorted(sizes)[0]} µm bins"
            raise InputError(
                f"{where}: the positions do not match the bins in Visium HD folder '{outs}': {folder.name}/{name} "
                f"holds {other} (e.g. {barcodes[0]}), not the {size} µm bins of its folder; copy {folder.name}/ "
                "again from the same Space Ranger run"
            )


def _check_xenium_dir(where: str, path: str) -> None:
    if URI_RE.match(path):
        return
    bundle = Path(path)
    if not bundle.is_dir():
        raise InputError(f"{where}: xenium_dir '{path}' does not exist or is not a folder")
    for name in XENIUM_FILES:
        if not (bundle / name).exists():
            raise InputError(f"{where}: Xenium folder '{path}' has no {name}")
    if not any((bundle / name).exists() for name in XENIUM_IMAGES):
        raise InputError(
            f"{where}: Xenium folder '{path}' has no morphology image (expected one of {', '.join(XENIUM_IMAGES)})"
        )


def _check_zarr(where: str, path: str) -> None:
    if URI_RE.match(path):
        return
    store = Path(path)
    if not store.is_dir():
        raise InputError(f"{where}: zarr '{path}' does not exist or is not a folder")
    if not any((store / name).is_file() for name in ("zarr.json", ".zgroup", ".zattrs", "zmetadata")):
        raise InputError(f"{where}: '{path}' is not a zarr store (no zarr.json or .zgroup)")
    if not (store / "tables").is_dir():
        raise InputError(f"{where}: SpatialData store '{path}' has no tables/ (a table of counts is needed)")


def _check_h5ad(where: str, path: str) -> None:
    if URI_RE.match(path):
        return
    if not path.endswith(".h5ad"):
        raise InputError(f"{where}: h5ad '{path}' does not end in .h5ad")
    if not Path(path).is_file():
        raise InputError(f"{where}: h5ad file '{path}' does not exist")


def read_samplesheet(
    path: str | Path,
    base_dir: str | Path | None = None,
    hd_bin_size: int = 8,
    hd_mode: str = "bins",
    segmentation: str = "auto",
) -> list[Slide]:
    """Read and check a samplesheet.

    Parameters
    ----------
    path
        The CSV samplesheet.
    base_dir
        Folder that relative paths are taken from; the samplesheet's own
        folder by default.
    hd_bin_size
        Bin size (µm) that Visium HD slides will be read at; its
        ``binned_outputs/square_XXXum`` folder must be present.
    hd_mode
        ``bins`` or ``cells``; cells need the 2 µm bins.
    segmentation
        ``--segmentation`` (see :func:`resolve_segmentation`); each slide's method is in
        ``Slide.segmentation``.

    Returns
    -------
    The checked rows, paths made absolute.

    Raises
    ------
    InputError
        On the first problem, naming the row (1-based, header excluded), the
        sample and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"samplesheet '{path}' does not exist")
    base_dir = Path(base_dir) if base_dir else path.resolve().parent
    rows = _read_rows(path)
    header = [cell.strip() for cell in rows[0]]
    _check_header(header)
    if len(rows) == 1:
        raise InputError("samplesheet: no slide rows under the header")
    slides: list[Slide] = []
    seen: dict[str, int] = {}
    for number, cells in enumerate(rows[1:], start=1):
        slides.append(_check_row(number, header, cells, seen, base_dir, hd_bin_size, hd_mode, segmentation))
    return slides


def _read_rows(path: Path) -> list[list[str]]:
    """The samplesheet's non-blank rows, header first; raises when there are none."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"samplesheet '{path}' is empty")
    return rows


def _check_header(header: list[str]) -> None:
    """Known columns, none twice, ``sample`` and at least one input column."""
    unknown = [name for name in header if name not in ALLOWED]
    if unknown:
        raise InputError(
            f"samplesheet: unknown column(s) {', '.join(repr(u) for u in unknown)}; "
            f"allowed columns are {', '.join(ALLOWED)}"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise InputError(f"samplesheet: column(s) {', '.join(duplicated)} appear more than once")
    if "sample" not in header:
        raise InputError("samplesheet: missing required column 'sample'")
    if not any(name in header for name in INPUT_COLUMNS):
        raise InputError(
            "samplesheet: missing column 'spaceranger_dir' or 'h5ad' (or 'xenium_dir', 'zarr'; one of them is required)"
        )


def _check_sample_name(number: int, sample: str, seen: dict[str, int]) -> str:
    """Check a row's sample name (well-formed, not used before), record it in ``seen``; returns the row's ``where``."""
    if not sample:
        raise InputError(f"samplesheet row {number}: the sample name is empty")
    where = f"samplesheet row {number} (sample '{sample}')"
    if not NAME_RE.match(sample):
        raise InputError(
            f"{where}: malformed sample name; use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no spaces)"
        )
    if sample in seen:
        raise InputError(f"{where}: duplicate sample name, already used in row {seen[sample]}")
    seen[sample] = number
    return where


def _check_input(where: str, column: str, resolved: str, hd_bin_size: int, hd_mode: str) -> str:
    """Check a row's input (the folder or file in ``column``); returns its input type."""
    if column == "spaceranger_dir":
        return _check_spaceranger_dir(where, resolved, hd_bin_size, hd_mode)
    if column == "xenium_dir":
        _check_xenium_dir(where, resolved)
        return "xenium"
    if column == "zarr":
        _check_zarr(where, resolved)
        return "zarr"
    _check_h5ad(where, resolved)
    return "h5ad"


def _check_row(
    number: int,
    header: list[str],
    cells: list[str],
    seen: dict[str, int],
    base_dir: Path,
    hd_bin_size: int,
    hd_mode: str,
    segmentation: str,
) -> Slide:
    """Check one slide row (``number`` 1-based, header excluded) into a :class:`Slide`."""
    if len(cells) != len(header):
        raise InputError(f"samplesheet row {number}: has {len(cells)} fields, the header has {len(header)}")
    record = {name: cell.strip() for name, cell in zip(header, cells)}
    where = _check_sample_name(number, record["sample"], seen)
    given = [name for name in INPUT_COLUMNS if record.get(name)]
    if len(given) != 1:
        raise InputError(
            f"{where}: give exactly one of spaceranger_dir or h5ad or xenium_dir or zarr (found {len(given)})"
        )
    column = given[0]
    resolved = _resolve(record[column], base_dir)
    if re.search(r"\s", Path(resolved).name):
        # a task gets the file or folder under its own name: a space would split its command line there
        raise InputError(
            f"{where}: the {column} name '{Path(resolved).name}' contains a space, which the pipeline's tasks cannot "
            "take; rename it (or link it under a name without spaces) and give that path"
        )
    input_type = _check_input(where, column, resolved, hd_bin_size, hd_mode)
    group = record.get("group") or DEFAULT_GROUP
    if not NAME_RE.match(group):
        raise InputError(f"{where}: malformed group name '{group}'")
    return Slide(
        sample=record["sample"],
        input_type=input_type,
        path=resolved,
        group=group,
        segmentation=resolve_segmentation(where, input_type, resolved, hd_mode, segmentation),
    )


STARDIST_SEGMENTATIONS = ("stardist", "stardist_proseg")  # the slides StarDist segments


def check_models(slides: list[Slide], stardist_model: str | Path | None = None, downloads_allowed: bool = True) -> None:
    """Before any task segments: the model the slides' segmentation needs is complete, or can be downloaded.

    Parameters
    ----------
    slides
        The checked rows.
    stardist_model
        ``--stardist_model``: checked (:func:`spatialmap.segmentation.models.check_stardist_model`) when
        a slide is segmented by StarDist.
    downloads_allowed
        Without ``stardist_model``, StarDist downloads its pretrained model: it must be on this
        machine or its host must answer (:func:`spatialmap.downloads.require`); False skips that
        (``-stub`` runs download nothing).

    Raises
    ------
    InputError
        Naming the slides that need the model, the folder and the missing or broken file; or the
        download that cannot be made and the parameter that avoids it.
    """
    from spatialmap import downloads
    from spatialmap.segmentation import models

    users = [s.sample for s in slides if s.segmentation in STARDIST_SEGMENTATIONS]
    if not users:
        return
    where = ("sample " if len(users) == 1 else "samples ") + ", ".join(users)
    if stardist_model:
        models.check_stardist_model(stardist_model, where)
    elif downloads_allowed:
        downloads.require(downloads.STARDIST_HE, where)


def write_checked(slides: list[Slide], path: str | Path) -> None:
    """Write checked rows as CSV: sample,input_type,path,group,segmentation."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "input_type", "path", "group", "segmentation"])
        for slide in slides:
            writer.writerow([slide.sample, slide.input_type, slide.path, slide.group, slide.segmentation])
