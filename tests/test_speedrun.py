"""The time-to-accuracy track: evaluation every few steps, a clock stopped at the target, MLPerf's score."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.execute.worker import chunks
from harness.results.records import summarise_run
from harness.results.speedrun import score

ROOT = Path(__file__).resolve().parent.parent


def test_an_epoch_is_evaluated_every_so_many_steps_and_at_its_end():
    assert chunks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert chunks(10, 0) == [slice(0, 10)] == chunks(10, 10)


def row(epoch, step, seconds, accuracy, end=False):
    return {"epoch": epoch, "step": step, "train_seconds": seconds, "samples": 100 * 4, "eval_accuracy": accuracy,
            "eval_loss": 1 - accuracy, "eval_seconds": 0.5, "end_of_epoch": end, "steps_per_epoch": 8}


def test_the_clock_counts_training_to_the_first_evaluation_at_the_target_and_evaluation_apart():
    evaluations = [row(1, 4, 3.0, 0.5), row(1, 8, 1.0, 0.8, end=True), row(2, 12, 1.5, 0.95), row(2, 16, 1.5, 0.97,
                                                                                                    end=True)]
    run = summarise_run({}, evaluations, 0.9)
    assert run["time_to_target_seconds"] == 5.5 and run["eval_seconds_to_target"] == 1.5
    assert run["steps_to_target"] == 12 and run["epochs_to_target"] == 1.5
    assert run["first_epoch_seconds"] == 4.0 and run["steady_epoch_seconds"] == 3.0  # epochs from their parts
    assert run["samples_per_second"] == pytest.approx(800 / 3.0) and run["epochs"] == 2


def test_an_epoch_cut_short_at_the_target_gives_no_steady_figure():
    run = summarise_run({}, [row(1, 8, 2.0, 0.8, end=True), row(2, 12, 1.0, 0.95)], 0.9)
    assert run["steady_epochs"] == 0 and run["samples_per_second"] is None and run["time_to_target_seconds"] == 3.0


def test_the_score_drops_the_fastest_and_the_slowest_and_a_miss_counts_as_the_slowest():
    assert score([float(t) for t in range(1, 11)])["score"] == pytest.approx(5.5)  # mean of 2..9
    one_miss = score([*map(float, range(1, 10)), None])
    assert one_miss["score"] == pytest.approx(5.5) and one_miss["reached"] == 9  # 2..9: the miss is dropped
    assert score([*map(float, range(1, 10)), math.nan])["score"] == pytest.approx(5.5)


def test_a_row_with_more_than_one_seed_in_ten_missing_gets_no_score():
    two_misses = score([*map(float, range(1, 9)), None, None])
    assert two_misses["score"] is None and "2 of 10 seeds missed" in two_misses["why"]
    assert score([1.0, 2.0])["score"] is None  # too few seeds to drop two
    twenty = score([*map(float, range(1, 19)), None, None])  # 2 of 20 may miss: 2 dropped from each end
    assert twenty["score"] == pytest.approx(sum(range(3, 19)) / 16)


def test_a_seed_that_failed_before_its_setup_still_counts_as_a_miss_of_its_row():
    import pandas as pd

    from harness.results.speedrun import speedrun_table

    base = {"framework": "torch", "variant": "eager", "model": "cnn", "device": "cpu", "eval_seconds_to_target": 1.0,
            "epochs_to_target": 0.9}
    seeds = [{**base, "backend": "mkl+onednn", "status": "ok", "time_to_target_seconds": float(t)} for t in range(1, 9)]
    seeds += [{**base, "backend": "", "status": "crashed", "time_to_target_seconds": None}] * 2
    [row] = speedrun_table(pd.DataFrame(seeds)).to_dict("records")
    assert row["seeds reaching the target"] == "8 of 10 (2 did not finish)" and row["score s"].startswith("no score")
    nine = [{**seeds[0], "time_to_target_seconds": 9.0}, *seeds[:9]]  # 9 finished, 1 crashed: one miss in ten
    [kept] = speedrun_table(pd.DataFrame(nine)).to_dict("records")
    assert kept["score s"] == "5.50" and kept["score with evaluations s"] == "6.50"  # 2..9: the crash dropped


def test_a_speedrun_stops_each_seed_at_the_target_and_reports_its_table(tmp_path):
    text = (ROOT / "configs" / "speedrun.toml").read_text()
    for old, new in (('dataset = "mnist"', 'dataset = "synthetic"'), ("repeats = 10 ", "repeats = 3 "),
                     ("eval_every_steps = 26 ", "eval_every_steps = 2 "), ("batch_size = 256", "batch_size = 32"),
                     ('frameworks = ["all"]', 'frameworks = ["numpy"]'), ("epochs = 2 ", "epochs = 3 "),
                     ("target_accuracy = 0.99", "target_accuracy = 0.5")):
        assert old in text, old
        text = text.replace(old, new)
    config = tmp_path / "speedrun.toml"
    config.write_text(text + '\n[synthetic]\ntrain = 256\neval = 128\n')
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "bench.py", "run", str(config), "--out", str(out), "--quiet",
                           "--ceilings", "off"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with (out / "runs.csv").open() as f:
        runs = list(csv.DictReader(f))
    with (out / "epochs.csv").open() as f:
        evaluations = list(csv.DictReader(f))
    assert len(runs) == 3 and all(r["status"] == "ok" for r in runs)
    for run in runs:
        mine = [e for e in evaluations if e["repeat"] == run["repeat"]]
        assert [int(e["step"]) for e in mine] == list(range(2, 2 * len(mine) + 1, 2))  # every 2 steps of 8
        assert float(mine[-1]["eval_accuracy"]) >= 0.5 > max(float(e["eval_accuracy"]) for e in mine[:-1])
        assert int(run["steps_to_target"]) == int(mine[-1]["step"])  # stopped at the first evaluation there
    summary = (out / "summary.md").read_text()
    assert "MLPerf's rules" in summary and "seeds reaching the target" in summary and "3 of 3" in summary
    assert (out / "cnn-speedrun.png").read_bytes()[:4] == b"\x89PNG"
