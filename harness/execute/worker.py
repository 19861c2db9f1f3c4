"""Runs ONE cell in its own process: threads, seed, build, train, evaluate, time.

Started through harness/execute/process.py (`python -m harness.execute.worker`, the job as JSON
on stdin, events on stdout); only this process imports a framework.

Timing rules (docs/DESIGN.md, "Fairness rules"): the data is read into memory and handed
to the adapter once before any timer starts; train_epoch and evaluate block until the device
is done; the first epoch (compile, warm-up) is reported apart from the steady epochs;
evaluation is timed apart from training.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from harness.execute.process import die_with_parent, emit, pin_threads


def load_dataset(job: dict):
    from harness import data, synthetic

    values = job["config"]
    if values["dataset"] == "synthetic":
        sizes = values["synthetic"]
        return synthetic.synthetic(sizes["train"], sizes["eval"], seed=values["seed"],
                                   validation=values["validation"], eval_split=values["eval_split"])
    return data.load(
        values["dataset"],
        data_dir=job.get("data_dir") or None,
        validation=values["validation"],
        eval_split=values["eval_split"],
        standardize=values["standardize"],
        allow_download=False,
        resident=True,  # every adapter gets its data in memory: none pages it in inside a timed epoch
        verified=job.get("data_verified", False),  # the runner verified the folder the user named
    )


def first_images(dataset, count: int):
    """The dataset with its training set cut to the first `count` images (a model's train_samples; 0 keeps all)."""
    from dataclasses import replace

    if not count:
        return dataset
    return replace(dataset, x_train=dataset.x_train[:count], y_train=dataset.y_train[:count])


def import_adapter(job: dict):
    """Import the cell's adapter module, and so its framework; return the adapter class."""
    from harness.adapter import load_adapter

    os.environ["MNIST_BENCH_DEVICE"] = job.get("device") or job["cell"]["device"]  # for choices made at import
    return load_adapter(job["adapter"])


def build_adapter(job: dict, model_spec, steps_per_epoch: int, adapter_class=None):
    """Construct the cell's adapter from the job (importing it unless given)."""
    cell, values = job["cell"], job["config"]
    adapter_class = adapter_class or import_adapter(job)
    options = {"eval_batch_size": values["eval_batch_size"], **values["options"].get(cell["framework"], {})}
    epochs = values[cell["model"]]["epochs"]
    from harness.config import model_optimizer

    optimizer = {**(job.get("optimizer") or model_optimizer(values, cell["model"])), "steps_per_epoch": steps_per_epoch,
                 "total_steps": epochs * steps_per_epoch}
    return adapter_class(
        model_spec,
        optimizer_spec(optimizer),
        device=cell["device"],
        variant=cell["variant"],
        seed=cell["seed"],
        threads=values["threads"],
        options={**options, **job.get("options", {})},
    )


def optimizer_spec(values: dict):
    from harness.models import OptimizerSpec

    return OptimizerSpec(**{**values, "betas": tuple(values.get("betas", (0.9, 0.999)))})


def model_settings(job: dict) -> dict:
    """The cell's model sizes and dropout: its config table, less what is not the network's."""
    from harness.config import network_settings

    cell, values = job["cell"], job["config"]
    return {**network_settings(values[cell["model"]]), **job.get("model_overrides", {})}


def _model_spec(job: dict):
    from harness.models import model_spec

    return model_spec(job["cell"]["model"], **model_settings(job))


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started.

    Linux's VmHWM, not getrusage's ru_maxrss: across fork and exec, ru_maxrss keeps the runner's own
    high-water mark as a floor, which would hide everything smaller than the runner.
    """
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: KiB on most systems


def chunks(steps: int, every: int) -> list[slice]:
    """An epoch's steps in runs of `every` (the last may be shorter), each followed by an evaluation; all at once
    when `every` is 0."""
    every = every or steps
    return [slice(start, min(start + every, steps)) for start in range(0, steps, every)]


def train(job: dict) -> None:
    """The timed loop: one epochs.csv row per evaluation, then the run summary (computed by the runner).

    The model is evaluated after every epoch, and with eval_every_steps also after every that many steps of
    an epoch; with stop_at_target, training stops at the first evaluation that reaches the target; with
    evaluate = "end", only once, after the last epoch (its rows before hold no evaluation). With save_params,
    the trained parameters go to job["params_path"] in canonical layout.
    """
    import math

    from harness.batches import batch_order

    cell, values = job["cell"], job["config"]
    settings = values[cell["model"]]
    spec = _model_spec(job)
    adapter_class = import_adapter(job)
    import_rss_mb = peak_rss_mb()  # the framework's own cost, before any data or model
    dataset = first_images(load_dataset(job), settings.get("train_samples", 0))
    steps_per_epoch = len(dataset.x_train) // values["batch_size"]
    adapter = build_adapter(job, spec, steps_per_epoch, adapter_class)
    adapter.set_params(spec.init_params(cell["seed"]))
    adapter.load_data(dataset.x_train, dataset.y_train, dataset.x_eval, dataset.y_eval)
    emit("setup", setup_seconds=time.time() - job["started"], backend=adapter.backend, eval_split=dataset.eval_split,
         import_rss_mb=import_rss_mb)
    step, at_end = 0, values.get("evaluate") == "end"
    for epoch, batches in enumerate(batch_order(len(dataset.x_train), values["batch_size"], cell["seed"],
                                                settings["epochs"]), start=1):
        for rows in chunks(len(batches), values.get("eval_every_steps", 0)):
            start = time.perf_counter()
            loss = adapter.train_epoch(batches[rows])
            train_seconds = time.perf_counter() - start
            eval_loss = eval_accuracy = eval_seconds = None
            if not at_end or epoch == settings["epochs"]:
                start = time.perf_counter()
                eval_loss, eval_accuracy = adapter.evaluate()
                eval_seconds = time.perf_counter() - start
            step += rows.stop - rows.start
            emit("epoch", epoch=epoch, step=step, train_loss=loss, train_seconds=train_seconds,
                 samples=batches[rows].size, eval_loss=eval_loss, eval_accuracy=eval_accuracy,
                 eval_seconds=eval_seconds, end_of_epoch=rows.stop == len(batches), steps_per_epoch=steps_per_epoch)
            losses = {"the training loss": loss, "the evaluation loss": eval_loss}
            broken = [f"{name} became {value}" for name, value in losses.items()
                      if value is not None and not math.isfinite(value)]
            if broken:
                emit("done", status="diverged", error=f"{' and '.join(broken)} in epoch {epoch}")
                return
            if values.get("stop_at_target") and eval_accuracy >= settings["target_accuracy"]:
                break
        else:
            continue
        break  # the target is reached: the clock stops here
    if values.get("save_params"):
        from harness.results import params

        params.save(job["params_path"], adapter.get_params(), cell["model"], model_settings(job))
    emit("done", status="ok", peak_rss_mb=peak_rss_mb(), peak_device_memory_mb=adapter.peak_device_memory_mb(),
         thread_pools=adapter.thread_pools())


def parity(job: dict) -> None:
    """The parity recipe (harness/parity.py) on this adapter; its observations go to a file for the runner."""
    import numpy as np

    from harness.config import network_settings
    from harness.parity import observe

    cell, values = job["cell"], job["config"]
    adapter_class = import_adapter(job)
    settings = network_settings(values[cell["model"]])
    rate = settings.pop("dropout")
    options = {"eval_batch_size": values["eval_batch_size"], **values["options"].get(cell["framework"], {}),
               **job.get("options", {})}

    built = []

    def make(spec, optimizer):
        built.append(adapter_class(spec, optimizer, device=cell["device"], variant=cell["variant"],
                                   seed=cell["seed"], threads=values["threads"], options=options))
        return built[-1]

    seen = observe(make, cell["model"], settings, rate)
    np.savez(job["observations_path"], **seen)
    emit("done", status="ok", backend=built[0].backend)


def probe(job: dict) -> None:
    """Time the adapter's framework alone: its large float32 product (the ceiling) and each step operation
    (the op floor), as harness/execute/ceilings.py asks. Each part reports its own status."""
    from harness.adapter import Unsupported, loaded_thread_pools
    from harness.execute.ceilings import operation_key
    from harness.execute.probes import product_precision, time_operation, time_product

    adapter_class = import_adapter(job)
    device, threads, found = job["device"], job["config"]["threads"], {}

    def product() -> dict:
        timed, library = adapter_class.matmul_probe(device, job["size"], threads)
        return {"library": library, **time_product(timed, job["size"]), "thread_pools": loaded_thread_pools(),
                **product_precision(adapter_class, device)}

    def operations() -> dict:
        return {"times": {operation_key(op): time_operation(adapter_class.op_probe(device, op, threads))
                          for op in job["operations"]}}

    for part, measure in (("product", product), ("operations", operations)):
        if (job["size"] if part == "product" else job["operations"]):
            try:  # each part alone: a probe that fails costs its own figures, never the other part's
                found[part] = {"status": "ok", **measure()}
            except Unsupported as reason:
                found[part] = {"status": "skipped", "error": str(reason)}
            except Exception as error:  # noqa: BLE001 (recorded with its message; the log has the traceback)
                import traceback

                traceback.print_exc()
                found[part] = {"status": "error", "error": f"{type(error).__name__}: {error}"}
    emit("done", status="ok", **found)


def device(job: dict) -> None:
    """Probe the adapter's data residency and step synchrony on its device (the GPU check)."""
    from harness.execute.device_probe import probe

    emit("done", status="ok", **probe(job))


def main() -> None:
    die_with_parent()
    job = json.loads(sys.stdin.read())
    pin_threads(job["config"]["threads"])
    from harness.adapter import DeviceUnavailable, Unsupported

    modes = {"parity": parity, "probe": probe, "train": train, "device": device}
    try:
        modes[job.get("mode", "train")](job)
    except Unsupported as reason:
        emit("done", status="skipped", error=str(reason), device_unavailable=isinstance(reason, DeviceUnavailable))


if __name__ == "__main__":
    main()
