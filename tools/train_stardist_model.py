#!/usr/bin/env python3
"""Train the small StarDist2D model the tests use offline (assets/stardist_synth_he).

The training images are the project's own H&E-like images, drawn by the generator of the
Visium HD test slides (``testdata.synth_hd.he_training_pair``, its own random stream, so the
test slide is never seen), with the nuclei as labels. The model is deliberately small (16 rays,
a 2-level U-Net of 8 base filters) and trains in a few CPU minutes; every random generator is
seeded and TensorFlow runs its deterministic kernels, so a rerun gives the same model.

It is a test fixture for images like the generated ones, not a model for real H&E: real
slides use StarDist's pretrained ``2D_versatile_he`` (the pipeline's default).

    python tools/train_stardist_model.py --out assets/stardist_synth_he
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

log = logging.getLogger("spatialmap.train_stardist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="model folder to write (replaced when it exists)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the images and of the training (default: %(default)s)"
    )
    parser.add_argument("--train-images", type=int, default=4, help="generated training images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=25, help="training epochs (default: %(default)s)")
    parser.add_argument("--steps-per-epoch", type=int, default=20, help="steps per epoch (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--n-rays", type=int, default=16, help="StarDist rays (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow CPU threads (default: %(default)s)")
    return parser.parse_args(argv)


def _seed_everything(seed: int, threads: int) -> None:
    os.environ["PYTHONHASHSEED"] = str(seed)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import numpy as np
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _pairs(seed: int, n: int):
    from csbdeep.utils import normalize

    from testdata.synth_hd import he_training_pair

    images, labels = [], []
    for i in range(n):
        image, label = he_training_pair(seed * 1000 + i)
        images.append(normalize(image.astype("float32"), 1, 99.8, axis=(0, 1, 2), clip=True))  # as sopa does per patch
        labels.append(label)
    return images, labels


def _augment(x, y):
    """Random flips and 90-degree turns (numpy's seeded global generator)."""
    import numpy as np

    k = np.random.randint(4)
    x, y = np.rot90(x, k, axes=(0, 1)), np.rot90(y, k, axes=(0, 1))
    if np.random.rand() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    _seed_everything(args.seed, args.threads)
    from stardist import fill_label_holes
    from stardist.matching import matching_dataset
    from stardist.models import Config2D, StarDist2D

    start = time.time()
    x_train, y_train = _pairs(args.seed, args.train_images)
    x_val, y_val = _pairs(args.seed + 1, 1)
    y_train = [fill_label_holes(y) for y in y_train]
    config = Config2D(
        n_rays=args.n_rays, grid=(1, 1), n_channel_in=3, unet_n_depth=2, unet_n_filter_base=8,
        train_patch_size=(128, 128), train_batch_size=4, train_epochs=args.epochs,
        train_steps_per_epoch=args.steps_per_epoch, train_learning_rate=args.learning_rate,
        train_tensorboard=False, use_gpu=False,
    )  # fmt: skip
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    model = StarDist2D(config, name=out.name, basedir=str(out.parent))
    model.train(x_train, y_train, validation_data=(x_val, y_val), augmenter=_augment,
                epochs=args.epochs, steps_per_epoch=args.steps_per_epoch)  # fmt: skip
    # the pipeline passes its own thresholds (--stardist_prob_thresh, --stardist_nms_thresh); StarDist's defaults here
    (out / "thresholds.json").write_text(json.dumps({"prob": 0.5, "nms": 0.4}) + "\n")
    predicted = [model.predict_instances(x, prob_thresh=0.2, nms_thresh=0.6)[0] for x in x_val]
    score = matching_dataset(y_val, predicted, thresh=0.5, show_progress=False)
    for extra in ("weights_last.h5", "weights_last.weights.h5", "logs"):
        path = out / extra
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    summary = {
        "seed": args.seed, "train_images": args.train_images, "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch, "n_rays": args.n_rays,
        "validation_f1_iou50": round(float(score.f1), 4), "validation_true": int(score.n_true),
        "validation_predicted": int(score.n_pred), "seconds": round(time.time() - start, 1),
        "command": "python tools/train_stardist_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }  # fmt: skip
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("wrote %s (%.0f kB): %s", out, size / 1024, summary)


if __name__ == "__main__":
    main()
