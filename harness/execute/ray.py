"""The Ray executor: each cell a Ray task on an existing cluster, one cell per node at a time.

Every benchmark node offers the custom resource SLOT once (`ray start ... --resources
'{"mnist_bench_slot": 1}'`) and every task asks for it, so a node runs one cell at a time whatever its
size. Tasks ask Ray for no CPUs (Ray would pin its own count into OMP_NUM_THREADS) and for one GPU
when the cells are on the GPU. A task runs node.run_task: the local executor's worker, with the
environment rules applied to the node's own variables, less what Ray adds to its workers (RAY_ADDED).

Before the first cell, one probe task pinned to each node with the slot measures that node (its
environment, machine fingerprint and ceilings) and checks it can run cells (the repository, the data);
a node that cannot stops the run in one sentence naming it. A node that joins later is measured by
its first cell's task.

A task whose worker process or node dies (any Ray error but RayTaskError, which is an exception our own
code raised) is recorded as `lost`, naming the node it ran on. Tasks are never retried
(max_retries = 0), so no cell is timed twice; --resume runs lost cells again. When no live node
has offered the slot for NO_NODE_S (the last one was lost), the driver stops (exit 1) rather than
wait for ever; --resume carries on once a node offers it again. A driver that dies takes
its tasks with it (Ray ends a job's tasks with its driver): --resume finishes the folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

from harness.errors import StoppedError, UserError
from harness.execute.executor import Executor, Finished
from harness.execute.node import task_payload, write_log
from harness.execute.process import ROOT

SLOT = "mnist_bench_slot"
POLL_S = 0.5
NODE_CHECK_S = 10  # how often the driver looks for live nodes offering the slot
NO_NODE_S = 300  # how long it waits for one when none is left, before stopping (--resume carries on)
RAY_ADDED = ("OMP_NUM_THREADS", "PYTHONBREAKPOINT", "SPT_NOENV")  # and every RAY_* variable
START_HINT = f"ray start --head --resources '{{\"{SLOT}\": 1}}'"


def _entry():
    """The function every task runs, made here so that it is pickled by value: a node needs the repository at
    ROOT, not an importable copy of this module, and one without it says so instead of failing to unpickle."""

    def entry(root: str, function: str, *args):
        import socket
        import sys
        from pathlib import Path

        if not (Path(root) / "harness" / "execute" / "node.py").is_file():
            return {"host": socket.gethostname(), "problem": f"there is no mnist-bench repository at {root}: put "
                    "the same checkout (and its .venv) at that path on every node, or on a shared file system"}
        if root not in sys.path:
            sys.path.insert(0, root)
        from harness.execute import ray as executor

        return getattr(executor, function)(*args)

    return entry


# --- on the node ----------------------------------------------------------------------------------------------


def node_base(environ) -> dict[str, str]:
    """The node's own variables: a Ray worker's, less what Ray set for itself."""
    return {k: v for k, v in environ.items() if not k.startswith("RAY_") and k not in RAY_ADDED}


def node_identity() -> dict:
    import ray

    return {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id()}


def on_node_probe(probe: dict) -> dict:
    from harness.execute.node import host_record

    return {**host_record(probe, node_base(os.environ)), "ray_node": node_identity()}


def on_node_cell(payload: dict, queue, index: int) -> dict:
    """One cell on this node; its start and its worker's events go to the driver through `queue` as they happen."""
    from harness.execute.node import run_task

    identity = node_identity()
    reporting = [True]

    def report(event: dict) -> None:  # progress only: a queue that is gone must not stop the cell
        if reporting[0]:
            try:
                queue.put_nowait((index, event))
            except Exception:  # noqa: BLE001 - any Ray error: the driver just sees less progress
                reporting[0] = False

    report({"event": "started", "host": identity["host"], "node": identity})
    return {**run_task(payload, node_base(os.environ), report), "ray_node": identity}


# --- on the driver --------------------------------------------------------------------------------------------


def node_name(identity: dict | None) -> str:
    if not identity:
        return "an unknown node (it died before the task reported its start)"
    return f"node {identity['host']} ({identity['ip']}, Ray node {identity['node_id'][:8]})"


