"""Sweeps on the synthetic set, NumPy only: expansion, refusals, records, pictures, select and final."""

import csv
import json
import re
from pathlib import Path

import pytest

from harness.config import ConfigError, resolve
from harness.results.records import EPOCH_COLUMNS, RUN_COLUMNS
from tests.tiny_run import bench, tiny_config

BASE = {"dataset": "synthetic", "frameworks": ["numpy"], "models": ["mlp", "cnn"], "threads": 1, "batch_size": 32,
        "ceilings": "off", "timeout_s": 60, "synthetic": {"train": 240, "eval": 96},
        "mlp": {"epochs": 2, "hidden": [16]}, "cnn": {"epochs": 2, "channels": [4, 8], "dense": 16}}
SWEEP = tiny_config('name = "tiny-sweep"\nmodels = ["mlp", "cnn"]\nrepeats = 2', """
[mlp]
epochs = 2
hidden = [16]

[cnn]
epochs = 2
channels = [4, 8]
dense = 16

[sweep]
mode = "grid"
"optimizer.lr" = [1e-3, 1e-2]
mlp.dropout = [0.0, 0.3]
""")


def config(**sweep):
    return resolve({**BASE, "sweep": sweep}, "t")


def read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_grid_is_every_combination_and_a_zip_pairs_the_lists():
    grid = config(mode="grid", **{"optimizer.lr": [1e-3, 1e-2, 1e-1], "mlp.hidden": [[8], [16]]})
    mlp = [dict(c.setting) for c in grid.cells() if c.model == "mlp"]
    assert mlp == [{"optimizer.lr": lr, "mlp.hidden": (h,)} for lr in (1e-3, 1e-2, 1e-1) for h in (8, 16)]
    cnn = [dict(c.setting) for c in grid.cells() if c.model == "cnn"]
    assert cnn == [{"optimizer.lr": lr} for lr in (1e-3, 1e-2, 1e-1)]  # mlp.hidden does not reach the CNN
    assert len({c.key for c in grid.cells()}) == len(grid.cells()) == 9
    zipped = config(mode="zip", **{"optimizer.lr": [1e-3, 1e-2], "mlp.dropout": [0.1, 0.4]})
    assert [dict(c.setting) for c in zipped.cells() if c.model == "mlp"] == [
        {"optimizer.lr": 1e-3, "mlp.dropout": 0.1}, {"optimizer.lr": 1e-2, "mlp.dropout": 0.4}]
    nested = resolve({**BASE, "sweep": {"optimizer": {"lr": [1e-3, 1e-2]}}}, "t")  # TOML's optimizer.lr = [...]
    assert nested.values["sweep"] == {"mode": "grid", "optimizer.lr": [1e-3, 1e-2]}


