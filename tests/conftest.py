"""What several test modules share: every installed adapter's variants run once, in their own process.

tests/adapter_checks.py runs parity's recipe and the conformance checks of one (adapter, variant), every
model the tests ask for, in one process; test_parity.py and test_conformance.py assert on what it saw
of each model. An adapter the
`[all]` install provides must be installed: the suite fails, naming the install command, rather than
skipping what it was meant to prove.
"""

import getpass
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from harness.adapter import discover
from harness.execute.process import thread_env
from harness.parity import reference
from tests.adapter_checks import RATE, SIZES

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = discover()


def extras_in_all() -> set[str]:
    """The extras `pip install -e '.[all]'` installs (the core's `numpy` always)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = {part for entry in extras["all"] for part in entry.split("[")[1].rstrip("]").split(",")}
    return named | {"numpy"}


# Variants whose every train step is compiled whole (XLA, Inductor) check the MLP and the CNN here; their LSTM
# and ViT take minutes to compile for parity's many adapters, so `make parity` (configs/variants.toml) checks
# those, and the suite checks the same models through every other variant of the same adapter.
COMPILED = {("torch", "compile"), ("jax", "scan"), ("keras", "jax"), ("tensorflow", "xla")}
CPU_CASES = [
    pytest.param(info, variant, model, id=f"{name}-{variant}-{model}")
    for name, info in ADAPTERS.items()
    for variant in info.variants
    if "cpu" in info.variant_devices.get(variant, info.devices)
    for model in info.models
    if (name, variant) not in COMPILED or model in ("mlp", "cnn")
]


def require(info, variant: str) -> None:
    """Fail for a missing adapter that [all] provides; skip (with the command) for one it does not."""
    missing = info.missing_modules(variant)
    if not missing:
        return
    message = f"{info.name}/{variant} needs {', '.join(missing)}, which is not installed"
    if info.extra in extras_in_all():
        pytest.fail(f"{message}, though the [all] install provides it: pip install -e '.[all]'")
    pytest.skip(f"{message}: {info.install_command}")


JAX_CACHE = {"JAX_COMPILATION_CACHE_DIR": str(Path(tempfile.gettempdir()) / f"mnist-bench-jax-{getpass.getuser()}"),
             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def run_checks(info, variant: str, models: list[str], out: Path) -> dict[str, tuple[dict, dict] | str]:
    """tests/adapter_checks.py over the models in a fresh single-threaded process: model -> (conformance, parity
    observations), or the error that stopped that model.

    Correctness, not compile time, is checked here: Inductor may use its on-disk cache, which a
    benchmark cell may not (torch's compile variant switches it off), so that the many adapters
    parity builds in one process compile once; JAX (and Keras on JAX) its persistent compilation
    cache, every program however fast it compiled, so that a later run of the suite reuses them.
    """
    adapter = info.job(variant)
    adapter["env"] = {k: v for k, v in adapter["env"].items() if k != "TORCHINDUCTOR_FORCE_DISABLE_CACHES"}
    job = {"adapter": adapter, "variant": variant, "models": models, "out": str(out)}
    result = subprocess.run(
        [sys.executable, "-m", "tests.adapter_checks", json.dumps(job)], cwd=ROOT, capture_output=True,
        text=True, timeout=600 * len(models), env={**os.environ, **JAX_CACHE, **thread_env(1)},
    )
    if result.returncode:
        raise AssertionError(f"tests.adapter_checks failed:\n{result.stderr[-3000:]}")
    found = {}
    for model, seen in json.loads(result.stdout.splitlines()[-1]).items():
        if "error" in seen:
            found[model] = seen["error"]
            continue
        with np.load(out / model / "observations.npz") as saved:
            found[model] = seen, dict(saved)
    return found


def requested_cases(session, fixture: str = "adapter_run") -> dict[tuple[str, str], tuple]:
    """(adapter, variant) -> (its info, the models the collected tests ask `fixture` for), in test order."""
    cases: dict[tuple[str, str], tuple] = {}
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if fixture in getattr(item, "fixturenames", ()) and "info" in params:
            _, models = cases.setdefault((params["info"].name, params["variant"]), (params["info"], []))
            if params["model"] not in models:
                models.append(params["model"])
    return cases


class References:
    """harness.parity.reference at adapter_checks' sizes and rates, per (model, adam_epsilon, sgd_momentum),
    each computed once, in one background thread of this process.

    In this process, so that harness.parity's own cache of them serves run_parity too (test_parity_faults.py
    runs at the same sizes and rates); in the background, so that adapter_run's two processes and the
    references share the two cores instead of the references running alone after them.
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.futures: dict[tuple[str, str, str], Future] = {}

    def start(self, model: str, adam_epsilon: str, sgd_momentum: str) -> Future:
        key = (model, adam_epsilon, sgd_momentum)
        if key not in self.futures:
            self.futures[key] = self.pool.submit(self.compute, model, *key[1:])
        return self.futures[key]

    @staticmethod
    def compute(model: str, adam_epsilon: str, sgd_momentum: str) -> dict:
        with threadpool_limits(1):  # one core's worth: beside adapter_run's two processes, not over them
            return reference(model, SIZES[model], RATE[model], adam_epsilon, sgd_momentum)

    def start_requested(self, session) -> None:
        """Every reference the collected tests ask parity_reference for, in test order."""
        for (_, variant), (info, models) in requested_cases(session, "parity_reference").items():
            if not info.missing_modules(variant):
                for model in models:
                    self.start(model, info.adam_epsilon, info.sgd_momentum)

    def __call__(self, model: str, adam_epsilon: str, sgd_momentum: str) -> dict:
        return self.start(model, adam_epsilon, sgd_momentum).result()


