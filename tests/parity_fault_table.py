"""The margins by which parity catches each injected fault, as docs/DESIGN.md shows them.

    python -m tests.parity_fault_table [CONFIG...]   (default: configs/smoke.toml configs/quick.toml)

Runs parity on tests/adapters/parity_faults_adapter.py at each config's model sizes and prints,
per fault, the check that must catch it and the factor by which its worst measure exceeds the
tolerance; for the correct adapter, the largest fraction of a tolerance any check reached.
"""

import sys

import pandas as pd

from harness.adapter import discover
from harness.config import load_config
from harness.parity import TOLERANCES, run_parity
from tests.adapter_checks import RATE, SIZES
from tests.conftest import ROOT
from tests.test_parity_faults import EXPECTED, MODELS


def margins(config_path: str) -> dict[tuple[str, str], str]:
    adapters = {**discover(), **discover(ROOT / "tests" / "adapters")}
    config = load_config(ROOT / config_path, {"frameworks": ["faults"], "models": MODELS, "threads": 1}, adapters)
    config.values["variants"] = {"faults": list(adapters["faults"].variants)}
    if "smoke" in config_path:
        for model in MODELS:  # as tests/test_parity_faults.py runs it
            config.values[model].update(SIZES[model], dropout=RATE[model])
    found: dict[tuple[str, str], tuple[float, str]] = {}
    for result in run_parity(config, jobs=2):  # a worker per core
        key = (result.variant, result.model)
        counted = result.variant == "correct" or (result.check.startswith(EXPECTED[result.variant])
                                                  and result.status == "FAIL")
        for name, value in result.measures.items():
            if counted and value / TOLERANCES[name] > found.get(key, (0.0, ""))[0]:
                found[key] = (value / TOLERANCES[name], name)
    return {key: text(key[0], ratio, name) for key, (ratio, name) in found.items()}


def text(fault: str, ratio: float, measure: str) -> str:
    if fault == "correct":
        return f"{ratio:.2f} of the {measure} tolerance at most"
    if ratio == float("inf"):
        return f"∞ ({'NaN loss' if measure in ('loss', 'repeat') else 'two equal calls'})"
    return f"{ratio:,.3g}x ({measure})"


def main(paths: list[str]) -> None:
    rows = {fault: {"fault": fault.replace("_", " "), "caught by": EXPECTED.get(fault, "(passes)")}
            for fault in ["correct", *EXPECTED]}
    for path in paths:
        for (fault, model), shown in margins(path).items():
            rows[fault][f"{model.upper()}, {path.split('/')[-1]} sizes"] = shown
    print(pd.DataFrame(rows.values()).fillna("not caught").to_markdown(index=False))


if __name__ == "__main__":
    main(sys.argv[1:] or ["configs/smoke.toml", "configs/quick.toml"])
