"""The runner end to end, on synthetic data, with real worker processes."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.adapter import discover
from harness.config import load_config
from harness.results import EPOCH_COLUMNS, RUN_COLUMNS, RunFolder
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
    assert environment["cpu"]["cores"] >= 1 and "numpy" in environment["packages"]
    assert environment["worker_environment_variables"]["OMP_NUM_THREADS"] == "1"
    assert json.loads((out / "config.json").read_text())["name"] == "smoke"
    summary = (out / "summary.md").read_text()
    assert "## MLP" in summary and "## CNN" in summary
    assert "## MLP" in result.stdout  # the table is printed at the end
    for figure in ("mlp-accuracy.png", "cnn-throughput.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({figure})" in summary
    assert "samples_per_second_median" in (out / "statistics.csv").read_text()


@pytest.fixture
def faulty_config():
    adapters = {**discover(), **discover(ROOT / "tests" / "adapters")}
    config = load_config(SMOKE, {"frameworks": ["faulty", "numpy"], "models": ["mlp"]}, adapters)
    config.values["timeout_s"] = 5
    return config


def test_failing_cells_are_recorded_and_the_sweep_goes_on(tmp_path, faulty_config):
    folder = RunFolder(tmp_path)
    run_sweep(faulty_config, folder, data_dir=None, progress=False)
    status = {r["variant"]: (r["status"], r.get("error", "")) for r in read(tmp_path / "runs.csv")}
    assert status["raise"] == ("error", "RuntimeError: the faulty adapter failed on purpose")
    assert status["exit"][0] == "crashed"
    assert status["hang"][0] == "timeout"
    assert status["skip"] == ("skipped", "this variant never runs here")
    assert status["nan"][0] == "diverged"
    assert status["missing"][0] == "skipped" and "no_such_module_for_tests not installed" in status["missing"][1]
    assert status["numpy"][0] == "ok"  # the cell after all the failures still ran
    assert (tmp_path / "logs" / "faulty-raise-mlp-cpu-0.log").exists()


def test_resume_runs_only_what_did_not_finish(tmp_path, faulty_config):
    faulty_config.values["variants"] = {"faulty": ["raise", "skip"], "numpy": ["numpy"]}
    run_sweep(faulty_config, RunFolder(tmp_path), data_dir=None, progress=False)
    first = read(tmp_path / "runs.csv")
    folder = RunFolder(tmp_path)
    folder.load_existing()
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


def test_sigterm_stops_the_worker_and_keeps_what_finished(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    command = [sys.executable, "bench.py", "run", str(SMOKE), "--out", str(out), "--quiet", "--epochs", "100000"]
    before = worker_pids()  # workers of other runs on this machine are not this test's business
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "logs").exists() and time.monotonic() < deadline:  # the first worker has started
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 130
    assert "--resume" in process.stderr.read()
    time.sleep(0.5)
    assert worker_pids() <= before, "the run's worker outlived it"


def worker_pids() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "python -m harness.worker"], capture_output=True, text=True)
    return set(found.stdout.split())
