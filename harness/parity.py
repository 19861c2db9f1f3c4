"""Proof that the models are the same: every adapter against the NumPy reference in float64.

Each adapter variant, in its own process like a benchmark cell, runs `observe` below: the
benchmark's recipe (multi-batch epochs in the harness's batch order, a per-epoch rate decay,
SGD with momentum or Nesterov, Adam, AdamW, dropout) from the harness's initial weights. The
NumPy adapter runs the same `observe` in float64, in the optimizer forms the adapter declares,
and `compare` checks one against the other (docs/DESIGN.md, "Parity"):

  start      the parameters read back equal the initial ones; evaluate() there equals the reference's
  <optimizer> the first step's update, every call's mean loss and the parameters after 3 epochs of
             4 batches: SGD with momentum, Nesterov, Adam and AdamW, each decaying its rate per epoch,
             and Adam with other betas under a per-step warm-up and cosine decay (schedule)
  dropout    at rate p and learning rate 0: evaluate() equals the reference's (dropout off), the mean
             training loss over many batches matches the reference's expectation within 4 standard
             errors, and every call draws new masks (the same batch twice gives two losses)
  no dropout at rate 0 and learning rate 0, the same batch twice gives the same loss

Errors are relative: a loss against the reference's loss, an update as the L2 norm of the
difference over the L2 norm of the reference's update, per tensor (the worst tensor counts).
A norm, not an element's maximum: Adam's normalised step moves an element whose gradient is
rounding noise by a whole learning rate, and a ReLU that float32 puts on the other side of its
kink changes one unit's column; both are real float32 behaviour of a correct adapter, small in
norm, huge in the maximum. The tolerances sit between what correct float32 adapters show and
what every fault in tests/test_parity_faults.py shows (the margins are in docs/DESIGN.md).
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from harness.config import Cell, Config, network_settings
from harness.models import OptimizerSpec, model_spec

SEED = 0
BATCH, BATCHES, EPOCHS = 32, 4, 3  # 3 epochs of 4 batches; the training set leaves a partial batch to drop
EVAL_SIZE = 256
# Parity's Adam uses eps = 1e-5, not the benchmark's 1e-8: there the two epsilon forms differ only where
# |g| < 1e-6, and float32 rounding of a near-zero gradient decides the sign of a full-rate step.
RECIPES = {
    "sgd": OptimizerSpec("sgd", lr=0.01, momentum=0.9, lr_decay=0.5),
    "nesterov": OptimizerSpec("sgd", lr=0.01, momentum=0.9, nesterov=True, lr_decay=0.5),
    "adam": OptimizerSpec("adam", lr=1e-3, eps=1e-5, lr_decay=0.5),
    "adamw": OptimizerSpec("adamw", lr=1e-3, eps=1e-5, weight_decay=0.1, lr_decay=0.5),
    # per step (the speedrun's form): a linear warm-up over the first 2 of 9 steps, a cosine decay over the next 7,
    # then the last 3 steps at the final rate; with Adam's betas moved off their defaults, as that recipe has them
    "schedule": OptimizerSpec("adam", lr=1e-3, eps=1e-5, betas=(0.7, 0.9), schedule="warmup_cosine", warmup=0.25,
                              lr_start=0.1, lr_end=0.05, schedule_epochs=2.25),
}
FROZEN = OptimizerSpec("sgd", lr=0.0)  # learning rate 0: the dropout checks train without changing anything
DROPOUT_BATCH = 128  # one fixed batch, trained again and again
DROPOUT_CALLS, DROPOUT_STEPS = 8, 16  # train_epoch calls of that batch repeated DROPOUT_STEPS times
# The reference's sample of the same distribution, 8x the adapter's: its own error is part of every
# z, and 256 draws (the first choice) left one seed's expectation 2.4 of its standard errors off, so
# that every adapter's CNN sat 1-3 SE below it and a correct one failed.
REFERENCE_CALLS, REFERENCE_STEPS = 128, 8
SHARPEN = 4.0  # the last kernel x4: larger logits, so that dropout moves the loss by many standard errors
PROBE_RATE = 0.25  # also checked when the configured rate cannot tell a rate from a keep-probability

TOLERANCES = {
    "params": 1e-6,  # start: parameters read back, relative to the largest initial weight
    "eval loss": 1e-5,  # evaluate(): mean cross-entropy, relative
    "eval accuracy": 1.5 / EVAL_SIZE,  # one prediction may flip on a float32 near-tie
    "first step": 1e-4,  # one update from the same weights: no time for rounding to grow
    "loss": 1e-3,  # each call's mean loss over the trajectory
    "update": 5e-2,  # the parameters after 12 steps, over the reference's total update
    "z": 4.0,  # dropout: standard errors between the mean loss and the reference's expectation
    "spread": 24.3,  # dropout: chi-square (7 dof) of the call means' spread at p = 0.001: masks drawn per step
    "repeat": 1e-6,  # no dropout: two calls on the same batch at rate 0, relative
}
SEPARATION = 8.0  # dropout must move the expectation by this many standard errors, or the check is blind


@dataclass
class ParityResult:
    framework: str
    variant: str
    model: str
    device: str
    check: str  # start, sgd, nesterov, adam, adamw, dropout p=.., no dropout; or "" when the cell did not run
    status: str  # pass, FAIL, skipped, error
    measures: dict[str, float] = field(default_factory=dict)  # name -> value, judged against TOLERANCES
    detail: str = ""
    device_skip: bool = False  # skipped because the device is missing here, which is not a parity problem

    @property
    def margin(self) -> float:
        """The smallest tolerance / value over the measures (> 1 passes)."""
        ratios = [TOLERANCES[k] / v if v else math.inf for k, v in self.measures.items()]
        return min(ratios, default=math.inf)


# --- what an adapter is made to do (run in the adapter's worker, and by the reference) ------------


def dropout_rates(rate: float) -> list[float]:
    """The rates the dropout check runs at: the configured one, and PROBE_RATE where the configured one is
    0 or so near 0.5 that a rate swapped with its keep-probability would look the same."""
    rates = [rate] if rate > 0 else []
    return rates if rate > 0 and abs(rate - 0.5) >= 0.1 else [*rates, PROBE_RATE]


def parity_data():
    from harness.synthetic import synthetic

    return synthetic(train=BATCHES * BATCH + BATCH // 2, eval=EVAL_SIZE, seed=SEED)


def sharpened(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    last = [name for name in params if name.endswith(".kernel")][-1]
    return {**params, last: params[last] * np.float32(SHARPEN)}


def observe(make, model: str, sizes: dict, rate: float, calls: int = DROPOUT_CALLS,
            steps: int = DROPOUT_STEPS) -> dict:
    """Everything parity compares, as a flat dict of arrays and numbers.

    `make(spec, optimizer)` builds a fresh adapter. The reference calls this with more dropout calls.
    """
    from harness.batches import batch_order

    data = parity_data()
    orders = list(batch_order(len(data.x_train), BATCH, SEED, EPOCHS))
    plain = model_spec(model, **sizes, dropout=0.0)
    initial = plain.init_params(SEED)
    seen: dict = {}

    def prepared(spec, optimizer, params):
        adapter = make(spec, optimizer)
        adapter.set_params(params)
        adapter.load_data(data.x_train, data.y_train, data.x_eval, data.y_eval)
        return adapter

    for name, optimizer in RECIPES.items():
        adapter = prepared(plain, replace(optimizer, steps_per_epoch=BATCHES, total_steps=EPOCHS * BATCHES), initial)
        if not seen:
            seen.update(_flat("start/params", adapter.get_params()))
            seen["start/eval"] = np.array(adapter.evaluate())
        losses = [adapter.train_epoch(orders[0][:1])]  # the first step alone, then the rest of epoch 1
        seen.update(_flat(f"{name}/step", adapter.get_params()))
        losses.append(adapter.train_epoch(orders[0][1:]))
        losses += [adapter.train_epoch(order) for order in orders[1:]]
        seen[f"{name}/losses"] = np.array(losses)
        seen.update(_flat(f"{name}/final", adapter.get_params()))

    fixed = np.tile(np.arange(DROPOUT_BATCH, dtype=np.int32), (steps, 1))  # one batch, `steps` times
    weights = sharpened(initial)
    for p in dropout_rates(rate):
        adapter = prepared(model_spec(model, **sizes, dropout=p), FROZEN, weights)
        seen[f"dropout {p:g}/eval"] = np.array(adapter.evaluate())
        seen[f"dropout {p:g}/calls"] = np.array([adapter.train_epoch(fixed) for _ in range(calls)])
    adapter = prepared(plain, FROZEN, weights)
    seen["no dropout/calls"] = np.array([adapter.train_epoch(fixed[:1]) for _ in range(2)])
    return seen


def _flat(prefix: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{name}": value for name, value in params.items()}


def _params(seen: dict, prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix) + 1:]: value.astype(np.float64) for key, value in seen.items()
            if key.startswith(prefix + "/")}


# --- the reference and the comparison --------------------------------------------------------------


def reference(model: str, sizes: dict, rate: float, adam_epsilon: str = "sqrt_v_hat",
              sgd_momentum: str = "gradient") -> dict:
    """observe() by the NumPy adapter in float64, computing the optimizer forms the adapter declared.

    Computed once per process for each model, sizes, rate and forms (a CNN's takes tens of seconds); the
    arrays are shared, so a caller must not change them."""
    return _reference(model, json.dumps(sizes, sort_keys=True), rate, adam_epsilon, sgd_momentum)


@functools.cache
def _reference(model: str, sizes: str, rate: float, adam_epsilon: str, sgd_momentum: str) -> dict:
    from frameworks.numpy_adapter import NumpyAdapter

    options = {"dtype": "float64", "adam_epsilon": adam_epsilon, "sgd_momentum": sgd_momentum}

    def make(spec, optimizer):
        return NumpyAdapter(spec, optimizer, device="cpu", variant="numpy", seed=SEED + 1, threads=1, options=options)

    return observe(make, model, json.loads(sizes), rate, REFERENCE_CALLS, REFERENCE_STEPS)


def beyond_float32_spacing(params: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|p - p_ref| less one float32 spacing, elementwise (0 if less): both are float32 values (the reference is
    read back as float32 too), and two correct computations may round to neighbouring ones. Near 1 (a layer-norm
    scale, the LSTM's forget-gate bias) a step of 1e-4 has only 840 float32 values to land on, so one element of
    16 rounded the other way is 3e-4 of the tensor's update, past the first step's tolerance; near the kernels'
    0.05 the spacing is 4e-5 of such a step."""
    spacing = np.spacing(np.maximum(np.abs(params), np.abs(ref)).astype(np.float32)).astype(np.float64)
    return np.maximum(np.abs(params - ref) - spacing, 0.0)


def relative_l2(params: dict, reference_params: dict, initial: dict) -> float:
    """The worst tensor's ||p - p_ref|| / ||p_ref - p_initial||, differences of one float32 spacing not counted."""
    worst = 0.0
    for name, ref in reference_params.items():
        update = np.linalg.norm(ref - initial[name])
        error = np.linalg.norm(beyond_float32_spacing(params[name], ref))
        worst = max(worst, error / update if update else (math.inf if error else 0.0))
    return float(worst)


def _relative(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.maximum(np.abs(b), 1e-12)))


