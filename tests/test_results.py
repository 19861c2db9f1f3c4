import csv

import pytest

from harness.results.records import RUN_COLUMNS, summarise_run
from harness.results.report import write_summary
from harness.results.run_folder import RunFolder


def epoch(n, seconds, accuracy, samples=1000):
    return {"epoch": n, "train_seconds": seconds, "eval_accuracy": accuracy, "eval_loss": 1 - accuracy,
            "eval_seconds": 0.1, "samples": samples}


def test_first_epoch_is_apart_and_throughput_uses_steady_epochs_only():
    run = summarise_run({"framework": "x"}, [epoch(1, 10.0, 0.90), epoch(2, 2.0, 0.95), epoch(3, 4.0, 0.97)], 0.96)
    assert run["first_epoch_seconds"] == 10.0
    assert run["steady_epoch_seconds"] == 3.0  # median of epochs 2..3
    assert run["samples_per_second"] == pytest.approx(1000 / 3.0)
    assert run["time_to_target_seconds"] == 16.0  # compile included, evaluation excluded
    assert run["final_accuracy"] == 0.97 and run["best_accuracy"] == 0.97


def test_unreached_target_and_single_epoch_leave_blanks():
    run = summarise_run({}, [epoch(1, 5.0, 0.5)], 0.99)
    assert run["steady_epoch_seconds"] is None and run["samples_per_second"] is None
    assert "time_to_target_seconds" not in run


def test_records_are_rewritten_whole_after_each_cell(tmp_path):
    folder = RunFolder(tmp_path)
    base = {"framework": "numpy", "variant": "numpy", "backend": "openblas", "model": "mlp", "device": "cpu", "seed": 0}
    for repeat in range(2):
        folder.add({**base, "repeat": repeat, "status": "ok", "final_accuracy": 0.9 + repeat / 100,
                    "samples_per_second": 1000 + repeat}, [])
        with (tmp_path / "runs.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == repeat + 1 and list(rows[0]) == RUN_COLUMNS
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left behind
    summary = write_summary(tmp_path)
    assert "90.50 ± 0.71 (CI ±6.35)" in summary  # accuracy: mean ± sd, 95% t-interval over the repeats
    assert "1,000 (1,000–1,001)" in summary  # timings: median (min–max)
    assert (tmp_path / "summary.md").read_text() == summary


def test_single_sample_figures_are_marked_and_the_optimizer_form_shown():
    import pandas as pd

    from harness.results.report import SINGLE, model_table

    base = {"framework": "keras", "variant": "jax", "backend": "xla", "model": "mlp", "device": "cpu", "status": "ok",
            "final_accuracy": 0.98, "first_epoch_seconds": 2.0, "optimizer_form": "eps added to sqrt(v)"}
    one_steady = model_table(pd.DataFrame([{**base, "samples_per_second": 500.0, "steady_epochs": 1}])).iloc[0]
    assert one_steady["steady samples/s"] == "500" + SINGLE and one_steady["first epoch s"] == "2.00" + SINGLE
    assert one_steady["test accuracy %"] == "98.00" + SINGLE
    assert one_steady["optimizer form"] == "eps added to sqrt(v)"
    two_steady = model_table(pd.DataFrame([{**base, "samples_per_second": 500.0, "steady_epochs": 2}])).iloc[0]
    assert two_steady["steady samples/s"] == "500"  # the median of two steady epochs: not one sample
