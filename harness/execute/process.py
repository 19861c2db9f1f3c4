"""The worker process: its protocol, its environment, and the wrapper every caller starts it through.

A worker is `python -m harness.execute.worker` with a job as JSON on stdin. It reports on stdout
in lines starting with EVENT_PREFIX (anything a framework prints is kept in the worker's log,
never mistaken for a result). The runner's cells, parity, the ceiling and op-floor probes and the
GPU check all start it through WorkerProcess, with the environment worker_environment gives, so
every measurement runs under the same rules (docs/DESIGN.md, "Fairness rules"): threads,
affinity, BLAS kernel, allocator, and what the worker may see of a GPU.
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

ROOT = Path(__file__).resolve().parents[2]
EVENT_PREFIX = "@@mnist-bench "


# --- the worker's side ----------------------------------------------------------------------------------------


def emit(event: str, **fields) -> None:
    """One event for the process that started this worker."""
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}, default=float), flush=True)


def die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies, however it dies (it runs in its own session)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's own cleanup still stops the worker


def pin_threads(threads: int) -> None:
    """Restrict the process to `threads` cores, so frameworks that ignore thread flags are held equal too."""
    cores = sorted(os.sched_getaffinity(0))
    if threads < len(cores):
        os.sched_setaffinity(0, cores[:threads])


# --- the environment ------------------------------------------------------------------------------------------


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


def worker_environment(config, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every worker of a run: `base` (this process's), the threads, the allocator, the BLAS
    choice and the device's settings (harness/devices.py: a CPU cell sees no GPU, a GPU cell computes in float32)."""
    base = dict(os.environ if base is None else base)
    env = {**ALLOCATOR, **base, **thread_env(config.threads), "PYTHONUNBUFFERED": "1"}
    env.update(devices.worker_variables(config.device, base))
    if config.blas == "native":
        for name in OPENBLAS_OVERRIDES:
            env.pop(name, None)
    return env


# --- the parent's side ----------------------------------------------------------------------------------------


class WorkerProcess:
    """One worker process: sends the job, yields its events, keeps everything else in the worker's log.

    With `max_rss_mb`, a watcher reads the worker's resident memory ten times a second and kills it
    past the cap (the status is then "oom"): a cell that would exhaust the machine is stopped alone.
    """

    def __init__(self, job: dict, log_path: Path, env: dict[str, str], max_rss_mb: float = 0) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path, self.max_rss_mb = log_path, max_rss_mb
        self.log = log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.execute.worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the parent, which stops the worker itself
        )
        self.over_memory: float | None = None  # the resident MB at which the watcher stopped it
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if max_rss_mb:
            threading.Thread(target=self._watch_memory, args=(max_rss_mb,), daemon=True).start()
        self.process.stdin.write(json.dumps({"started": time.time(), **job}))  # setup_seconds counts from here
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
        """Yield event dicts until the worker exits; raise TimeoutError past the deadline (time.monotonic)."""
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
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def outcome(self, timeout_s: float) -> dict:
        """Wait for the worker to finish and stop it; its "done" event, or why there was none."""
        _, done = self.run(timeout_s)
        return done

    def run(self, timeout_s: float, on_event=None, timeout_error: str | None = None) -> tuple[list[dict], dict]:
        """Every event but the last, and the "done" event (or the failure that stood in for it).

        `on_event(event)` sees each event as it arrives; `timeout_error` is the sentence recorded when the
        worker runs past `timeout_s`.
        """
        events, done = [], {}
        try:
            for event in self.events(time.monotonic() + timeout_s):
                if on_event:
                    on_event(event)
                if event["event"] == "done":
                    done = event
                else:
                    events.append(event)
        except TimeoutError:
            done = {"status": "timeout", "error": timeout_error or f"ran past {timeout_s:g} s and was stopped"}
        finally:
            self.stop()
        return events, {k: v for k, v in done.items() if k != "event"} or self.failure()

    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else f"the worker exited with code {self.process.returncode} and printed nothing"

    def failure(self) -> dict:
        """Status and error of a worker that ended without its "done" event."""
        code = self.process.returncode
        if self.over_memory:
            return {"status": "oom", "error": f"used {self.over_memory:,.0f} MB, over max_rss_mb = "
                                              f"{self.max_rss_mb:g}, and was stopped"}
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = " (the kernel's out-of-memory killer, or another process)" if name == "SIGKILL" else ""
            return {"status": "crashed", "error": f"killed by {name}{why}; last line: {self.last_error_line()}"}
        return {"status": "error" if code else "crashed", "error": self.last_error_line()}


def run_worker(job: dict, log_path: Path, env: dict[str, str], timeout_s: float, max_rss_mb: float = 0,
               on_event=None, timeout_error: str | None = None) -> tuple[list[dict], dict]:
    """Start a worker on the job, wait for it, and return (its events, its "done" event or failure)."""
    worker = WorkerProcess(job, log_path, env, max_rss_mb)
    return worker.run(timeout_s, on_event, timeout_error)