def compare(seen: dict, ref: dict, model: str, sizes: dict, rate: float) -> list[tuple[str, dict, str]]:
    """(check, measures, note) per check: seen (an adapter's observe) against ref (the reference's)."""
    initial = {k: v.astype(np.float64) for k, v in model_spec(model, **sizes, dropout=0.0).init_params(SEED).items()}
    scale = max(float(np.abs(v).max()) for v in initial.values())
    start = _params(seen, "start/params")
    checks = [("start", {
        "params": max(float(np.abs(start[k] - v).max()) for k, v in initial.items()) / scale,
        "eval loss": _relative(seen["start/eval"][0], ref["start/eval"][0]),
        "eval accuracy": abs(float(seen["start/eval"][1] - ref["start/eval"][1])),
    }, "")]
    for name in RECIPES:
        checks.append((name, {
            "first step": relative_l2(_params(seen, f"{name}/step"), _params(ref, f"{name}/step"), initial),
            "loss": _relative(seen[f"{name}/losses"], ref[f"{name}/losses"]),
            "update": relative_l2(_params(seen, f"{name}/final"), _params(ref, f"{name}/final"), initial),
        }, ""))
    for p in dropout_rates(rate):
        checks.append(_dropout_check(seen, ref, f"dropout {p:g}", ref["no dropout/calls"][0]))
    calls = seen["no dropout/calls"]
    checks.append(("no dropout", {"repeat": _relative(calls[1], calls[0])}, ""))
    return checks


