"""Proof that the models are the same: every adapter against the NumPy reference in float64.

Each adapter variant, in its own process like a benchmark cell, loads the same initial
parameters and takes the same STEPS single-batch SGD steps (momentum on, dropout off)
on the same synthetic batches. We compare its loss at every step, and the change it
made to every parameter, with NumPy computing the same steps in float64.

Why these tolerances: float32 carries ~7 significant digits; sums over a few thousand
terms in a different order (another BLAS, another convolution algorithm) cost one or two
of them. Every adapter here agrees with the float64 reference to about 1e-7 in the loss
and 3e-6 in the updates, and the tolerances leave a margin of 40x over that. TF32 or
bfloat16 products (10 or 8 mantissa bits), a wrong layout, a mis-mapped optimizer or a
different flatten order give errors of 1e-3 and up, and fail.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from harness.config import Cell, Config
from harness.models import OptimizerSpec

STEPS, BATCH, SEED = 5, 32, 0
OPTIMIZER = OptimizerSpec("sgd", lr=0.05, momentum=0.9)
LOSS_TOLERANCE = 1e-5  # max |loss - reference| / |reference| over the steps
UPDATE_TOLERANCE = 1e-4  # max over tensors of max|delta - reference delta| / max|reference delta|


@dataclass
class ParityResult:
    framework: str
    variant: str
    model: str
    device: str
    status: str  # pass, FAIL, skipped, error
    loss_error: float | None = None
    update_error: float | None = None
    detail: str = ""


def reference(config: Config, model: str, optimizer: OptimizerSpec = OPTIMIZER) -> tuple[list[float], dict]:
    """The NumPy adapter in float64: the ground truth every framework is compared with."""
    from frameworks.numpy_adapter import NumpyAdapter
    from harness.synthetic import synthetic

    spec = _spec(config, model)
    dataset = synthetic(train=STEPS * BATCH, eval=BATCH, seed=SEED)
    optimizer = replace(optimizer, steps_per_epoch=1)  # each train_epoch call below is one step
    adapter = NumpyAdapter(spec, optimizer, device="cpu", variant="numpy", seed=SEED, threads=config.threads,
                           options={"dtype": "float64"})
    adapter.set_params(spec.init_params(SEED))
    adapter.load_data(dataset.x_train, dataset.y_train, dataset.x_eval, dataset.y_eval)
    losses = [adapter.train_epoch(step) for step in np.arange(STEPS * BATCH).reshape(STEPS, 1, BATCH)]
    return losses, adapter.get_params()


def _spec(config: Config, model: str):
    from harness.models import model_spec

    settings = {k: v for k, v in config.values[model].items() if k not in ("epochs", "target_accuracy")}
    return model_spec(model, **{**settings, "dropout": 0.0})


def compare(losses, params, ref_losses, ref_params, initial) -> tuple[float, float]:
    loss_error = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
    update_error = 0.0
    for name, ref in ref_params.items():
        ref_delta = ref - initial[name]
        delta = params[name].astype(np.float64) - initial[name]
        update_error = max(update_error, float(np.abs(delta - ref_delta).max() / np.abs(ref_delta).max()))
    return float(loss_error), update_error


def check_cell(config: Config, cell: Cell, ref, workdir: Path, optimizer: OptimizerSpec = OPTIMIZER) -> ParityResult:
    from harness.runner import CellProcess, worker_environment

    result = ParityResult(cell.framework, cell.variant, cell.model, cell.device, "skipped")
    reason = config.adapters[cell.framework].unsupported(cell.model, cell.device, cell.variant)
    if reason:
        result.detail = reason
        return result
    params_path = workdir / f"{cell.framework}-{cell.variant}-{cell.model}.npz"
    job = {
        "mode": "parity", "cell": cell.__dict__, "config": config.values, "started": time.time(),
        "adapter": config.adapters[cell.framework].job(cell.variant),
        "steps": STEPS, "batch_size": BATCH, "params_path": str(params_path),
        "optimizer": optimizer.__dict__, "model_overrides": {"dropout": 0.0},
        "options": {"allow_slow": True},  # correctness, not speed: run variants skipped for being slow
    }
    done = CellProcess(job, workdir / f"{params_path.stem}.log", worker_environment(config)).outcome(config.timeout_s)
    if done["status"] != "ok":
        result.status = "skipped" if done["status"] == "skipped" else "error"
        result.detail = done.get("error", "")
        return result
    ref_losses, ref_params = ref
    with np.load(params_path) as saved:
        params = dict(saved)
    initial = {k: v.astype(np.float64) for k, v in _spec(config, cell.model).init_params(SEED).items()}
    result.loss_error, result.update_error = compare(done["losses"], params, ref_losses, ref_params, initial)
    passed = result.loss_error <= LOSS_TOLERANCE and result.update_error <= UPDATE_TOLERANCE
    result.status = "pass" if passed else "FAIL"
    result.detail = done.get("backend", "")
    return result


def run_parity(config: Config, on_result=None, optimizer: OptimizerSpec = OPTIMIZER) -> list[ParityResult]:
    """Every installed adapter variant x model of the config, on the config's device, taking `optimizer`'s steps."""
    results = []
    with tempfile.TemporaryDirectory(prefix="mnist-bench-parity-") as tmp:
        for model in config.models:
            ref = reference(config, model, optimizer)
            for framework in config.frameworks:
                for variant in config.variants[framework]:
                    cell = Cell(framework, variant, model, config.device, 0, SEED)
                    results.append(check_cell(config, cell, ref, Path(tmp), optimizer))
                    if on_result:
                        on_result(results[-1])
    return results


def table(results: list[ParityResult]) -> str:
    import pandas as pd

    rows = [
        {
            "framework": r.framework, "variant": r.variant, "model": r.model, "device": r.device,
            "status": r.status,
            "loss rel. error": "–" if r.loss_error is None else f"{r.loss_error:.1e}",
            "update rel. error": "–" if r.update_error is None else f"{r.update_error:.1e}",
            "detail": r.detail,
        }
        for r in results
    ]
    note = (f"\n\nTolerances: loss {LOSS_TOLERANCE:.0e}, parameter update {UPDATE_TOLERANCE:.0e} "
            f"(relative to NumPy float64; {STEPS} SGD steps, batch {BATCH}, momentum {OPTIMIZER.momentum}).")
    return pd.DataFrame(rows).to_markdown(index=False) + note
