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
import sys
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
    "variant_library", "adam_epsilon", "sgd_momentum", "accepts",
)
# Where Adam adds epsilon: to sqrt(v_hat) (PyTorch, Optax), or to sqrt(v) with the bias corrections
# folded into the rate (Keras). The NumPy reference computes both; parity checks each adapter in its own.
ADAM_EPSILON_FORMS = ("sqrt_v_hat", "sqrt_v")
# What SGD's momentum buffer holds: gradients, scaled by the rate at each step (PyTorch, Optax), or
# steps already scaled by their own rate (Keras). Equal under a constant rate; not across a decay.
SGD_MOMENTUM_FORMS = ("gradient", "step")


class Unsupported(Exception):
    """Raised by an adapter that cannot run here (e.g. no CUDA device): the cell is skipped with this reason.

    An adapter may also skip a variant that is pathologically slow on a device; options["allow_slow"]
    (set by parity and the conformance suite, which check correctness, not speed) runs it anyway.
    """


class DeviceUnavailable(Unsupported):
    """Raised by an adapter whose device is not here (no GPU, or a framework build without CUDA).

    A skip for this reason says nothing about the adapter: parity accepts it, as it accepts a
    variant declared for another device; any other skip of an installed adapter fails parity.
    """


class Adapter:
    """Base class of every framework adapter (docs/DESIGN.md, "The adapter contract").

    The harness constructs it with the cell's settings, which __init__ stores (see the attributes
    below), and then calls, in order: set_params, load_data, and train_epoch / evaluate per epoch.
    A subclass writes build() and the five methods marked abstract; the chunked evaluation loop
    is here, and the optimizer settings were checked by OptimizerSpec before they arrive.
    """

    name: ClassVar[str]  # registry key and the `framework` column
    extra: ClassVar[str]  # pip extra that installs the framework: pip install -e '.[extra]'
    modules: ClassVar[tuple[str, ...]] = ()  # importable modules every variant needs (a submodule is fine)
    variants: ClassVar[tuple[str, ...]] = ("default",)  # the first is the default row
    models: ClassVar[tuple[str, ...]] = ("mlp", "cnn")
    devices: ClassVar[tuple[str, ...]] = ("cpu",)  # "cpu", "gpu"
    variant_env: ClassVar[dict[str, dict[str, str]]] = {}  # env set before the module is imported
    variant_modules: ClassVar[dict[str, tuple[str, ...]]] = {}  # extra modules a variant needs
    variant_devices: ClassVar[dict[str, tuple[str, ...]]] = {}  # a variant's devices, where narrower
    variant_library: ClassVar[dict[str, str]] = {}  # the adapter whose matmul_probe is a variant's ceiling
    adam_epsilon: ClassVar[str] = "sqrt_v_hat"  # where the framework's Adam adds eps (ADAM_EPSILON_FORMS)
    sgd_momentum: ClassVar[str] = "gradient"  # what its SGD momentum buffer holds (SGD_MOMENTUM_FORMS)
    # [options.<name>] settings it reads from self.options: name -> "bool", "int", "number", "str" or a list of values
    accepts: ClassVar[dict] = {}

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
        self.eval_batch_size = int(options.get("eval_batch_size", 1000))
        # The GPU check's contrast run sets this: train_epoch then reads each step's loss back, as a
        # careless loop would; a framework whose steps already wait for the GPU runs no slower for it.
        self.sync_each_step = False
        self.build()

    def build(self) -> None:
        """Set the threads, seed the framework's randomness (dropout), build the network and the optimizer.

        Raise Unsupported("why") when the cell cannot run here (a GPU cell without a GPU): the runner
        records it as skipped with that reason.
        """
        raise NotImplementedError  # abstract

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        """Load parameters given in canonical names and layout (see harness.models)."""
        raise NotImplementedError  # abstract

    def get_params(self) -> dict[str, np.ndarray]:
        """Return the parameters as float32 numpy arrays in canonical names and layout."""
        raise NotImplementedError  # abstract

    def load_data(self, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> None:
        """Move the data to the device once, as self.x_train, ..., self.y_eval: x float32 NHWC (N, 28, 28, 1), y int32.

        The arrays arrive resident in host memory; whatever the adapter keeps must be resident on its
        device when this returns (no lazy copies or page faults inside a timed epoch).
        """
        raise NotImplementedError  # abstract

    def train_epoch(self, batches: np.ndarray) -> float:
        """Train on x_train[batches[i]] for each row i in order; return the mean batch loss.

        Blocks until the device is done, so the caller's timer measures the work, and waits for nothing
        between steps: when self.sync_each_step is set (the GPU check), it reads each step's loss back.
        """
        raise NotImplementedError  # abstract

    def eval_chunk(self, rows: slice):
        """(summed cross-entropy, number correct) of x_eval[rows], dropout off, as the framework's scalars."""
        raise NotImplementedError  # abstract, unless evaluate is overridden

    def evaluate(self) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) on the eval split, dropout off, in chunks of eval_batch_size.

        The chunks' sums stay on the device until the end: float() reads (and waits for) them once.
        """
        n, size = len(self.y_eval), self.eval_batch_size
        loss, correct = 0, 0
        for start in range(0, n, size):
            chunk_loss, chunk_correct = self.eval_chunk(slice(start, start + size))
            loss, correct = loss + chunk_loss, correct + chunk_correct
        return float(loss) / n, float(correct) / n

    @property
    def backend(self) -> str:
        """What computes underneath (BLAS, XLA, a Keras backend): the `backend` column; the variant by default."""
        return self.variant

    def thread_pools(self) -> str:
        """What the row computes with and its threads, as the framework reports them: the `thread_pools` column.

        The default lists the BLAS and OpenMP pools threadpoolctl finds in this process, which is right
        for a framework that computes with them; one with its own pools (PyTorch's, XLA's, TensorFlow's)
        overrides this to name them, or to say that it cannot see them.
        """
        return loaded_thread_pools()

    def peak_device_memory_mb(self) -> float | None:
        """The framework allocator's peak of memory in use on the GPU (None on a CPU): one measure for all."""
        return None

    def device_memory_in_use_mb(self) -> float | None:
        """The framework allocator's memory in use on the GPU now (None on a CPU): the GPU check's residency probe."""
        return None

    @property
    def steps_in_python(self) -> bool:
        """True where train_epoch runs its steps in a Python loop that honours sync_each_step; False where
        the epoch is one call (lax.scan, Keras's fit)."""
        return True

    @property
    def data_on_host(self) -> bool:
        """True where the framework copies each batch from the host (Keras's fit on a GPU), said in the row."""
        return False

    @staticmethod
    def matmul_probe(device: str, size: int, threads: int) -> tuple[Callable[[], None], str]:
        """A function computing one (size, size) float32 product of two resident matrices, and the library.

        The function blocks until the product is done; the harness times it to measure this
        framework's matrix-product ceiling (harness/execute/ceilings.py). The string names what computes
        it (e.g. "openblas 0.3.31 SkylakeX"). Optional: an adapter whose variants compute with
        another adapter's library names it in variant_library instead (Keras: its backend).
        Without one, the ceiling is recorded as skipped with this reason.
        """
        raise Unsupported("this adapter defines no matmul_probe: its rows get no own-ceiling column")

    @staticmethod
    def op_probe(device: str, operation: dict, threads: int) -> Callable[[], None]:
        """A function running one heavy operation of a training step alone, on resident inputs, blocking until
        it is done and returning the result: the op floor times it (harness/execute/ceilings.py).

        `operation` is harness.models.Operation.as_dict(): a dense product, attention's batched product or a
        convolution, forward or one of its gradients, at the step's shapes (harness.execute.probes.operands
        makes its inputs). The function computes it the way this adapter's train step does (the same library
        calls, layouts and precision). Optional, like matmul_probe: without it the library joins no op floor.
        """
        raise Unsupported("this adapter defines no op_probe: its library joins no op floor")

    @staticmethod
    def op_result(operation: dict, result) -> np.ndarray:
        """An op_probe function's result as a NumPy array in the canonical layout (NHWC, HWIO, (in, out)), so
        tests can check that the probe computes the operation it names."""
        return np.asarray(result)

    @staticmethod
    def matmul_on_device(device: str, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, dict] | None:
        """a @ b (float32) computed on the device with the precision settings training uses, back on the
        host, and what the framework says of them: {"precision_set": ...} and, on a GPU, the CUDA and
        cuDNN versions it was built with. The harness compares the product with float64
        (ceilings.product_precision): TF32 or bfloat16 products show. Optional, beside matmul_probe.
        """
        return None  # optional: None says the adapter does not offer it


def hidden_pool(library: str, threads: int) -> str:
    """thread_pools for a library whose pool cannot be sized or seen (XLA:CPU): only the affinity holds it."""
    return f"{library}: its own thread pool, which it cannot size or show (held to {threads} cores by affinity)"


def loaded_thread_pools() -> str:
    """The BLAS and OpenMP libraries loaded in this process, with the kernel each picked and its threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl is not installed: the pools cannot be seen"
    described = []
    for pool in threadpool_info():
        parts = [pool.get("internal_api"), pool.get("version"), pool.get("architecture")]
        described.append(" ".join(str(p) for p in parts if p) + f" x{pool.get('num_threads')}")
    return "; ".join(described)


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
    adam_epsilon: str = "sqrt_v_hat"
    sgd_momentum: str = "gradient"
    accepts: dict = field(default_factory=dict)
    has_probe: bool = False  # defines matmul_probe
    has_op_probe: bool = False  # defines op_probe

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
        return [m for m in needed if not module_installed(m)]

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

    def job(self, variant: str) -> dict:
        """What a worker process needs to import and build this adapter."""
        return {"path": str(self.path), "class": self.class_name, "env": self.variant_env.get(variant, {})}


def module_installed(name: str) -> bool:
    """Whether a module (or a submodule, "pkg.sub") can be imported, found without importing anything.

    find_spec on a dotted name would import its parent package (a whole framework): a submodule is
    looked for as a file or folder inside the parent's location instead.
    """
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not rest:
        return spec is not None
    for location in spec.submodule_search_locations or ():
        base = Path(location).joinpath(*rest)
        if base.is_dir() or base.with_suffix(".py").is_file() or any(base.parent.glob(f"{base.name}.*.so")):
            return True
    return False


def load_adapter(job: dict) -> type[Adapter]:
    """Set the variant's environment, import the adapter's file (and so its framework), return the class.

    A file in frameworks/ is imported as frameworks.<name>_adapter; one from another folder
    (MNIST_BENCH_ADAPTERS) under its own file name.
    """
    os.environ.update(job["env"])
    path = Path(job["path"])
    if path.parent == FRAMEWORKS_DIR:
        module = importlib.import_module(f"frameworks.{path.stem}")
    else:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    return getattr(module, job["class"])


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
                defined = {s.name for s in node.body if isinstance(s, ast.FunctionDef)}
                yield AdapterInfo(path=path, class_name=node.name, has_probe="matmul_probe" in defined,
                                  has_op_probe="op_probe" in defined, **attributes)


def adapter_folders() -> list[Path]:
    """frameworks/, then any folders named in MNIST_BENCH_ADAPTERS (os.pathsep-separated), e.g. a new adapter's."""
    extra = [Path(p) for p in os.environ.get("MNIST_BENCH_ADAPTERS", "").split(os.pathsep) if p]
    return [FRAMEWORKS_DIR, *extra]


def discover(directory: Path | None = None) -> dict[str, AdapterInfo]:
    """Every adapter declared in <folder>/*_adapter.py (by default adapter_folders()), by name, in a stable order."""
    found: dict[str, AdapterInfo] = {}
    for folder in [directory] if directory else adapter_folders():
        for path in sorted(folder.glob("*_adapter.py")):
            for info in _adapter_infos(path):
                found[info.name] = info
    order = ["numpy", "torch", "jax", "keras", "tensorflow"]
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))

