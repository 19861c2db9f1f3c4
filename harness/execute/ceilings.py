"""Matrix-product ceilings: what each library's float32 product reaches on this machine.

Efficiency says how much of what the machine can do a row achieves, against two references:
  - the machine's peak: the best large float32 product of any installed library on the device;
  - the row's own ceiling: the same product in the library that computes the row (Keras rows
    use their backend's), which separates that library's BLAS from everything around it.
Each library's product C = A @ B (square, `matmul_size` on a side) is timed in a worker process
set up exactly like a cell's (same threads, CPU affinity and BLAS environment): the best of
repeated products (harness/execute/probes.py).

A ceiling belongs to a machine and a library version, not to a run: it is measured once and
cached (~/.cache/mnist-bench/ceilings.json), keyed by everything that decides it (CPU, usable
cores, threads, device, size, the BLAS variables, the library's versions). `ceilings = "cached"`
(the default) measures only what the cache lacks, every installed library included, so the
machine's peak stays the best of them all; "measure" times every library again in this run (the
reference configs do), "off" skips them. environment.json says where each figure came from.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from harness.config import Config

TIMEOUT_S = 600


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
    from harness.results import environment

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
    from harness.execute.process import run_worker, worker_environment
    from harness.results.records import atomic_write

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
        _, done = run_worker(job, folder / "logs" / f"matmul-{library}.log", env, TIMEOUT_S)
        outcome = {k: v for k, v in done.items() if k != "device_unavailable"}
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
