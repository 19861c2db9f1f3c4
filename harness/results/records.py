"""The record schema, per-run summaries of epoch rows, atomic writes, and reading records back.

Every file is rewritten whole through a temporary file and os.replace after each finished
cell, so a crash or Ctrl-C leaves the previous complete version, never a half-written one;
a write that fails (a full disk, a read-only folder) stops the run with one sentence and
leaves every file as it was. Records carry their schema version; reading refuses, in one
sentence, a file that is truncated, lacks columns or has another layout.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import signal
import statistics
import tempfile
from pathlib import Path

from harness.errors import StoppedError, UserError

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "results"
SCHEMA = 3  # 3: op-floor and time-to-target columns, evaluation steps; 2: sessions, FLOPs without the images' gradient
# The columns each schema added: a file of an older schema that this version still reads lacks only those.
ADDED_IN = {3: {"step", "eval_seconds_to_target", "steps_to_target", "epochs_to_target", "floor_samples_per_second",
                "floor_fraction", "host", "machine", "params_file"}}
# After the fixed columns, a sweep's own: its setting (sweep.optimizer.lr, ..., part of a row's identity) and the
# Optuna trial that ran the row (harness/tuning/sweep.py, harness/tuning/search.py).
SWEEP_PREFIX = "sweep."
TRIAL = "trial"
READABLE = (2, 3)
KEYS = ["framework", "variant", "backend", "model", "device", "repeat", "seed"]
EPOCH_COLUMNS = KEYS + [
    "epoch",
    "step",
    "train_loss",
    "train_seconds",
    "samples_per_second",
    "eval_loss",
    "eval_accuracy",
    "eval_seconds",
    "session",
    "schema",
]
RUN_COLUMNS = KEYS + [
    "status",
    "error",
    "epochs",
    "final_accuracy",
    "best_accuracy",
    "final_loss",
    "first_epoch_seconds",
    "steady_epoch_seconds",
    "samples_per_second",
    "time_to_target_seconds",
    "eval_seconds_to_target",
    "steps_to_target",
    "epochs_to_target",
    "target_accuracy",
    "eval_seconds",
    "setup_seconds",
    "params",
    "flops_per_sample",
    "gflops",
    "ceiling_library",
    "ceiling_gflops",
    "ceiling_fraction",
    "peak_gflops",
    "peak_fraction",
    "floor_samples_per_second",
    "floor_fraction",
    "import_rss_mb",
    "peak_rss_mb",
    "peak_device_memory_mb",
    "threads",
    "thread_pools",
    "optimizer_form",
    "steady_epochs",
    "batch_size",
    "dataset",
    "eval_split",
    "params_file",  # the trained parameters, params/<cell>.npz in the run folder, with save_params
    "host",  # the hostname of the machine that ran the cell
    "machine",  # a fingerprint of what decides its speed (harness/results/environment.machine)
    "session",
    "schema",
]
DONE = ("ok", "diverged", "skipped")  # statuses --resume does not run again


def atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file and a rename; on failure the old file stays and StoppedError says why."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EROFS: "the file system is read-only", errno.EACCES: "permission is denied"}
        why = reason.get(error.errno, error.strerror or str(error))
        raise StoppedError(f"cannot write {path}: {why}; every file written before is intact: make room or "
                           "choose a writable folder, then carry on with --resume") from None
    finally:
        if tmp:  # failed or interrupted before the rename: no half-written file stays behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def uninterrupted():
    """Hold Ctrl-C and SIGTERM until the block is done (they are delivered after it), so that the files
    a block rewrites together are never left half updated, one new and one old."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def sweep_columns(names) -> list[str]:
    """The sweep columns among `names` (a header, a row, a DataFrame's columns), in their order."""
    return [c for c in names if str(c).startswith(SWEEP_PREFIX)]


def with_sweep_columns(rows: list[dict], columns: list[str]) -> list[str]:
    """The fixed columns, then the sweep columns and the trial any row has, in the order they first appear."""
    found = dict.fromkeys(c for row in rows for c in row if c.startswith(SWEEP_PREFIX) or c == TRIAL)
    return columns + [c for c in found if c not in columns]


