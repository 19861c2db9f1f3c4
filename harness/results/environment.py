"""What a reader needs to reproduce a row: versions, CPU/GPU, BLAS, thread settings, git state."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "numpy", "scipy", "scipy-openblas32", "scipy-openblas64", "pandas", "torch", "jax", "jaxlib",
    "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax", "keras", "tensorflow", "tensorflow-cpu",
    "cupy-cuda12x", "cupy-cuda13x", "threadpoolctl",
)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "asimd", "sve")
ENV_PREFIXES = (
    "OPENBLAS_", "MKL_", "OMP_", "KMP_", "GOMP_", "BLIS_", "NUMEXPR_", "XLA_", "TF_ENABLE_", "TF_NUM_", "TF_XLA_",
    "TF_CPP_", "TF_GPU_", "TF_FORCE_", "JAX_", "KERAS_", "TORCH",
    "CUDA_", "CUPY_", "NVIDIA_TF32", "DNNL_", "ONEDNN_", "MNIST_BENCH_", "MALLOC_", "GLIBC_TUNABLES",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def module_versions(modules) -> dict[str, str]:
    """Module -> "distribution version" for each importable module named (a submodule counts as its package).

    Found from installed metadata, without importing anything: tensorflow -> "tensorflow-cpu 2.21.0".
    """
    import functools

    @functools.cache
    def distributions() -> dict[str, list[str]]:
        return importlib.metadata.packages_distributions()

    versions = {}
    for module in modules:
        names = distributions().get(module.split(".")[0], [])
        found = []
        for name in dict.fromkeys(names):
            try:
                found.append(f"{name} {importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                continue
        versions[module] = ", ".join(found) or "not installed"
    return versions


def adapter_versions(config) -> dict[str, dict[str, str]]:
    """For every framework in the run: the versions of every module it and its chosen variants declare."""
    found = {}
    for framework in config.frameworks:
        info = config.adapters[framework]
        modules = [*info.modules, *(m for v in config.variants[framework] for m in info.variant_modules.get(v, ()))]
        found[framework] = module_versions(dict.fromkeys(modules))
    return found


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def cpu() -> dict:
    """Model, vendor family/model/stepping, the vector extensions BLAS kernels choose by, caches, cores."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            caches[f"L{level} {kind.lower()}"] = (index / "size").read_text().strip()
        except OSError:
            continue
    return {
        "model": cpu_model(),
        "vendor": info.get("vendor_id", ""),
        "family_model_stepping": "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "flags": [f for f in CPU_FLAGS if f in flags],
        "caches": caches,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def memory_gib() -> float | None:
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    except (OSError, AttributeError):
        return None
    return round(kib / 2**20, 1)


def gpus() -> list[dict]:
    if not shutil.which("nvidia-smi"):
        return []
    query = "name,driver_version,memory.total"
    out = _run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"])
    found = [dict(zip(query.split(","), (v.strip() for v in line.split(",")))) for line in out.splitlines() if line]
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", _run(["nvidia-smi"]))  # the driver's CUDA, in its banner only
    return [{**gpu, "cuda_version": cuda.group(1) if cuda else "?"} for gpu in found]


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def git_state() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    diff = git("diff", "HEAD") if dirty else ""  # which uncommitted changes: a resume must run the same code
    return {"commit": git("rev-parse", "HEAD"), "dirty": dirty,
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if dirty else ""}


def steering_variables(env: dict[str, str]) -> dict[str, str]:
    """The variables that steer BLAS, OpenMP and the frameworks (threads, kernels, devices)."""
    return {k: v for k, v in sorted(env.items()) if k.startswith(ENV_PREFIXES)}


def machine(facts: dict) -> str:
    """A short fingerprint of what decides a row's speed, from collect()'s facts (of this session or of a node):
    the CPU (model, family/model/stepping, vector extensions, usable cores), the GPUs, the memory, Python and the
    versions of the numerical packages. Two rows with the same fingerprint ran on equal machines."""
    cpu = facts.get("cpu") or {}
    packages = {name: version for name, version in (facts.get("packages") or {}).items() if name != "pandas"}
    decisive = {"cpu": [cpu.get("model"), cpu.get("family_model_stepping"), cpu.get("flags"), cpu.get("usable_cores")],
                "gpus": [gpu.get("name") for gpu in facts.get("gpus") or []], "memory_gib": round(facts.get("memory_gib") or 0),
                "python": facts.get("python"), "packages": packages}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:12]


def collect(threads: int, worker_env: dict[str, str] | None = None, matmul: dict | None = None,
            config=None) -> dict:
    """Everything above, as written to environment.json beside every run.

    `worker_env` is the environment every cell ran with (thread counts, and OpenBLAS's variables
    removed under blas = "native"); `matmul` the ceilings of harness/execute/ceilings.py, which also say,
    per library, the BLAS it computed with and the kernel threadpoolctl saw in that process.
    """
    return {
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "command": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu(),
        "memory_gib": memory_gib(),
        "threads": threads,
        "packages": package_versions(),
        "adapter_modules": adapter_versions(config) if config is not None else {},
        "environment_variables": steering_variables(dict(os.environ)),
        "worker_environment_variables": steering_variables(worker_env if worker_env is not None else dict(os.environ)),
        "matmul": matmul or {},
        "gpus": gpus(),
        "git": git_state(),
    }
