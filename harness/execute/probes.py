"""Timing one operation alone, in a worker set up like a cell: the products behind the ceilings.

time_product times a blocking float32 product: the best and median of repeated calls after two
warm-up ones, for at least MIN_REPEATS calls and BUDGET_S seconds. product_precision measures
how precisely a framework multiplies on its device, against float64.
"""

from __future__ import annotations

import statistics
import time

BUDGET_S = 2.0
MIN_REPEATS = 5
WARM_UP = 2


def time_call(call, budget_s: float | None = None, min_repeats: int = MIN_REPEATS) -> list[float]:
    """Seconds of each call of `call` (which blocks until its work is done) after WARM_UP unmeasured ones."""
    budget_s = BUDGET_S if budget_s is None else budget_s
    for _ in range(WARM_UP):
        call()
    seconds: list[float] = []
    start = time.perf_counter()
    while len(seconds) < min_repeats or time.perf_counter() - start < budget_s:
        begin = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - begin)
    return seconds


def time_product(product, size: int) -> dict:
    """Best and median GFLOP/s of `product` (one blocking size x size x size float32 product)."""
    seconds = time_call(product)
    flops = 2.0 * size**3
    return {"gflops": flops / min(seconds) / 1e9, "median_gflops": flops / statistics.median(seconds) / 1e9,
            "repeats": len(seconds)}


# A float32 product of 1024-long rows of normal values errs, in median, by 2e-7 of the result's RMS
# (measured here for NumPy, PyTorch, JAX and TensorFlow); inputs cut to TF32's 10-bit mantissas by
# 5e-4, to bfloat16's 7 bits by 4e-3 (tests/test_gpu_check.py). The limit sits between.
FLOAT32_ERROR_LIMIT = 2**-14


def product_precision(adapter_class, device: str) -> dict:
    """How precisely the framework multiplies float32 matrices on the device, measured against float64."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 1024), np.float32), rng.standard_normal((1024, 256), np.float32)
    found = adapter_class.matmul_on_device(device, a, b)
    if found is None:
        return {"precision": "not measured: the adapter defines no matmul_on_device"}
    product, facts = found
    exact = a.astype(np.float64) @ b.astype(np.float64)
    error = float(np.median(np.abs(np.asarray(product, np.float64) - exact)) / np.sqrt(np.mean(exact**2)))
    verdict = "float32" if error < FLOAT32_ERROR_LIMIT else "reduced (TF32, bfloat16 or lower)"
    return {**facts, "product_error": error, "precision": verdict}


# Each step operation is timed for OP_BUDGET_S (at least OP_MIN_REPEATS calls): small operations repeat
# hundreds of times, so the median is steady; the sum over a model's operations is its op floor.
OP_BUDGET_S = 0.06
OP_MIN_REPEATS = 10


def operands(operation: dict) -> dict:
    """Random float32 inputs of one step operation (harness.models.Operation.as_dict()), as a step holds them.

    matmul: "a" and "b", with the weight gradient's "a" stored (k, m) and the input gradient's "b" (n, k);
    bmm: the same with a leading batch axis, the right gradient's "a" stored (batch, k, m) and the left
    gradient's "b" (batch, n, k);
    conv: the batch "x" (NHWC), the kernel "w" (HWIO) and the output's gradient "dy" (NHWC).
    """
    import numpy as np

    from harness.models.operations import FIRST_TRANSPOSED, SECOND_TRANSPOSED

    rng = np.random.default_rng(0)

    def uniform(*shape):
        return rng.uniform(-1, 1, shape).astype(np.float32)

    if operation["kind"] in ("matmul", "bmm"):
        *batch, m, k, n = operation["dims"]
        a = uniform(*batch, k, m) if operation["role"] in FIRST_TRANSPOSED else uniform(*batch, m, k)
        b = uniform(*batch, n, k) if operation["role"] in SECOND_TRANSPOSED else uniform(*batch, k, n)
        return {"a": a, "b": b}
    batch, height, width, c, o, k = operation["dims"]
    return {"x": uniform(batch, height, width, c), "w": uniform(k, k, c, o),
            "dy": uniform(batch, height - k + 1, width - k + 1, o)}


def time_operation(call) -> dict:
    """The median and best seconds of one step operation, run alone."""
    seconds = time_call(call, OP_BUDGET_S, OP_MIN_REPEATS)
    return {"seconds": statistics.median(seconds), "best_seconds": min(seconds), "repeats": len(seconds)}
