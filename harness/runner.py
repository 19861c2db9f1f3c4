"""Plans the cells, runs each in a fresh worker process, and streams the records to disk.

A cell that raises, crashes or runs past timeout_s is recorded with its status and the
last line of its error, and the sweep goes on. Records are written after every cell,
so Ctrl-C or a crash loses nothing that finished; `--resume DIR` carries on.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import devices
from harness.config import Cell, Config
from harness.results import ROOT, summarise_run
from harness.run_folder import RunFolder
from harness.worker import EVENT_PREFIX


def thread_env(threads: int) -> dict[str, str]:
    """The same thread count for every framework, set before any of them is imported."""
    n = str(threads)
    names = ("OMP", "MKL", "OPENBLAS", "BLIS", "NUMEXPR")
    env = {f"{name}_NUM_THREADS": n for name in names}
    env.update(TF_NUM_INTRAOP_THREADS=n, TF_NUM_INTEROP_THREADS=n, TF_CPP_MIN_LOG_LEVEL="2", MNIST_BENCH_THREADS=n)
    return env


# Set on some machines to steer OpenBLAS to a conservative kernel; blas = "native" lets it pick its own.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# glibc hands freed buffers above a moving threshold back to the OS, so a framework that frees its
# activations every step page-faults them in again at the next one. Whether it did depended on what
# had run before: an evaluation (large buffers, freed) raises the threshold, after which PyTorch's CNN
# trained 1.8x faster here. Fixed thresholds give every cell the same allocator whatever ran before;
# a user's own settings of these variables are kept.
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def worker_environment(config: Config) -> dict[str, str]:
    """The environment of every worker of a run: this one, the threads, the allocator, the BLAS choice and
    the device's settings (harness/devices.py: a CPU cell sees no GPU, a GPU cell computes in float32)."""
    env = {**ALLOCATOR, **os.environ, **thread_env(config.threads), "PYTHONUNBUFFERED": "1"}
    env.update(devices.worker_variables(config.device, os.environ))
    if config.blas == "native":
        for name in OPENBLAS_OVERRIDES:
            env.pop(name, None)
    return env


def prepare_data(config: Config, data_dir: str | None) -> str | None:
    """Find (or fetch) the dataset once, in this process, verified, and warm the array cache for the workers.

    A folder the user named is verified here or the run stops; the workers then trust the cache.
    """
    if config.dataset == "synthetic":
        return None
    from harness import data

    folder = data.locate(config.dataset, data_dir=data_dir or config.data_dir or None)
    data.load(config.dataset, data_dir=folder, allow_download=False, verified=True)  # fills the caches workers map
    return str(folder)