def _dropout_check(seen: dict, ref: dict, name: str, undropped: float) -> tuple[str, dict, str]:
    """Evaluation with dropout off; the training loss's expectation; fresh masks in every step and call."""
    calls, ref_calls = seen[f"{name}/calls"], ref[f"{name}/calls"]
    sigma = float(np.std(ref_calls, ddof=1) * math.sqrt(REFERENCE_STEPS))  # one batch's loss: its spread over masks
    n, n_ref = calls.size * DROPOUT_STEPS, ref_calls.size * REFERENCE_STEPS
    standard_error = sigma * math.sqrt(1 / n + 1 / n_ref)
    expectation = float(ref_calls.mean())
    # the spread of the call means against what fresh masks in every step give: chi-square, calls - 1 dof
    spread = float(np.var(calls, ddof=1) * (len(calls) - 1) / (sigma**2 / DROPOUT_STEPS)) if sigma else math.inf
    repeated = int(np.sum(calls[1:] == calls[:-1]))
    measures = {
        "eval loss": _relative(seen[f"{name}/eval"][0], ref[f"{name}/eval"][0]),
        "eval accuracy": abs(float(seen[f"{name}/eval"][1] - ref[f"{name}/eval"][1])),
        "z": abs(float(calls.mean()) - expectation) / standard_error if standard_error else math.inf,
        "spread": spread if not repeated else math.inf,  # two equal calls: one mask reused
    }
    blind = abs(expectation - undropped) < SEPARATION * standard_error
    note = (f"mean {calls.mean():.4f}, expected {expectation:.4f} ± {standard_error:.4f}, without dropout "
            f"{undropped:.4f}" + ("; BLIND: dropout moves the loss too little to be checked" if blind else ""))
    if blind:
        measures["z"] = math.inf
    return name, measures, note


