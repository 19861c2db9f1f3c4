"""ONE suite for every registered adapter: a new adapter is picked up by itself (tests/conftest.py).

What parity (tests/test_parity.py) does not look at: names, dtypes and copies of the parameters,
a seed that fixes every result, a loss that goes down, and declared devices. Both read the same
run of tests/adapter_checks.py, one process per (adapter, variant) for all its models.
"""

import math

import pytest

from harness.devices import gpu_visible
from harness.parity import RECIPES
from tests.conftest import ADAPTERS, CPU_CASES


@pytest.mark.parametrize("info, variant, model", CPU_CASES)
def test_parameters_have_canonical_names_and_are_copies(adapter_run, info, variant, model):
    seen, _ = adapter_run(info, variant, model)
    assert seen["names"], "get_params must return every canonical name, and only those"
    assert seen["float32"], "get_params must return float32 arrays in the canonical shapes"
    assert seen["copies"], "get_params must return copies: changing one must not change the model"


@pytest.mark.parametrize("info, variant, model", CPU_CASES)
def test_the_same_seed_draws_the_same_dropout_masks(adapter_run, info, variant, model):
    """Two adapters with one seed, trained alike, give the same losses: the seed fixes every mask."""
    seen, observed = adapter_run(info, variant, model)
    first = next(key for key in observed if key.startswith("dropout ") and key.endswith("/calls"))
    assert seen["same_seed_calls"] == pytest.approx(list(observed[first][:2]), rel=1e-6)
    assert all(math.isfinite(x) for x in seen["same_seed_calls"])


@pytest.mark.parametrize("info, variant, model", CPU_CASES)
def test_training_lowers_the_loss_and_evaluate_is_sane(adapter_run, info, variant, model):
    seen, observed = adapter_run(info, variant, model)
    for name in RECIPES:
        losses = observed[f"{name}/losses"]
        assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], name
    loss, accuracy = observed["start/eval"]
    assert loss > 0 and 0 <= accuracy <= 1
    assert isinstance(seen["backend"], str) and seen["backend"]
    assert seen["thread_pools"], "thread_pools must name what computes the row, or say it cannot see it"


@pytest.mark.parametrize("info, variant, model", CPU_CASES)
def test_declared_devices_are_respected(adapter_run, info, variant, model):
    seen, _ = adapter_run(info, variant, model)
    if "gpu" not in info.variant_devices.get(variant, info.devices):
        assert info.unsupported(model, "gpu", variant), "a variant not declared for the GPU must be refused there"
    elif not gpu_visible():
        assert seen["gpu"].startswith("device unavailable: "), "a GPU cell without a GPU must raise DeviceUnavailable"
    else:  # a GPU is here: the adapter builds on it, or its framework build lacks CUDA and says so
        assert seen["gpu"] == "built" or (seen["gpu"].startswith("device unavailable: ")
                                          and any(w in seen["gpu"].lower() for w in ("cuda", "gpu"))), seen["gpu"]


def test_every_adapter_declares_what_the_registry_needs():
    for name, info in ADAPTERS.items():
        assert info.extra and info.variants and set(info.models) <= {"mlp", "cnn", "rnn", "vit"}
        assert set(info.devices) <= {"cpu", "gpu"}
        assert info.path.name == f"{name}_adapter.py", "one file per framework, named after it"
