"""bench.py merge: runs made on several machines or at several times, combined into one comparable folder.

Every row keeps where it came from: its host and machine (rows written before machines were recorded
take them from their session's facts, fingerprinted as today's rows are), and its session, renumbered
in the merged folder, whose record in environment.json names the source folder and the session's
number there ("source"). Two rows clash when they hold the same cell (framework, variant, model,
device, repeat) on the same machine: the merge refuses in one sentence, naming them, unless --prefer
says which wins (first: the run named first; last: the run named last; newest: the newer session).
Runs whose settings differ in what a row measures (epochs, batch size, optimizer, model sizes...) are
refused too: their rows would be mixed in one table. The sources stay untouched; the merged folder is
new or empty, written atomically like a run's, with its summary.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.results.records import (
    EPOCH_COLUMNS,
    RUN_COLUMNS,
    SCHEMA,
    atomic_write,
    cell_key,
    csv_text,
    read_json,
    read_records,
    with_sweep_columns,
    write_json,
)

# Settings that choose which rows a run has, where, or how long it may take: not what a row measures.
NOT_MEASURED = {"name", "description", "frameworks", "models", "variants", "repeats", "seed", "executor", "slurm",
                "data_dir", "ceilings", "timeout_s", "max_rss_mb", "threads", "merged_from"}
PREFERENCES = ("first", "last", "newest")


@dataclass
class Source:
    """One folder to merge: its rows, epochs, sessions and config, read and checked."""

    directory: Path
    runs: list[dict]
    epochs: list[dict]
    sessions: list[dict]
    config: dict


@dataclass
class Merged:
    directory: Path
    rows: int
    machines: int
    replaced: int
    summary: str


def read_source(directory: Path) -> Source:
    if not (directory / "runs.csv").is_file():
        raise UserError(f"{directory} has no runs.csv: merge takes run folders such as results/<time>-quick")
    runs = read_records(directory / "runs.csv", RUN_COLUMNS)
    epochs = read_records(directory / "epochs.csv", EPOCH_COLUMNS)
    environment = read_json(directory / "environment.json")
    return Source(directory, runs, epochs, environment.get("sessions", []), read_json(directory / "config.json"))


def settings_differ(first: dict, other: dict) -> list[str]:
    """The settings two runs' configs hold differently, of those that decide what a row measures."""
    from harness.config import MODELS, with_model_defaults

    first, other = with_model_defaults(first), with_model_defaults(other)
    models = set(first.get("models", [])) & set(other.get("models", []))
    keys = (set(first) & set(other)) - NOT_MEASURED - (set(MODELS) - models)
    return sorted(k for k in keys if first[k] != other[k])


def with_provenance(source: Source, number: dict[int, int]) -> tuple[list[dict], list[dict], list[dict]]:
    """The source's sessions, rows and epochs renumbered into the merged folder, each row with host and machine."""
    from harness.results.environment import machine

    by_number = {s.get("session"): s for s in source.sessions}
    sessions = [{**s, "session": number[s.get("session")],
                 "source": {"folder": str(source.directory), "session": s.get("session"), "from": s.get("source")}}
                for s in source.sessions]
    runs = []
    for row in source.runs:
        session = by_number.get(int(row["session"]), {})
        filled = {"host": row.get("host") or session.get("host", ""),
                  "machine": row.get("machine") or (machine(session) if session.get("cpu") else "")}
        runs.append({**row, **filled, "session": number.get(int(row["session"]), row["session"])})
    epochs = [{**e, "session": number.get(int(e["session"]), e["session"])} for e in source.epochs]
    return sessions, runs, epochs


def clash_key(row: dict) -> tuple:
    return (*cell_key(row), row["machine"])


def pick(rows: list[tuple[int, dict]], prefer: str, times: dict[int, str]) -> tuple[int, dict]:
    """The row that wins a clash (each comes with the index of its source, in the order the runs were named)."""
    if prefer == "newest":
        return max(rows, key=lambda item: times.get(int(item[1]["session"]), ""))
    return rows[0] if prefer == "first" else rows[-1]


