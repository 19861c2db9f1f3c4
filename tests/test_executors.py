"""The remote executors for real: a Ray cluster on this machine, submitit's local executor, lost cells, merge.

A module-scoped Ray head (with the mnist_bench_slot resource, every address on 127.0.0.1) serves every
Ray test and is stopped at teardown, with every process it started. The SLURM path's code runs end to
end through submitit's LocalExecutor (MNIST_BENCH_SUBMITIT=local). A node is lost by killing the Ray
worker process (or submitit's job process) that runs a hanging cell.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = str(ROOT / "tests" / "adapters")
SLOT = "mnist_bench_slot"
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray on loopback addresses only: nothing leaves this machine
CONFIG = """
name = "{name}"
dataset = "synthetic"
frameworks = {frameworks}
models = {models}
threads = 1
batch_size = 32
timeout_s = {timeout}
ceilings = "{ceilings}"
matmul_size = 256
{variants}
[synthetic]
train = 256
eval = 128

[optimizer]
lr = 1e-2

[mlp]
epochs = 2
hidden = [32]
target_accuracy = 0.5

[cnn]
epochs = 2
channels = [8, 16]
dense = 32
target_accuracy = 0.5
"""


def write_config(folder: Path, name="exec", frameworks=("numpy",), models=("mlp", "cnn"), variants=None, timeout=60,
                 ceilings="off") -> Path:
    table = f"\n[variants]\nfaulty = {json.dumps(list(variants))}\n" if variants else ""
    path = folder / f"{name}.toml"
    path.write_text(CONFIG.format(name=name, frameworks=json.dumps(list(frameworks)), models=json.dumps(list(models)),
                                  variants=table, timeout=timeout, ceilings=ceilings))
    return path


def environ(**more) -> dict:
    return {**os.environ, **RAY_ENV, "MNIST_BENCH_ADAPTERS": ADAPTERS, **more}


def bench(*args, timeout=180, **more):
    return subprocess.run([sys.executable, "bench.py", *map(str, args)], cwd=ROOT, env=environ(**more),
                          capture_output=True, text=True, timeout=timeout)


def rows(folder: Path) -> list[dict]:
    with (folder / "runs.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def sessions(folder: Path) -> list[dict]:
    return json.loads((folder / "environment.json").read_text())["sessions"]


def error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    return errors[0]


SAME = ("framework", "variant", "backend", "model", "device", "repeat", "seed", "status", "epochs", "final_accuracy",
        "final_loss", "threads", "host", "machine", "steady_epochs", "params")


def same_rows(a: list[dict], b: list[dict]) -> None:
    """The rows two executors wrote are the same cells with the same results (timings aside)."""
    assert [{k: r[k] for k in SAME} for r in a] == [{k: r[k] for k in SAME} for r in b]


# --- processes ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children() -> dict[int, list[int]]:
    """parent pid -> its children's pids, from /proc."""
    found: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    tree, found, todo = children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cell_worker(log_name: str) -> int | None:
    """The pid of the worker process whose log (stderr) is `log_name`, if one runs now."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"harness.execute.worker" in cmdline.read_bytes() and \
                    os.readlink(cmdline.parent / "fd" / "2").endswith(log_name):
                return int(cmdline.parent.name)
        except OSError:
            continue
    return None


def command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_for(condition, seconds: float = 60, what: str = "the condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {seconds} s")


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head on this machine offering the slot once; its address. Stopped, with all it started, at the end."""
    pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    ports = {flag: str(free_port()) for flag in ("--ray-client-server-port", "--dashboard-port",
                                                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                 "--metrics-export-port")}
    start = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port),
               "--num-cpus", "2", "--resources", json.dumps({SLOT: 1}), "--include-dashboard=false",
               "--disable-usage-stats", "--temp-dir", temp, *[x for pair in ports.items() for x in pair]]
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 - open for the head's whole life
    head = subprocess.Popen(start, env=environ(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "Ray runtime started" in (Path(temp) / "head.log").read_text() or head.poll() is not None,
                 90, "the Ray head's start")
        assert head.poll() is None, (Path(temp) / "head.log").read_text()
        yield f"127.0.0.1:{port}"
    finally:
        started = {pid: command(pid) for pid in [head.pid, *descendants(head.pid)]}
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(5)
        for pid, cmdline in started.items():  # what is left of what the head started, and only that
            if cmdline and command(pid) == cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The config through the local executor: what every other executor must match."""
    folder = tmp_path_factory.mktemp("local")
    result = bench("run", write_config(folder), "--out", folder / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    return folder / "run"


@pytest.fixture(scope="module")
def ray_run(ray_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray")
    result = bench("run", write_config(folder), "--out", folder / "run", "--quiet", "--executor", "ray",
                   "--ray-address", ray_cluster)
    assert result.returncode == 0, result.stderr
    return folder / "run"


# --- Ray ------------------------------------------------------------------------------------------------------


def test_ray_writes_the_rows_the_local_executor_writes(local_run, ray_run):
    same_rows(rows(local_run), rows(ray_run))
    assert {r["status"] for r in rows(ray_run)} == {"ok"} and rows(ray_run)[0]["host"] == socket.gethostname()
    assert json.loads((ray_run / "config.json").read_text())["executor"] == "ray"
    [session] = sessions(ray_run)
    assert session["executor"] == "ray" and list(session["hosts"]) == [socket.gethostname()]
    host = session["hosts"][socket.gethostname()]
    assert host["machine"] == rows(ray_run)[0]["machine"] == sessions(local_run)[0]["machine"]
    assert host["ray_node"]["ip"] == "127.0.0.1"
    # the node's environment is the local executor's: the same thread, BLAS and allocator variables
    assert host["worker_environment_variables"] == sessions(local_run)[0]["worker_environment_variables"]
    assert (ray_run / "logs" / "numpy-numpy-mlp-cpu-0.log").exists()
    assert "Machines" in (ray_run / "summary.md").read_text()


def test_a_killed_ray_worker_records_the_cell_lost_naming_the_node_and_the_sweep_goes_on(ray_cluster, tmp_path):
    config = write_config(tmp_path, frameworks=("faulty", "numpy"), models=("mlp",), variants=["hang"])
    out = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "bench.py", "run", str(config), "--out", str(out), "--quiet",
                               "--executor", "ray", "--ray-address", ray_cluster], cwd=ROOT, env=environ(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        worker = wait_for(lambda: cell_worker("faulty-hang-mlp-cpu-0.log"), 60, "the hanging cell's start")
        ray_worker = parent_of(worker)
        assert Path(f"/proc/{ray_worker}/cmdline").read_bytes().startswith(b"ray::")
        os.kill(ray_worker, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 0, stderr
    found = {r["variant"]: r for r in rows(out)}
    lost = found["hang"]
    assert lost["status"] == "lost" and lost["host"] == socket.gethostname()
    assert f"node {socket.gethostname()} (127.0.0.1" in lost["error"] and "not run again" in lost["error"]
    assert found["numpy"]["status"] == "ok"  # the sweep went on
    assert time.monotonic() - killed < 60
    wait_for(lambda: cell_worker("faulty-hang-mlp-cpu-0.log") is None, 10, "the cell worker's end")
    from harness.results.run_folder import RunFolder

    resumed = RunFolder.existing(out)
    resumed.keep_finished()
    assert {r["variant"] for r in resumed.runs} == {"numpy"}  # --resume runs the lost cell again


def test_a_dead_driver_leaves_a_folder_that_resume_finishes_through_ray(ray_cluster, tmp_path):
    config = write_config(tmp_path, frameworks=("faulty", "numpy"), models=("mlp",), variants=["slow"])
    out = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "bench.py", "run", str(config), "--out", str(out), "--quiet",
                               "--executor", "ray", "--ray-address", ray_cluster], cwd=ROOT, env=environ(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: cell_worker("faulty-slow-mlp-cpu-0.log"), 60, "the first cell's start")
    driver.kill()  # SIGKILL: no cleanup of any kind
    driver.wait()
    wait_for(lambda: cell_worker("faulty-slow-mlp-cpu-0.log") is None, 30, "Ray ending the dead driver's task")
    refused = bench("run", "--resume", out, "--executor", "local")
    assert "--executor" in error_line(refused.stderr) and refused.returncode == 2
    resumed = bench("run", "--resume", out, "--quiet", "--ray-address", ray_cluster)
    assert resumed.returncode == 0, resumed.stderr
    assert {(r["variant"], r["status"]) for r in rows(out)} == {("slow", "ok"), ("numpy", "ok")}
    assert [s.get("executor") for s in sessions(out)] == ["ray", "ray"]


def test_a_ray_address_nothing_answers_on_is_refused_in_one_sentence(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")
    result = bench("run", write_config(tmp_path), "--out", tmp_path / "run", "--executor", "ray", "--ray-address",
                   f"127.0.0.1:{free_port()}", timeout=60)
    assert result.returncode == 2 and "no Ray cluster answers at --ray-address 127.0.0.1:" in error_line(result.stderr)


# --- SLURM through submitit -----------------------------------------------------------------------------------


def test_the_slurm_path_runs_end_to_end_through_submitit(local_run, tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed: pip install -e '.[slurm]'")
    out = tmp_path / "run"
    result = bench("run", write_config(tmp_path), "--out", out, "--quiet", "--executor", "slurm",
                   MNIST_BENCH_SUBMITIT="local")
    assert result.returncode == 0, result.stderr
    same_rows(rows(local_run), rows(out))
    [session] = sessions(out)
    assert session["executor"] == "slurm" and list(session["hosts"]) == [socket.gethostname()]
    [jobs] = (out / "slurm").glob("*/jobs.json")
    assert len(json.loads(jobs.read_text())) == 2  # one job per cell
    assert (jobs.parent / "hosts" / f"{socket.gethostname()}.json").exists()


def test_a_slurm_job_that_dies_records_its_cell_lost(tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed: pip install -e '.[slurm]'")
    config = write_config(tmp_path, frameworks=("faulty", "numpy"), models=("mlp",), variants=["hang"])
    out = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "bench.py", "run", str(config), "--out", str(out), "--quiet",
                               "--executor", "slurm"], cwd=ROOT, env=environ(MNIST_BENCH_SUBMITIT="local"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        worker = wait_for(lambda: cell_worker("faulty-hang-mlp-cpu-0.log"), 60, "the hanging cell's start")
        os.kill(parent_of(worker), signal.SIGKILL)  # the job's own process, as a node failure ends it
        _, stderr = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 0, stderr
    found = {r["variant"]: r for r in rows(out)}
    assert found["hang"]["status"] == "lost" and f"node {socket.gethostname()}" in found["hang"]["error"]
    assert found["numpy"]["status"] == "ok"


def test_each_row_is_judged_against_the_ceilings_of_the_host_that_ran_it(tmp_path):
    """Two hosts with different ceilings: each row's efficiency and machine are its own host's."""
    from harness.config import load_config
    from harness.execute.executor import Finished, Task
    from harness.results.hosts import HostBook
    from harness.runner import record

    config = load_config(write_config(tmp_path), {"models": ["mlp"]})
    [cell] = config.cells()
    book = HostBook()
    for host, gflops in (("fast", 200.0), ("slow", 50.0)):
        library = {"status": "ok", "gflops": gflops}
        book.add(host, {"machine": f"machine-{host}", "matmul": {"libraries": {"numpy": library},
                                                                 "peak": {"library": "numpy", "gflops": gflops}}})
    epoch = {"event": "epoch", "train_seconds": 0.5, "samples": 256, "eval_loss": 1.0, "eval_accuracy": 0.6,
             "eval_seconds": 0.1, "train_loss": 1.0, "step": 8, "steps_per_epoch": 8, "end_of_epoch": True}
    events = [{"event": "setup", "setup_seconds": 1.0, "backend": "openblas", "eval_split": "test",
               "import_rss_mb": 30.0}, {**epoch, "epoch": 1}, {**epoch, "epoch": 2}]
    task = Task(cell.key, cell.label, {}, tmp_path / "log", {}, 60)
    judged = {}
    for host in ("fast", "slow"):
        run, _ = record(cell, config, Finished(task, events, {"status": "ok"}, host, {"threads": 2}),
                        book.ceilings(host), book.machine(host))
        judged[host] = run
    assert judged["fast"]["ceiling_gflops"] == 200.0 and judged["slow"]["ceiling_gflops"] == 50.0
    assert judged["slow"]["ceiling_fraction"] == pytest.approx(4 * judged["fast"]["ceiling_fraction"])
    assert (judged["fast"]["machine"], judged["slow"]["host"], judged["slow"]["threads"]) == ("machine-fast", "slow", 2)


# --- merge and compare across machines ------------------------------------------------------------------------


def other_machine(run: Path, folder: Path, machine: str = "0123456789ab") -> Path:
    """A copy of a run whose rows say they ran on another machine."""
    copy = folder / f"on-{machine}"
    shutil.copytree(run, copy)
    text = (copy / "runs.csv").read_text()
    (copy / "runs.csv").write_text(text.replace(rows(run)[0]["machine"], machine))
    return copy


def test_merge_refuses_clashing_rows_unless_told_which_wins_and_keeps_provenance(local_run, ray_run, tmp_path):
    clash = bench("merge", local_run, ray_run, "--out", tmp_path / "refused")
    assert clash.returncode == 2 and "--prefer" in error_line(clash.stderr)
    assert not (tmp_path / "refused" / "runs.csv").exists()
    merged = tmp_path / "last"
    assert bench("merge", local_run, ray_run, "--out", merged, "--prefer", "last").returncode == 0
    kept = rows(merged)
    assert [r["final_accuracy"] for r in kept] == [r["final_accuracy"] for r in rows(ray_run)]
    merged_sessions = sessions(merged)
    assert [s["source"]["folder"] for s in merged_sessions] == [str(local_run), str(ray_run)]
    assert {r["session"] for r in kept} == {"2"} and merged_sessions[1]["executor"] == "ray"
    first = bench("merge", local_run, ray_run, "--out", tmp_path / "first", "--prefer", "first")
    assert first.returncode == 0 and {r["session"] for r in rows(tmp_path / "first")} == {"1"}


def test_merge_of_two_machines_keeps_every_row_and_groups_them_by_machine(local_run, tmp_path):
    elsewhere = other_machine(local_run, tmp_path)
    merged = tmp_path / "merged"
    result = bench("merge", local_run, elsewhere, "--out", merged)
    assert result.returncode == 0, result.stderr
    assert len(rows(merged)) == 2 * len(rows(local_run))
    assert {r["machine"] for r in rows(merged)} == {rows(local_run)[0]["machine"], "0123456789ab"}
    summary = (merged / "summary.md").read_text()
    assert "| machine" in summary and "0123456789ab" in summary and "Merged by bench.py merge" in summary
    resumed = bench("run", "--resume", merged)
    assert "merge" in error_line(resumed.stderr)


def test_merge_refuses_runs_of_other_settings(local_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(local_run, other)
    config = json.loads((other / "config.json").read_text())
    config["batch_size"] = 64
    (other / "config.json").write_text(json.dumps(config))
    result = bench("merge", local_run, other, "--out", tmp_path / "merged")
    assert result.returncode == 2 and "batch_size" in error_line(result.stderr)


def test_compare_refuses_rows_of_different_machines_unless_asked(local_run, tmp_path):
    elsewhere = other_machine(local_run, tmp_path)
    refused = bench("compare", local_run, elsewhere)
    assert refused.returncode == 2 and "--across-machines" in error_line(refused.stderr)
    across = bench("compare", local_run, elsewhere, "--across-machines")
    assert across.returncode == 0 and "different machines are set side by side" in across.stdout
    assert "same" in across.stdout
    same = bench("compare", local_run, local_run)
    assert same.returncode == 0 and "| machine" in same.stdout and "side by side" not in same.stdout


# --- the config's executor ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "words"), [
    ({"executor": "dask"}, "executor = 'dask' must be one of 'local', 'ray', 'slurm'"),
    ({"executor": "ray", "device": "auto"}, "with executor = 'ray' set device to 'cpu' or 'gpu'"),
    ({"executor": "slurm", "timeout_s": 3600, "slurm": {"time_limit_min": 30}}, "slurm.time_limit_min = 30 ends"),
    ({"slurm": {"sbatch": {"account": ["a"]}}}, "slurm.sbatch"),
    ({"slurm": {"nodes": 2}}, "unknown key slurm.'nodes'"),
])
def test_executor_settings_are_checked_in_one_sentence(values, words):
    from harness.config import ConfigError, resolve

    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        resolve({"dataset": "synthetic", "frameworks": ["numpy"], **values}, "exec")


def test_threads_0_means_each_nodes_own_cores_for_a_remote_executor():
    from harness.config import available_cpus, resolve

    def threads(executor: str) -> int:
        return resolve({"dataset": "synthetic", "frameworks": ["numpy"], "executor": executor}, "exec").threads

    assert threads("local") == available_cpus() and threads("ray") == threads("slurm") == 0
    from harness.execute.node import node_environment, usable_cores

    env, resolved = node_environment({"threads": 0, "device": "cpu", "blas": "environment"}, {"PATH": "/node/bin"})
    assert resolved == usable_cores() and env["OMP_NUM_THREADS"] == str(usable_cores()) and env["PATH"] == "/node/bin"