def csv_text(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def summarise_run(identity: dict, evaluations: list[dict], target: float) -> dict:
    """The runs.csv fields that follow from a cell's evaluation rows (one per epoch, or several with
    eval_every_steps).

    Throughput uses steady epochs only (complete epochs 2..N); time to target is training wall time
    from the first step, compile included, until an evaluation first reaches the target, the
    evaluations' own time apart (eval_seconds_to_target). With evaluate = "end" only the last row
    holds an evaluation.
    """
    epochs: dict[int, dict] = {}
    for row in evaluations:
        epoch = epochs.setdefault(row["epoch"], {"seconds": 0.0, "samples": 0, "complete": True})
        epoch["seconds"] += row["train_seconds"]
        epoch["samples"] += row["samples"]
        epoch["complete"] = row.get("end_of_epoch", True)
    record = {**identity, "epochs": len(epochs), "target_accuracy": target}
    evaluated = [row for row in evaluations if row.get("eval_accuracy") is not None]
    if not evaluated:
        return record
    ordered = [epochs[k] for k in sorted(epochs)]
    steady = [e for e in ordered[1:] if e["complete"]]
    accuracies = [row["eval_accuracy"] for row in evaluated]
    steady_seconds = statistics.median(e["seconds"] for e in steady) if steady else None
    record.update(
        final_accuracy=accuracies[-1],
        best_accuracy=max(accuracies),
        final_loss=evaluated[-1]["eval_loss"],
        first_epoch_seconds=ordered[0]["seconds"],
        steady_epochs=len(steady),
        steady_epoch_seconds=steady_seconds,
        samples_per_second=steady[-1]["samples"] / steady_seconds if steady else None,
        eval_seconds=statistics.median(row["eval_seconds"] for row in evaluated),
    )
    elapsed = evaluating = 0.0
    for row in evaluations:
        elapsed += row["train_seconds"]
        if row.get("eval_accuracy") is None:
            continue
        evaluating += row["eval_seconds"]
        if row["eval_accuracy"] >= target:
            record.update(time_to_target_seconds=elapsed, eval_seconds_to_target=evaluating,
                          steps_to_target=row.get("step"))
            if row.get("step") and row.get("steps_per_epoch"):
                record["epochs_to_target"] = row["step"] / row["steps_per_epoch"]
            break
    return record


def read_records(path: Path, columns: list[str]) -> list[dict]:
    """The rows of a runs.csv or epochs.csv written by this version; UserError says why a file is not one."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if header is None:
        raise UserError(f"{path} is empty: it is not a results file; re-run the cells or restore the file")
    if "schema" not in header:
        raise UserError(f"{path} has an older layout (no schema column): it was written by an earlier version; "
                        "re-run it to compare it with this version's results")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise UserError(f"{path} is truncated or damaged at line {number} ({len(row)} fields where the header "
                            f"has {len(header)}): restore it, or re-run the cells it lost")
    records = [dict(zip(header, row)) for row in rows]
    versions = {r["schema"] for r in records} - {str(v) for v in READABLE}
    if versions:
        raise UserError(f"{path} has schema {', '.join(sorted(versions))}, this version reads "
                        f"{', '.join(map(str, READABLE))}: re-run it with this version")
    oldest = min((int(r["schema"]) for r in records), default=SCHEMA)
    optional = set().union(*(added for schema, added in ADDED_IN.items() if schema > oldest))
    missing = [c for c in columns if c not in header and c not in optional]
    if missing:
        raise UserError(f"{path} lacks the columns {', '.join(missing)}: it is damaged or not a results file")
    return records


def cell_key(row: dict) -> tuple:
    """A row's cell (harness.config.Cell.key): what it ran and, in a sweep, the setting it ran with."""
    setting = sorted((c, str(row[c])) for c in sweep_columns(row) if row[c] not in ("", None))
    return (row["framework"], row["variant"], row["model"], row["device"], int(row["repeat"]), *setting)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict:
    """A JSON file of a run folder ({} when absent); UserError when it is damaged."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as error:
        raise UserError(f"{path} cannot be read ({error}): restore it or re-run the run") from None
