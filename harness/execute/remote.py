"""A session through a remote executor (Ray, SLURM): the nodes measure themselves, the driver writes the folder.

The driver (this process) keeps the run folder exactly as a local run does: it alone writes runs.csv,
epochs.csv, environment.json and logs/, atomically after each cell. It needs neither the dataset nor a
quiet CPU: each node checks its own data and measures its own environment and ceilings
(harness/execute/node.py). The session records the driver's facts, the executor, and each host's record
as it arrives (harness/results/hosts.py); every row names its host and machine.
"""

from __future__ import annotations

import os
import sys


def run_remote(config, folder, now: dict, data_dir: str | None, ray_address: str = "auto",
               progress: bool = True) -> None:
    """Probe the nodes the executor knows, start the session, and run the sweep through the executor."""
    from harness.execute.executor import make_executor
    from harness.execute.node import probe_spec
    from harness.results.hosts import HostBook, earlier_hosts
    from harness.runner import run_sweep
    from harness.tuning.sweep import planned

    book = HostBook(folder, earlier_hosts(folder.sessions()))
    token = f"{folder.directory.name}-s{len(folder.sessions()) + 1}-{os.getpid()}"
    probe = probe_spec(config, data_dir or config.data_dir or None, token, book.known())
    executor = make_executor(config, folder.directory, probe, ray_address)
    try:
        measured = executor.prepare()  # Ray: every node now, before any cell; SLURM: each node with its first cell
        folder.start_session({**now, "executor": config.executor, "hosts": {}})
        for host, record in measured.items():
            book.add(host, record)
        nodes = f", {len(measured)} node{'s' * (len(measured) != 1)} measured" if measured else ""
        print(f"{planned(config)} -> {folder.directory} through {config.executor}{nodes}", file=sys.stderr)
        run_sweep(config, folder, probe["data_dir"], progress=progress, executor=executor, hosts=book)
    finally:
        executor.close()
