"""One adapter on the device, probed for the GPU check (harness/gpu_check.py), in a worker of its own.

Two questions a run's numbers cannot answer by themselves:

- Is the data on the device? The framework allocator's memory in use (the peak_device_memory_mb
  every adapter reports) must grow by the training set's size during load_data. An adapter that
  feeds batches from the host says so (data_on_host), and the row's backend says it too.
- Does a step wait for the GPU where it need not (a hidden host sync: a loss read back, a Python
  branch on a device value)? A steady epoch is timed as the adapter runs it and again with a read
  of each step's loss (sync_each_step). Where the plain epoch lets the host queue the next step
  while the GPU works, the forced read costs time; where it costs nothing, the plain loop waits
  already, or the host, not the GPU, sets the pace. Both readings are reported with the numbers.
"""

from __future__ import annotations

import time

TRAIN, EVAL, BATCH = 4096, 512, 128  # 32 steps an epoch: enough to see a few microseconds a step
REPEATS = 3
OVERLAP_GAIN = 1.05  # the forced read must cost 5% before the plain loop counts as asynchronous


def best_epoch_seconds(adapter, batches, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        adapter.train_epoch(batches)
        times.append(time.perf_counter() - start)
    return min(times)


def probe(job: dict) -> dict:
    """Residency and step synchrony of the job's adapter on the job's device (its `done` fields)."""
    from harness import synthetic
    from harness.execute.worker import _model_spec, build_adapter

    data = synthetic.synthetic(TRAIN, EVAL, seed=0)
    spec = _model_spec(job)
    adapter = build_adapter(job, spec, steps_per_epoch=TRAIN // BATCH)
    adapter.set_params(spec.init_params(0))
    before = adapter.device_memory_in_use_mb()
    adapter.load_data(data.x_train, data.y_train, data.x_eval, data.y_eval)
    after = adapter.device_memory_in_use_mb()
    return {**residency(before, after, data.x_train.nbytes + data.y_train.nbytes, adapter.data_on_host),
            "backend": adapter.backend, **synchrony(adapter)}


def residency(before: float | None, after: float | None, data_bytes: int, on_host: bool) -> dict:
    """Whether load_data put the training set on the device: the allocator's memory in use grew by its size."""
    data_mb = data_bytes / 2**20
    if before is None or after is None:
        return {"resident": None, "residency": "not measured: the framework reports no device memory here"}
    grown = after - before
    resident = grown >= 0.9 * data_mb
    return {"resident": resident, "device_mb_added": grown, "data_mb": data_mb,
            "residency": ("on the device" if resident else "on the host")
            + (" (the adapter declares batches copied from the host)" if on_host else "")}


def synchrony(adapter) -> dict:
    """A steady epoch as the adapter runs it, and with a read of each step's loss."""
    from harness.batches import batch_order

    if not adapter.steps_in_python:
        return {"asynchronous": None, "synchrony": "not probed: the epoch is one call (lax.scan or Keras's fit), "
                                                   "with no step loop to add a read to"}
    batches = next(batch_order(TRAIN, BATCH, seed=0, epochs=1))
    adapter.train_epoch(batches)  # compile and warm up, both ways
    adapter.sync_each_step = True
    adapter.train_epoch(batches)
    forced = best_epoch_seconds(adapter, batches)
    adapter.sync_each_step = False
    plain = best_epoch_seconds(adapter, batches)
    steps = len(batches)
    ratio = forced / plain
    verdict = ("asynchronous: a read of each step's loss costs "
               f"{(forced - plain) / steps * 1e6:.0f} µs a step, which the plain loop does not pay"
               if ratio >= OVERLAP_GAIN else
               f"no measurable overlap (forced {ratio:.3f}x plain): the loop waits every step already, "
               "or the host sets the pace")
    return {"step_us": plain / steps * 1e6, "step_us_with_read": forced / steps * 1e6, "sync_ratio": ratio,
            "asynchronous": ratio >= OVERLAP_GAIN, "synchrony": verdict}
