"""An Optuna search on the synthetic set, NumPy only: stopped mid-trial, resumed, nothing searched twice."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from harness.config import resolve  # noqa: E402
from harness.tuning.search import Search, spent, storage  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRIALS = 5
SEARCH = f"""
name = "tiny-search"
dataset = "synthetic"
frameworks = ["numpy"]
models = ["mlp"]
threads = 1
batch_size = 32
timeout_s = 60
ceilings = "off"

[synthetic]
train = 480
eval = 96

[mlp]
epochs = 6
hidden = [32]

[sweep]
mode = "optuna"
trials = {TRIALS}

[sweep.space]
"optimizer.lr" = {{low = 1e-3, high = 1e-1, log = true}}
"mlp.dropout" = {{low = 0.0, high = 0.5}}
"mlp.hidden" = [[16], [32]]
"""
RAW = {"dataset": "synthetic", "frameworks": ["numpy"], "models": ["mlp", "cnn"], "threads": 1, "batch_size": 32,
       "ceilings": "off", "synthetic": {"train": 240, "eval": 96},
       "sweep": {"mode": "optuna", "trials": 3, "space": {"optimizer.lr": {"low": 1e-3, "high": 1e-1, "log": True},
                                                          "batch_size": {"low": 16, "high": 64, "step": 16}}}}


def rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def bench(*args, **popen):
    return subprocess.Popen([sys.executable, "bench.py", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def trials(folder: Path, name: str = "numpy/numpy/mlp") -> list:
    return optuna.load_study(study_name=name, storage=storage(folder)).get_trials(deepcopy=False)


def stop_mid_trial(process, out: Path, finished: int, deadline: float = 120) -> None:
    """SIGINT once `finished` trials are in runs.csv and the next trial's cell has started."""
    end = time.monotonic() + deadline
    while time.monotonic() < end and process.poll() is None:
        started = list((out / "logs").glob("numpy-*.log")) if (out / "logs").is_dir() else []
        if len(rows(out / "runs.csv")) >= finished and len(started) > finished:
            process.send_signal(signal.SIGINT)
            return
        time.sleep(0.005)
    raise AssertionError(f"the search did not reach trial {finished + 1}: {process.communicate()[1][-2000:]}")


def test_a_search_stopped_mid_trial_resumes_and_searches_nothing_twice(tmp_path):
    (tmp_path / "search.toml").write_text(SEARCH)
    out = tmp_path / "run"
    first = bench("run", tmp_path / "search.toml", "--out", out, "--quiet")
    stop_mid_trial(first, out, finished=2)
    assert first.wait(60) == 130, first.communicate()[1]
    before = rows(out / "runs.csv")
    assert 2 <= len(before) < TRIALS and (out / "study.db").is_file()

    resumed = bench("run", "--resume", out, "--quiet", "--allow-mixed")  # the checkout may change meanwhile
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    found = trials(out)
    complete = [t for t in found if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == TRIALS and spent(optuna.load_study(study_name="numpy/numpy/mlp", storage=storage(out))) \
        == TRIALS
    settings = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(set(settings)) == TRIALS  # no setting searched twice
    after = rows(out / "runs.csv")
    assert after[:len(before)] == before and len(after) == TRIALS  # one cell a trial, none trained twice
    ran = {(float(r["sweep.optimizer.lr"]), float(r["sweep.mlp.dropout"]), r["sweep.mlp.hidden"]) for r in after}
    assert ran == {(t.params["optimizer.lr"], t.params["mlp.dropout"], t.params["mlp.hidden"]) for t in complete}
    interrupted = [t for t in found if t.state == optuna.trial.TrialState.FAIL]
    for trial in interrupted:  # stopped mid-cell: the same parameters ran again, in the trial that re-ran it
        rerun = [t for t in complete if t.user_attrs.get("rerun_of") == trial.number]
        assert len(rerun) == 1 and rerun[0].params == trial.params
    assert "Each study's 5 best trials" in (out / "summary.md").read_text()
    for name in ("mlp-search.png", "mlp-search-curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    selected = subprocess.run([sys.executable, "bench.py", "select", out], cwd=ROOT, capture_output=True, text=True)
    assert selected.returncode == 0, selected.stderr
    [chosen] = json.loads((out / "selection.json").read_text())["chosen"]
    best = max(complete, key=lambda t: t.value)
    assert chosen["trial"] == best.number and chosen["accuracy"] == pytest.approx(best.value)


def test_a_trial_left_running_is_run_again_with_its_parameters(tmp_path):
    config = resolve(RAW, "t")
    search = Search(config, tmp_path)
    search.open(["numpy/numpy/mlp"])
    [(name, trial, setting, cells)] = search.ask()[:1]
    assert [c.setting for c in cells] == [tuple(setting.items())] and cells[0].trial == trial.number
    assert setting["batch_size"] in (16, 32, 48, 64)
    search.open(["numpy/numpy/mlp"])  # as --resume does: the trial above was left running
    [(_, again, same, _)] = search.ask()[:1]
    assert again.number != trial.number and same == setting and again.user_attrs["rerun_of"] == trial.number
    assert trials(tmp_path)[trial.number].state == optuna.trial.TrialState.FAIL


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_every_study_starts_from_the_same_seeded_settings(tmp_path, sampler):
    config = resolve({**RAW, "frameworks": ["numpy"], "sweep": {**RAW["sweep"], "sampler": sampler}}, "t")
    firsts = []
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        search = Search(config, folder)
        search.open(list(search.templates))  # the MLP's study and the CNN's
        firsts.append([setting for _, _, setting, _ in search.ask()])
    assert firsts[0] == firsts[1] and firsts[0][0] == firsts[0][1]
