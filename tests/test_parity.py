"""The parity check: every installed adapter against the NumPy float64 reference, and what its measures mean.

Each adapter's run comes from tests/adapter_checks.py (shared with the conformance suite); the
comparison is harness/parity.py's, as `bench.py parity` makes it. tests/test_parity_faults.py
shows every check failing on an injected fault.
"""

import subprocess
import sys

import numpy as np
import pytest

from harness import parity
from harness.parity import RECIPES, TOLERANCES, ParityResult, compare, problems, relative_l2
from tests.adapter_checks import RATE, SIZES
from tests.conftest import CPU_CASES, ROOT


@pytest.mark.parametrize("info, variant, model", CPU_CASES)
def test_every_variant_matches_the_float64_reference(adapter_run, parity_reference, info, variant, model):
    _, seen = adapter_run(info, variant, model)
    ref = parity_reference(model, info.adam_epsilon, info.sgd_momentum)
    checks = compare(seen, ref, model, SIZES[model], RATE[model])
    assert {check for check, _, _ in checks} >= {"start", *RECIPES, f"dropout {RATE[model]:g}", "no dropout"}
    failures = [f"{check}: {name} {value:.2e} > {TOLERANCES[name]:.0e} {note}"
                for check, measures, note in checks for name, value in measures.items()
                if not value <= TOLERANCES[name]]
    assert not failures, failures


def test_the_two_adam_epsilon_forms_differ_measurably(parity_reference):
    """A declaration that changed nothing would be a no-op: the forms must be far apart at parity's settings."""
    a = parity_reference("mlp", "sqrt_v_hat", "gradient")
    b = parity_reference("mlp", "sqrt_v", "gradient")
    initial = {k: v.astype(np.float64) for k, v in parity.model_spec("mlp", **SIZES["mlp"]).init_params(0).items()}
    for name in ("adam", "adamw"):
        step = relative_l2(parity._params(b, f"{name}/step"), parity._params(a, f"{name}/step"), initial)
        assert step > 100 * TOLERANCES["first step"]
    assert relative_l2(parity._params(b, "sgd/final"), parity._params(a, "sgd/final"), initial) == 0.0


def test_the_two_sgd_momentum_forms_differ_only_when_the_rate_changes(parity_reference):
    a = parity_reference("mlp", "sqrt_v_hat", "gradient")
    b = parity_reference("mlp", "sqrt_v_hat", "step")
    initial = {k: v.astype(np.float64) for k, v in parity.model_spec("mlp", **SIZES["mlp"]).init_params(0).items()}
    for name in ("sgd", "nesterov"):
        # epoch 1 at one rate: the same steps; across the decay, the step form carries the old rate
        assert relative_l2(parity._params(b, f"{name}/step"), parity._params(a, f"{name}/step"), initial) < 1e-12
        assert relative_l2(parity._params(b, f"{name}/final"), parity._params(a, f"{name}/final"), initial) > \
            TOLERANCES["update"]


def test_an_update_measure_in_norm_survives_near_zero_gradients():
    """Adam moves an element with a rounding-noise gradient by a whole rate, either way: the maximum of a
    relative error then fails a correct adapter, the norm over the tensor does not, and a real fault does."""
    rng = np.random.default_rng(0)
    initial = {"w": rng.normal(size=(256, 256))}
    update = 1e-3 * np.sign(rng.normal(size=(256, 256)))  # Adam's first step: +-lr everywhere
    reference_params = {"w": initial["w"] + update}
    flipped = update.copy()
    flipped.flat[:20] *= -1  # 20 of 65,536 near-zero gradients rounded to the other sign
    correct = {"w": initial["w"] + flipped}
    old_measure = np.abs(flipped - update).max() / np.abs(update).max()
    assert old_measure == 2.0  # today's relative maximum: a correct adapter fails by 20,000x
    assert relative_l2(correct, reference_params, initial) < TOLERANCES["update"]
    scaled = {"w": initial["w"] + 1.001 * update}  # gradients scaled by 1.001 under SGD
    assert relative_l2(scaled, reference_params, initial) > TOLERANCES["first step"]


def test_a_tensor_that_should_not_move_fails_only_if_it_moves():
    initial = {"b": np.zeros(3)}
    assert relative_l2({"b": np.zeros(3)}, {"b": np.zeros(3)}, initial) == 0.0
    assert relative_l2({"b": np.ones(3)}, {"b": np.zeros(3)}, initial) == float("inf")


def result(framework, status, check="sgd", device_skip=False):
    return ParityResult(framework, "v", "mlp", "cpu", check, status, device_skip=device_skip)


def test_a_parity_run_that_proves_nothing_is_a_problem():
    passed = [result("numpy", "pass"), result("torch", "pass")]
    assert problems(passed, {"numpy", "torch"}) == []
    assert problems([result("numpy", "pass"), result("torch", "skipped", "", True)], {"numpy", "torch"}) == [
        "no adapter besides the NumPy reference was compared: install one (bench.py list)"]
    skipped = problems(passed + [result("keras", "skipped", "")], {"numpy", "torch", "keras"})
    assert len(skipped) == 1 and "keras/v mlp: cell skipped" in skipped[0]
    assert problems(passed + [result("keras", "skipped", "")], {"numpy", "torch"}) == []  # keras not installed
    assert problems(passed + [result("jax", "skipped", "", device_skip=True)], {"numpy", "torch", "jax"}) == []
    assert len(problems(passed + [result("jax", "FAIL")], {"numpy", "torch", "jax"})) == 1


def test_bench_parity_exits_non_zero_when_only_the_reference_was_compared():
    result = subprocess.run([sys.executable, "bench.py", "parity", "configs/smoke.toml", "--frameworks", "numpy",
                             "--models", "mlp"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "| numpy" in result.stdout and "no adapter besides the NumPy reference" in result.stderr


def test_parity_refuses_a_job_count_below_one_in_one_sentence():
    done = subprocess.run([sys.executable, "bench.py", "parity", "configs/smoke.toml", "--jobs", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--jobs 0" in done.stderr and "Traceback" not in done.stderr
