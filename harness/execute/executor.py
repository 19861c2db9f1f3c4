"""What an executor is given and what it gives back: the one interface between planning and running.

The runner plans each cell as a Task (the worker's job, its log, its environment, its limits);
an executor runs tasks and yields a Finished for each as it ends, in whatever order they end.
Executors differ only in where the worker process runs (local.py: on this machine, one after
another; ray.py: Ray tasks on a cluster's nodes; slurm.py: a SLURM job array through submitit);
the worker and its environment rules are the same everywhere (a remote executor builds the
environment on the node, from the node's own variables: node.py), so a cell's timing does not
depend on the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Task:
    """One worker's work: the job it reads on stdin, and how it is run."""

    key: tuple  # the cell's key (harness.config.Cell.key): what the runner records it under
    label: str  # for progress lines
    job: dict
    log_path: Path
    env: dict[str, str]
    timeout_s: float
    max_rss_mb: float = 0
    timeout_error: str | None = None  # the sentence recorded when it runs past timeout_s
    # What the worker's environment follows from (threads, device, blas): a remote executor builds the
    # environment on the node from these and the node's own variables, never from `env`, which is this machine's.
    settings: dict = field(default_factory=dict)


@dataclass
class Finished:
    """What one task's worker reported: its events (setup, epochs) and its "done" event or failure."""

    task: Task
    events: list[dict]
    done: dict
    host: str = ""
    # What the executor adds about where it ran: "threads" (what the worker ran with), "node" (the node as the
    # executor names it, for messages), "host_record" (the host's environment and ceilings, measured there).
    facts: dict = field(default_factory=dict)


class Executor:
    """Runs tasks; `run` yields each one's Finished as it ends. Subclasses name themselves in `name`.

    `on_event(task, event)` sees each worker event as it arrives, and {"event": "started", "host": ...} when a
    task starts on a host, so progress can show what runs where.
    """

    name = "executor"
    remote = False  # whether tasks run on other machines (each node then measures and describes itself)

    def prepare(self) -> dict[str, dict]:
        """Before any cell: the host records measured on every node known now (host -> record); {} if none is."""
        return {}

    def run(self, tasks: Iterable[Task], on_event: Callable[[Task, dict], None] | None = None) -> Iterator[Finished]:
        raise NotImplementedError  # abstract

    def close(self) -> None:
        """Stop whatever still runs (an interrupted sweep) and let go of the cluster."""


def make_executor(config, folder: Path, probe: dict | None = None, ray_address: str = "auto") -> Executor:
    """The config's executor; `probe` (harness/execute/node.py's probe_spec) tells a remote one's nodes how to
    describe themselves. Ray and submitit are imported only here, when asked for."""
    if config.executor == "ray":
        from harness.execute.ray import RayExecutor

        return RayExecutor(ray_address, probe or {}, config.device)
    if config.executor == "slurm":
        from harness.execute.slurm import SlurmExecutor

        return SlurmExecutor(config.slurm, folder, probe or {}, config.device)
    from harness.execute.local import LocalExecutor

    return LocalExecutor()
