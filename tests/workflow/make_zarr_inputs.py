#!/usr/bin/env python3
"""SpatialData stores (.zarr) for the pipeline test of the samplesheet's ``zarr`` column, made at
test time from the generated data of assets/test_data_hd (nothing binary is committed):

    make_zarr_inputs.py DIR

- ``DIR/xenium1.zarr``: the Xenium region as ``sopa.io.xenium`` reads it (one table ``table`` of
  252 cells annotating ``cell_boundaries``, the morphology image, the transcripts as points);
- ``DIR/hd1.zarr``: the Visium HD slide as ``sopa.io.visium_hd`` reads it (tables of the 2, 8 and
  16 µm bins and of Space Ranger's cells; the pipeline reads ``square_008um``);
- ``DIR/samplesheet.csv``: ``sample,zarr`` rows ``zarr_xenium`` and ``zarr_hd``.

Both are what spatialdata-io writes for the platform (about 5 MB together); the same input
files give the same stores.
"""

from __future__ import annotations

import argparse
import shutil
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HD = REPO / "assets" / "test_data_hd"
SAMPLES = {"zarr_xenium": "xenium1.zarr", "zarr_hd": "hd1.zarr"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="folder to write the stores and samplesheet.csv into")
    args = parser.parse_args(argv)
    import sopa

    out = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stores = {
            "xenium1.zarr": sopa.io.xenium(HD / "xenium1", cells_table=True, cells_boundaries=True),
            "hd1.zarr": sopa.io.visium_hd(HD / "hd1" / "outs"),
        }
        for name, sdata in stores.items():
            shutil.rmtree(out / name, ignore_errors=True)
            sdata.write(out / name)
    rows = "".join(f"{sample},{store}\n" for sample, store in SAMPLES.items())
    (out / "samplesheet.csv").write_text("sample,zarr\n" + rows)


if __name__ == "__main__":
    main()