class CellProcess:
    """One worker process: sends the job, yields its events, keeps everything else in the cell's log.

    With `max_rss_mb`, a watcher reads the worker's resident memory ten times a second and kills it
    past the cap (the status is then "oom"): a cell that would exhaust the machine is stopped alone.
    """

    def __init__(self, job: dict, log_path: Path, env: dict[str, str], max_rss_mb: float = 0) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.log = log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the runner, which stops the worker itself
        )
        self.over_memory: float | None = None  # the resident MB at which the watcher stopped it
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if max_rss_mb:
            threading.Thread(target=self._watch_memory, args=(max_rss_mb,), daemon=True).start()
        self.process.stdin.write(json.dumps(job))
        self.process.stdin.close()

    def _watch_memory(self, cap_mb: float) -> None:
        status = Path(f"/proc/{self.process.pid}/status")
        while self.process.poll() is None:
            try:
                rss_mb = int(status.read_text().split("VmRSS:")[1].split()[0]) / 1024
            except (OSError, IndexError, ValueError):
                return  # gone, or no /proc here: nothing to watch
            if rss_mb > cap_mb:
                self.over_memory = rss_mb
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                return
            time.sleep(0.1)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def events(self, deadline: float):
        """Yield event dicts until the worker exits; raise TimeoutError past the deadline."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError from None
            if line is None:
                return
            if line.startswith(EVENT_PREFIX):
                yield json.loads(line[len(EVENT_PREFIX):])
            else:
                self.log.write(line)
                self.log.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def outcome(self, timeout_s: float) -> dict:
        """Wait for the worker to finish and stop it; its "done" event, or why there was none."""
        done = {}
        try:
            for event in self.events(time.monotonic() + timeout_s):
                done = event if event["event"] == "done" else done
        except TimeoutError:
            done = {"status": "timeout", "error": f"ran past {timeout_s:g} s and was stopped"}
        finally:
            self.stop()
        return done or self.failure()

    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else f"the worker exited with code {self.process.returncode} and printed nothing"

    def failure(self, max_rss_mb: float = 0) -> dict:
        """Status and error of a worker that ended without its "done" event."""
        code = self.process.returncode
        if self.over_memory:
            return {"status": "oom", "error": f"used {self.over_memory:,.0f} MB, over max_rss_mb = {max_rss_mb:g}, "
                                              "and was stopped"}
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = " (the kernel's out-of-memory killer, or another process)" if name == "SIGKILL" else ""
            return {"status": "crashed", "error": f"killed by {name}{why}; last line: {self.last_error_line()}"}
        return {"status": "error" if code else "crashed", "error": self.last_error_line()}


def run_cell(cell: Cell, config: Config, data_dir: str | None, folder: Path, on_epoch=None, ceilings=None):
    """Run one cell in its own process; return its runs.csv record and its epochs.csv rows.

    `ceilings` (harness/ceilings.py, measured before the cells) turns throughput into efficiency.
    """
    from harness.ceilings import efficiency

    spec = config.model(cell.model)
    settings = config.values[cell.model]
    identity = {"framework": cell.framework, "variant": cell.variant, "backend": "", "model": cell.model,
                "device": cell.device, "repeat": cell.repeat, "seed": cell.seed}
    info = config.adapters[cell.framework]
    facts = {"params": spec.param_count, "flops_per_sample": spec.flops_per_sample, "threads": config.threads,
             "optimizer_form": config.optimizer.form(info.adam_epsilon, info.sgd_momentum),
             "batch_size": config.batch_size, "dataset": config.dataset, "eval_split": config.eval_split}
    reason = config.adapters[cell.framework].unsupported(cell.model, cell.device, cell.variant)
    if reason:
        return {**identity, **facts, "status": "skipped", "error": reason}, []

    job = {"cell": cell.__dict__, "config": config.values, "data_dir": data_dir, "data_verified": True,
           "started": time.time(),
           "adapter": config.adapters[cell.framework].job(cell.variant)}
    log_name = f"{cell.framework}-{cell.variant}-{cell.model}-{cell.device}-{cell.repeat}.log"
    worker = CellProcess(job, folder / "logs" / log_name, worker_environment(config), config.max_rss_mb)
    epochs, done = [], {}
    try:
        for event in worker.events(time.monotonic() + config.timeout_s):
            if event["event"] == "setup":
                identity["backend"] = event["backend"]
                facts.update(setup_seconds=event["setup_seconds"], eval_split=event["eval_split"],
                             import_rss_mb=event["import_rss_mb"])
            elif event["event"] == "epoch":
                epochs.append(event)
                if on_epoch:
                    on_epoch(event["epoch"], settings["epochs"])
            elif event["event"] == "done":
                done = event
    except TimeoutError:
        done = {"status": "timeout", "error": f"the cell ran past timeout_s = {config.timeout_s} s and was stopped"}
    finally:
        worker.stop()
    if not done:
        done = worker.failure(config.max_rss_mb)
    run = summarise_run(identity, epochs, settings["target_accuracy"])
    run.update(facts)
    run.update({k: v for k, v in done.items() if k != "event"})
    run.update(efficiency(run, config.adapters[cell.framework].library(cell.variant), ceilings))
    rows = [{**identity, **e, "samples_per_second": e["samples"] / e["train_seconds"]} for e in epochs]
    return run, rows


def describe(run: dict) -> str:
    """One line per finished cell for the progress log."""
    label = f"{run['framework']}/{run['variant']} {run['model']} {run['device']} #{run['repeat']}"
    if run["status"] != "ok":
        return f"{label}: {run['status']}: {run.get('error', '')}"
    speed = run.get("samples_per_second")
    speed_text = f", {speed:,.0f} samples/s steady" if speed else ""
    return f"{label}: accuracy {run['final_accuracy']:.2%}, first epoch {run['first_epoch_seconds']:.1f} s{speed_text}"


def run_sweep(config: Config, folder: RunFolder, data_dir: str | None, progress: bool = True,
              ceilings: dict | None = None) -> None:
    """Every cell of the config not yet in the folder, each in its own process, written as it finishes.

    `data_dir` is what prepare_data returned: the verified folder (None for the synthetic set).
    """
    from tqdm import tqdm

    cells = config.cells()
    done = folder.finished_keys()
    todo = [c for c in cells if c.key not in done]
    with tqdm(total=len(cells), initial=len(cells) - len(todo), unit="cell", disable=not progress) as bar:
        for cell in todo:
            bar.set_description(cell.label)

            def on_epoch(epoch, total):
                bar.set_postfix_str(f"epoch {epoch}/{total}")

            run, rows = run_cell(cell, config, data_dir, folder.directory, on_epoch, ceilings)
            folder.add(run, rows)
            bar.set_postfix_str("")
            bar.update()
            bar.write(describe(run))
