#!/usr/bin/env python3
"""Peak memory of the fast cell2location engine: full batch vs minibatches (one process per setting).

Builds a random Poisson slide of ``--spots`` x ``--genes`` with ``--types`` signatures, trains
``--epochs`` epochs with ``spatialmap.methods.cell2location.run`` (engine fast) and prints the
peak resident memory of the process (``ru_maxrss``) before and after, in GiB. Run once per
setting; the numbers go into tools/BENCHMARKS.md.

    tools/c2l_memory.py --spots 10000 --genes 2000 --types 30 --epochs 3
    tools/c2l_memory.py --spots 10000 --genes 2000 --types 30 --epochs 3 --batch-size 2500
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB (Linux)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spots", type=int, default=10000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--types", type=int, default=30)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    import anndata as ad
    import numpy as np
    import pandas as pd
    from scipy import sparse

    from spatialmap.methods import cell2location as c2l

    rng = np.random.default_rng(0)
    sig = pd.DataFrame(
        rng.gamma(0.5, 2.0, size=(args.genes, args.types)),
        index=[f"g{i}" for i in range(args.genes)],
        columns=[f"t{k}" for k in range(args.types)],
    )
    w = rng.gamma(1.0, 8.0 / args.types, size=(args.spots, args.types))
    X = sparse.csr_matrix(rng.poisson(0.05 * w @ sig.to_numpy().T).astype(np.float32))
    slide = ad.AnnData(
        X=X, obs=pd.DataFrame(index=[f"s{i}" for i in range(args.spots)]), var=pd.DataFrame(index=sig.index)
    )
    del w
    before = rss_gib()
    start = time.perf_counter()
    res = c2l.run(
        {"m": slide},
        sig,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        accelerator="cpu",
        threads=args.threads,
        minibatch_above=10**9,
    )
    print(
        f"spots {args.spots} genes {args.genes} types {args.types} batch {args.batch_size}: "
        f"peak RSS {before:.2f} GiB before training, {rss_gib():.2f} GiB after; "
        f"{(time.perf_counter() - start) / args.epochs:.2f} s per epoch incl. set-up/export; density "
        f"{X.nnz / (args.spots * args.genes):.2f}; engine {res.training.engine}"
    )


if __name__ == "__main__":
    main()
