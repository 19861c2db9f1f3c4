"""ONE suite for every registered adapter that is installed: a new adapter is picked up by itself.

Each (framework, variant, model) runs its checks in its own process (tests/conformance_checks.py);
the tests below assert on what that process observed.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.adapter import discover, gpu_present
from harness.runner import thread_env

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = discover()
CASES = [
    pytest.param(info, variant, model, id=f"{name}-{variant}-{model}")
    for name, info in ADAPTERS.items()
    for variant in info.variants
    if "cpu" in info.variant_devices.get(variant, info.devices)
    for model in info.models
]


@pytest.fixture(scope="module")
def observations():
    cache = {}

    def observe(info, variant, model):
        if (info.name, variant, model) not in cache:
            missing = info.missing_modules(variant)
            if missing:
                pytest.skip(f"{', '.join(missing)} not installed: {info.install_command}")
            job = {"adapter": info.job(variant), "variant": variant, "model": model}
            result = subprocess.run(
                [sys.executable, "-m", "tests.conformance_checks", json.dumps(job)],
                cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **thread_env(1)},
            )
            assert result.returncode == 0, result.stderr[-3000:]
            cache[(info.name, variant, model)] = json.loads(result.stdout.splitlines()[-1])
        return cache[(info.name, variant, model)]

    return observe


@pytest.mark.parametrize("info, variant, model", CASES)
def test_params_round_trip_in_canonical_layout(observations, info, variant, model):
    seen = observations(info, variant, model)
    assert seen["roundtrip_names"] and seen["roundtrip_float32"]
    assert seen["roundtrip_error"] == 0.0


@pytest.mark.parametrize("info, variant, model", CASES)
def test_training_lowers_the_loss_and_evaluate_is_sane(observations, info, variant, model):
    seen = observations(info, variant, model)
    losses = seen["losses"]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0]
    (loss_before, accuracy_before), (loss_after, accuracy_after) = seen["before"], seen["after"]
    assert 0 <= accuracy_before <= 1 and 0 <= accuracy_after <= 1
    assert loss_after < loss_before and accuracy_after > max(0.5, accuracy_before)
    assert seen["params_changed"] and seen["trained_shapes"]
    assert isinstance(seen["backend"], str) and seen["backend"]


@pytest.mark.parametrize("info, variant, model", CASES)
def test_same_seed_gives_the_same_result(observations, info, variant, model):
    seen = observations(info, variant, model)
    assert seen["repeat_losses"] == pytest.approx(seen["losses"], rel=1e-6)
    assert seen["repeat_after"] == pytest.approx(seen["after"], rel=1e-6)


@pytest.mark.parametrize("info, variant, model", CASES)
def test_declared_devices_are_respected(observations, info, variant, model):
    seen = observations(info, variant, model)
    if "gpu" not in info.variant_devices.get(variant, info.devices):
        assert info.unsupported(model, "gpu", variant)
    elif not gpu_present():
        assert seen["gpu"].startswith("unsupported: "), "a gpu cell on a machine without one must be skipped"


def test_every_adapter_declares_what_the_registry_needs():
    for name, info in ADAPTERS.items():
        assert info.extra and info.variants and set(info.models) <= {"mlp", "cnn"}
        assert set(info.devices) <= {"cpu", "gpu"}
        assert info.path.name == f"{name}_adapter.py", "one file per framework, named after it"
