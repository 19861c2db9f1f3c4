"""The adapter contract, and the registry that finds adapters without importing them.

An adapter owns only what is framework-specific: building the model from a ModelSpec,
moving data to its device, one epoch of training over batches the harness chose, and
evaluation. It never picks the data order, the initial weights, the hyper-parameters
or how time is measured.

Adapters live in frameworks/<name>_adapter.py and may import their framework at the
top, as that framework's own examples do. The registry therefore reads each adapter's
declarations (the literal class attributes below) with `ast`, so `bench.py list`
never imports an ML framework; only the worker process imports the one it runs.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.models import ModelSpec, OptimizerSpec

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS_DIR = ROOT / "frameworks"
DECLARED = (
    "name", "extra", "modules", "variants", "models", "devices", "variant_env", "variant_modules", "variant_devices",
    "variant_library",
)


class Unsupported(Exception):
    """Raised by an adapter that cannot run here (e.g. no CUDA device): the cell is skipped with this reason.

    An adapter may also skip a variant that is pathologically slow on a device; options["allow_slow"]
    (set by parity and the conformance suite, which check correctness, not speed) runs it anyway.
    """


class Adapter:
    """Base class of every framework adapter (see DESIGN.md, 'The adapter contract')."""

    name: ClassVar[str]  # registry key and the `framework` column
    extra: ClassVar[str]  # pip extra that installs the framework: pip install -e '.[extra]'
    modules: ClassVar[tuple[str, ...]] = ()  # importable modules every variant needs
    variants: ClassVar[tuple[str, ...]] = ("default",)  # the first is the default row
    models: ClassVar[tuple[str, ...]] = ("mlp", "cnn")
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # "cpu", "gpu"
    variant_env: ClassVar[dict[str, dict[str, str]]] = {}  # env set before the module is imported
    variant_modules: ClassVar[dict[str, tuple[str, ...]]] = {}  # extra modules a variant needs
    variant_devices: ClassVar[dict[str, tuple[str, ...]]] = {}  # a variant's devices, where narrower
    variant_library: ClassVar[dict[str, str]] = {}  # the adapter whose matmul_probe is a variant's ceiling

    def __init__(
        self,
        model: ModelSpec,
        optimizer: OptimizerSpec,
        *,
        device: str,
        variant: str,
        seed: int,
        threads: int,
        options: dict,
    ) -> None:
        self.model, self.optimizer, self.device, self.variant = model, optimizer, device, variant
        self.seed, self.threads, self.options = seed, threads, options

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        """Load parameters given in canonical names and layout (see harness.models)."""
        raise NotImplementedError  # abstract

    def get_params(self) -> dict[str, np.ndarray]:
        """Return the parameters as float32 numpy arrays in canonical names and layout."""
        raise NotImplementedError  # abstract

    def load_data(self, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> None:
        """Move the data to the device once: x float32 NHWC (N, 28, 28, 1), y int32 labels."""
        raise NotImplementedError  # abstract

    def train_epoch(self, batches: np.ndarray) -> float:
        """Train on x_train[batches[i]] for each row i in order; return the mean batch loss.

        Blocks until the device is done, so the caller's timer measures the work.
        """
        raise NotImplementedError  # abstract

    def evaluate(self) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) on the eval split, dropout off; blocks until done."""
        raise NotImplementedError  # abstract

    @property
    def backend(self) -> str:
        """What computes underneath (BLAS, XLA, a Keras backend): the `backend` column."""
        return ""

    def peak_device_memory_mb(self) -> float | None:
        """Peak accelerator memory of this process, where the framework exposes it."""
        return None

    @staticmethod
    def matmul_probe(device: str, size: int, threads: int) -> tuple[Callable[[], None], str]:
        """A function computing one (size, size) float32 product of two resident matrices, and the library.

        The function blocks until the product is done; the harness times it to measure this
        framework's matrix-product ceiling (harness/ceilings.py). The string names what computes
        it (e.g. "openblas 0.3.31 SkylakeX"). Optional: an adapter whose variants compute with
        another adapter's library names it in variant_library instead (Keras: its backend).
        Without one, the ceiling is recorded as skipped with this reason.
        """
        raise Unsupported("this adapter defines no matmul_probe: its rows get no own-ceiling column")


