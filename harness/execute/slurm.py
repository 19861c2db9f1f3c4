"""The SLURM executor: cells as one job array submitted with submitit, each job a whole node; results come back
through the shared file system.

The config's [slurm] table: `partition`, `time_limit_min` (each cell's job), `array_parallelism` (cells
at once; 0 = as many as the cluster gives), `sbatch` (any other sbatch option, e.g. account, qos,
constraint) and `folder` (submitit's folder on the shared file system; "" = <run folder>/slurm). Every
job asks for one whole node (--exclusive, one node, one task; one GPU on a GPU run), runs Python in the
batch step itself (an srun step would get one CPU), and takes the node's own environment
(--export=NONE: SLURM loads the user's environment on the node, not the submitting shell's), so
`threads = 0` means the node's cores. A job runs node.run_task, as a Ray task does.

The driver alone writes the run's files. Jobs write only under submitit's folder: submitit's pickles
and logs (jobs/), each host's record (hosts/), and each cell's start and worker events, one JSON line
each (progress/<index>.jsonl), which the driver reads for progress.

No cell is timed twice: jobs are submitted with --no-requeue, their function's checkpoint returns None
(so submitit does not requeue it after a preemption), and a job that finds its cell already started
(SLURM requeued it anyway) gives up. A job that ends without a result (its node failed, it was
cancelled, preempted or ran out of time) is recorded as `lost`, naming its node.

MNIST_BENCH_SUBMITIT=local runs the same code through submitit's LocalExecutor on this machine (the
tests do), one job at a time unless array_parallelism says more.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from harness.errors import UserError
from harness.execute.executor import Executor, Finished
from harness.execute.node import task_payload, write_log
from harness.execute.process import ROOT

POLL_S = 2.0
LOCAL = "MNIST_BENCH_SUBMITIT"  # =local: submitit's LocalExecutor on this machine, for tests


def _job():
    """The job's function, made here so that it is pickled by value: a node needs the repository at ROOT, not an
    importable copy of this module. Its checkpoint returns None, so submitit never requeues it."""

    class Job:
        def __call__(self, root: str, payload: dict, progress: str):
            import socket
            import sys
            from pathlib import Path

            if not (Path(root) / "harness" / "execute" / "node.py").is_file():
                return {"host": socket.gethostname(), "problem": f"there is no mnist-bench repository at {root}: "
                        "put the same checkout (and its .venv) at that path on the shared file system"}
            if root not in sys.path:
                sys.path.insert(0, root)
            from harness.execute import slurm

            return slurm.on_node_cell(payload, Path(progress))

        def checkpoint(self, *args, **kwargs):
            return None  # not requeued after a preemption: the cell is lost, never timed twice

    return Job()


# --- on the node ----------------------------------------------------------------------------------------------


def node_base(environ) -> dict[str, str]:
    """The node's own variables, less submitit's."""
    return {k: v for k, v in environ.items() if not k.startswith("SUBMITIT_")}


def on_node_cell(payload: dict, progress: Path) -> dict:
    """One cell on this node; its start and worker events go to `progress`, one JSON line each."""
    from harness.execute.node import run_task

    host = socket.gethostname()
    if progress.exists():  # this cell's job ran before and was requeued: never time a cell twice
        return {"host": host, "requeued": progress.read_text().splitlines()[0]}
    progress.parent.mkdir(parents=True, exist_ok=True)
    with progress.open("a") as lines:

        def report(event: dict) -> None:
            lines.write(json.dumps(event, default=float) + "\n")
            lines.flush()

        report({"event": "started", "host": host, "node": {"host": host, "job": os.environ.get("SLURM_JOB_ID", ""),
                                                           "pid": os.getpid()}})
        return run_task(payload, node_base(os.environ), report)


# --- on the driver --------------------------------------------------------------------------------------------


class Progress:
    """What one job has reported so far in its progress file, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.node = path, 0, None

    def read(self) -> list[dict]:
        try:
            with self.path.open() as f:
                f.seek(self.offset)
                text = f.read()
        except OSError:
            return []
        complete = text[:text.rfind("\n") + 1]  # a line still being written waits for the next look
        self.offset += len(complete)
        events = [json.loads(line) for line in complete.splitlines() if line.strip()]
        for event in events:
            if event["event"] == "started":
                self.node = event["node"]
        return events


