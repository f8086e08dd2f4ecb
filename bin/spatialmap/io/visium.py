"""Reading Visium slides: Space Ranger ``outs/`` folders and AnnData (``.h5ad``) files.

Both readers return an AnnData laid out the way scanpy's own Visium reader lays it out,
so ``scanpy.pl.spatial(adata, library_id=sample)`` works on the result:

- ``X``: raw UMI counts, CSR ``float32`` holding integers, gene expression features only;
- ``var_names``: gene symbols made unique, ``var['gene_ids']``, ``var['feature_types']``;
- ``obs``: ``in_tissue``, ``array_row``, ``array_col`` (Space Ranger) and ``sample``;
- ``obsm['spatial']``: spot centres in full-resolution pixels, columns (x, y);
- ``uns['spatial'][sample]``: ``images`` (``lowres``/``hires`` when present),
  ``scalefactors`` and ``metadata``.

Unlike ``scanpy.read_visium`` a missing ``tissue_hires_image.png`` is not an error: many
real deliveries only hold the low-resolution image.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from spatialmap import keys
from spatialmap.cli import InputError

log = logging.getLogger(__name__)

#: Column names of a Space Ranger tissue positions table, in file order.
POSITION_COLUMNS = [
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
]

# (file name inside spatial/, format label written to uns metadata), in order of preference.
_POSITION_FILES = [
    ("tissue_positions.csv", "2.x csv"),
    ("tissue_positions_list.csv", "1.x csv"),
    ("tissue_positions.parquet", "parquet"),
]
_IMAGES = {"lowres": "tissue_lowres_image.png", "hires": "tissue_hires_image.png"}


def _check_sample(sample: str) -> str:
    if not isinstance(sample, str) or not sample.strip():
        raise InputError(f"the sample name must be a non-empty text, got {sample!r}")
    return sample


def read_spaceranger(outs_dir: str | Path, sample: str) -> ad.AnnData:
    """Read one Visium slide from a Space Ranger ``outs/`` folder.

    Parameters
    ----------
    outs_dir
        Space Ranger ``outs`` folder holding ``filtered_feature_bc_matrix.h5`` (or the
        ``filtered_feature_bc_matrix/`` mtx folder) and ``spatial/``.
    sample
        Sample name; becomes ``obs['sample']`` and the ``uns['spatial']`` library key.

    Returns
    -------
    AnnData
        In-tissue spots x gene expression features, raw counts in ``X``.

    Raises
    ------
    InputError
        When the folder, the count matrix or the positions are missing or inconsistent,
        or no spot lies under tissue.
    """
    sample = _check_sample(sample)
    outs = Path(outs_dir)
    if not outs.is_dir():
        raise InputError(f"sample {sample}: the Space Ranger folder {outs} does not exist or is not a folder")
    if not (outs / "spatial").is_dir() and (outs / "outs" / "spatial").is_dir():
        outs = outs / "outs"  # the run folder was given instead of its outs/
    spatial_dir = outs / "spatial"
    if not spatial_dir.is_dir():
        raise InputError(
            f"sample {sample}: no 'spatial' folder in {outs}; give the Space Ranger 'outs' folder of a Visium run"
        )

    adata, metadata = _read_count_matrix(outs, sample)
    positions, positions_file, positions_format = _read_positions(spatial_dir, sample)
    metadata.update(positions_format=positions_format, positions_file=positions_file.name)

    missing = adata.obs_names.difference(positions.index)
    if len(missing):
        raise InputError(
            f"sample {sample}: {len(missing)} of {adata.n_obs} spots of the count matrix have no position in "
            f"{positions_file} (e.g. {missing[0]}); are the matrix and the spatial folder from the same "
            "Space Ranger run?"
        )
    positions = positions.loc[adata.obs_names]
    in_tissue = positions["in_tissue"].to_numpy() == 1
    if not in_tissue.any():
        raise InputError(
            f"sample {sample}: none of the {adata.n_obs} spots of the count matrix is marked in tissue in "
            f"{positions_file}"
        )
    if not in_tissue.all():
        log.info("sample %s: dropping %d spots of the matrix outside the tissue", sample, int((~in_tissue).sum()))
    adata = adata[in_tissue].copy()
    positions = positions.loc[adata.obs_names]

    for col in (keys.IN_TISSUE, keys.ARRAY_ROW, keys.ARRAY_COL):
        adata.obs[col] = positions[col].to_numpy(dtype=np.int64)
    adata.obs[keys.SAMPLE] = pd.Categorical([sample] * adata.n_obs)
    adata.obsm[keys.SPATIAL] = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)

    scalefactors = _read_scalefactors(spatial_dir, sample)
    images = _read_images(spatial_dir, sample) if scalefactors else {}
    if not scalefactors and any((spatial_dir / name).exists() for name in _IMAGES.values()):
        log.warning(
            "sample %s: no scale factors, so the tissue images cannot be placed; figures show spots only", sample
        )
    metadata["source"] = "spaceranger"
    adata.uns[keys.UNS_SPATIAL] = {sample: {"images": images, "scalefactors": scalefactors, "metadata": metadata}}
    return adata


def _read_count_matrix(outs: Path, sample: str) -> tuple[ad.AnnData, dict]:
    """Filtered gene expression matrix (spots x genes) and the run metadata the file holds."""
    import scanpy as sc  # slow to import; only needed here

    h5 = outs / "filtered_feature_bc_matrix.h5"
    mtx_dir = outs / "filtered_feature_bc_matrix"
    metadata: dict = {}
    try:
        if h5.is_file():
            with warnings.catch_warnings():  # duplicate symbols are made unique below
                warnings.filterwarnings("ignore", message="Variable names are not unique")
                adata = sc.read_10x_h5(h5)
            metadata = _h5_metadata(h5)
            metadata["count_matrix"] = h5.name
        elif (mtx_dir / "matrix.mtx.gz").is_file() or (mtx_dir / "matrix.mtx").is_file():
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Variable names are not unique")
                adata = sc.read_10x_mtx(mtx_dir, var_names="gene_symbols", make_unique=False, gex_only=True)
            metadata["count_matrix"] = mtx_dir.name + "/"
        else:
            raise InputError(
                f"sample {sample}: no count matrix in {outs}: expected filtered_feature_bc_matrix.h5 or "
                "filtered_feature_bc_matrix/matrix.mtx.gz"
            )
    except InputError:
        raise
    except (OSError, KeyError, ValueError, IndexError) as err:
        raise InputError(f"sample {sample}: cannot read the count matrix in {outs}: {err}") from err

    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"sample {sample}: the count matrix in {outs} holds {adata.n_obs} spots and "
            f"{adata.n_vars} gene expression features"
        )
    if not adata.obs_names.is_unique:
        raise InputError(f"sample {sample}: the count matrix in {outs} repeats spot barcodes")
    if "feature_types" in adata.var:
        keep = (adata.var["feature_types"].astype(str) == "Gene Expression").to_numpy()
        if not keep.all():
            adata = adata[:, keep].copy()
    adata.var_names_make_unique()
    var = adata.var[[c for c in (keys.GENE_IDS, "feature_types", "genome") if c in adata.var]].copy()
    for col in ("feature_types", "genome"):
        if col in var:
            var[col] = var[col].astype(str).astype("category")
    adata.var = var
    adata.X = _as_csr_float32(adata.X)
    return adata, metadata


def _h5_metadata(h5: Path) -> dict:
    """Run information stored in the attributes of a 10x HDF5 file (strings only)."""
    import h5py

    out = {}
    with h5py.File(h5, "r") as f:
        for name in ("chemistry_description", "software_version", "library_ids"):
            if name in f.attrs:
                value = f.attrs[name]
                if isinstance(value, np.ndarray):
                    value = ", ".join(v.decode() if isinstance(v, bytes) else str(v) for v in value.ravel())
                elif isinstance(value, bytes):
                    value = value.decode()
                out[name] = str(value)
    return out


def _read_positions(spatial_dir: Path, sample: str) -> tuple[pd.DataFrame, Path, str]:
    """Tissue positions indexed by barcode, whichever of the three Space Ranger forms is present."""
    for name, fmt in _POSITION_FILES:
        path = spatial_dir / name
        if path.is_file():
            break
    else:
        names = ", ".join(name for name, _ in _POSITION_FILES)
        raise InputError(f"sample {sample}: no spot positions file in {spatial_dir}: expected one of {names}")

    try:
        if fmt == "parquet":
            table = pd.read_parquet(path)
        else:
            with path.open() as handle:
                first = handle.readline()
            has_header = first.split(",")[0].strip().strip('"').lower() == "barcode"
            table = pd.read_csv(
                path,
                header=0 if has_header else None,
                names=None if has_header else POSITION_COLUMNS,
                dtype={"barcode": str} if has_header else {0: str},
            )
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"sample {sample}: cannot read the spot positions {path}: {err}") from err

    absent = [c for c in POSITION_COLUMNS if c not in table.columns]
    if absent:
        raise InputError(f"sample {sample}: the spot positions {path} lack the column(s) {', '.join(absent)}")
    table = table[POSITION_COLUMNS].copy()
    table["barcode"] = table["barcode"].astype(str)
    if table["barcode"].duplicated().any():
        dup = table.loc[table["barcode"].duplicated(), "barcode"].iloc[0]
        raise InputError(f"sample {sample}: the spot positions {path} list barcode {dup} more than once")
    numeric = POSITION_COLUMNS[1:]
    try:
        table[numeric] = table[numeric].apply(pd.to_numeric, errors="raise")
    except (ValueError, TypeError) as err:
        raise InputError(f"sample {sample}: the spot positions {path} hold a non-numeric value: {err}") from err
    if table[numeric].isna().any().any():
        raise InputError(f"sample {sample}: the spot positions {path} have empty values")
    if not table["in_tissue"].isin([0, 1]).all():
        raise InputError(f"sample {sample}: the in_tissue column of {path} must hold only 0 and 1")
    return table.set_index("barcode"), path, fmt


def _read_scalefactors(spatial_dir: Path, sample: str) -> dict:
    path = spatial_dir / "scalefactors_json.json"
    if not path.is_file():
        log.warning("sample %s: no %s; figures will show spots without the tissue image", sample, path.name)
        return {}
    try:
        factors = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"sample {sample}: cannot read the scale factors {path}: {err}") from err
    if not isinstance(factors, dict):
        raise InputError(f"sample {sample}: the scale factors {path} are not a JSON object")
    return {str(k): float(v) for k, v in factors.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _read_images(spatial_dir: Path, sample: str) -> dict:
    """Tissue images present in ``spatial/`` as float arrays in [0, 1], as scanpy stores them."""
    from matplotlib.image import imread

    images = {}
    for key, name in _IMAGES.items():
        path = spatial_dir / name
        if not path.is_file():
            continue
        try:
            images[key] = np.asarray(imread(path))
        except (OSError, ValueError, SyntaxError) as err:
            raise InputError(f"sample {sample}: cannot read the tissue image {path}: {err}") from err
    return images


def read_h5ad_slide(path: str | Path, sample: str) -> ad.AnnData:
    """Read a slide stored as AnnData (``.h5ad``) with spot coordinates in ``obsm['spatial']``.

    Parameters
    ----------
    path
        The ``.h5ad`` file; it is not modified.
    sample
        Sample name; becomes ``obs['sample']`` and the ``uns['spatial']`` library key.

    Returns
    -------
    AnnData
        A copy with ``X`` as CSR ``float32``, unique names, ``obs['sample']`` set and
        ``uns['spatial'][sample]`` present (without image or scale factors when the file
        has none; figures then show spots only).
    """
    sample = _check_sample(sample)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"sample {sample}: the slide file {path} does not exist")
    try:
        adata = ad.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise InputError(f"sample {sample}: cannot read {path} as an AnnData .h5ad file: {err}") from err

    if keys.SPATIAL not in adata.obsm:
        raise InputError(
            f"sample {sample}: {path} has no spot coordinates (obsm['{keys.SPATIAL}']); "
            "a slide needs the x, y position of every spot"
        )
    coords = np.asarray(adata.obsm[keys.SPATIAL])
    if coords.ndim != 2 or coords.shape[1] < 2 or not np.issubdtype(coords.dtype, np.number):
        raise InputError(
            f"sample {sample}: obsm['{keys.SPATIAL}'] in {path} must be a numeric table with x and y columns, "
            f"got shape {coords.shape}"
        )
    coords = coords[:, :2].astype(np.float64)
    if not np.isfinite(coords).all():
        raise InputError(f"sample {sample}: obsm['{keys.SPATIAL}'] in {path} has missing or infinite coordinates")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"sample {sample}: {path} holds {adata.n_obs} spots and {adata.n_vars} genes")
    if not adata.obs_names.is_unique:
        raise InputError(f"sample {sample}: {path} repeats spot names (obs_names)")
    if adata.X is None:
        raise InputError(f"sample {sample}: {path} has no count matrix (X is empty)")

    adata.var_names_make_unique()
    adata.X = _as_csr_float32(adata.X)
    adata.obsm[keys.SPATIAL] = coords
    adata.obs[keys.SAMPLE] = pd.Categorical([sample] * adata.n_obs)

    libraries = dict(adata.uns.get(keys.UNS_SPATIAL, {}) or {})
    if sample in libraries:
        library = dict(libraries[sample])
    elif len(libraries) == 1:
        ((old_key, library),) = libraries.items()
        library = dict(library)
        log.info("sample %s: using the image library '%s' of %s", sample, old_key, path.name)
    else:
        if len(libraries) > 1:
            log.warning(
                "sample %s: %s holds %d image libraries and none is named %s; figures will show spots only",
                sample,
                path.name,
                len(libraries),
                sample,
            )
        library = {}
    library.setdefault("images", {})
    library.setdefault("scalefactors", {})
    metadata = dict(library.get("metadata", {}) or {})
    metadata.update(source="h5ad", file=path.name)
    library["metadata"] = metadata
    adata.uns[keys.UNS_SPATIAL] = {sample: library}
    return adata


def _as_csr_float32(x) -> sparse.csr_matrix:
    """The count matrix as CSR float32 (values unchanged for counts below 2**24)."""
    if sparse.issparse(x):
        x = sparse.csr_matrix(x)
    else:
        x = sparse.csr_matrix(np.asarray(x))
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    return x


def check_raw_counts(adata: ad.AnnData, sample: str) -> None:
    """Refuse a count matrix that does not hold raw UMI counts.

    Only the stored values are inspected on sparse data, so the check is cheap.

    Raises
    ------
    InputError
        When ``X`` holds a negative, missing or non-integer value; the message names an
        offending gene and spot.
    """
    from spatialmap.qc.checks import raw_count_problem

    if adata.X is None:
        raise InputError(f"sample {sample}: the slide has no count matrix")
    problem = raw_count_problem(adata.X)
    if problem is None:
        return
    if problem.kind == "dtype":
        raise InputError(f"sample {sample}: the count matrix holds values of type {problem.dtype}, not counts")
    gene, spot = str(adata.var_names[problem.col]), str(adata.obs_names[problem.row])
    if problem.kind == "nonfinite":
        raise InputError(
            f"sample {sample}: the count matrix holds missing or infinite values (e.g. for gene {gene} in spot "
            f"{spot}); give raw UMI counts"
        )
    if problem.kind == "negative":
        raise InputError(
            f"sample {sample}: the count matrix holds negative values (e.g. {problem.value:.4g} for gene {gene} in "
            f"spot {spot}); give raw UMI counts, not normalised, scaled or log-transformed data"
        )
    raise InputError(
        f"sample {sample}: the count matrix holds non-integer values (e.g. {problem.value:.3g} for gene "
        f"{gene} in spot {spot}); give raw UMI counts, not normalised data"
    )