def merge_rows(sources: list[Source], prefer: str | None) -> tuple[list[dict], list[dict], list[dict], int]:
    """Every source's sessions, rows and epochs in one folder's numbering; clashes resolved by `prefer`."""
    sessions, rows, epochs, owner = [], {}, [], {}
    for index, source in enumerate(sources):
        number = {s.get("session"): len(sessions) + i + 1 for i, s in enumerate(source.sessions)}
        renumbered, runs, source_epochs = with_provenance(source, number)
        sessions += renumbered
        epochs += source_epochs
        for row in runs:
            rows.setdefault(clash_key(row), []).append((index, row))
            owner[(cell_key(row), int(row["session"]))] = index
    times = {s["session"]: s.get("time_utc", "") for s in sessions}
    kept, replaced = [], 0
    for key, found in rows.items():
        if len(found) > 1:
            if prefer is None:
                named = " and ".join(str(sources[i].directory) for i, _ in found)
                raise UserError(f"{named} both hold {key[0]}/{key[1]} {key[2]} {key[3]} repeat {key[4]} on machine "
                                f"{key[5] or '(unrecorded)'}: merge keeps every row and picks none silently; pass "
                                "--prefer first, last or newest to say which wins")
            replaced += len(found) - 1
            found = [pick(found, prefer, times)]
        kept.append(found[0][1])
    wanted = {(cell_key(r), int(r["session"])) for r in kept}
    epochs = [e for e in epochs if (cell_key(e), int(e["session"])) in wanted]
    return sessions, kept, epochs, replaced


def merged_config(sources: list[Source], out: Path) -> dict:
    """The first source's settings (every source has the same ones that matter), naming what was merged."""
    first = sources[0]
    for source in sources[1:]:
        differ = settings_differ(first.config, source.config)
        if differ:
            raise UserError(f"{source.directory} was run with other settings than {first.directory} "
                            f"({', '.join(differ)}): merge combines runs of the same settings; compare them instead")
    models = list(dict.fromkeys(m for s in sources for m in s.config.get("models", [])))
    frameworks = list(dict.fromkeys(f for s in sources for f in s.config.get("frameworks", [])))
    return {**first.config, "name": out.name, "models": models, "frameworks": frameworks,
            "merged_from": [{"folder": str(s.directory), "name": s.config.get("name", "")} for s in sources]}


def merge(directories: list[Path], out: Path, prefer: str | None = None) -> Merged:
    """Combine the run folders into `out` (new or empty); UserError says why not, leaving `out` as it was."""
    from harness.results import report
    from harness.results.run_folder import RunFolder

    resolved = [d.resolve() for d in directories]
    twice = next((d for i, d in enumerate(resolved) if d in resolved[:i]), None)
    if twice:
        raise UserError(f"{twice} is named twice: name each run folder once")
    if len(directories) < 2:
        raise UserError("merge needs two or more run folders")
    sources = [read_source(d) for d in directories]
    config = merged_config(sources, out)
    sessions, runs, epochs, replaced = merge_rows(sources, prefer)
    folder = RunFolder.create(out.name, out)
    with folder.locked(new=True):
        write_json(folder.directory / "config.json", config)
        write_json(folder.directory / "environment.json", {"schema": SCHEMA, "merged": True, "sessions": sessions})
        atomic_write(folder.directory / "epochs.csv", csv_text(epochs, with_sweep_columns(epochs, EPOCH_COLUMNS)))
        atomic_write(folder.directory / "runs.csv", csv_text(runs, with_sweep_columns(runs, RUN_COLUMNS)))
        summary = report.write_summary(folder.directory)
    machines = len({r["machine"] for r in runs if r["status"] == "ok"})
    return Merged(folder.directory, len(runs), machines, replaced, summary)
