"""Plans a sweep's cells, hands them to an executor, and turns what each worker reported into records.

Each cell becomes a Task (harness/execute/executor.py) that an executor runs in a fresh worker
process; a cell that raises, crashes or runs past timeout_s is recorded with its status and the
last line of its error, and the sweep goes on. Records are written after every cell, so Ctrl-C
or a crash loses nothing that finished; `--resume DIR` carries on.
"""

from __future__ import annotations

from pathlib import Path

from harness.config import Cell, Config
from harness.execute.executor import Executor, Finished, Task
from harness.execute.process import worker_environment
from harness.results.hosts import HostBook
from harness.results.records import TRIAL, summarise_run
from harness.results.run_folder import RunFolder
from harness.tuning import sweep


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


def identity_and_facts(cell: Cell, config: Config) -> tuple[dict, dict]:
    """The columns a cell's record has before it runs: what it is (its sweep setting included), and what follows
    from the config with that setting applied."""
    config = sweep.cell_config(config, cell)
    spec = config.model(cell.model)
    info = config.adapters[cell.framework]
    identity = {"framework": cell.framework, "variant": cell.variant, "backend": "", "model": cell.model,
                "device": cell.device, "repeat": cell.repeat, "seed": cell.seed,
                **sweep.columns(sweep.setting_of(cell)), **({TRIAL: cell.trial} if cell.trial is not None else {})}
    facts = {"params": spec.param_count, "flops_per_sample": spec.flops_per_sample, "threads": config.threads,
             "optimizer_form": config.optimizer.form(info.adam_epsilon, info.sgd_momentum),
             "batch_size": config.batch_size, "dataset": config.dataset, "eval_split": config.eval_split}
    return identity, facts


def file_stem(cell: Cell) -> str:
    """The cell's name for its files (its log, its saved parameters): unique within a run folder."""
    setting = f"-{sweep.slug(sweep.setting_of(cell))}" if cell.setting else ""
    return f"{cell.framework}-{cell.variant}-{cell.model}-{cell.device}-{cell.repeat}{setting}"


def params_file(cell: Cell) -> str:
    """Where save_params puts the cell's trained parameters, relative to the run folder."""
    return f"params/{file_stem(cell)}.npz"


def plan(cell: Cell, config: Config, data_dir: str | None, folder: Path) -> Task:
    """The cell as a task for an executor: its worker's job (the config with the cell's setting applied), log,
    environment and limits."""
    config = sweep.cell_config(config, cell)
    job = {"cell": cell.__dict__, "config": config.values, "data_dir": data_dir, "data_verified": True,
           "adapter": config.adapters[cell.framework].job(cell.variant),
           "params_path": str(folder / params_file(cell))}
    log_name = f"{file_stem(cell)}.log"
    settings = {"threads": config.threads, "device": config.device, "blas": config.blas}
    return Task(cell.key, cell.label, job, folder / "logs" / log_name, worker_environment(config), config.timeout_s,
                config.max_rss_mb, f"the cell ran past timeout_s = {config.timeout_s} s and was stopped", settings)


def record(cell: Cell, config: Config, finished: Finished, ceilings: dict | None = None,
           machine: str = "") -> tuple[dict, list[dict]]:
    """The cell's runs.csv record and epochs.csv rows from what its worker reported.

    `ceilings` (harness/execute/ceilings.py, measured on the host that ran the cell) turns throughput into
    efficiency; `machine` is that host's fingerprint. The threads are those the worker ran with (a remote
    executor resolves threads = 0 on the node).
    """
    from harness.models import floor_key
    from harness.results.efficiency import efficiency

    identity, facts = identity_and_facts(cell, config)
    config = sweep.cell_config(config, cell)
    epochs = []
    for event in finished.events:
        if event["event"] == "setup":
            identity["backend"] = event["backend"]
            facts.update(setup_seconds=event["setup_seconds"], eval_split=event["eval_split"],
                         import_rss_mb=event["import_rss_mb"])
        elif event["event"] == "epoch":
            epochs.append(event)
    run = summarise_run(identity, epochs, config.values[cell.model]["target_accuracy"])
    run.update(facts)
    run.update(host=finished.host, machine=machine)
    if finished.facts.get("threads"):
        run["threads"] = finished.facts["threads"]
    run.update(finished.done)
    if config.save_params and run.get("status") == "ok":
        run["params_file"] = params_file(cell)
    library = config.adapters[cell.framework].library(cell.variant)
    run.update(efficiency(run, library, ceilings, floor_key(config.model(cell.model), config.batch_size)))
    rows = [{**identity, **e, "samples_per_second": e["samples"] / e["train_seconds"]} for e in epochs]
    return run, rows