def test_a_sweep_evaluates_on_a_validation_hold_out_and_resolves_again_to_itself():
    swept = config(**{"optimizer.lr": [1e-3]})
    assert (swept.validation, swept.eval_split) == (240 // 12, "validation")
    assert resolve({"sweep": {"optimizer.lr": [1e-3]}}, "t").validation == 5000  # MNIST's 60000 / 12
    assert config(**{"optimizer.lr": [1e-3]}).cells()[0].label.endswith("optimizer.lr=0.001")
    assert resolve(swept.values, "t").values == swept.values  # --resume rebuilds it from config.json
    told = resolve({**BASE, "validation": 40, "sweep": {"optimizer.lr": [1e-3]}}, "t")
    assert told.validation == 40


@pytest.mark.parametrize("sweep, phrase", [
    ({"optimizer.lr": ["fast"]}, "[sweep] optimizer.lr = 'fast' must be a number"),
    ({"optimizer.lr": [-1.0]}, "[sweep] optimizer.lr = -1.0 must be greater than 0"),
    ({"optimizer.lrr": [1e-3]}, "[sweep] unknown key optimizer.'lrr': known keys are name, lr,"),
    ({"mlp.hiden": [[8]]}, "[sweep] unknown key mlp.'hiden': known keys are epochs, lr, dropout, hidden"),
    ({"mlp.hidden": [8, 16]}, "[sweep] mlp.hidden = 8 must be list"),
    ({"frameworks": [["numpy"]]}, "[sweep] cannot vary frameworks"),
    ({"mlp.train_samples": [96, 192]}, "[sweep] cannot vary mlp.train_samples"),
    ({"rnn.hidden": [8]}, "[sweep] varies rnn.hidden, but models = ['mlp', 'cnn'] trains no rnn"),
    ({"optimizer.lr": 1e-3}, "[sweep] optimizer.lr = 0.001 must be a non-empty list of the values to try"),
    ({"optimizer.lr": [1e-3, 1e-3]}, "[sweep] optimizer.lr lists 0.001 more than once"),
    ({"mode": "zip", "optimizer.lr": [1e-3, 1e-2], "mlp.dropout": [0.1]}, "mode = 'zip' pairs the lists"),
    ({"mode": "grid"}, "[sweep] names no key to vary"),
    ({"mode": "random"}, "sweep.mode = 'random' must be one of 'grid', 'zip', 'optuna', 'selected'"),
    ({"optimizer.name": ["sgd"], "optimizer.weight_decay": [0.1]},
     "[sweep] at optimizer.name=sgd optimizer.weight_decay=0.1: the [optimizer] table cannot be mapped"),
    ({"trials": 3, "optimizer.lr": [1e-3]}, "sweep.trials belongs to a search: set mode = 'optuna'"),
    ({"mode": "optuna", "space": {"optimizer.lr": {"low": 1e-3, "high": 1e-1}}}, "mode = 'optuna' needs trials"),
    ({"mode": "optuna", "trials": 2, "space": {"optimizer.lr": {"low": 0, "high": 1, "log": True}}},
     "a log range needs low > 0"),
    ({"mode": "optuna", "trials": 2, "space": {"mlp.hidden": {"low": 8, "high": 64}}},
     "sweep.space.mlp.hidden cannot be a range"),
    ({"mode": "optuna", "trials": 2, "space": {"batch_size": {"low": 8.5, "high": 64}}}, "must be integers"),
    ({"mode": "optuna", "trials": 2, "space": {"optimizer.lr": {"low": 1e-3, "high": 20.0}},
      "optimizer.lr": [1e-3]}, "move it into [sweep.space]"),
])
def test_wrong_keys_and_values_are_refused_in_one_sentence(sweep, phrase):
    with pytest.raises(ConfigError, match=re.escape(phrase)) as refused:
        config(**sweep)
    assert "\n" not in str(refused.value)


def test_a_sweep_never_chooses_on_the_test_set():
    with pytest.raises(ConfigError, match="eval_split = 'test' would choose them on the test set"):
        resolve({**BASE, "eval_split": "test", "sweep": {"optimizer.lr": [1e-3]}}, "t")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "tiny.toml").write_text(SWEEP)
    result = bench("run", folder / "tiny.toml", "--out", folder / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    return folder / "run"


def test_every_cell_records_its_setting_after_the_fixed_columns(swept):
    runs, epochs = read(swept / "runs.csv"), read(swept / "epochs.csv")
    assert list(runs[0])[:len(RUN_COLUMNS)] == RUN_COLUMNS and list(epochs[0])[:len(EPOCH_COLUMNS)] == EPOCH_COLUMNS
    assert list(runs[0])[len(RUN_COLUMNS):] == ["sweep.optimizer.lr", "sweep.mlp.dropout"]
    assert list(epochs[0])[len(EPOCH_COLUMNS):] == ["sweep.optimizer.lr", "sweep.mlp.dropout"]
    mlp = {(r["sweep.optimizer.lr"], r["sweep.mlp.dropout"], r["repeat"]) for r in runs if r["model"] == "mlp"}
    assert mlp == {(lr, d, rep) for lr in ("0.001", "0.01") for d in ("0.0", "0.3") for rep in ("0", "1")}
    cnn = [(r["sweep.optimizer.lr"], r["sweep.mlp.dropout"]) for r in runs if r["model"] == "cnn"]
    assert sorted(cnn) == [("0.001", ""), ("0.001", ""), ("0.01", ""), ("0.01", "")]
    assert all(r["status"] == "ok" and r["eval_split"] == "validation" for r in runs)
    assert len(epochs) == 2 * len(runs) and len(list((swept / "logs").glob("numpy-*.log"))) == len(runs) == 12


def test_summary_groups_by_the_settings_and_every_sweep_picture_is_written(swept):
    summary = (swept / "summary.md").read_text()
    assert "validation accuracy %" in summary and "the validation hold-out (the last 20 training images" in summary
    assert re.search(r"\| optimizer\.lr=0\.001 mlp\.dropout=0\.3 +\|", summary)  # the table of settings
    for name in ("mlp-sweep-optimizer.lr.png", "mlp-sweep-mlp.dropout.png", "mlp-sweep-heatmap.png",
                 "mlp-sweep-curves.png", "cnn-sweep-optimizer.lr.png", "cnn-sweep-curves.png"):
        assert (swept / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in summary, name
    assert "mlp-accuracy.png" not in summary  # per setting instead: one curve of many settings would mislead


def test_resume_runs_only_the_cells_of_a_setting_that_did_not_finish(swept, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(swept, folder)
    runs = read(folder / "runs.csv")
    lost = [r for r in runs if r["model"] == "mlp" and r["sweep.optimizer.lr"] == "0.01" and
            r["sweep.mlp.dropout"] == "0.3"]
    kept = [r for r in runs if r not in lost]
    with (folder / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(runs[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
    result = bench("run", "--resume", folder, "--quiet", "--allow-mixed")  # the checkout may change meanwhile
    assert result.returncode == 0, result.stderr
    again = read(folder / "runs.csv")
    assert len(again) == len(runs) and again[:len(kept)] == kept  # nothing that finished ran again
    assert {r["session"] for r in again[len(kept):]} == {"2"} and len(again[len(kept):]) == 2


def test_select_names_each_best_setting_and_final_tests_it_once(swept, tmp_path):
    selected = bench("select", swept)
    assert selected.returncode == 0, selected.stderr
    selection = json.loads((swept / "selection.json").read_text())
    runs = read(swept / "runs.csv")
    for entry in selection["chosen"]:
        rows = [r for r in runs if r["model"] == entry["model"]]
        means = {}
        for r in rows:
            means.setdefault((r["sweep.optimizer.lr"], r["sweep.mlp.dropout"]), []).append(float(r["final_accuracy"]))
        best = max(means.values(), key=lambda v: sum(v) / len(v))
        assert entry["accuracy"] == pytest.approx(sum(best) / 2) and entry["n"] == 2
        assert entry["setting"]["optimizer.lr"] in (1e-3, 1e-2) and ("mlp.dropout" in entry["setting"]) == \
            (entry["model"] == "mlp")
    assert "best setting" in selected.stdout and "validation accuracy %" in selected.stdout

    final = bench("final", swept, "--repeats", "1", "--out", tmp_path / "final", "--quiet")
    assert final.returncode == 0, final.stderr
    out = tmp_path / "final"
    saved = json.loads((out / "config.json").read_text())
    assert (saved["eval_split"], saved["validation"], saved["evaluate"], saved["repeats"]) == ("test", 0, "end", 1)
    assert saved["sweep"]["mode"] == "selected" and saved["sweep"]["source"] == str(swept)
    assert saved["seed"] == 2  # new seeds: after the sweep's two
    environment = json.loads((out / "environment.json").read_text())
    assert environment["sessions"][0]["config"]["sweep"]["source"] == str(swept)
    runs, epochs = read(out / "runs.csv"), read(out / "epochs.csv")
    assert [(r["model"], r["eval_split"], r["status"]) for r in runs] == [("mlp", "test", "ok"), ("cnn", "test", "ok")]
    for run in runs:
        chosen = next(e for e in selection["chosen"] if e["model"] == run["model"])
        assert float(run["sweep.optimizer.lr"]) == chosen["setting"]["optimizer.lr"]
    assert [bool(e["eval_accuracy"]) for e in epochs] == [False, True, False, True]  # evaluated once, at the end
    summary = (out / "summary.md").read_text()
    assert f"chose in `{swept}`" in summary and "test accuracy % (final)" in summary
    assert "validation accuracy % (sweep)" in summary


def test_select_refuses_a_run_that_is_not_a_sweep(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"name": "x"}))
    result = bench("select", tmp_path)
    assert result.returncode == 2 and "is not a sweep" in result.stderr and "Traceback" not in result.stderr


def test_a_sweep_of_the_shared_rate_is_refused_where_a_model_has_its_own():
    own = {**BASE, "mlp": {**BASE["mlp"], "lr": 2e-3}}
    with pytest.raises(ConfigError, match=re.escape("[sweep] varies optimizer.lr, but mlp.lr = 0.002 gives the mlp "
                                                    "its own rate")):
        resolve({**own, "sweep": {"optimizer.lr": [1e-3, 3e-3]}}, "t")
    both = resolve({**own, "sweep": {"optimizer.lr": [1e-3, 3e-3], "mlp.lr": [1e-3, 3e-3]}}, "t")
    assert len(both.cells()) == 4 + 2  # the MLP's four pairs, and the CNN once per shared rate
    alone = resolve({**own, "sweep": {"mlp.lr": [1e-3, 3e-3]}}, "t")
    assert sorted(dict(c.setting)["mlp.lr"] for c in alone.cells() if c.model == "mlp") == [1e-3, 3e-3]
