"""The parity check: every installed adapter against the NumPy float64 reference, and what a wrong one looks like."""

import numpy as np
import pytest

from harness.adapter import discover
from harness.config import resolve
from harness.models import OptimizerSpec, model_spec
from harness.parity import LOSS_TOLERANCE, UPDATE_TOLERANCE, compare, reference, run_parity

INSTALLED = [name for name, info in discover().items() if not info.missing_modules()]


@pytest.mark.parametrize("framework", INSTALLED)
def test_every_variant_matches_the_float64_reference(framework):
    config = resolve({"frameworks": [framework]}, "parity")
    results = run_parity(config)
    assert results and len(results) == 2 * len(config.variants[framework])
    for r in results:
        if r.status == "skipped":  # a variant whose own extra is missing (e.g. keras on a backend not installed)
            assert "not installed" in r.detail
            continue
        assert r.status == "pass", f"{r.framework}/{r.variant} {r.model}: {r.status} {r.detail}"
        assert 0 <= r.loss_error < LOSS_TOLERANCE and 0 < r.update_error < UPDATE_TOLERANCE


@pytest.mark.parametrize("framework", INSTALLED)
def test_a_decaying_learning_rate_matches_the_reference(framework):
    """Each call is one epoch of one step here, so the rate halves every step: every adapter's schedule must follow.

    Plain SGD, where Keras's form is PyTorch's (with momentum, Keras scales the velocity by each step's own rate).
    """
    config = resolve({"frameworks": [framework], "models": ["mlp"]}, "parity")
    results = run_parity(config, optimizer=OptimizerSpec("sgd", lr=0.2, lr_decay=0.5))
    for r in results:
        if r.status != "skipped":
            assert r.status == "pass", f"{r.framework}/{r.variant}: {r.status} {r.detail} {r.update_error}"


def test_a_rate_that_did_not_decay_fails_parity():
    config = resolve({"frameworks": ["numpy"], "models": ["mlp"]}, "parity")
    ref_losses, ref_params = reference(config, "mlp", OptimizerSpec("sgd", lr=0.2, lr_decay=0.5))
    losses, params = reference(config, "mlp", OptimizerSpec("sgd", lr=0.2))
    initial = {k: v.astype(np.float64) for k, v in model_spec("mlp", dropout=0.0).init_params(0).items()}
    assert compare(losses, params, ref_losses, ref_params, initial)[1] > UPDATE_TOLERANCE


def test_a_transposed_update_fails_parity():
    rng = np.random.default_rng(0)
    initial = {"w": rng.normal(size=(4, 4))}
    reference = {"w": initial["w"] + 0.01 * rng.normal(size=(4, 4))}
    wrong = {"w": (initial["w"] + (reference["w"] - initial["w"]).T).astype(np.float32)}
    loss_error, update_error = compare([1.0, 0.9], wrong, [1.0, 0.9], reference, initial)
    assert loss_error == 0 and update_error > UPDATE_TOLERANCE


def test_tf32_precision_would_fail_parity():
    """TF32 keeps 10 mantissa bits: a relative error near 5e-4 in every product."""
    rng = np.random.default_rng(1)
    initial = {"w": rng.normal(size=(64, 64))}
    reference = {"w": initial["w"] + 0.01 * rng.normal(size=(64, 64))}
    delta = reference["w"] - initial["w"]
    tf32_like = {"w": (initial["w"] + delta * (1 + 5e-4 * rng.standard_normal(delta.shape))).astype(np.float32)}
    losses = [2.3, 2.2]
    assert compare([x * (1 + 5e-4) for x in losses], tf32_like, losses, reference, initial)[0] > LOSS_TOLERANCE
    assert compare(losses, tf32_like, losses, reference, initial)[1] > UPDATE_TOLERANCE
