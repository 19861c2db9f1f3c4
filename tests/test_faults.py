"""Every fault a run can meet, driven for real, with what the user sees and what is kept.

Cell faults come from tests/adapters/faulty_adapter.py (it crashes, hangs, diverges or allocates
on command) in real worker processes; runner faults from signals sent to a real `bench.py run`;
disk faults from a file system made to fail. `python -m tests.test_faults` prints the table that
README.org shows, from the same scenarios.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = str(ROOT / "tests" / "adapters")
CELL_FAULTS = ["raise", "abort", "segfault", "sigkill", "hang", "nan", "inf", "nan_eval", "allocate", "skip",
               "missing"]
SMOKE = """
name = "faults"
dataset = "synthetic"
frameworks = {frameworks}
models = ["mlp"]
threads = 1
batch_size = 32
timeout_s = {timeout}
max_rss_mb = 400
ceilings = "off"
{variants}
[synthetic]
train = 128
eval = 64

[mlp]
epochs = {epochs}
hidden = [16]
"""


def write_config(folder: Path, variants=(), epochs=2, timeout=20, numpy=True) -> Path:
    frameworks = (["faulty"] if variants else []) + (["numpy"] if numpy else [])
    path = folder / "faults.toml"
    table = f"\n[variants]\nfaulty = {json.dumps(list(variants))}\n" if variants else ""
    path.write_text(SMOKE.format(frameworks=json.dumps(frameworks), variants=table, epochs=epochs, timeout=timeout))
    return path


def bench(*args, timeout=300, **popen):
    env = {**os.environ, "MNIST_BENCH_ADAPTERS": ADAPTERS}
    return subprocess.run([sys.executable, "bench.py", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def error_line(stderr: str) -> str:
    """The one sentence a failed command printed (only one, and no traceback; progress lines may precede it)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in stderr and len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


# --- cell faults: recorded with their status, and the sweep goes on -------------------------------------------


@pytest.fixture(scope="module")
def cell_faults(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cells")
    result = bench("run", write_config(folder, CELL_FAULTS, timeout=4), "--out", folder / "run", "--quiet")
    return result, {r["variant"]: r for r in rows(folder / "run" / "runs.csv")}, folder / "run"


EXPECTED_CELLS = {  # variant -> (status, words of the recorded error)
    "raise": ("error", "RuntimeError: the faulty adapter failed on purpose"),
    "abort": ("crashed", "killed by SIGABRT"),
    "segfault": ("crashed", "killed by SIGSEGV"),
    "sigkill": ("crashed", "killed by SIGKILL"),
    "hang": ("timeout", "ran past timeout_s = 4"),
    "nan": ("diverged", "the training loss became nan in epoch 1"),
    "inf": ("diverged", "the training loss became inf in epoch 1"),
    "nan_eval": ("diverged", "the evaluation loss became nan in epoch 1"),
    "allocate": ("oom", "over max_rss_mb = 400"),
    "skip": ("skipped", "this variant never runs here"),
    "missing": ("skipped", "no_such_module_for_tests not installed"),
}


@pytest.mark.parametrize("variant", CELL_FAULTS)
def test_each_cell_fault_is_recorded_with_its_status(cell_faults, variant):
    _, runs, _ = cell_faults
    status, words = EXPECTED_CELLS[variant]
    assert runs[variant]["status"] == status and words in runs[variant]["error"], runs[variant]


def test_the_sweep_goes_on_after_every_fault_and_loses_nothing(cell_faults):
    result, runs, folder = cell_faults
    assert result.returncode == 0, result.stderr
    assert runs["numpy"]["status"] == "ok"  # the cell after all the faults still ran
    assert (folder / "logs" / "faulty-segfault-mlp-cpu-0.log").exists()
    summary = (folder / "summary.md").read_text()
    assert "## Cells that did not finish" in summary and "oom" in summary
    epochs = rows(folder / "epochs.csv")
    assert {e["variant"] for e in epochs} == {"numpy", "nan", "inf", "nan_eval"}  # diverged cells keep their epoch


# --- the runner stopped ----------------------------------------------------------------------------------------


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def worker_pids() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "python -m harness.execute.worker"], capture_output=True, text=True)
    return set(found.stdout.split())


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT], [signal.SIGINT, signal.SIGINT]],
                         ids=["sigterm", "ctrl-c", "ctrl-c-twice"])