class SlurmExecutor(Executor):
    name = "slurm"
    remote = True

    def __init__(self, settings: dict, run_folder: Path, probe: dict, device: str) -> None:
        self.settings, self.device = settings, device
        self.local = os.environ.get(LOCAL) == "local"
        base = Path(settings["folder"]) / run_folder.name if settings["folder"] else Path(run_folder) / "slurm"
        self.folder = base / probe.get("token", "run")
        self.probe = {**probe, "markers": str(self.folder / "hosts")}
        self.running: dict[int, object] = {}  # task index -> submitit job

    def _submitter(self):
        import submitit

        python = self.settings["python"] or None
        limit = self.settings["time_limit_min"]
        if self.local:
            executor = submitit.LocalExecutor(self.folder / "jobs", max_num_timeout=0, python=python)
            executor.update_parameters(timeout_min=limit)
            return executor
        if not shutil.which("sbatch"):
            raise UserError("sbatch is not on PATH: --executor slurm submits from a SLURM login node "
                            f"({LOCAL}=local runs the same path on this machine)")
        executor = submitit.SlurmExecutor(self.folder / "jobs", max_num_timeout=0, python=python)
        options = {"no-requeue": True, "export": "NONE", **self.settings["sbatch"]}
        parameters = {"job_name": "mnist-bench", "time": limit, "nodes": 1, "ntasks_per_node": 1, "exclusive": True,
                      "use_srun": False, "additional_parameters": options}
        if self.settings["partition"]:
            parameters["partition"] = self.settings["partition"]
        if self.settings["array_parallelism"]:
            parameters["array_parallelism"] = self.settings["array_parallelism"]
        if self.device == "gpu":
            parameters["gpus_per_node"] = 1
        executor.update_parameters(**parameters)
        return executor

    def run(self, tasks, on_event=None):
        listed = list(tasks)
        if not listed:
            return
        submitter, job = self._submitter(), _job()
        progress = {i: Progress(self.folder / "progress" / f"{i}.jsonl") for i in range(len(listed))}

        def submit(indices: list[int]) -> None:
            payloads = [(str(ROOT), {"task": task_payload(listed[i]), "probe": self.probe}, str(progress[i].path))
                        for i in indices]
            if len(indices) > 1:
                with submitter.batch():  # one sbatch: a job array
                    jobs = [submitter.submit(job, *p) for p in payloads]
            else:
                jobs = [submitter.submit(job, *payloads[0])]
            if self.local:  # no network file system to wait for: a job without a result has none
                for one in jobs:
                    one._results_timeout_s = 1
            self.running.update(zip(indices, jobs))
            self._write_jobs(listed)

        waiting = list(range(len(listed)))
        at_once = (self.settings["array_parallelism"] or 1) if self.local else len(waiting)  # SLURM holds its own
        while waiting or self.running:
            if waiting and len(self.running) < at_once:
                batch, waiting = waiting[:at_once - len(self.running)], waiting[at_once - len(self.running):]
                submit(batch)
            for index in list(self.running):
                for event in progress[index].read():
                    if on_event:
                        on_event(listed[index], event)
                if self.running[index].done():
                    progress[index].read()
                    yield self._finished(self.running.pop(index), listed[index], progress[index].node)
            time.sleep(POLL_S if self.running else 0)

    def _write_jobs(self, listed: list) -> None:
        """The jobs of this session, for a person who wants to look at or cancel them (squeue, scancel)."""
        jobs = {listed[i].label: str(job.job_id) for i, job in self.running.items()}
        path = self.folder / "jobs.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**known, **jobs}, indent=1) + "\n")

    def _finished(self, job, task, identity: dict | None) -> Finished:
        from submitit.core.utils import UncompletedJobError

        host = (identity or {}).get("host", "")
        try:
            result = job.result()
        except UncompletedJobError as error:
            node = f"node {host}" if host else _job_nodes(job)
            sentence = (f"{node} ended SLURM job {job.job_id} without a result ({_state(job)}: {_first_line(error)}); "
                        f"the cell was not run again (--resume runs it); submitit's log: {job.paths.stderr}")
            write_log(task, f"\n{sentence}\n")
            return Finished(task, [], {"status": "lost", "error": sentence}, host, {"node": node})
        except Exception as error:  # noqa: BLE001 - submitit's FailedJobError and unpickling errors alike
            return Finished(task, [], {"status": "error", "error": _first_line(error, last=True)}, host)
        host = result.get("host", host)
        if result.get("requeued"):
            sentence = (f"SLURM requeued job {job.job_id} after it had started ({result['requeued']}); the cell was "
                        "not run again (--resume runs it)")
            return Finished(task, [], {"status": "lost", "error": sentence}, host, {"node": f"node {host}"})
        if result.get("problem"):
            return Finished(task, [], {"status": "error", "error": f"node {host}: {result['problem']}"}, host,
                            {"host_record": result.get("host_record")})
        write_log(task, result["log"])
        return Finished(task, result["events"], result["done"], host,
                        {"threads": result["threads"], "node": f"node {host}", "host_record": result["host_record"]})

    def close(self) -> None:
        """Cancel the jobs still queued or running (an interrupted sweep); finished ones are kept."""
        for job in self.running.values():
            try:
                job.cancel(check=False)
            except Exception as error:  # noqa: BLE001 - a job that cannot be cancelled is named, not fatal
                print(f"note: could not cancel SLURM job {job.job_id} ({error})", file=sys.stderr)
        self.running.clear()


def _state(job) -> str:
    try:
        return f"state {job.state}"
    except Exception:  # noqa: BLE001 - sacct may not answer: the state is only a detail of the message
        return "state unknown"


def _job_nodes(job) -> str:
    try:
        nodes = job.get_info().get("NodeList", "")
    except Exception:  # noqa: BLE001
        nodes = ""
    return f"node {nodes}" if nodes and nodes not in ("None assigned", "(null)") else "an unknown node"


def _first_line(error: BaseException, last: bool = False) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if last else lines[0]