class RayExecutor(Executor):
    name = "ray"
    remote = True

    def __init__(self, address: str, probe: dict, device: str) -> None:
        self.address, self.probe, self.device = address, probe, device
        self._remote = None
        self._pending: dict = {}  # object ref -> task index
        self._queue = None

    def _connect(self):
        import ray

        if self._remote is None:
            self._reachable()
            try:
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise UserError(f"no Ray cluster answers at --ray-address {self.address} ({first}): start one with "
                                f"`{START_HINT}` (README.org, \"Running on a cluster\"), or name its head") from None
            self._remote = ray.remote(_entry())
        return ray

    def _reachable(self) -> None:
        """Refuse at once a HOST:PORT that nothing listens on (Ray itself would keep retrying for minutes)."""
        host, _, port = self.address.rpartition(":")
        if self.address == "auto" or "://" in self.address or not port.isdigit():
            return
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
        except OSError as error:
            raise UserError(f"no Ray cluster answers at --ray-address {self.address} ({error.strerror or error}): "
                            f"start one with `{START_HINT}` (README.org, \"Running on a cluster\"), or name its "
                            "head") from None

    def nodes(self) -> list[dict]:
        """The live nodes that offer the slot (and a GPU, for GPU cells); UserError when there is none, or when a
        node offers the slot more than once (it would run cells side by side)."""
        ray = self._connect()
        found = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(SLOT, 0) >= 1]
        crowded = [n for n in found if n["Resources"][SLOT] != 1]
        if crowded:
            node = crowded[0]
            raise UserError(f"node {node.get('NodeManagerHostname')} offers {SLOT} = {node['Resources'][SLOT]:g}, so "
                            f"it would run cells side by side: start it with --resources '{{\"{SLOT}\": 1}}'")
        if self.device == "gpu":
            found = [n for n in found if n.get("Resources", {}).get("GPU", 0) >= 1]
        if not found:
            what = "a GPU and " if self.device == "gpu" else ""
            raise UserError(f"the Ray cluster at {self.address} has no node offering {what}the {SLOT} resource: "
                            f"start each benchmark node with `ray start --address HEAD:PORT --resources "
                            f"'{{\"{SLOT}\": 1}}'`")
        return found

    def _options(self, **more) -> dict:
        return {"num_cpus": 0, "num_gpus": 1 if self.device == "gpu" else 0, "resources": {SLOT: 1},
                "max_retries": 0, **more}

    def prepare(self) -> dict[str, dict]:
        """Measure every node with the slot (one probe task pinned to each); refuse naming any that cannot run."""
        ray = self._connect()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        refs = {}
        for node in self.nodes():
            pinned = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            refs[self._remote.options(**self._options(scheduling_strategy=pinned)).remote(
                str(ROOT), "on_node_probe", self.probe)] = node
        records, problems = {}, []
        for ref, node in refs.items():
            try:
                record = ray.get(ref)
            except ray.exceptions.RayError as error:
                problems.append(f"node {node.get('NodeManagerHostname')} ({node.get('NodeManagerAddress')}) failed "
                                f"its probe: {_first_line(error)}")
                continue
            if record.get("problem"):
                problems.append(f"node {record['host']}: {record['problem']}")
            else:
                records[record["host"]] = record
        if problems:
            raise UserError("; ".join(problems))
        return records

    def run(self, tasks, on_event=None):
        ray = self._connect()
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's own node: a node lost mid-cell must not take the progress queue with it
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self._queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        listed = list(tasks)
        for index, task in enumerate(listed):
            payload = {"task": task_payload(task), "probe": self.probe}
            ref = self._remote.options(**self._options()).remote(str(ROOT), "on_node_cell", payload, self._queue,
                                                                 index)
            self._pending[ref] = index
        started: dict[int, dict] = {}
        checked, alone_since = time.monotonic(), None
        while self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=POLL_S)
            self._drain(listed, started, on_event)
            if time.monotonic() - checked > NODE_CHECK_S:
                checked, alone_since = time.monotonic(), self._check_nodes(ray, alone_since)
            for ref in ready:
                index = self._pending.pop(ref)
                yield self._finished(ray, ref, listed[index], started.get(index))

    def _check_nodes(self, ray, alone_since: float | None) -> float | None:
        """Since when no live node offers the slot (None while one does); StoppedError once that lasts NO_NODE_S:
        the cells left would otherwise wait for a node for ever."""
        if any(n.get("Alive") and n.get("Resources", {}).get(SLOT) for n in ray.nodes()):
            return None
        alone_since = alone_since or time.monotonic()
        if time.monotonic() - alone_since > NO_NODE_S:
            raise StoppedError(f"no node of the Ray cluster at {self.address} has offered {SLOT} for {NO_NODE_S} s "
                               f"(the last one was lost), so {len(self._pending)} cells cannot run: every finished "
                               "row is kept; start a node and carry on with --resume")
        return alone_since

    def _drain(self, listed: list, started: dict, on_event) -> None:
        """Pass on what the nodes reported since the last look (starts and worker events); progress only, so a
        queue lost with its node costs the progress lines, not the sweep."""
        import ray

        if self._queue is None:
            return
        try:
            size = self._queue.qsize()
            events = self._queue.get_nowait_batch(size) if size else []
        except ray.exceptions.RayError:
            self._queue = None
            return
        for index, event in events:
            if event["event"] == "started":
                started[index] = event["node"]
            if on_event:
                on_event(listed[index], event)

    def _finished(self, ray, ref, task, identity: dict | None) -> Finished:
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # our code raised on the node: a failure, not a lost node
            host = identity["host"] if identity else ""
            cause = error.cause or error
            return Finished(task, [], {"status": "error", "error": f"{type(cause).__name__}: {_first_line(cause)}"},
                            host, {"node": node_name(identity)})
        except ray.exceptions.RayError as error:
            host = identity["host"] if identity else ""
            sentence = (f"{node_name(identity)} was lost while running the cell ({type(error).__name__}: "
                        f"{_first_line(error).split('. ')[0].rstrip('.')}); it was not run again (--resume runs it)")
            write_log(task, f"\n{sentence}\n")
            return Finished(task, [], {"status": "lost", "error": sentence}, host, {"node": node_name(identity)})
        host = result.get("host", "")
        if result.get("problem"):
            return Finished(task, [], {"status": "error", "error": f"node {host}: {result['problem']}"}, host,
                            {"host_record": result.get("host_record")})
        write_log(task, result["log"])
        return Finished(task, result["events"], result["done"], host,
                        {"threads": result["threads"], "node": node_name(result.get("ray_node")),
                         "host_record": result["host_record"]})

    def close(self) -> None:
        """Cancel what has not finished (an interrupted sweep) and disconnect; the cluster stays up."""
        if self._remote is None:
            return
        import ray

        for ref in list(self._pending):
            with contextlib.suppress(Exception):  # already finished or gone: nothing left to stop
                ray.cancel(ref, force=True)
        self._pending.clear()
        ray.shutdown()
        self._remote = None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
