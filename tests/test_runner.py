"""The runner end to end, on synthetic data, with real worker processes."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.adapter import discover
from harness.config import load_config
from harness.results.records import EPOCH_COLUMNS, RUN_COLUMNS
from harness.results.run_folder import RunFolder
from harness.runner import run_sweep

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.toml"


def read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_bench_run_writes_every_file_with_every_column(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "bench.py", "run", str(SMOKE), "--out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    runs, epochs = read(out / "runs.csv"), read(out / "epochs.csv")
    assert list(runs[0]) == RUN_COLUMNS and list(epochs[0]) == EPOCH_COLUMNS
    assert [(r["model"], r["status"]) for r in runs] == [("mlp", "ok"), ("cnn", "ok")]
    assert len(epochs) == 4 and {e["epoch"] for e in epochs} == {"1", "2"}
    for run in runs:
        assert 0 <= float(run["final_accuracy"]) <= 1
        assert float(run["samples_per_second"]) > 0 and float(run["first_epoch_seconds"]) > 0
        assert float(run["setup_seconds"]) > 0 and float(run["peak_rss_mb"]) > 0
        assert run["backend"] and run["thread_pools"]  # e.g. "openblas 0.3.31 SkylakeX x1"
    environment = json.loads((out / "environment.json").read_text())
    [session] = environment["sessions"]
    assert environment["schema"] == 3 and session["session"] == 1 and {r["session"] for r in runs} == {"1"}
    assert session["cpu"]["cores"] >= 1 and "numpy" in session["packages"]
    assert session["worker_environment_variables"]["OMP_NUM_THREADS"] == "1"
    assert session["adapter_modules"]["numpy"]["numpy"].startswith("numpy ")
    assert not (out / ".lock").exists()  # released
    assert json.loads((out / "config.json").read_text())["name"] == "smoke"
    summary = (out / "summary.md").read_text()
    assert "## MLP" in summary and "## CNN" in summary
    assert "## MLP" in result.stdout  # the table is printed at the end
    for figure in ("mlp-accuracy.png", "cnn-throughput.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({figure})" in summary
    assert "samples_per_second_median" in (out / "statistics.csv").read_text()


def test_train_samples_cuts_each_epoch_to_the_first_images(tmp_path):
    config = tmp_path / "subset.toml"  # the smoke config, its MLP on 96 of the 256 synthetic images: 3 batches of 32
    config.write_text(SMOKE.read_text().replace('models = ["mlp", "cnn"]', 'models = ["mlp"]')
                      .replace("[mlp]\n", "[mlp]\ntrain_samples = 96\n"))
    result = subprocess.run([sys.executable, "bench.py", "run", str(config), "--out", str(tmp_path / "run"), "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [int(e["step"]) for e in read(tmp_path / "run" / "epochs.csv")] == [3, 6]
    assert "## MLP: 2 epochs of the first 96 training images" in result.stdout


def test_a_models_own_rate_is_the_one_its_adapter_trains_with(tmp_path):
    from harness.execute.worker import build_adapter
    from harness.results.report import model_heading
    from harness.runner import plan

    config = tmp_path / "rate.toml"
    config.write_text(SMOKE.read_text().replace("[cnn]\n", "[cnn]\nlr = 0.005\n"))
    config = load_config(config, {"frameworks": ["numpy"]})
    def optimizer_of(spec, optimizer, **_):  # an adapter class that returns what it was built with
        return optimizer

    rates = {cell.model: build_adapter(plan(cell, config, None, tmp_path).job, config.model(cell.model), 4,
                                       adapter_class=optimizer_of).lr for cell in config.cells()}
    assert rates == {"mlp": config.values["optimizer"]["lr"], "cnn": 0.005}
    assert model_heading("cnn", config.values["cnn"]).startswith("CNN: 2 epochs, learning rate 0.005, target")


@pytest.fixture
def faulty_config():
    adapters = {**discover(), **discover(ROOT / "tests" / "adapters")}
    config = load_config(SMOKE, {"frameworks": ["faulty", "numpy"], "models": ["mlp"]}, adapters)
    config.values["timeout_s"] = 5
    return config


def test_resume_runs_only_what_did_not_finish(tmp_path, faulty_config):
    faulty_config.values["variants"] = {"faulty": ["raise", "skip"], "numpy": ["numpy"]}
    run_sweep(faulty_config, RunFolder(tmp_path), data_dir=None, progress=False)
    first = read(tmp_path / "runs.csv")
    (tmp_path / "config.json").write_text("{}")
    folder = RunFolder.existing(tmp_path)
    folder.keep_finished()
    assert {r["variant"] for r in folder.runs} == {"skip", "numpy"}  # the error is tried again
    run_sweep(faulty_config, folder, data_dir=None, progress=False)
    second = read(tmp_path / "runs.csv")
    assert len(second) == len(first) == 3
    ok_before = next(r for r in first if r["variant"] == "numpy")
    ok_after = next(r for r in second if r["variant"] == "numpy")
    assert ok_before == ok_after  # not run again


def test_list_and_help_start_fast_and_import_no_framework():
    code = (
        "import sys, time; t = time.perf_counter(); sys.argv = ['bench.py', 'list'];"
        "import bench; bench.main(['list']);"
        "heavy = {'torch', 'jax', 'tensorflow', 'keras', 'pandas'} & set(sys.modules);"
        "assert not heavy, heavy; print(time.perf_counter() - t)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "numpy" in result.stdout
    assert float(result.stdout.splitlines()[-1]) < 1.0
