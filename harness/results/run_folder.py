"""A run's folder: created exclusively, written by one run at a time, never overwritten.

- A new run creates its folder: results/<UTC time>-<config name>/ (with -2, -3... when another run
  took that name in the same second), or the --out folder, which must not hold a run already.
- A lock file, .lock, names the process writing the folder (host, pid, time, command). A second run
  refuses, naming it; a lock left by a process that is gone (on this host) is taken over, with a note.
- Each session that writes the folder (the first run, then each --resume) is a record in
  environment.json's "sessions", appended, never rewritten; every row of runs.csv and epochs.csv
  names its session. A resume refuses when the code, packages, machine or resolved config differ
  from the first session's, unless told to mix them (then summary.md says which rows came from which).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

from harness.errors import StoppedError, UserError
from harness.results.records import (
    EPOCH_COLUMNS,
    RESULTS_DIR,
    RUN_COLUMNS,
    SCHEMA,
    atomic_write,
    cell_key,
    csv_text,
    read_json,
    read_records,
    uninterrupted,
    with_sweep_columns,
    write_json,
)

DONE = ("ok", "diverged", "skipped")  # statuses --resume does not run again
LOCK = ".lock"
RUN_FILES = ("config.json", "environment.json", "runs.csv", "epochs.csv")


class FolderError(UserError):
    """A folder that cannot take this run: the message says which run holds it or what to do."""


class RunFolder:
    """A run's folder and its records so far, written atomically after each cell by the run holding its lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.runs: list[dict] = []
        self.epochs: list[dict] = []
        self.session = 0  # the session writing now; set by start_session
        self._locked = False

    # -- creating and opening ----------------------------------------------------------------------

    @classmethod
    def create(cls, config_name: str, out: str | Path | None = None) -> RunFolder:
        """A new run's folder, made exclusively: --out must be new or empty; a default name never collides."""
        if out:
            directory = Path(out)
            if directory.exists() and not directory.is_dir():
                raise FolderError(f"--out {directory} is a file: name a folder for the run")
            if directory.is_dir() and any(directory.iterdir()):
                _refuse_a_run_in(directory)
                raise FolderError(f"{directory} is not empty: choose an empty or new folder with --out")
            _make_folder(directory, exist_ok=True)
            return cls(directory)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for attempt in range(1, 1000):
            directory = RESULTS_DIR / (f"{stamp}-{config_name}" + (f"-{attempt}" if attempt > 1 else ""))
            try:
                _make_folder(directory, exist_ok=False)
                return cls(directory)
            except FileExistsError:
                continue
        raise FolderError(f"no free folder name for {stamp}-{config_name} in {RESULTS_DIR}: use --out")

    @classmethod
    def existing(cls, directory: str | Path) -> RunFolder:
        """A run folder to resume or read, with its records; FolderError or UserError when it is not one."""
        folder = cls(Path(directory))
        if not folder.directory.is_dir():
            raise FolderError(f"{folder.directory} is not a folder: --resume takes the folder of an earlier run")
        if not (folder.directory / "config.json").exists():
            raise FolderError(f"{folder.directory} has no config.json: --resume takes the folder of an earlier run")
        folder.runs = read_records(folder.directory / "runs.csv", RUN_COLUMNS)
        folder.epochs = read_records(folder.directory / "epochs.csv", EPOCH_COLUMNS)
        return folder

    # -- the lock ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, new: bool = False):
        """Hold the folder's lock while the block runs; refuse when a live process holds it.

        `new`: the folder must still hold no run once locked (another run may have finished there since).
        """
        self._acquire()
        try:
            if new:
                _refuse_a_run_in(self.directory)
            yield self
        finally:
            with contextlib.suppress(OSError):
                (self.directory / LOCK).unlink()
            self._locked = False

    def _acquire(self) -> None:
        path = self.directory / LOCK
        mine = {"host": socket.gethostname(), "pid": os.getpid(), "time_utc": _now(), "command": sys.argv}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder and holder.get("host") == mine["host"] and not _alive(holder.get("pid")):
                    print(f"note: taking over {path}, left by process {holder.get('pid')} (started "
                          f"{holder.get('time_utc')}), which is no longer running", file=sys.stderr)
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
                raise FolderError(_held_by(self.directory, holder)) from None
            except OSError as error:
                raise StoppedError(f"cannot write {path}: {error.strerror}; choose a writable folder") from None
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            self._locked = True
            return
        raise FolderError(f"{path} keeps coming back: another run is starting on {self.directory}")

    # -- sessions and records ----------------------------------------------------------------------

    def environment(self) -> dict:
        return read_json(self.directory / "environment.json")

    def sessions(self) -> list[dict]:
        return self.environment().get("sessions", [])

    def start_session(self, record: dict) -> int:
        """Append this session's record to environment.json (earlier ones untouched); its number."""
        environment = self.environment() or {"schema": SCHEMA, "sessions": []}
        self.session = len(environment["sessions"]) + 1
        environment["sessions"].append({"session": self.session, **record})
        write_json(self.directory / "environment.json", environment)
        return self.session

    def add_host(self, host: str, record: dict) -> None:
        """Record a node's host record in this session's "hosts" (a remote executor's nodes arrive as they run);
        earlier sessions stay as they were."""
        environment = self.environment()
        session = next(s for s in environment["sessions"] if s.get("session") == self.session)
        session.setdefault("hosts", {})[host] = record
        write_json(self.directory / "environment.json", environment)

    def write_config(self, values: dict) -> None:
        write_json(self.directory / "config.json", values)

    def config(self) -> dict:
        return read_json(self.directory / "config.json")

    def add(self, run: dict, epochs: list[dict]) -> None:
        """Record a finished cell (stamped with this session and the schema) and rewrite both files whole."""
        stamp = {"session": self.session, "schema": SCHEMA}
        runs, epochs = [*self.runs, {**run, **stamp}], [*self.epochs, *({**e, **stamp} for e in epochs)]
        with uninterrupted():  # no Ctrl-C between the two files (a row in epochs.csv alone is ignored on resume)
            atomic_write(self.directory / "epochs.csv", csv_text(epochs, with_sweep_columns(epochs, EPOCH_COLUMNS)))
            atomic_write(self.directory / "runs.csv", csv_text(runs, with_sweep_columns(runs, RUN_COLUMNS)))
        self.runs, self.epochs = runs, epochs

    def keep_finished(self) -> None:
        """For --resume: keep the cells an earlier session finished; failed ones run again."""
        self.runs = [r for r in self.runs if r["status"] in DONE]
        done = self.finished_keys()
        self.epochs = [e for e in self.epochs if cell_key(e) in done]

    def finished_keys(self) -> set[tuple]:
        return {cell_key(r) for r in self.runs}


