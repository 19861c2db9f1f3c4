"""Parity shown failing: each known fault, injected into the otherwise correct NumPy adapter, is reported.

tests/adapters/parity_faults_adapter.py has one variant per fault; parity runs all of them as it
runs any adapter (a worker process each, against the float64 reference) and must report FAIL in
the check named here, while the untouched "correct" variant passes every check.
"""

import math

import pytest

from harness.adapter import discover
from harness.config import load_config
from harness.parity import TOLERANCES, run_parity
from tests.adapter_checks import RATE, SIZES
from tests.conftest import ROOT

EXPECTED = {  # fault -> the check that must catch it
    "own_init": "start",
    "reversed_batches": "sgd",
    "last_batch_dropped": "sgd",
    "rate_decayed_per_step": "sgd",
    "no_dropout_in_training": "dropout",
    "dropout_in_evaluation": "dropout",
    "keep_probability_as_rate": "dropout",
    "adam_epsilon_other_form": "adam",
    "gradients_scaled": "sgd",
    "adamw_decay_as_l2": "adamw",
    "frozen_dropout_mask": "dropout",
    "schedule_stepped_per_epoch": "schedule",
    "warmup_one_step_late": "schedule",
}


MODELS = ["mlp", "cnn", "rnn", "vit"]


@pytest.fixture(scope="module")
def results():
    adapters = {**discover(), **discover(ROOT / "tests" / "adapters")}
    config = load_config(ROOT / "configs" / "smoke.toml", {"frameworks": ["faults"], "models": MODELS, "threads": 1},
                         adapters)
    config.values["variants"] = {"faults": list(adapters["faults"].variants)}
    for model in MODELS:  # the conformance suite's sizes and rates: its references (conftest.py) serve here too
        config.values[model].update(SIZES[model], dropout=RATE[model])  # no 0.5: a rate then differs from 1 - rate
    return run_parity(config, jobs=2)  # a worker per core


def failed(results, variant: str, model: str) -> dict[str, dict]:
    return {r.check: r.measures for r in results if r.variant == variant and r.model == model and r.status != "pass"}


@pytest.mark.parametrize("model", MODELS)
def test_the_correct_adapter_passes_every_check(results, model):
    rows = [r for r in results if r.variant == "correct" and r.model == model]
    assert rows and all(r.status == "pass" for r in rows), [(r.check, r.status, r.measures) for r in rows]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_each_fault_fails_the_check_that_names_it(results, fault, model):
    failing = failed(results, fault, model)
    named = [check for check in failing if check.startswith(EXPECTED[fault])]
    assert named, f"{fault} passed parity on the {model}; failing checks: {sorted(failing)}"
    worst = max(value / TOLERANCES[name] for check in named for name, value in failing[check].items())
    assert worst > 1 and not math.isnan(worst)