def test_stopping_the_runner_keeps_what_finished_and_stops_the_worker(tmp_path, signals):
    before = worker_pids()
    config = write_config(tmp_path, ["slow"], epochs=200)  # numpy's MLP first (it finishes), then a slow cell
    config.write_text(config.read_text().replace('["faulty", "numpy"]', '["numpy", "faulty"]'))
    out = tmp_path / "run"
    env = {**os.environ, "MNIST_BENCH_ADAPTERS": ADAPTERS}
    process = subprocess.Popen([sys.executable, "bench.py", "run", str(config), "--out", str(out), "--quiet"],
                               cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / "runs.csv").exists() and (out / "logs" / "faulty-slow-mlp-cpu-0.log").exists())
    time.sleep(0.5)
    for sent in signals:
        process.send_signal(sent)
        time.sleep(0.01)
    assert process.wait(timeout=30) == 130
    stderr = process.stderr.read()
    assert "Traceback" not in stderr and f"--resume {out}" in stderr
    kept = rows(out / "runs.csv")
    assert [(r["framework"], r["status"]) for r in kept] == [("numpy", "ok")]
    assert (out / "summary.md").exists() and not (out / ".lock").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written temporary files
    time.sleep(0.5)
    assert worker_pids() <= before, "the worker outlived the run"


# --- the disk fails ---------------------------------------------------------------------------------------------


def failing_replace(monkeypatch, code: int, after: int):
    """os.replace into a results folder fails with `code` from the `after`+1-th call on."""
    import harness.results.records

    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) > after:
            raise OSError(code, os.strerror(code))
        return real(src, dst)

    monkeypatch.setattr(harness.results.records.os, "replace", replace)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the disk is full"),
                                         (errno.EROFS, "the file system is read-only")])
def test_a_disk_that_fails_mid_run_stops_it_in_one_sentence_with_the_files_intact(tmp_path, monkeypatch, capsys,
                                                                                 code, words):
    import bench

    monkeypatch.setenv("MNIST_BENCH_ADAPTERS", ADAPTERS)
    config = write_config(tmp_path, numpy=True)
    config.write_text(config.read_text().replace('models = ["mlp"]', 'models = ["mlp", "cnn"]'))
    # config.json, environment.json, then epochs.csv and runs.csv of the first cell; the next write fails
    failing_replace(monkeypatch, code, after=4)
    assert bench.main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    line = error_line(capsys.readouterr().err)
    assert words in line and "every file written before is intact" in line and "--resume" in line
    kept = rows(tmp_path / "run" / "runs.csv")
    assert [(r["model"], r["status"]) for r in kept] == [("mlp", "ok")]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temporary file, no lock


