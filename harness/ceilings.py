"""Matrix-product ceilings: what each library's float32 product reaches on this machine.

Efficiency says how much of what the machine can do a row achieves, against two references:
  - the machine's peak: the best large float32 product of any installed library on the device;
  - the row's own ceiling: the same product in the library that computes the row (Keras rows
    use their backend's), which separates that library's BLAS from everything around it.
Each library's product C = A @ B (square, `matmul_size` on a side) is timed in a worker process
set up exactly like a cell's (same threads, CPU affinity and BLAS environment): the best of
repeated products after two warm-up ones, for at least MIN_REPEATS and BUDGET_S seconds.

A ceiling belongs to a machine and a library version, not to a run: it is measured once and
cached (~/.cache/mnist-bench/ceilings.json), keyed by everything that decides it (CPU, usable
cores, threads, device, size, the BLAS variables, the library's versions). `ceilings = "cached"`
(the default) measures only what the cache lacks, every installed library included, so the
machine's peak stays the best of them all; "measure" times every library again in this run (the
reference configs do), "off" skips them. environment.json says where each figure came from.

Achieved FLOP/s counts the model's training FLOPs (harness/models.py) per second of a steady
epoch, so it includes whatever else the step does (activations, the optimizer, Python).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness.config import Config

BUDGET_S = 2.0
MIN_REPEATS = 5
WARM_UP = 2
TIMEOUT_S = 600


def time_product(product, size: int) -> dict:
    """Best and median GFLOP/s of `product` (one blocking size x size x size float32 product)."""
    for _ in range(WARM_UP):
        product()
    seconds: list[float] = []
    start = time.perf_counter()
    while len(seconds) < MIN_REPEATS or time.perf_counter() - start < BUDGET_S:
        begin = time.perf_counter()
        product()
        seconds.append(time.perf_counter() - begin)
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


def libraries_to_probe(config: Config) -> dict[str, str]:
    """Library -> the variant that probes it: every installed library with a probe that runs on the device."""
    chosen = {}
    for name, info in config.adapters.items():
        runnable = [v for v in info.runs_on(config.device) if not info.missing_modules(v)]
        if info.has_probe and runnable:
            chosen[name] = runnable[0]
    return chosen


def cache_path() -> Path:
    from harness.data import cache_root

    return cache_root() / "ceilings.json"


def fingerprint(config: Config, library: str, worker_env: dict[str, str]) -> str:
    """What decides a library's product speed here: a changed CPU, setting or version is a new key."""
    from harness import environment

    cpu = environment.cpu()
    facts = {
        "cpu": [cpu["model"], cpu["family_model_stepping"], cpu["flags"], cpu["usable_cores"]],
        "threads": config.threads, "device": config.device, "size": config.matmul_size,
        "gpus": [g.get("name") for g in environment.gpus()] if config.device == "gpu" else [],
        "variables": environment.steering_variables(worker_env),
        "versions": environment.module_versions(config.adapters[library].modules),
        "library": library,
        "probe": 2,  # the probe's version: 2 measures the product's precision too
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def measure(config: Config, folder: Path, progress: bool = True, cache: Path | None = None) -> dict:
    """Every installed library's ceiling on the config's device, for environment.json.

    Each library not cached for this machine (or every one, with ceilings = "measure") is timed in
    its own worker; the cache keeps the results. {} when ceilings = "off".
    """
    from harness.results import atomic_write
    from harness.runner import CellProcess, worker_environment

    if config.ceilings == "off":
        return {}
    cache = cache or cache_path()
    cached = _read_cache(cache)
    env, size = worker_environment(config), config.matmul_size
    results = {}
    for library, variant in libraries_to_probe(config).items():
        key = fingerprint(config, library, env)
        if config.ceilings == "cached" and key in cached:
            results[library] = {**cached[key], "source": f"cached (measured {cached[key]['time_utc']})"}
            continue
        if progress:
            print(f"matmul ceiling: {library} ({size}x{size} float32)", file=sys.stderr)
        info = config.adapters[library]
        job = {"mode": "matmul", "adapter": info.job(variant), "device": config.device, "size": size,
               "config": config.values}
        worker = CellProcess(job, folder / "logs" / f"matmul-{library}.log", env)
        outcome = {k: v for k, v in worker.outcome(TIMEOUT_S).items() if k not in ("event", "device_unavailable")}
        results[library] = {**outcome, "source": "measured in this run"}
        if outcome.get("status") == "ok":
            cached[key] = {**outcome, "time_utc": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        atomic_write(cache, json.dumps(cached, indent=1) + "\n")
    except OSError as error:  # an unwritable cache costs time next run, nothing else
        print(f"note: the ceilings cache {cache} cannot be written ({error})", file=sys.stderr)
    return summarise(results, size, config.device)


def summarise(results: dict, size: int, device: str) -> dict:
    """The libraries' results with the best of them named as the machine's peak."""
    measured = {name: r for name, r in results.items() if r.get("status") == "ok"}
    best = max(measured, key=lambda name: measured[name]["gflops"], default=None)
    peak = {"library": best, "gflops": measured[best]["gflops"]} if best else {}
    return {"size": size, "device": device, "libraries": results, "peak": peak}


def efficiency(run: dict, library: str, ceilings: dict | None) -> dict:
    """The runs.csv efficiency columns of one finished cell (blank when something is unknown)."""
    columns = {"ceiling_library": library}
    speed, flops = run.get("samples_per_second"), run.get("flops_per_sample")
    if not speed or not flops:
        return columns
    columns["gflops"] = flops * speed / 1e9
    if not ceilings:
        return columns
    own = ceilings["libraries"].get(library, {})
    if own.get("status") == "ok":
        columns["ceiling_gflops"] = own["gflops"]
        columns["ceiling_fraction"] = columns["gflops"] / own["gflops"]
    if ceilings.get("peak"):
        columns["peak_gflops"] = ceilings["peak"]["gflops"]
        columns["peak_fraction"] = columns["gflops"] / ceilings["peak"]["gflops"]
    return columns
