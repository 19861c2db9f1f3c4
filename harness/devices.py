"""Which device a run uses, decided without importing a framework, and what a worker may see of the GPU.

device = "auto" means a GPU when an NVIDIA device node exists (/dev/nvidia0, /dev/nvidia1, ... as a
container may expose any of them) and CUDA_VISIBLE_DEVICES, if set, leaves at least one of them
visible the way the CUDA runtime reads it: a comma-separated list of indices or GPU-/MIG- UUIDs,
cut at the first entry that is not valid, so "-1", "" or "7" on a one-GPU machine leave none (a
UUID is taken as valid: matching it to a GPU needs the driver, which the frameworks then consult).
The frameworks still check for real in each cell: a GPU cell whose framework sees no GPU is
skipped with the reason.

A CPU cell hides every GPU from its framework (CUDA_VISIBLE_DEVICES="" and JAX_PLATFORMS=cpu):
otherwise JAX and TensorFlow initialise CUDA and reserve most of the GPU's memory in a cell that
never uses it.
"""

from __future__ import annotations

import glob
import os
import re

CPU_ONLY = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
# Every cell computes in float32: TF32 off in cuBLAS and cuDNN whatever a framework defaults to
# (PyTorch and TensorFlow enable it for some operations), CuPy's own switch too; CuPy compiles its
# kernels into memory, not a disk cache one cell would leave warm for the next (as PyTorch's is off).
# A user's own setting of any of these is kept, and recorded.
GPU_DEFAULTS = {"NVIDIA_TF32_OVERRIDE": "0", "CUPY_TF32": "0", "CUPY_CACHE_IN_MEMORY": "1"}


def device_nodes(pattern: str = "/dev/nvidia[0-9]*") -> list[str]:
    """The NVIDIA GPU device nodes here (not nvidiactl or nvidia-uvm)."""
    return sorted(path for path in glob.glob(pattern) if re.fullmatch(r".*/nvidia\d+", path))


def visible_gpus(count: int, visible: str | None) -> int:
    """How many of `count` GPUs CUDA_VISIBLE_DEVICES (None: unset) leaves visible, as CUDA parses it."""
    if visible is None:
        return count
    seen = 0
    for entry in visible.split(","):
        entry = entry.strip()
        if entry.startswith(("GPU-", "MIG-")) or (entry.isdigit() and int(entry) < count):
            seen += 1
        else:
            break  # CUDA stops at the first invalid entry
    return min(seen, count)


def resolve(device: str, nodes: list[str] | None = None, visible: str | None = ...) -> tuple[str, str]:
    """(cpu or gpu, why) for the config's device; "auto" looks at the device nodes and CUDA_VISIBLE_DEVICES."""
    if device != "auto":
        return device, f"device = {device!r} in the config"
    nodes = device_nodes() if nodes is None else nodes
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is ... else visible
    gpus = visible_gpus(len(nodes), visible)
    if gpus:
        return "gpu", f"auto: {gpus} GPU(s) visible ({', '.join(nodes)})"
    if nodes:
        return "cpu", f"auto: {len(nodes)} GPU device node(s), none visible with CUDA_VISIBLE_DEVICES={visible!r}"
    return "cpu", "auto: no NVIDIA device node"


def gpu_visible() -> bool:
    """A cheap answer to "is there a GPU here", without importing a framework (adapters check for real)."""
    return resolve("auto")[0] == "gpu"


def worker_variables(device: str, environ: dict[str, str]) -> dict[str, str]:
    """What a worker of a cell on `device` has set: a CPU cell sees no GPU; a GPU cell computes in float32."""
    if device == "cpu":
        return dict(CPU_ONLY)
    return {name: value for name, value in GPU_DEFAULTS.items() if name not in environ}
