"""Saved parameters and bench.py show on the synthetic set, NumPy only."""

import csv

import numpy as np
import pytest

from harness.models import model_spec
from harness.results import params
from tests.tiny_run import bench, tiny_config

RUN = tiny_config('name = "tiny-show"\nmodels = ["mlp", "cnn", "rnn", "vit"]', """
[mlp]
epochs = 2
hidden = [16]

[cnn]
epochs = 1
channels = [4, 8]
dense = 16

[rnn]
epochs = 1
hidden = 8

[vit]
epochs = 1
width = 8
depth = 1
heads = 2
mlp = 16
""")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("show")
    (folder / "run.toml").write_text(RUN)
    result = bench("run", folder / "run.toml", "--out", folder / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    return folder / "run"


def test_saved_parameters_round_trip_in_canonical_layout(tmp_path):
    spec = model_spec("cnn", channels=[4, 8], dense=16, dropout=0.3)
    saved = {name: value for name, value in reversed(spec.init_params(7).items())}  # any order in
    params.save(tmp_path / "p.npz", saved, "cnn", {"channels": [4, 8], "dense": 16, "dropout": 0.3})
    loaded, again = params.load(tmp_path / "p.npz")
    assert again == spec and list(loaded) == list(spec.param_shapes)  # forward order out
    for name, value in saved.items():
        assert loaded[name].dtype == np.float32 and np.array_equal(loaded[name], value)
    assert not list(tmp_path.glob(".*"))  # no partial file left


def test_every_cell_saves_its_trained_parameters(run):
    with (run / "runs.csv").open(newline="") as f:
        runs = list(csv.DictReader(f))
    for row in runs:
        loaded, spec = params.load(run / row["params_file"])
        assert spec.name == row["model"] and spec.param_count == int(row["params"])
        initial = spec.init_params(int(row["seed"]))
        assert any(not np.array_equal(loaded[n], initial[n]) for n in initial)  # trained, not the initial weights


def test_show_recomputes_each_accuracy_and_draws_every_picture(run):
    result = bench("show", run)
    assert result.returncode == 0, result.stderr
    agreements = [line for line in result.stdout.splitlines() if "the NumPy forward pass" in line]
    assert len(agreements) == 4 and all("on the test set, as the run recorded" in line for line in agreements)
    for model in ("mlp", "cnn", "rnn", "vit"):
        for figure in ("weights", "confusion", "mistakes"):
            path = run / "show" / f"{model}-{figure}.png"
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_show_refuses_a_run_without_saved_parameters(tmp_path):
    from harness.results.records import RUN_COLUMNS

    (tmp_path / "config.json").write_text('{"name": "x"}')
    (tmp_path / "runs.csv").write_text(",".join(RUN_COLUMNS) + "\n")
    result = bench("show", tmp_path)
    assert result.returncode == 2 and "holds no saved parameters: run its config with save_params = true" in \
        result.stderr and "Traceback" not in result.stderr
