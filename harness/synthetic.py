"""A tiny, learnable, MNIST-shaped dataset made from a seed: for tests, smoke runs and parity.

Each class has a fixed random prototype image (a coarse 7x7 pattern blown up to 28x28,
so that it has shapes as digits do); samples are the prototype plus noise,
so any of the models learns it in a few steps, offline and in milliseconds.
"""

from __future__ import annotations

import numpy as np

from harness.data import Dataset
from harness.models import CLASSES, IMAGE_SHAPE


def make_images(n: int, seed: int, prototypes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    noise = rng.normal(0.0, 0.25, (n, *IMAGE_SHAPE))
    images = np.clip(prototypes[labels] + noise, 0.0, 1.0).astype(np.float32)
    return images, labels


def synthetic(train: int = 512, eval: int = 256, seed: int = 0, validation: int = 0,
              eval_split: str = "test") -> Dataset:
    """A Dataset of `train` + `eval` samples; the same seed gives the same arrays. As with MNIST, the last
    `validation` training samples are held out, and evaluated on where eval_split = "validation"; the `eval`
    samples are the test set."""
    coarse = np.random.default_rng(seed).uniform(0.0, 1.0, (CLASSES, 7, 7, 1))
    prototypes = coarse.repeat(4, axis=1).repeat(4, axis=2)  # 4x4 blocks: shapes a convolution can see
    x_train, y_train = make_images(train, seed + 1, prototypes)
    x_eval, y_eval = make_images(eval, seed + 2, prototypes)
    cut = train - validation
    if eval_split == "validation":
        x_eval, y_eval = x_train[cut:], y_train[cut:]
    return Dataset("synthetic", x_train[:cut], y_train[:cut], x_eval, y_eval, eval_split=eval_split,
                   source=f"synthetic seed {seed}")
