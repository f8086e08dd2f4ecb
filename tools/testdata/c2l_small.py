"""The two tiny slides of cell2location's unit tests (tests/unit/test_c2l.py) and of its parity
reference (tools/c2l_parity_reference.py): 20 spots with 0-6 cells of each of 3 types, counts drawn
from known signatures over 40 genes. Both use this one copy, so the stored reference is of the data
the test trains on.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

TYPES = ["A", "B", "C"]
N_GENES = 40
N_SPOTS = 20


def true_signatures() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sig = rng.uniform(1, 3, size=(N_GENES, len(TYPES)))
    for k in range(len(TYPES)):
        sig[8 * k : 8 * k + 8, k] = 40.0
    return pd.DataFrame(sig, index=[f"g{i:02d}" for i in range(N_GENES)], columns=TYPES)


def make_slide(sample: str, seed: int) -> tuple[ad.AnnData, pd.DataFrame]:
    """Spots with 0-6 cells of each type; same barcodes on every slide (as on real Visium)."""
    rng = np.random.default_rng(seed)
    sig = true_signatures()
    abundance = pd.DataFrame(rng.integers(0, 7, size=(N_SPOTS, len(TYPES))).astype(float), columns=TYPES)
    mu = abundance.to_numpy() @ sig.to_numpy().T * 0.5
    counts = rng.poisson(mu).astype(np.float32)
    barcodes = [f"BC{i:03d}-1" for i in range(N_SPOTS)]
    abundance.index = barcodes
    genes = list(sig.index) + ["extra1", "extra2"]  # two genes not in the signatures
    counts = np.hstack([counts, rng.poisson(2, size=(N_SPOTS, 2)).astype(np.float32)])
    slide = ad.AnnData(
        X=sparse.csr_matrix(counts),
        obs=pd.DataFrame({"sample": sample}, index=barcodes),
        var=pd.DataFrame({"gene_ids": [f"ENS{g}" for g in genes]}, index=genes),
    )
    yy, xx = np.divmod(np.arange(N_SPOTS), 5)
    slide.obsm["spatial"] = np.column_stack([100.0 * xx, 100.0 * yy])
    slide.uns["note"] = "kept"
    return slide, abundance


# the settings of the parity runs (the package's default training and the fast engine's)
PARITY_COMMON = dict(
    n_cells_per_location=9, detection_alpha=20, seed=0, accelerator="cpu", threads=1, min_shared_genes=10
)


def parity_slides():
    return {s: make_slide(s, seed=i + 1)[0] for i, s in enumerate(["S1", "S2"])}
