"""The local executor: every task on this machine, one after another, each in a fresh worker process.

One at a time, because two cells timed side by side on one machine would share its cores, caches
and memory bandwidth (docs/DESIGN.md, "Fairness rules").
"""

from __future__ import annotations

import socket

from harness.execute.executor import Executor, Finished
from harness.execute.process import run_worker


class LocalExecutor(Executor):
    name = "local"

    def run(self, tasks, on_event=None):
        host = socket.gethostname()
        for task in tasks:
            forward = (lambda event, task=task: on_event(task, event)) if on_event else None
            if forward:
                forward({"event": "started", "host": host})
            events, done = run_worker(task.job, task.log_path, task.env, task.timeout_s, task.max_rss_mb, forward,
                                      task.timeout_error)
            yield Finished(task, events, done, host, {"threads": task.settings.get("threads")})
