"""What every bare loop shares: the job from the command line, the data, the batch order, the report.

A bare loop is a plain training script in one framework, written as its users write one, with
nothing of the harness around it. benchmarks/overhead.py runs it beside bench.py's cell for the
same row: same model sizes, optimizer settings, batch size, data and batch order.
"""

from __future__ import annotations

import json
import sys
import time

from harness.batches import batch_order
from harness.synthetic import synthetic


def setup():
    """(job, dataset, batches per epoch): the job is JSON in argv[1], written by overhead.py."""
    job = json.loads(sys.argv[1])
    data = synthetic(train=job["train"], eval=job["batch_size"], seed=job["seed"])
    return job, data, batch_order(job["train"], job["batch_size"], job["seed"], job["epochs"])


def kernels(job) -> list[int]:
    """The CNN's kernel side per convolution (the config's cnn.kernel_size: one for all, or one each)."""
    given = job.get("kernel_size", 3)
    return [given] * len(job["channels"]) if isinstance(given, int) else list(given)


def flattened_side(job) -> int:
    """The side of the CNN's last feature map: each block a 'valid' convolution and a 2x2 pool."""
    side = 28
    for k in kernels(job):
        side = (side - k + 1) // 2
    return side


def report(train_seconds: float) -> None:
    """One epoch's training time, as a JSON line for overhead.py."""
    print(json.dumps({"train_seconds": train_seconds}), flush=True)


class EpochTimer:
    """Times an epoch from its first step to its last; the caller waits for the device inside the block."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        report(time.perf_counter() - self.start)
