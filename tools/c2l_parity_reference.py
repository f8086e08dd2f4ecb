#!/usr/bin/env python3
"""Compute the package-default reference for the cell2location parity unit test.

The package default is ``Cell2location.train(max_epochs=30000)`` followed by
``export_posterior(num_samples=1000)``. On the unit test's small data (2 slides x 20 spots,
40 genes, 3 types; ``tools/testdata/c2l_small.py``, which ``tests/unit/test_c2l.py`` uses) that
takes about 25 CPU minutes, too long for every CI run, so it is computed once with this script and stored as
``tests/unit/data/c2l_parity_package30000.npz`` (posterior mean, 5% quantile and SD of the
abundances ``w_sf``, per spot and type). The unit test trains the fast engine on the same
data, signatures and seed and compares against it.

    ~/.cache/spatialmap/env/bin/python tools/c2l_parity_reference.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

OUT = REPO / "tests" / "unit" / "data" / "c2l_parity_package30000.npz"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30000)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)

    from spatialmap.methods import cell2location as c2l
    from testdata import c2l_small as t  # the test's own data and signatures (tools/testdata)

    slides = t.parity_slides()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    res = c2l.run(
        slides, t.true_signatures(), engine="package", num_samples=1000, max_epochs=args.epochs, **t.PARITY_COMMON
    )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    sm = res.summaries
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.stem + ".tmp.npz")
    np.savez_compressed(
        tmp,
        mean=sm["means"]["w_sf"],
        q05=sm["q05"]["w_sf"],
        sd=sm["stds"]["w_sf"],
        obs=np.asarray(res.combined.obs_names.astype(str), dtype=str),
        types=np.asarray([str(f) for f in res.model.factor_names_], dtype=str),
        epochs=args.epochs,
        final_loss=res.training.final_loss,
    )
    tmp.replace(args.out)
    print(
        json.dumps(
            {
                "out": str(args.out),
                "epochs": args.epochs,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "final_loss": res.training.final_loss,
            }
        )
    )


if __name__ == "__main__":
    main()