@dataclass(frozen=True)
class AdapterInfo:
    """An adapter's declarations, read from its source without importing it."""

    name: str
    path: Path
    class_name: str
    extra: str
    modules: tuple[str, ...] = ()
    variants: tuple[str, ...] = ("default",)
    models: tuple[str, ...] = ("mlp", "cnn")
    devices: tuple[str, ...] = ("cpu",)
    variant_env: dict[str, dict[str, str]] = field(default_factory=dict)
    variant_modules: dict[str, tuple[str, ...]] = field(default_factory=dict)
    variant_devices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    variant_library: dict[str, str] = field(default_factory=dict)
    has_probe: bool = False  # defines matmul_probe

    def library(self, variant: str) -> str:
        """The adapter whose matrix product is this variant's own ceiling: itself unless declared."""
        return self.variant_library.get(variant, self.name)

    def runs_on(self, device: str) -> list[str]:
        """The variants that run on the device."""
        return [v for v in self.variants if device in self.variant_devices.get(v, self.devices)]

    @property
    def install_command(self) -> str:
        return f"pip install -e '.[{self.extra}]'"

    def missing_modules(self, variant: str | None = None) -> list[str]:
        """Modules this adapter (or variant) needs that are not importable, found without importing."""
        needed = list(self.modules) + list(self.variant_modules.get(variant, ()))
        return [m for m in needed if importlib.util.find_spec(m) is None]

    def unsupported(self, model: str, device: str, variant: str) -> str | None:
        """Why this adapter cannot run the cell, or None when it can (GPU presence is the worker's to check)."""
        if variant not in self.variants:
            return f"{self.name} has no variant {variant!r} (it has {', '.join(self.variants)})"
        if model not in self.models:
            return f"{self.name} does not implement the {model} model"
        if device not in self.variant_devices.get(variant, self.devices):
            return f"{self.name} {variant} does not run on {device}"
        missing = self.missing_modules(variant)
        if missing:
            return f"{', '.join(missing)} not installed: {self.install_command}"
        return None

    @property
    def module(self) -> str:
        """Dotted module name, relative to the project root (frameworks.numpy_adapter)."""
        return ".".join(self.path.relative_to(ROOT).with_suffix("").parts)

    def job(self, variant: str) -> dict:
        """What a worker process needs to import and build this adapter."""
        return {"module": self.module, "class": self.class_name, "env": self.variant_env.get(variant, {})}


def load_adapter(job: dict) -> type[Adapter]:
    """Set the variant's environment, import the adapter module (and so its framework), return the class."""
    os.environ.update(job["env"])
    return getattr(importlib.import_module(job["module"]), job["class"])


def _literal_attributes(node: ast.ClassDef) -> dict:
    values = {}
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        elif isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in DECLARED:
            values[target.id] = ast.literal_eval(value)
    return values


def _adapter_infos(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            attributes = _literal_attributes(node)
            if "name" in attributes and "extra" in attributes:
                attributes = {k: tuple(v) if isinstance(v, list) else v for k, v in attributes.items()}
                for mapping in ("variant_modules", "variant_devices"):
                    if mapping in attributes:
                        attributes[mapping] = {k: tuple(v) for k, v in attributes[mapping].items()}
                has_probe = any(isinstance(s, ast.FunctionDef) and s.name == "matmul_probe" for s in node.body)
                yield AdapterInfo(path=path, class_name=node.name, has_probe=has_probe, **attributes)


def discover(directory: Path = FRAMEWORKS_DIR) -> dict[str, AdapterInfo]:
    """Every adapter declared in frameworks/*_adapter.py, by name, in a stable order."""
    found: dict[str, AdapterInfo] = {}
    for path in sorted(directory.glob("*_adapter.py")):
        for info in _adapter_infos(path):
            found[info.name] = info
    order = ["numpy", "torch", "jax", "keras", "tensorflow"]
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def gpu_present() -> bool:
    """A cheap guess at an NVIDIA GPU, without importing a framework (for device = "auto"; adapters check for real)."""
    return os.path.exists("/dev/nvidia0") and os.environ.get("CUDA_VISIBLE_DEVICES") not in ("", "-1")
