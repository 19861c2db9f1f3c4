"""bench.py compare and the statistics behind it, on synthetic result files."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.results.compare import compare, read_runs, regressions
from harness.results.stats import cell_statistics

ROOT = Path(__file__).resolve().parent.parent


def runs_csv(path: Path, speeds: dict[str, list[float]], accuracy=0.98) -> Path:
    rows = []
    for framework, values in speeds.items():
        for repeat, speed in enumerate(values):
            rows.append({"framework": framework, "variant": "default", "backend": "b", "model": "mlp",
                         "device": "cpu", "repeat": repeat, "status": "ok", "samples_per_second": speed,
                         "first_epoch_seconds": 60000 / speed + 1, "time_to_target_seconds": 3 * 60000 / speed,
                         "final_accuracy": accuracy + repeat / 1000, "session": 1, "schema": 2})
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path / "runs.csv", index=False)
    return path


REFERENCE = {"numpy": [40000, 41000, 40500], "torch": [43000, 42500, 43600], "jax": [80000, 79000, 81500]}


def test_a_run_compared_with_itself_is_the_same_everywhere(tmp_path):
    folder = runs_csv(tmp_path / "a", REFERENCE)
    table = compare(read_runs(folder), read_runs(folder), ["samples_per_second", "final_accuracy"])
    assert set(table["verdict"]) == {"same"} and (table["ratio_b_a"] == 1).all()


def test_halving_one_frameworks_threads_flags_it_slower_and_only_it(tmp_path):
    a = runs_csv(tmp_path / "a", REFERENCE)
    halved = {**REFERENCE, "torch": [v * 0.55 for v in REFERENCE["torch"]], "numpy": [40800, 40100, 40400]}
    b = runs_csv(tmp_path / "b", halved)
    table = compare(read_runs(a), read_runs(b), ["samples_per_second", "first_epoch_seconds"])
    verdicts = {(r.framework, r.metric): r.verdict for r in table.itertuples()}
    assert verdicts[("torch", "samples_per_second")] == "slower"
    assert verdicts[("torch", "first_epoch_seconds")] == "slower"
    assert verdicts[("numpy", "samples_per_second")] == "same"  # within the spread of the repeats
    assert verdicts[("jax", "samples_per_second")] == "same"
    assert list(regressions(table, 20)["framework"].unique()) == ["torch"]
    assert regressions(table, 50).empty  # 45% slower is not more than 50%


def test_rows_on_one_side_only_are_listed(tmp_path):
    a = runs_csv(tmp_path / "a", REFERENCE)
    b = runs_csv(tmp_path / "b", {"numpy": REFERENCE["numpy"], "keras": [20000, 21000, 20500]})
    verdicts = dict(zip(compare(read_runs(a), read_runs(b), ["samples_per_second"])["framework"],
                        compare(read_runs(a), read_runs(b), ["samples_per_second"])["verdict"]))
    assert verdicts["torch"] == "only in A" and verdicts["keras"] == "only in B" and verdicts["numpy"] == "same"


def test_cli_gates_on_regressions_and_writes_csv(tmp_path):
    a = runs_csv(tmp_path / "a", REFERENCE)
    b = runs_csv(tmp_path / "b", {**REFERENCE, "jax": [40000, 39000, 41000]})
    out = tmp_path / "table.csv"
    command = [sys.executable, "bench.py", "compare", str(a), str(b), "--csv", str(out), "--fail-on-regression", "10"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "slower" in result.stdout
    assert "jax" in set(pd.read_csv(out).query("verdict == 'slower'")["framework"])
    same = subprocess.run(command[:4] + [str(a)], cwd=ROOT, capture_output=True, text=True)
    assert same.returncode == 0
    bad = subprocess.run(command[:4] + [str(tmp_path / "nothing")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_statistics_over_repeats(tmp_path):
    runs = read_runs(runs_csv(tmp_path / "a", REFERENCE))
    stats = cell_statistics(runs).set_index("framework")
    assert stats.loc["numpy", "samples_per_second_median"] == 40500
    assert stats.loc["numpy", "samples_per_second_q1"] == pytest.approx(40250)
    accuracies = np.array([0.98, 0.981, 0.982])
    assert stats.loc["jax", "accuracy_mean"] == pytest.approx(accuracies.mean())
    assert stats.loc["jax", "accuracy_ci95"] == pytest.approx(4.303 * accuracies.std(ddof=1) / np.sqrt(3), rel=1e-3)


def run_to_run_noise() -> np.ndarray:
    """Log deviations of steady throughput between repeats of one row in the committed reference run,
    each group's deviations from its mean scaled by sqrt(n / (n - 1)) to undo the mean's pull."""
    runs = pd.read_csv(ROOT / "results" / "reference-cpu" / "runs.csv")
    runs = runs[runs["status"] == "ok"]
    deviations = []
    for _, group in runs.groupby(["framework", "variant", "model"]):
        logs = np.log(group["samples_per_second"].dropna().to_numpy(float))
        if len(logs) > 1:
            deviations += list((logs - logs.mean()) * np.sqrt(len(logs) / (len(logs) - 1)))
    return np.array(deviations)


@pytest.mark.parametrize("repeats", [2, 3, 5])
def test_the_verdict_calls_a_change_in_at_most_5_percent_of_unchanged_comparisons(repeats):
    """Both sides drawn from one distribution, with the reference run's own spread: 'same' at least 95% of the time."""
    from harness.results.compare import differs

    noise = run_to_run_noise()
    assert len(noise) >= 30 and noise.std() > 0.02  # a real spread, not a constant
    rng = np.random.default_rng(repeats)
    trials = 3000
    called = sum(differs(40000 * np.exp(rng.choice(noise, repeats)), 40000 * np.exp(rng.choice(noise, repeats)))
                 for _ in range(trials))
    assert called / trials <= 0.05, f"{called / trials:.1%} false positives at {repeats} repeats"


@pytest.mark.parametrize("repeats", [3, 5])
def test_the_verdict_still_sees_a_real_change(repeats):
    from harness.results.compare import differs

    noise = run_to_run_noise()
    rng = np.random.default_rng(7)
    trials = 500
    called = sum(differs(40000 * np.exp(rng.choice(noise, repeats)), 30000 * np.exp(rng.choice(noise, repeats)))
                 for _ in range(trials))
    assert called / trials >= 0.5  # 25% slower is seen more often than not, even at three repeats
