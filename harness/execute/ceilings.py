"""Ceilings and op floors: what each library's float32 products reach on this machine, measured like a cell.

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

The op floor is the fastest a model's own training step could run: each heavy operation of one
step at the configured batch (harness.models.ModelSpec.step_operations: dense products, attention's
batched products and convolutions, forward and gradients) is timed alone by every installed library
through its adapter's op_probe, in the same workers, and the floor sums, over the operations, the
fastest library's median time (times the operation's count, for one an LSTM runs once per time step).
It is cached and measured again under the same rules as the ceilings.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from harness.config import Config
from harness.models import floor_key

TIMEOUT_S = 600
PROBE_VERSION = 3  # 3: the op floor's operations beside the product; 2: the product's precision


def libraries_to_probe(config: Config) -> dict[str, str]:
    """Library -> the variant that probes it: every installed library with a probe that runs on the device."""
    chosen = {}
    for name, info in config.adapters.items():
        runnable = [v for v in info.runs_on(config.device) if not info.missing_modules(v)]
        if (info.has_probe or info.has_op_probe) and runnable:
            chosen[name] = runnable[0]
    return chosen


def floor_plan(config: Config) -> dict[str, tuple]:
    """Every op floor the config's cells need: key -> (model, spec, batch)."""
    return {floor_key(config.model(m), config.batch_size): (m, config.model(m), config.batch_size)
            for m in config.models}


def operation_key(operation: dict) -> str:
    """An operation by what decides its speed (kind, role, shape), not by which layer it is."""
    return f"{operation['kind']} {operation['role']} {'x'.join(map(str, operation['dims']))}"


def planned_operations(config: Config) -> list[dict]:
    """Each distinct heavy operation of every planned model's training step, once."""
    found = {}
    for _, spec, batch in floor_plan(config).values():
        for operation in spec.step_operations(batch):
            found.setdefault(operation_key(operation.as_dict()), operation.as_dict())
    return list(found.values())


def cache_path() -> Path:
    from harness.data import cache_root

    return cache_root() / "ceilings.json"


def fingerprint(config: Config, library: str, worker_env: dict[str, str], operations: list[dict] | None = None) -> str:
    """What decides a library's speed here: a changed CPU, setting or version is a new key.

    Without `operations`, the key of the matmul_size product; with them, of those operations' timings.
    """
    from harness.results import environment

    cpu = environment.cpu()
    facts = {
        "cpu": [cpu["model"], cpu["family_model_stepping"], cpu["flags"], cpu["usable_cores"]],
        "threads": config.threads, "device": config.device,
        "gpus": [g.get("name") for g in environment.gpus()] if config.device == "gpu" else [],
        "variables": environment.steering_variables(worker_env),
        "versions": environment.module_versions(config.adapters[library].modules),
        "library": library,
        "probe": PROBE_VERSION,
        "code": probe_code(config.adapters[library].path),
    }
    facts.update(size=config.matmul_size) if operations is None else facts.update(
        operations=sorted(operation_key(o) for o in operations))
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]