def test_a_results_folder_that_cannot_be_written_at_all_is_said_in_one_sentence(tmp_path, monkeypatch, capsys):
    import bench

    failing_replace(monkeypatch, errno.EROFS, after=0)
    assert bench.main(["run", str(write_config(tmp_path)), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    assert "the file system is read-only" in error_line(capsys.readouterr().err)


# --- damaged results are refused, not misread ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finished")
    result = bench("run", write_config(folder), "--out", folder / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    return folder / "run"


@pytest.mark.parametrize("damage, words", [
    ("truncated", "is truncated or damaged at line"),
    ("missing columns", "lacks the columns"),
    ("older layout", "has an older layout"),
    ("empty", "is empty"),
])
def test_report_and_compare_refuse_damaged_results_in_one_sentence(finished, tmp_path, damage, words):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(finished, folder)
    runs = folder / "runs.csv"
    text = runs.read_text()
    table = list(csv.reader(text.splitlines()))

    def without(column: str) -> None:
        index = table[0].index(column)
        with runs.open("w", newline="") as f:
            csv.writer(f).writerows([row[:index] + row[index + 1:] for row in table])

    if damage == "truncated":
        runs.write_text(text[: len(text.splitlines()[0]) + 40])
    elif damage == "missing columns":
        without("final_accuracy")
    elif damage == "older layout":
        without("schema")
    else:
        runs.write_text("")
    for command in (["report", folder], ["compare", finished, folder]):
        result = bench(*command)
        assert result.returncode == 2 and words in error_line(result.stderr), (command, result.stderr)


# --- folders: never overwritten, never shared ----------------------------------------------------------------------


def test_a_folder_that_holds_a_run_is_never_overwritten(finished):
    before = (finished / "runs.csv").read_text()
    result = bench("run", "configs/smoke.toml", "--out", finished, "--quiet")
    assert result.returncode == 2 and "already holds a run: resume it with --resume" in error_line(result.stderr)
    assert (finished / "runs.csv").read_text() == before


def test_a_folder_held_by_a_live_run_is_refused_naming_it(finished, tmp_path):
    import shutil

    finished = Path(shutil.copytree(finished, tmp_path / "copy"))  # its own copy: this test resumes it
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"host": os.uname().nodename, "pid": holder.pid, "time_utc": "2026-11-29T00:00:00+00:00",
                "command": ["bench.py", "run", "configs/full.toml"]}
        (finished / ".lock").write_text(json.dumps(lock))
        result = bench("run", "--resume", finished, "--quiet")
        line = error_line(result.stderr)
        assert result.returncode == 2 and f"process {holder.pid}" in line and "run configs/full.toml" in line
    finally:
        holder.kill()
        holder.wait()
    result = bench("run", "--resume", finished, "--quiet")  # its process is gone: the lock is taken over
    assert result.returncode == 0 and f"taking over {finished / '.lock'}" in result.stderr
    assert not (finished / ".lock").exists()


def test_default_folders_never_collide(tmp_path, monkeypatch):
    from harness.results import run_folder

    monkeypatch.setattr(run_folder, "RESULTS_DIR", tmp_path)
    made = [run_folder.RunFolder.create("same").directory for _ in range(3)]  # within one second
    assert len(set(made)) == 3 and all(d.is_dir() for d in made)


# --- resume: the same run, or a mix said out loud -------------------------------------------------------------------


def test_resume_refuses_flags_that_would_change_the_run(finished):
    result = bench("run", "--resume", finished, "--epochs", "5", "--frameworks", "numpy")
    line = error_line(result.stderr)
    assert result.returncode == 2 and "--frameworks, --epochs would change it" in line


def test_resume_keeps_every_sessions_provenance_and_refuses_a_changed_config(finished, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(finished, folder)
    (folder / "runs.csv").write_text((folder / "runs.csv").read_text().splitlines()[0] + "\n")  # nothing finished
    config = json.loads((folder / "config.json").read_text())
    config["seed"] = 7
    (folder / "config.json").write_text(json.dumps(config))
    refused = bench("run", "--resume", folder, "--quiet")
    line = error_line(refused.stderr)
    assert refused.returncode == 2 and "the resolved config (seed)" in line and "--allow-mixed" in line

    mixed = bench("run", "--resume", folder, "--quiet", "--allow-mixed")
    assert mixed.returncode == 0, mixed.stderr
    sessions = json.loads((folder / "environment.json").read_text())["sessions"]
    assert [s["session"] for s in sessions] == [1, 2] and sessions[0]["time_utc"] <= sessions[1]["time_utc"]
    assert sessions[1]["differs_from_first"] == ["the resolved config (seed)"]
    assert {r["session"] for r in rows(folder / "runs.csv")} == {"2"}
    assert "This folder mixes sessions" in (folder / "summary.md").read_text()


# --- an explicitly named data folder is used or refused -------------------------------------------------------------


def test_a_missing_data_folder_stops_the_run_in_one_sentence(tmp_path):
    result = bench("run", "configs/quick.toml", "--frameworks", "numpy", "--data-dir", tmp_path / "staged",
                   "--out", tmp_path / "run", "--quiet")  # stops before the ceilings: the data comes first
    line = error_line(result.stderr)
    assert result.returncode == 2 and f"{tmp_path / 'staged'}" in line and "does not exist" in line


# --- the table README.org shows ---------------------------------------------------------------------------------------


def table() -> str:
    """Run the cell faults and print what each records (python -m tests.test_faults)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result = bench("run", write_config(folder, CELL_FAULTS, timeout=4), "--out", folder / "run", "--quiet")
        found = {r["variant"]: r for r in rows(folder / "run" / "runs.csv")}
        lines = ["| fault | status | error recorded |", "|-|-|-|"]
        for variant in CELL_FAULTS:
            lines.append(f"| {variant} | {found[variant]['status']} | {found[variant]['error'][:100]} |")
        lines.append(f"\nexit code {result.returncode}; rows kept: {len(found)} of {len(CELL_FAULTS) + 1}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
