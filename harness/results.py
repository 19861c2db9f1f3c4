"""The record schema, per-run summaries of epoch rows, and atomic writes of a run's folder.

Every file is rewritten whole through a temporary file and os.replace after each
finished cell, so a crash or Ctrl-C leaves the previous complete version, never a
half-written one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "results"
KEYS = ["framework", "variant", "backend", "model", "device", "repeat", "seed"]
EPOCH_COLUMNS = KEYS + [
    "epoch",
    "train_loss",
    "train_seconds",
    "samples_per_second",
    "eval_loss",
    "eval_accuracy",
    "eval_seconds",
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
    "import_rss_mb",
    "peak_rss_mb",
    "peak_device_memory_mb",
    "threads",
    "thread_pools",
    "batch_size",
    "dataset",
    "eval_split",
]
DONE = ("ok", "diverged", "skipped")  # statuses --resume does not run again


def run_directory(config_name: str, out: str | Path | None = None) -> Path:
    """results/<UTC time>-<config name>/, or the folder the user named."""
    if out:
        return Path(out)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return RESULTS_DIR / f"{stamp}-{config_name}"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def csv_text(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def summarise_run(identity: dict, epochs: list[dict], target: float) -> dict:
    """The runs.csv fields that follow from a cell's epoch rows.

    Throughput uses steady epochs only (2..N); time to target is training wall time
    from the first step, compile included, until an evaluation first reaches the target.
    """
    record = {**identity, "epochs": len(epochs), "target_accuracy": target}
    if not epochs:
        return record
    train = [e["train_seconds"] for e in epochs]
    steady = train[1:]
    accuracies = [e["eval_accuracy"] for e in epochs]
    record.update(
        final_accuracy=accuracies[-1],
        best_accuracy=max(accuracies),
        final_loss=epochs[-1]["eval_loss"],
        first_epoch_seconds=train[0],
        steady_epoch_seconds=statistics.median(steady) if steady else None,
        samples_per_second=epochs[-1]["samples"] / statistics.median(steady) if steady else None,
        eval_seconds=statistics.median(e["eval_seconds"] for e in epochs),
    )
    elapsed = 0.0
    for seconds, accuracy in zip(train, accuracies):
        elapsed += seconds
        if accuracy >= target:
            record["time_to_target_seconds"] = elapsed
            break
    return record


class RunFolder:
    """A run's folder: the records so far, rewritten atomically after each cell."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.runs: list[dict] = []
        self.epochs: list[dict] = []
        directory.mkdir(parents=True, exist_ok=True)

    def read_json(self, name: str) -> dict:
        path = self.directory / name
        return json.loads(path.read_text()) if path.exists() else {}

    def write_json(self, name: str, data: dict) -> None:
        atomic_write(self.directory / name, json.dumps(data, indent=2, default=str) + "\n")

    def add(self, run: dict, epochs: list[dict]) -> None:
        self.runs.append(run)
        self.epochs.extend(epochs)
        atomic_write(self.directory / "epochs.csv", csv_text(self.epochs, EPOCH_COLUMNS))
        atomic_write(self.directory / "runs.csv", csv_text(self.runs, RUN_COLUMNS))

    def load_existing(self) -> None:
        """Read back the cells an interrupted run completed (for --resume); failed ones run again."""
        runs, epochs = (read_csv(self.directory / name) for name in ("runs.csv", "epochs.csv"))
        self.runs = [r for r in runs if r["status"] in DONE]
        done = self.finished_keys()
        self.epochs = [e for e in epochs if cell_key(e) in done]

    def finished_keys(self) -> set[tuple]:
        return {cell_key(r) for r in self.runs}


def cell_key(row: dict) -> tuple:
    return (row["framework"], row["variant"], row["model"], row["device"], int(row["repeat"]))


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
