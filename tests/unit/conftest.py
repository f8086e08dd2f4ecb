"""Shared fixtures: tiny Visium slides built from scratch in ``tmp_path``.

Every fixture returns a fresh object (or a factory writing a fresh folder), so a test
may modify what it gets without affecting another.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import io as spio
from scipy import sparse

# the package (bin/) and the test-data generators (tools/testdata) import through pyproject.toml's
# [tool.pytest.ini_options] pythonpath
BIN = Path(__file__).resolve().parents[2] / "bin"

# Features of the tiny slide: a duplicated symbol, human MT genes, one antibody feature.
FEATURES = pd.DataFrame(
    {
        "id": ["ENSG01", "ENSG02", "ENSG03", "ENSG04", "ENSG05", "ENSG06", "ENSG07", "AB01"],
        "name": ["GeneA", "GeneB", "MTOR", "MT-CO1", "MT-ND1", "GeneA", "GeneC", "CD3_TotalSeqB"],
        "feature_type": ["Gene Expression"] * 7 + ["Antibody Capture"],
    }
)
# Barcodes of the matrix: the last one lies outside the tissue and must be dropped.
MATRIX_BARCODES = [f"{a}{b}{c}-1" for a, b, c in itertools.product("AC", "GT", "AC")][:7]
OFF_TISSUE_IN_MATRIX = MATRIX_BARCODES[-1]
# Spots of the array that are in the positions file only (off tissue, not in the matrix).
EXTRA_BARCODES = ["TTTT-1", "GGGG-1"]
LOWRES_SCALEF = 0.05
HIRES_SCALEF = 0.2


def _counts() -> np.ndarray:
    """Spots x features integer counts, fixed (seeded)."""
    rng = np.random.default_rng(7)
    counts = rng.poisson(5.0, size=(len(MATRIX_BARCODES), len(FEATURES))).astype(np.int64)
    counts[0, 2] = 0  # keep some zeros in the sparse matrix
    counts[1, :] = np.arange(len(FEATURES))
    return counts


def _positions() -> pd.DataFrame:
    barcodes = MATRIX_BARCODES + EXTRA_BARCODES
    n = len(barcodes)
    rows = np.arange(n) // 3
    cols = (np.arange(n) % 3) * 2 + (rows % 2)
    return pd.DataFrame(
        {
            "barcode": barcodes,
            # TTTT-1 is under tissue but absent from the (filtered) matrix: ignored
            "in_tissue": [1] * (len(MATRIX_BARCODES) - 1) + [0] + [1, 0],
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": 1000 + rows * 170,  # y
            "pxl_col_in_fullres": 2000 + cols * 100,  # x
        }
    )


def write_10x_h5(path: Path, counts: np.ndarray, barcodes, features: pd.DataFrame) -> None:
    """A minimal 10x Genomics HDF5 (v3 layout): features x barcodes, CSC."""
    import h5py

    m = sparse.csc_matrix(counts.T.astype(np.int32))  # genes x barcodes, columns = barcodes
    with h5py.File(path, "w") as f:
        f.attrs["chemistry_description"] = "Spatial 3' v1"
        f.attrs["software_version"] = "spaceranger-test"
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=m.data.astype(np.int32))
        g.create_dataset("indices", data=m.indices.astype(np.int64))
        g.create_dataset("indptr", data=m.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array(m.shape, dtype=np.int32))
        fg = g.create_group("features")
        fg.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))
        fg.create_dataset("id", data=np.array(features["id"], dtype="S"))
        fg.create_dataset("name", data=np.array(features["name"], dtype="S"))
        fg.create_dataset("feature_type", data=np.array(features["feature_type"], dtype="S"))
        fg.create_dataset("genome", data=np.array(["GRCh38"] * len(features), dtype="S"))


def write_10x_mtx(folder: Path, counts: np.ndarray, barcodes, features: pd.DataFrame) -> None:
    """A minimal ``filtered_feature_bc_matrix/`` folder (gzipped MatrixMarket + TSVs)."""
    folder.mkdir(parents=True)
    with gzip.open(folder / "matrix.mtx.gz", "wb") as handle:
        spio.mmwrite(handle, sparse.coo_matrix(counts.T), field="integer")
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as handle:
        handle.write("\n".join(barcodes) + "\n")
    with gzip.open(folder / "features.tsv.gz", "wt") as handle:
        for row in features.itertuples():
            handle.write(f"{row.id}\t{row.name}\t{row.feature_type}\n")


def write_png(path: Path, height: int, width: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)).save(path)


def build_outs(
    root: Path,
    *,
    positions: str | None = "1.x",
    matrix: str | None = "h5",
    lowres: bool = True,
    hires: bool = False,
    scalefactors: bool = True,
    counts: np.ndarray | None = None,
    features: pd.DataFrame | None = None,
) -> Path:
    """Write a Space Ranger-like ``outs/`` folder under ``root`` and return it."""
    outs = root / "outs"
    spatial = outs / "spatial"
    spatial.mkdir(parents=True)
    counts = _counts() if counts is None else counts
    features = FEATURES if features is None else features
    if matrix == "h5":
        write_10x_h5(outs / "filtered_feature_bc_matrix.h5", counts, MATRIX_BARCODES, features)
    elif matrix == "mtx":
        write_10x_mtx(outs / "filtered_feature_bc_matrix", counts, MATRIX_BARCODES, features)
    table = _positions()
    if positions == "2.x":
        table.to_csv(spatial / "tissue_positions.csv", index=False)
    elif positions == "1.x":
        table.to_csv(spatial / "tissue_positions_list.csv", index=False, header=False)
    elif positions == "parquet":
        table.to_parquet(spatial / "tissue_positions.parquet", index=False)
    if scalefactors:
        (spatial / "scalefactors_json.json").write_text(
            json.dumps(
                {
                    "spot_diameter_fullres": 89.4,
                    "tissue_hires_scalef": HIRES_SCALEF,
                    "fiducial_diameter_fullres": 144.5,
                    "tissue_lowres_scalef": LOWRES_SCALEF,
                }
            )
        )
    if lowres:
        write_png(spatial / "tissue_lowres_image.png", 120, 150)
    if hires:
        write_png(spatial / "tissue_hires_image.png", 480, 600)
    return outs


@pytest.fixture
def make_outs(tmp_path):
    """Factory: ``make_outs(**options)`` writes a fresh ``outs/`` folder (see :func:`build_outs`)."""
    counter = itertools.count()

    def factory(**options) -> Path:
        return build_outs(tmp_path / f"run{next(counter)}", **options)

    return factory


@pytest.fixture
def counts_table() -> pd.DataFrame:
    """The counts written by ``make_outs``: matrix barcodes x features (symbols may repeat)."""
    return pd.DataFrame(_counts(), index=MATRIX_BARCODES, columns=FEATURES["name"].tolist())


@pytest.fixture
def positions_table() -> pd.DataFrame:
    """The positions written by ``make_outs``, indexed by barcode."""
    return _positions().set_index("barcode")


def _small_slide(sample: str = "S1", mouse: bool = False) -> ad.AnnData:
    rng = np.random.default_rng(11)
    genes = (
        ["Actb", "mt-Co1", "Myh4", "mt-Nd1", "Mtor", "Ckm"]
        if mouse
        else ["ACTB", "MT-CO1", "MYH4", "MT-ND1", "MTOR", "CKM"]
    )
    n = 12
    counts = rng.poisson(4.0, size=(n, len(genes))).astype(np.float32)
    counts[0] = 0  # an empty spot
    counts[1, [1, 3]] = [400, 300]  # a spot dominated by MT counts
    counts[2, [0, 2, 5]] = [200, 150, 100]  # a rich spot
    counts[3, :] = [1, 0, 0, 0, 0, 0]  # a spot with one gene
    x = sparse.csr_matrix(counts)
    adata = ad.AnnData(
        X=x,
        obs=pd.DataFrame(index=[f"SPOT{i:02d}-1" for i in range(n)]),
        var=pd.DataFrame({"gene_ids": [f"ENS{i:03d}" for i in range(len(genes))]}, index=genes),
    )
    adata.obs["sample"] = pd.Categorical([sample] * n)
    yy, xx = np.divmod(np.arange(n), 4)
    adata.obsm["spatial"] = np.column_stack([100.0 + 50 * xx, 200.0 + 50 * yy])
    adata.uns["spatial"] = {
        sample: {
            "images": {"lowres": np.full((40, 40, 3), 0.8, dtype=np.float32)},
            "scalefactors": {"tissue_lowres_scalef": 0.1, "spot_diameter_fullres": 30.0},
            "metadata": {"source": "test"},
        }
    }
    return adata


@pytest.fixture
def small_slide() -> ad.AnnData:
    """A 12-spot human slide with MT-CO1/MT-ND1 (and MTOR, which is not mitochondrial)."""
    return _small_slide()


@pytest.fixture
def small_mouse_slide() -> ad.AnnData:
    """The same slide with mouse symbols (mt-Co1, mt-Nd1, Mtor)."""
    return _small_slide(mouse=True)


@pytest.fixture(scope="module")
def perturbed_hd(tmp_path_factory):
    """The generated Visium HD slide with wrong Space Ranger 4 boundaries
    (synth_hd.generate_perturbed_hd): its ``outs/`` and the truth table of what was perturbed."""
    from testdata import synth_hd

    out = tmp_path_factory.mktemp("hd_perturbed")
    paths = synth_hd.generate_perturbed_hd(out, seed=0, perturb_seed=0)
    return paths["hd"]["outs"], pd.read_csv(paths["truth"])
