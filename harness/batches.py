"""The harness's batch order: which training images every framework sees, in which steps.

Every adapter, bare loop and parity check trains on these indices, so the order is the same
everywhere: a seeded permutation per epoch, the last partial batch dropped.
"""

from __future__ import annotations

import numpy as np


def batch_order(n_train: int, batch_size: int, seed: int, epochs: int):
    """The batch indices of each epoch: (batches, batch_size) int32 rows of a seeded permutation."""
    if n_train < batch_size:
        raise ValueError(f"the training set has {n_train} samples, fewer than batch_size = {batch_size}")
    rng = np.random.default_rng([seed, 1])
    n_batches = n_train // batch_size
    for _ in range(epochs):
        yield rng.permutation(n_train)[: n_batches * batch_size].reshape(n_batches, batch_size).astype(np.int32)
