"""What a reader needs to reproduce a row: versions, CPU/GPU, BLAS, thread settings, git state."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "numpy", "scipy", "pandas", "torch", "jax", "jaxlib", "flax", "optax", "keras",
    "tensorflow", "tensorflow-cpu", "cupy-cuda12x", "threadpoolctl",
)
ENV_PREFIXES = ("OPENBLAS_", "MKL_", "OMP_", "KMP_", "BLIS_", "XLA_", "TF_", "JAX_", "KERAS_", "CUDA_", "NVIDIA_TF32")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1).strip() if match else platform.processor() or platform.machine()


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
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [dict(zip(query.split(","), (v.strip() for v in line.split(",")))) for line in out.splitlines() if line]


def blas() -> list[dict]:
    """BLAS/OpenMP libraries loaded by numpy, with the kernel (architecture) each picked."""
    try:
        import numpy  # noqa: F401  (loads numpy's BLAS so threadpoolctl can see it)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer", "filepath")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info()]


def git_state() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def collect(threads: int) -> dict:
    """Everything above, as written to environment.json beside every run."""
    return {
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "threads": threads,
        "packages": package_versions(),
        "blas": blas(),
        "environment_variables": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
        "gpus": gpus(),
        "git": git_state(),
    }
