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
from harness.results.records import summarise_run
from harness.results.run_folder import RunFolder


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
    """The columns a cell's record has before it runs: what it is, and what follows from the config."""
    spec = config.model(cell.model)
    info = config.adapters[cell.framework]
    identity = {"framework": cell.framework, "variant": cell.variant, "backend": "", "model": cell.model,
                "device": cell.device, "repeat": cell.repeat, "seed": cell.seed}
    facts = {"params": spec.param_count, "flops_per_sample": spec.flops_per_sample, "threads": config.threads,
             "optimizer_form": config.optimizer.form(info.adam_epsilon, info.sgd_momentum),
             "batch_size": config.batch_size, "dataset": config.dataset, "eval_split": config.eval_split}
    return identity, facts


def plan(cell: Cell, config: Config, data_dir: str | None, folder: Path) -> Task:
    """The cell as a task for an executor: its worker's job, log, environment and limits."""
    job = {"cell": cell.__dict__, "config": config.values, "data_dir": data_dir, "data_verified": True,
           "adapter": config.adapters[cell.framework].job(cell.variant)}
    log_name = f"{cell.framework}-{cell.variant}-{cell.model}-{cell.device}-{cell.repeat}.log"
    return Task(cell.key, cell.label, job, folder / "logs" / log_name, worker_environment(config), config.timeout_s,
                config.max_rss_mb, f"the cell ran past timeout_s = {config.timeout_s} s and was stopped")


def record(cell: Cell, config: Config, finished: Finished, ceilings: dict | None = None) -> tuple[dict, list[dict]]:
    """The cell's runs.csv record and epochs.csv rows from what its worker reported.

    `ceilings` (harness/execute/ceilings.py, measured before the cells) turns throughput into efficiency.
    """
    from harness.models import floor_key
    from harness.results.efficiency import efficiency

    identity, facts = identity_and_facts(cell, config)
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
    run.update(finished.done)
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


def run_sweep(config: Config, folder: RunFolder, data_dir: str | None, progress: bool = True,
              ceilings: dict | None = None, executor: Executor | None = None) -> None:
    """Every cell of the config not yet in the folder, through the executor (by default, one at a time here),
    each record written as its cell finishes.

    `data_dir` is what prepare_data returned: the verified folder (None for the synthetic set).
    """
    from tqdm import tqdm

    from harness.execute.local import LocalExecutor

    executor = executor or LocalExecutor()
    cells = config.cells()
    finished_keys = folder.finished_keys()
    todo = [c for c in cells if c.key not in finished_keys]
    by_key = {c.key: c for c in todo}
    with tqdm(total=len(cells), initial=len(cells) - len(todo), unit="cell", disable=not progress) as bar:

        def write(run: dict, rows: list[dict]) -> None:
            folder.add(run, rows)
            bar.set_postfix_str("")
            bar.update()
            bar.write(describe(run))

        def tasks():
            for cell in todo:
                found = skipped(cell, config)
                if found:
                    write(*found)
                    continue
                bar.set_description(cell.label)
                yield plan(cell, config, data_dir, folder.directory)

        def on_event(task: Task, event: dict) -> None:
            if event["event"] == "epoch":
                epochs = config.values[by_key[task.key].model]["epochs"]
                bar.set_postfix_str(f"epoch {event['epoch']}/{epochs}")

        for finished in executor.run(tasks(), on_event):
            write(*record(by_key[finished.task.key], config, finished, ceilings))