# --- running it over a config ----------------------------------------------------------------------


def _sizes(config: Config, model: str) -> tuple[dict, float]:
    settings = network_settings(config.values[model])
    return {k: v for k, v in settings.items() if k != "dropout"}, settings["dropout"]


def check_cell(config: Config, cell: Cell, workdir: Path, references: dict) -> list[ParityResult]:
    """Run observe() in the cell's own worker and compare it with the reference in the adapter's forms."""
    from harness.execute.process import run_worker, worker_environment

    info = config.adapters[cell.framework]
    base = dict(framework=cell.framework, variant=cell.variant, model=cell.model, device=cell.device)
    reason = info.unsupported(cell.model, cell.device, cell.variant)
    if reason:
        on_device = cell.device in info.variant_devices.get(cell.variant, info.devices)
        return [ParityResult(**base, check="", status="skipped", detail=reason, device_skip=not on_device)]
    sizes, rate = _sizes(config, cell.model)
    key = (cell.model, info.adam_epsilon, info.sgd_momentum)
    if key not in references:
        references[key] = reference(cell.model, sizes, rate, *key[1:])
    path = workdir / f"{cell.framework}-{cell.variant}-{cell.model}.npz"
    job = {"mode": "parity", "cell": cell.__dict__, "config": config.values,
           "adapter": info.job(cell.variant), "observations_path": str(path),
           "options": {"allow_slow": True}}  # correctness, not speed: run variants skipped for being slow
    _, done = run_worker(job, workdir / f"{path.stem}.log", worker_environment(config), config.timeout_s)
    if done.get("status") != "ok":
        status = "skipped" if done.get("status") == "skipped" else "error"
        return [ParityResult(**base, check="", status=status, detail=done.get("error", ""),
                             device_skip=bool(done.get("device_unavailable")))]
    with np.load(path) as saved:
        seen = dict(saved)
    results = []
    for check, measures, note in compare(seen, references[key], cell.model, sizes, rate):
        measures = {name: math.inf if math.isnan(value) else value for name, value in measures.items()}
        passed = all(value <= TOLERANCES[name] for name, value in measures.items())
        detail = "; ".join(part for part in (done.get("backend", ""), note) if part)
        results.append(ParityResult(**base, check=check, status="pass" if passed else "FAIL", measures=measures,
                                    detail=detail))
    return results


