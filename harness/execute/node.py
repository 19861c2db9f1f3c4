"""What a remote executor (Ray, SLURM) runs on a benchmark node: the host's record once, then each cell's worker.

The worker and its environment rules are the local executor's (harness/execute/process.py); only the
variables they are applied to differ: the node's own (the executor first removes what it added itself,
such as Ray's OMP_NUM_THREADS), never the driver's PATH, HOME or thread settings. `threads = 0` means
the cores this node lets the task use (its CPU affinity there), and each row records what it ran with.

A host's record is measured once per host and session, by whichever task comes first (Ray's probe
task per node, or a node's first cell): environment.collect's facts on the node, its machine
fingerprint, and its ceilings (unless the driver already holds them for this machine from an earlier
session), after checking that the node can run cells at all. A node needs:
  - the repository at the driver's path (the same checkout, or a shared file system), and the same
    Python environment (`ray start` run from .venv; for SLURM the driver's Python, or slurm.python);
  - the dataset where the worker looks for it: the folder named by --data-dir / data_dir (the same
    path on every node) or by the node's MNIST_BENCH_DATA, else the node's cache
    (~/.cache/mnist-bench or MNIST_BENCH_CACHE, filled by `bench.py fetch`); the synthetic set needs nothing.
What is missing is said in one sentence, naming the host.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace

from harness.execute.process import run_worker, worker_environment

LOG_TAIL = 1 << 20  # the most of a cell's log a node sends back (the driver writes it into logs/)


def probe_spec(config, data_dir: str | None, token: str, known: dict[str, str], markers: str | None = None) -> dict:
    """What a node needs to describe itself: the resolved config, the data folder the user named (None: the node's
    own), the run's token, the hosts whose ceilings the driver holds (host -> machine), and where hosts' records
    are kept between tasks (None: the node's temporary folder)."""
    folders = sorted({str(config.adapters[name].path.parent) for name in config.frameworks})
    return {"config": config.values, "name": config.name, "adapter_folders": folders, "data_dir": data_dir,
            "token": token, "known": known, "markers": markers}


def task_payload(task) -> dict:
    """A Task as a node receives it: no path or environment of this machine."""
    return {"job": task.job, "log_name": task.log_path.name, "timeout_s": task.timeout_s,
            "max_rss_mb": task.max_rss_mb, "timeout_error": task.timeout_error, "settings": task.settings}


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def node_environment(settings: dict, base: dict[str, str]) -> tuple[dict[str, str], int]:
    """The worker's environment on this node (the rules applied to the node's variables) and its thread count."""
    threads = settings.get("threads") or usable_cores()
    rules = SimpleNamespace(threads=threads, device=settings.get("device", "cpu"),
                            blas=settings.get("blas", "environment"))
    return worker_environment(rules, base), threads


def node_config(probe: dict, threads: int):
    """The run's config resolved on this node, with its adapters and the node's thread count."""
    from harness.adapter import discover
    from harness.config import resolve, with_values

    adapters = discover()
    for folder in probe["adapter_folders"]:
        adapters.update(discover(Path(folder)))
    return with_values(resolve(dict(probe["config"]), probe["name"], adapters=adapters), threads=threads)


def data_problem(probe: dict) -> str | None:
    """Why this node cannot read the run's dataset (one sentence), or None. Verifies the files once per host."""
    dataset = probe["config"]["dataset"]
    if dataset == "synthetic":
        return None
    from harness import data
    from harness.errors import UserError

    try:
        data.locate(dataset, data_dir=probe["data_dir"], allow_download=False)
    except (UserError, OSError) as error:
        return str(error)
    return None


def markers(probe: dict) -> Path:
    """Where this run's host records are kept between tasks on this node (shared by SLURM's nodes)."""
    return Path(probe["markers"]) if probe.get("markers") else Path(tempfile.gettempdir()) / "mnist-bench" / \
        probe["token"]


def measure_host(probe: dict, base: dict[str, str]) -> dict:
    """This host's record: its facts and machine fingerprint, why it cannot run cells, and its ceilings."""
    from harness.execute import ceilings
    from harness.results import environment

    threads = probe["config"]["threads"] or usable_cores()
    config = node_config(probe, threads)
    facts = environment.collect(threads, worker_environment(config, base), None, config)
    facts["machine"] = environment.machine(facts)
    problem = data_problem(probe)
    if problem:
        facts["problem"] = problem
    elif probe["known"].get(facts["host"]) != facts["machine"]:  # a machine the driver holds no ceilings for
        facts["matmul"] = ceilings.measure(config, markers(probe) / f"{facts['host']}-ceilings", progress=False)
        facts["matmul_measured"] = True
    return facts


def host_record(probe: dict, base: dict[str, str]) -> dict:
    """This host's record, measured by the first task of the session that runs here and kept for the others."""
    path = markers(probe) / f"{socket.gethostname()}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    record = measure_host(probe, base)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(record, default=str))
    os.replace(temporary, path)
    return record


def run_task(payload: dict, base: dict[str, str], report=None) -> dict:
    """One cell on this node: its host's record, then its worker; what the driver turns into a Finished.

    `report(event)` sees each worker event as it arrives (for the driver's progress).
    """
    task, probe = payload["task"], payload["probe"]
    record = host_record(probe, base)
    host = record["host"]
    if record.get("problem"):
        return {"host": host, "host_record": record, "problem": record["problem"]}
    env, threads = node_environment(task["settings"], base)
    job = {**task["job"], "config": {**task["job"]["config"], "threads": threads}}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-cell-") as folder:
        log = Path(folder) / task["log_name"]
        events, done = run_worker(job, log, env, task["timeout_s"], task["max_rss_mb"], report, task["timeout_error"])
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - LOG_TAIL))
            text = f.read().decode(errors="replace")
    return {"host": host, "threads": threads, "events": events, "done": done, "log": text, "host_record": record}


def write_log(task, text: str) -> None:
    """The driver's side: what the node sent back of a cell's log, in the run folder's logs/."""
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
    with task.log_path.open("a") as f:
        f.write(text)
