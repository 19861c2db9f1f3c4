"""The runs a site shows: found from the paths given, read through the validated readers, ordered by commit.

A path is a run folder (runs.csv and environment.json) or a results folder holding run folders.
A run folder named on the command line must read cleanly; inside a results folder, a folder
that cannot be read (an older schema, a damaged file) is left out with a note, so one old run
does not keep the site of all the others from being built.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.results.records import EPOCH_COLUMNS, ROOT, RUN_COLUMNS, read_json, read_records
from harness.results.site.machine import machine_name, with_machine


@dataclass
class Run:
    """One run folder as the pages need it: its rows (with machine), epochs, environment and config."""

    path: Path
    runs: pd.DataFrame
    epochs: pd.DataFrame | None
    environment: dict
    config: dict
    slug: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sessions(self) -> list[dict]:
        return self.environment.get("sessions") or [{}]

    @property
    def first(self) -> dict:
        return self.sessions[0]

    @property
    def date(self) -> str:
        """When the run started (its first session's UTC time)."""
        return str(self.first.get("time_utc") or "")

    @property
    def commit(self) -> str:
        return str((self.first.get("git") or {}).get("commit") or "")

    @property
    def dirty(self) -> bool:
        return bool((self.first.get("git") or {}).get("dirty"))

    @property
    def short_commit(self) -> str:
        return (self.commit[:7] or "?") + ("+" if self.dirty else "")

    @cached_property
    def commit_date(self) -> str:
        """The commit's date where this checkout knows the commit, else the run's own date."""
        return commit_date(self.commit) or self.date

    @property
    def order(self) -> tuple:
        """Runs line up by commit date, then by when they ran, then by name."""
        return (self.commit_date, self.date, self.name)

    @property
    def ok(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"] if not self.runs.empty else self.runs

    @property
    def machines(self) -> list[str]:
        """The machines its rows ran on (a resumed run may mix them); its first session's when it has no rows."""
        return list(dict.fromkeys(self.runs["machine"])) if not self.runs.empty else [machine_name(self.first)]


@cache
def commit_date(commit: str) -> str:
    """The committer date of `commit` in ISO form, or '' when git or the commit is not at hand."""
    if not re.fullmatch(r"[0-9a-fA-F]{7,40}", commit or ""):
        return ""
    try:
        done = subprocess.run(["git", "show", "-s", "--format=%cI", commit], cwd=ROOT, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def is_run_folder(path: Path) -> bool:
    return (path / "runs.csv").is_file() and (path / "environment.json").is_file()


def read_run(path: Path) -> Run:
    """A run folder through records.read_records (which refuses truncated, damaged or older files)."""
    read_records(path / "runs.csv", RUN_COLUMNS)
    runs = pd.read_csv(path / "runs.csv", keep_default_na=False, na_values=[""])
    if "backend" in runs:
        runs["backend"] = runs["backend"].fillna("")
    environment = read_json(path / "environment.json")
    config = read_json(path / "config.json")
    epochs = None
    if (path / "epochs.csv").is_file():
        read_records(path / "epochs.csv", EPOCH_COLUMNS)
        epochs = pd.read_csv(path / "epochs.csv", keep_default_na=False, na_values=[""])
    run = Run(path=path, runs=runs, epochs=epochs, environment=environment, config=config)
    run.runs = with_machine(runs, environment.get("sessions") or [])
    return run


def find_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Every run under `paths`, ordered by commit date, each with a unique page name; and notes on those left out."""
    found: dict[Path, Run] = {}
    notes: list[str] = []
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist: give a run folder (with runs.csv and environment.json) or a "
                            "results folder holding run folders, e.g. results/")
        if is_run_folder(path):
            found.setdefault(path.resolve(), read_run(path))
            continue
        children = sorted(c for c in path.iterdir() if c.is_dir() and is_run_folder(c)) if path.is_dir() else []
        if not children:
            raise UserError(f"{path} is neither a run folder (runs.csv and environment.json) nor a results folder "
                            "holding run folders: give e.g. results/ or results/<time>-quick")
        for child in children:
            try:
                found.setdefault(child.resolve(), read_run(child))
            except UserError as error:
                notes.append(f"{child} was left out: {error}")
    runs = sorted(found.values(), key=lambda run: run.order)
    _name_pages(runs)
    return runs, notes


def _name_pages(runs: list[Run]) -> None:
    """runs/<slug>.html: the folder's name made safe for a file name, with -2, -3... where two share one."""
    taken: set[str] = set()
    for run in runs:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", run.name).strip("-.") or "run"
        slug, n = base, 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        taken.add(slug)
        run.slug = slug