def run_parity(config: Config, on_result=None, jobs: int = 1) -> list[ParityResult]:
    """Every installed adapter variant x model of the config, on the config's device, `jobs` workers at a time.

    Parity measures correctness, not speed, so workers may share the machine: with jobs > 1 give each the
    cores it may use (the config's `threads`). Results come back in the config's order whatever finishes first.
    """
    from concurrent.futures import ThreadPoolExecutor

    cells = [Cell(framework, variant, model, config.device, 0, SEED) for model in config.models
             for framework in config.frameworks for variant in config.variants[framework]]
    references: dict = {}
    for cell in cells:  # in this process, before the workers: each reference is shared by every cell of its forms
        info = config.adapters[cell.framework]
        key = (cell.model, info.adam_epsilon, info.sgd_momentum)
        if key not in references and not info.unsupported(cell.model, cell.device, cell.variant):
            references[key] = reference(cell.model, *_sizes(config, cell.model), *key[1:])
    results: list[ParityResult] = []
    with tempfile.TemporaryDirectory(prefix="mnist-bench-parity-") as tmp, ThreadPoolExecutor(jobs) as pool:
        for found in pool.map(lambda cell: check_cell(config, cell, Path(tmp), references), cells):
            results += found
            for result in found if on_result else ():
                on_result(result)
    return results


def problems(results: list[ParityResult], installed: set[str]) -> list[str]:
    """Why a parity run did not prove what it should: failures, and cells that could not be compared.

    A cell skipped because its device is missing here is fine; one skipped for anything else (a
    variant's module missing, an error) in an installed adapter is not, and neither is a run in which
    no adapter but the NumPy reference itself was compared.
    """
    found = [f"{r.framework}/{r.variant} {r.model}: {r.check or 'cell'} {r.status}"
             + (f" ({r.detail})" if r.status != "FAIL" else "")
             for r in results
             if r.status in ("FAIL", "error") or (r.status == "skipped" and not r.device_skip
                                                   and r.framework in installed)]
    compared = {r.framework for r in results if r.status in ("pass", "FAIL")}
    if not compared - {"numpy"}:
        found.append("no adapter besides the NumPy reference was compared: install one (bench.py list)")
    return found


def table(results: list[ParityResult]) -> str:
    import pandas as pd

    def measured(r: ParityResult) -> str:
        return ", ".join(f"{name} {value:.1e} (≤ {TOLERANCES[name]:.0e})" for name, value in r.measures.items())

    rows = [{"framework": r.framework, "variant": r.variant, "model": r.model, "device": r.device,
             "check": r.check, "status": r.status, "measures (tolerance)": measured(r), "detail": r.detail}
            for r in results]
    note = ("\n\nRelative errors against the NumPy float64 reference in the adapter's declared optimizer forms "
            f"({EPOCHS} epochs of {BATCHES} batches of {BATCH}, rate decayed by half per epoch; docs/DESIGN.md, "
            "\"Parity\").")
    return pd.DataFrame(rows).to_markdown(index=False) + note


def closest(results: list[ParityResult]) -> str:
    """Per check, the measure that came closest to its tolerance over every cell compared, as a fraction."""
    import pandas as pd

    rows = [{"check": r.check, "measure": name, "fraction of tolerance": value / TOLERANCES[name],
             "value": value, "tolerance": TOLERANCES[name], "cell": f"{r.framework}/{r.variant} {r.model}"}
            for r in results if r.status in ("pass", "FAIL") for name, value in r.measures.items()]
    if not rows:
        return "No check was compared."
    frame = pd.DataFrame(rows)
    worst = frame.loc[frame.groupby("check", sort=False)["fraction of tolerance"].idxmax()]
    cells = len({row["cell"] for row in rows})
    return (f"The closest each check came to its tolerance, over the {cells} cells compared:\n\n"
            + worst.to_markdown(index=False, floatfmt=".2g"))
