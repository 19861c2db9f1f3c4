"""The parity check: the NumPy reference against itself in float32, and what a wrong adapter looks like."""

import numpy as np

from harness.config import resolve
from harness.parity import LOSS_TOLERANCE, UPDATE_TOLERANCE, compare, run_parity


def test_numpy_float32_matches_the_float64_reference():
    config = resolve({"frameworks": ["numpy"]}, "parity")
    results = run_parity(config)
    assert {(r.model, r.status) for r in results} == {("mlp", "pass"), ("cnn", "pass")}
    for r in results:
        assert 0 < r.loss_error < LOSS_TOLERANCE and 0 < r.update_error < UPDATE_TOLERANCE


def test_a_transposed_update_fails_parity():
    rng = np.random.default_rng(0)
    initial = {"w": rng.normal(size=(4, 4))}
    reference = {"w": initial["w"] + 0.01 * rng.normal(size=(4, 4))}
    wrong = {"w": (initial["w"] + (reference["w"] - initial["w"]).T).astype(np.float32)}
    loss_error, update_error = compare([1.0, 0.9], wrong, [1.0, 0.9], reference, initial)
    assert loss_error == 0 and update_error > UPDATE_TOLERANCE
    tf32_like = {"w": (reference["w"] * (1 + 1e-3)).astype(np.float32)}
    assert compare([1.0], tf32_like, [1.0], reference, initial)[1] > UPDATE_TOLERANCE
