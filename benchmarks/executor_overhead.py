"""One cell through the local executor and through Ray, side by side: does the executor change its timing?

    python benchmarks/executor_overhead.py [CONFIG] [--frameworks numpy] [--models mlp] [--rounds 3]
                                           [--threads N] [--ray-address HOST:PORT] [--out DIR]

Each round runs the cell once through `--executor local` and once through `--executor ray` (which goes
first alternates, so neither always runs on a warmer machine), each as a whole `bench.py run` of its
own. Without --ray-address, a Ray head offering the mnist_bench_slot resource is started on this
machine (every address on 127.0.0.1) and stopped at the end. Ceilings are off: only the cell is timed.

Per run it prints the steady samples/s, the first epoch, setup_seconds (the worker's own start: process,
imports, data, model), the wall time of the whole command, and what lies outside the cell's worker
(wall time less setup, training and evaluation: the driver's start, Ray's connection and the node's
probe, dispatch, the summary). The last lines give each executor's median, the ratio Ray/local and
compare's verdict on the throughput (harness/results/compare.differs: a change only beyond the noise).
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
SLOT = "mnist_bench_slot"
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray on 127.0.0.1 only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(cpus: int):
    """A Ray head on this machine offering the slot once; yields its address, stops what it started."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    flags = [x for flag in ("--ray-client-server-port", "--dashboard-port", "--dashboard-agent-listen-port",
                            "--dashboard-agent-grpc-port", "--metrics-export-port") for x in (flag, str(free_port()))]
    log = Path(temp) / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port",
                                 str(port), "--num-cpus", str(cpus), "--resources", json.dumps({SLOT: 1}),
                                 "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp, *flags],
                                env={**os.environ, **LOOPBACK}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Ray head did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def run_once(executor: str, args, out: Path, address: str | None) -> dict:
    """One `bench.py run` of the cell; its runs.csv row with the command's wall time."""
    command = [sys.executable, "bench.py", "run", args.config, "--frameworks", args.frameworks, "--models",
               args.models, "--repeats", "1", "--ceilings", "off", "--executor", executor, "--out", str(out), "--quiet"]
    if address:
        command += ["--ray-address", address]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, **LOOPBACK}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{executor} run failed:\n{result.stderr[-3000:]}")
    with (out / "runs.csv").open(newline="") as f:
        [row] = list(csv.DictReader(f))
    with (out / "epochs.csv").open(newline="") as f:
        worked = sum(float(e["train_seconds"]) + float(e["eval_seconds"]) for e in csv.DictReader(f))
    row.update(wall=wall, outside=wall - float(row["setup_seconds"]) - worked)
    return row


def table(results: list[tuple[str, int, dict]]) -> str:
    lines = ["| executor | round | steady samples/s | first epoch s | setup s | wall s | outside the cell s | host |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for executor, number, row in results:
        lines.append(f"| {executor} | {number} | {float(row['samples_per_second']):,.0f} | "
                     f"{float(row['first_epoch_seconds']):.2f} | {float(row['setup_seconds']):.2f} | "
                     f"{row['wall']:.1f} | {row['outside']:.1f} | {row['host']} |")
    return "\n".join(lines)


def summary(results: list[tuple[str, int, dict]]) -> str:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from harness.results.compare import differs

    def values(executor: str, column: str) -> np.ndarray:
        return np.array([float(r[column]) for e, _, r in results if e == executor])

    lines = ["", "| median over rounds | local | ray | ray / local |", "|---|---:|---:|---:|"]
    for column, name in (("samples_per_second", "steady samples/s"), ("first_epoch_seconds", "first epoch s"),
                         ("setup_seconds", "setup s"), ("wall", "wall s"), ("outside", "outside the cell s")):
        local, ray = np.median(values("local", column)), np.median(values("ray", column))
        lines.append(f"| {name} | {local:,.2f} | {ray:,.2f} | {ray / local:.3f} |")
    speed = differs(values("local", "samples_per_second"), values("ray", "samples_per_second"))
    lines += ["", f"compare's verdict on steady samples/s: {'different' if speed else 'same'} (beyond the noise "
              "of the rounds only when 'different')"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="configs/quick.toml")
    parser.add_argument("--frameworks", default="numpy")
    parser.add_argument("--models", default="mlp")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="threads per cell (default: the config's)")
    parser.add_argument("--ray-address", help="an existing cluster (default: a head started here for the runs)")
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="executor-overhead-"))
    with contextlib.ExitStack() as stack:
        address = args.ray_address or stack.enter_context(ray_head(len(os.sched_getaffinity(0))))
        results = []
        for number in range(1, args.rounds + 1):
            order = ("local", "ray") if number % 2 else ("ray", "local")
            for executor in order:
                row = run_once(executor, args, folder / f"{executor}-{number}", address if executor == "ray" else None)
                results.append((executor, number, row))
                print(f"{executor} round {number}: {float(row['samples_per_second']):,.0f} samples/s", file=sys.stderr)
    print(f"{args.frameworks} {args.models} of {args.config}, {args.rounds} rounds, runs in {folder}\n")
    print(table(results))
    print(summary(results))


if __name__ == "__main__":
    main()