def skipped(cell: Cell, config: Config) -> tuple[dict, list[dict]] | None:
    """The record of a cell that cannot run here (not installed, not implemented), or None when it can."""
    reason = config.adapters[cell.framework].unsupported(cell.model, cell.device, cell.variant)
    if not reason:
        return None
    identity, facts = identity_and_facts(cell, config)
    return {**identity, **facts, "status": "skipped", "error": reason}, []


def run_cell(cell: Cell, config: Config, data_dir: str | None, folder: Path, ceilings=None,
             executor: Executor | None = None):
    """Run one cell in its own process; return its runs.csv record and its epochs.csv rows."""
    from harness.execute.local import LocalExecutor

    found = skipped(cell, config)
    if found:
        return found
    finished = next(iter((executor or LocalExecutor()).run([plan(cell, config, data_dir, folder)])))
    return record(cell, config, finished, ceilings)


def describe(run: dict) -> str:
    """One line per finished cell for the progress log."""
    label = f"{run['framework']}/{run['variant']} {run['model']} {run['device']} #{run['repeat']}"
    if run["status"] != "ok":
        return f"{label}: {run['status']}: {run.get('error', '')}"
    speed = run.get("samples_per_second")
    speed_text = f", {speed:,.0f} samples/s steady" if speed else ""
    return f"{label}: accuracy {run['final_accuracy']:.2%}, first epoch {run['first_epoch_seconds']:.1f} s{speed_text}"


def progress_text(running: dict) -> str:
    """The cells running now, per node: "vm: numpy/numpy mlp cpu #0 epoch 2/3; node2: ..."."""
    return "; ".join(f"{host}: {label}" + (f" {epoch}" if epoch else "") for host, label, epoch in running.values())


def run_sweep(config: Config, folder: RunFolder, data_dir: str | None, progress: bool = True,
              ceilings: dict | None = None, executor: Executor | None = None, hosts: HostBook | None = None,
              cells: list[Cell] | None = None) -> None:
    """Every cell of the config not yet in the folder, through the executor (by default, one at a time here),
    each record written as its cell finishes.

    `data_dir` is what the worker is told: the verified folder (None for the synthetic set, or for a remote
    executor's nodes, which find their own). `hosts` holds each host's machine and ceilings (and writes the
    records of hosts seen for the first time into the session); without it every row is judged against
    `ceilings`, as the local executor's are. `cells` (an Optuna search's trial) replaces the config's; an
    Optuna config without them runs its search (harness/tuning/search.py), each trial through here.
    """
    import socket

    from tqdm import tqdm

    from harness.execute.local import LocalExecutor

    executor = executor or LocalExecutor()
    hosts = hosts or HostBook(ceilings=ceilings)
    if cells is None and sweep.mode(config) == "optuna":
        from harness.tuning.search import run_search

        return run_search(config, folder, data_dir, progress, executor, hosts)
    here = "" if executor.remote else socket.gethostname()
    cells = config.cells() if cells is None else cells
    finished_keys = folder.finished_keys()
    todo = [c for c in cells if c.key not in finished_keys]
    by_key = {c.key: c for c in todo}
    running: dict[tuple, tuple[str, str, str]] = {}  # task key -> (host, label, epoch)
    with tqdm(total=len(cells), initial=len(cells) - len(todo), unit="cell", disable=not progress) as bar:

        def write(run: dict, rows: list[dict]) -> None:
            folder.add(run, rows)
            bar.set_description(f"{len(running)} running")
            bar.set_postfix_str(progress_text(running))
            bar.update()
            bar.write(describe(run))

        def tasks():
            for cell in todo:
                found = skipped(cell, config)
                if found:
                    found[0].update(host=here, machine=hosts.machine(here) if here else "")
                    write(*found)
                    continue
                yield plan(cell, config, data_dir, folder.directory)

        def on_event(task: Task, event: dict) -> None:
            host, label, epoch = running.get(task.key, ("?", task.label, ""))
            if event["event"] == "started":
                host = event.get("host", "?")
            elif event["event"] == "epoch":
                cell = by_key[task.key]
                epoch = f"epoch {event['epoch']}/{sweep.cell_config(config, cell).values[cell.model]['epochs']}"
            running[task.key] = (host, label, epoch)
            bar.set_description(f"{len(running)} running")
            bar.set_postfix_str(progress_text(running))

        for finished in executor.run(tasks(), on_event):
            running.pop(finished.task.key, None)
            if finished.facts.get("host_record"):
                hosts.add(finished.host, finished.facts["host_record"])
            write(*record(by_key[finished.task.key], config, finished, hosts.ceilings(finished.host),
                          hosts.machine(finished.host)))
