"""What an executor is given and what it gives back: the one interface between planning and running.

The runner plans each cell as a Task (the worker's job, its log, its environment, its limits);
an executor runs tasks and yields a Finished for each as it ends, in whatever order they end.
Executors differ only in where the worker process runs (harness/execute/local.py: on this
machine, one after another); the worker and its environment are the same everywhere, so a
cell's timing does not depend on the executor.
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


@dataclass
class Finished:
    """What one task's worker reported: its events (setup, epochs) and its "done" event or failure."""

    task: Task
    events: list[dict]
    done: dict
    host: str = ""
    facts: dict = field(default_factory=dict)  # what the executor adds about where it ran


class Executor:
    """Runs tasks; `run` yields each one's Finished as it ends. Subclasses name themselves in `name`."""

    name = "executor"

    def run(self, tasks: Iterable[Task], on_event: Callable[[Task, dict], None] | None = None) -> Iterator[Finished]:
        raise NotImplementedError  # abstract