@pytest.fixture(scope="session")
def parity_reference():
    """The float64 reference of a model in an adapter's optimizer forms (References); the arrays are shared."""
    references = References()
    yield references
    references.pool.shutdown(cancel_futures=True)


# Roughly how long each (adapter, variant) took here, every model it checks in one process: they start
# longest first, so that the two cores finish together rather than one running the last alone.
SECONDS = {("keras", "tensorflow"): 170, ("jax", "jit"): 150, ("jax", "scan"): 120, ("keras", "jax"): 65,
           ("keras", "torch"): 60, ("tensorflow", "xla"): 60, ("tensorflow", "function"): 55, ("torch", "compile"): 50,
           ("torch", "eager"): 10, ("numpy", "numpy"): 5}


def expected_seconds(name: str, variant: str) -> float:
    return SECONDS.get((name, variant), 60)


@pytest.fixture(scope="session")
def adapter_run(request, tmp_path_factory, parity_reference):
    """(conformance observations, parity observations) of one (adapter, variant, model), run once per session.

    At first use every installed (adapter, variant) the collected tests need is started, with all the
    models they need, two at a time (one thread each: the two cores), the longest first, and the
    references the parity tests will compare them with begin in the background; each test waits for its
    own.
    """
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {}

    def start_all() -> None:
        cases = requested_cases(request.session)
        for (name, variant), (info, models) in sorted(cases.items(), key=lambda case: -expected_seconds(*case[0])):
            if not info.missing_modules(variant):
                out = tmp_path_factory.mktemp(f"{name}-{variant}")
                futures[(name, variant)] = pool.submit(run_checks, info, variant, models, out)
        parity_reference.start_requested(request.session)

    def run(info, variant: str, model: str):
        require(info, variant)
        if not futures:
            start_all()
        found = futures[(info.name, variant)].result()[model]
        if isinstance(found, str):
            raise AssertionError(f"tests.adapter_checks failed on the {model}:\n{found[-3000:]}")
        return found

    yield run
    pool.shutdown(cancel_futures=True)