def differences(first: dict, now: dict) -> list[str]:
    """What differs between the folder's first session and this one: code, packages, machine, resolved config."""
    found = []
    old_git, new_git = first.get("git", {}), now.get("git", {})
    if old_git.get("commit") != new_git.get("commit"):
        found.append(f"the commit ({_short(old_git.get('commit'))} then, {_short(new_git.get('commit'))} now)")
    elif old_git.get("diff_sha256") != new_git.get("diff_sha256"):
        found.append("the uncommitted changes to the code")
    old_packages, new_packages = _versions(first), _versions(now)
    changed = [f"{name} {old_packages.get(name, 'absent')} -> {new_packages.get(name, 'absent')}"
               for name in sorted(set(old_packages) | set(new_packages))
               if old_packages.get(name) != new_packages.get(name)]
    if changed:
        found.append("package versions (" + ", ".join(changed) + ")")
    old_cpu, new_cpu = first.get("cpu", {}), now.get("cpu", {})
    if (old_cpu.get("model"), old_cpu.get("usable_cores")) != (new_cpu.get("model"), new_cpu.get("usable_cores")):
        found.append(f"the machine ({old_cpu.get('model')} x{old_cpu.get('usable_cores')} then, "
                     f"{new_cpu.get('model')} x{new_cpu.get('usable_cores')} now)")
    from harness.config import with_model_defaults

    old_config, new_config = with_model_defaults(first.get("config", {})), with_model_defaults(now.get("config", {}))
    keys = sorted(k for k in set(old_config) | set(new_config) if old_config.get(k) != new_config.get(k))
    if keys:
        found.append("the resolved config (" + ", ".join(keys) + ")")
    return found


def _versions(session: dict) -> dict[str, str]:
    """The package list's versions and those of every module the run's adapters declare."""
    found = dict(session.get("packages", {}))
    for modules in session.get("adapter_modules", {}).values():
        found.update(modules)
    return found


def _refuse_a_run_in(directory: Path) -> None:
    if any((directory / name).exists() for name in RUN_FILES):
        raise FolderError(f"{directory} already holds a run: resume it with --resume {directory}, or choose another "
                          "folder with --out")


def _make_folder(directory: Path, exist_ok: bool) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as error:
        raise StoppedError(f"cannot create {directory}: {error.strerror}; choose a writable folder with --out") \
            from None


def _read_lock(path: Path) -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return {}


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held_by(directory: Path, holder: dict) -> str:
    if not holder:
        return (f"{directory} is locked by another run ({directory / LOCK} exists but cannot be read): wait for it, "
                f"or delete the lock if no run is writing there")
    command = " ".join(holder.get("command", [])[1:]) or "?"
    return (f"{directory} is being written by process {holder.get('pid')} on {holder.get('host')} (since "
            f"{holder.get('time_utc')}, `{command}`): wait for it to finish or choose another folder")


def _short(commit) -> str:
    return (commit or "none")[:10]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