def probe_code(adapter_path: Path) -> str:
    """A hash of the code a library's probes run: its adapter file (and the layers folder beside it, e.g.
    frameworks/numpy_layers/) and the timing in probes.py, so an edited probe is measured again."""
    paths = [Path(adapter_path), Path(__file__).with_name("probes.py")]
    layers = Path(adapter_path).with_name(Path(adapter_path).stem.removesuffix("_adapter") + "_layers")
    paths += sorted(layers.glob("*.py")) if layers.is_dir() else []
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:16]


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def measure(config: Config, folder: Path, progress: bool = True, cache: Path | None = None,
            floor: bool = True) -> dict:
    """Every installed library's ceiling (and, with `floor`, its step operations) on the config's device, for
    environment.json.

    What the cache lacks for this machine (everything, with ceilings = "measure") is timed in one worker
    per library; the cache keeps the results. {} when ceilings = "off".
    """
    from harness.execute.process import worker_environment
    from harness.results.records import atomic_write

    if config.ceilings == "off":
        return {}
    cache = cache or cache_path()
    cached = _read_cache(cache)
    env = worker_environment(config)
    operations = planned_operations(config) if floor else []
    products, timings = {}, {}
    for library, variant in libraries_to_probe(config).items():
        info = config.adapters[library]
        wanted = {"product": (fingerprint(config, library, env), info.has_probe),
                  "operations": (fingerprint(config, library, env, operations), info.has_op_probe and operations)}
        found = {}
        for part, (key, probed) in wanted.items():
            if probed and config.ceilings == "cached" and key in cached:
                found[part] = {**cached[key], "source": f"cached (measured {cached[key]['time_utc']})"}
        todo = [part for part, (_, probed) in wanted.items() if probed and part not in found]
        if todo:
            found.update(_probe(config, library, variant, env, folder, todo, operations, progress))
            now = datetime.now(UTC).isoformat(timespec="seconds")
            cached.update({wanted[part][0]: {**found[part], "time_utc": now}
                           for part in todo if found[part].get("status") == "ok"})
        if info.has_probe:
            products[library] = found["product"]
        if "operations" in found:
            timings[library] = found["operations"]
    try:
        atomic_write(cache, json.dumps(cached, indent=1) + "\n")
    except OSError as error:  # an unwritable cache costs time next run, nothing else
        print(f"note: the ceilings cache {cache} cannot be written ({error})", file=sys.stderr)
    summary = summarise(products, config.matmul_size, config.device)
    if operations:
        summary["operations"] = timings
        summary["floor"] = {key: op_floor(spec, batch, timings) | {"model": model}
                            for key, (model, spec, batch) in floor_plan(config).items()}
    return summary


def _probe(config: Config, library: str, variant: str, env: dict, folder: Path, parts: list[str],
           operations: list[dict], progress: bool) -> dict:
    """One worker timing the library's product and/or operations: {part: result}, each with its status."""
    from harness.execute.process import run_worker

    size = config.matmul_size if "product" in parts else 0
    if progress:
        what = [f"{size}x{size} product"] * bool(size)
        what += [f"{len(operations)} step operations"] * ("operations" in parts)
        print(f"ceilings: {library} ({' and '.join(what)})", file=sys.stderr)
    job = {"mode": "probe", "adapter": config.adapters[library].job(variant), "device": config.device, "size": size,
           "operations": operations if "operations" in parts else [], "config": config.values}
    _, done = run_worker(job, folder / "logs" / f"ceilings-{library}.log", env, TIMEOUT_S)
    results = {}
    for part in parts:
        result = done.get(part) if done.get("status") == "ok" else done
        kept = {k: v for k, v in result.items() if k != "device_unavailable"}
        results[part] = {**kept, "source": "measured in this run"}
    return results


def summarise(results: dict, size: int, device: str) -> dict:
    """The libraries' results with the best of them named as the machine's peak."""
    measured = {name: r for name, r in results.items() if r.get("status") == "ok"}
    best = max(measured, key=lambda name: measured[name]["gflops"], default=None)
    peak = {"library": best, "gflops": measured[best]["gflops"]} if best else {}
    return {"size": size, "device": device, "libraries": results, "peak": peak}


def op_floor(spec, batch: int, timings: dict) -> dict:
    """The model's op floor at the batch size: per operation the fastest library's median time, and the sum.

    {} parts where no library timed an operation: the floor is then unknown ("complete": False).
    `own_seconds` sums each library's own times over the same operations (for a step's profile).
    """
    rows, own = [], {}
    for operation in spec.step_operations(batch):
        key = operation_key(operation.as_dict())
        times = {library: t["times"][key]["seconds"] * operation.count for library, t in timings.items()
                 if t.get("status") == "ok" and key in t.get("times", {})}
        fastest = min(times, key=times.get, default=None)
        rows.append({"operation": operation.name, "shape": operation.shape, "flops": operation.flops,
                     "fastest": fastest, "seconds": times.get(fastest), "times": times})
        for library, seconds in times.items():
            own[library] = own.get(library, 0.0) + seconds
    complete = all(row["fastest"] for row in rows)
    seconds = sum(row["seconds"] for row in rows) if complete else None
    counted = {library: total for library, total in own.items()
               if all(library in row["times"] for row in rows)}
    return {"batch": batch, "operations": rows, "complete": complete, "seconds": seconds,
            "samples_per_second": batch / seconds if seconds else None, "own_seconds": counted}
