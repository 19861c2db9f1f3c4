"""mode = "optuna": a search over [sweep.space], one Optuna study per (framework, variant, model).

Each framework gets its own study with the same budget (`trials`) and the same sampler seed, so every
framework is tuned as hard as the others, and with the TPE sampler their first, random trials are the
same settings. A trial is one setting: its cells (one per repeat) run through the run's executor like
any other cell (own process, the fairness rules), and its value is the mean over the repeats of the
final validation accuracy. Each round asks one trial of every unfinished study and runs their cells
together, so an executor with several nodes trains several frameworks at once.

The studies live in RUN/study.db (SQLite), so `--resume` carries on where a run stopped: a trial whose
cells all finished is never run again; one interrupted mid-cell (left "running", or whose cell was
lost with its node) is marked failed and its parameters enqueued, so the next trial runs exactly
them, and its finished repeats are kept; parameters equal to an earlier trial's take that trial's
value without training. The budget counts completed trials and those whose cells failed.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from harness.config import NUMBER, Cell, Config
from harness.errors import UserError
from harness.results.records import cell_key
from harness.tuning import sweep

STUDY_FILE = "study.db"
RERUN = ("lost",)  # cell statuses that say nothing about the setting: its trial runs again
SCORED = ("ok", "diverged")  # a diverged cell scores what it reached (about chance): a rate too high is bad


def storage(directory: Path) -> str:
    return f"sqlite:///{Path(directory).resolve() / STUDY_FILE}"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("mode = 'optuna' needs Optuna, which is not installed: pip install -e '.[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def study_name(cell: Cell) -> str:
    return f"{cell.framework}/{cell.variant}/{cell.model}"


def open_study(config: Config, directory: Path, name: str):
    """The study named `name` in the folder's study.db, created or loaded; its sampler seeded from the config's
    seed and the trials it holds (a resumed sampler must not draw the first session's settings again)."""
    optuna = _optuna()
    settings = config.values["sweep"]
    url = storage(directory)
    try:
        held = len(optuna.load_study(study_name=name, storage=url).trials)
    except KeyError:
        held = 0
    seed = config.seed + held
    sampler = (optuna.samplers.RandomSampler(seed=seed) if settings["sampler"] == "random"
               else optuna.samplers.TPESampler(seed=seed))
    study = optuna.create_study(study_name=name, storage=url, load_if_exists=True, direction="maximize",
                                sampler=sampler)
    recover(study)
    return study


def recover(study) -> None:
    """Trials an earlier session left running were interrupted mid-cell: fail them and enqueue their parameters,
    so that the next trial runs the same setting (and nothing is searched twice)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})


def spent(study) -> int:
    """The trials that count against the budget: completed, or failed by a cell (not interrupted)."""
    from optuna.trial import TrialState

    return sum(t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)
               for t in study.get_trials(deepcopy=False))


def suggest(trial, space: dict) -> dict:
    """The trial's setting: each key drawn from its range, or chosen from its list (as text: Optuna's choices are
    scalars, a choice such as [512, 512] is not)."""
    setting = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            texts = [sweep.text(choice) for choice in spec]
            setting[key] = spec[texts.index(trial.suggest_categorical(key, texts))]
        elif sweep.schema_of(key)[0] is int:
            setting[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1),
                                             log=spec["log"])
        else:
            assert sweep.schema_of(key)[0] == NUMBER
            setting[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), step=spec.get("step"),
                                               log=spec["log"])
    return setting


def same_as(study, trial, setting: dict):
    """An earlier finished trial of the study with this very setting, or None."""
    from optuna.trial import TrialState

    for earlier in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if earlier.number != trial.number and earlier.params == trial.params and \
                (earlier.state == TrialState.COMPLETE or "error" in earlier.user_attrs):
            return earlier
    return None


class Search:
    """The studies of a run and the trials each round asks for."""

    def __init__(self, config: Config, directory: Path) -> None:
        self.config, self.directory = config, directory
        self.budget = config.values["sweep"]["trials"]
        self.templates: dict[str, list[Cell]] = {}  # study name -> its cells before a setting, one per repeat
        for cell in config.cells():
            self.templates.setdefault(study_name(cell), []).append(cell)
        self.studies = {}

    def open(self, names: list[str]) -> None:
        self.studies = {name: open_study(self.config, self.directory, name) for name in names}

    def ask(self) -> list[tuple]:
        """(study name, trial, setting, its cells) for one new trial of every study with budget left."""
        asked = []
        for name, study in self.studies.items():
            while spent(study) < self.budget:
                trial = study.ask()
                setting = suggest(trial, self.config.values["sweep"]["space"])
                if self._settled(name, study, trial, setting):
                    continue
                cells = [replace(c, setting=sweep.freeze(setting), trial=trial.number) for c in self.templates[name]]
                asked.append((name, trial, setting, cells))
                break
        return asked

    def _settled(self, name: str, study, trial, setting: dict) -> bool:
        """Settle a trial without training where that is the honest answer: a setting the config refuses, or one
        an earlier trial ran (its value, again)."""
        from optuna.trial import TrialState

        try:
            sweep.check_setting(self.config, setting)
        except UserError as error:
            trial.set_user_attr("error", str(error))
            study.tell(trial, state=TrialState.FAIL)
            say(f"{name} trial {trial.number}: not run: {error}")
            return True
        earlier = same_as(study, trial, setting)
        if earlier is None:
            return False
        trial.set_user_attr("same_as", earlier.number)
        if earlier.state == TrialState.COMPLETE:
            study.tell(trial, earlier.value)
        else:
            trial.set_user_attr("error", earlier.user_attrs["error"])
            study.tell(trial, state=TrialState.FAIL)
        say(f"{name} trial {trial.number}: the setting of trial {earlier.number}, whose result it takes")
        return True

    def tell(self, name: str, trial, setting: dict, cells: list[Cell], rows: dict[tuple, dict]) -> None:
        """The trial's value from its cells' rows: the mean final validation accuracy over the repeats."""
        from optuna.trial import TrialState

        study = self.studies[name]
        found = [rows.get(cell.key) for cell in cells]
        if any(row is None or row["status"] in RERUN for row in found):  # stopped, or a node lost: run it again
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
            return
        failed = [row for row in found if row["status"] not in SCORED]
        if failed:
            trial.set_user_attr("error", f"{failed[0]['status']}: {failed[0].get('error', '')}")
            study.tell(trial, state=TrialState.FAIL)
            say(f"{name} trial {trial.number}: failed ({failed[0]['status']}) at {sweep.describe(setting)}")
            return
        value = sum(float(row.get("final_accuracy") or 0) for row in found) / len(found)
        study.tell(trial, value)
        best = study.best_trial
        say(f"{name} trial {trial.number}: validation accuracy {value:.2%} at {sweep.describe(setting)}; best "
            f"{best.value:.2%} (trial {best.number}); {spent(study)} of {self.budget} trials")


def say(line: str) -> None:
    print(line, file=sys.stderr)


def run_search(config: Config, folder, data_dir: str | None, progress: bool, executor, hosts) -> None:
    """Every study's trials, round after round, each round's cells through the executor; the records as any
    run's (harness/runner.py)."""
    from harness.runner import run_sweep, skipped

    search = Search(config, folder.directory)
    cannot = [cells[0] for cells in search.templates.values() if skipped(cells[0], config)]
    if cannot:  # a framework that cannot run here is recorded once, as skipped, and searches nothing
        run_sweep(config, folder, data_dir, progress, executor=executor, hosts=hosts, cells=cannot)
    search.open([name for name, cells in search.templates.items() if cells[0] not in cannot])
    while asked := search.ask():
        cells = [cell for *_, trial_cells in asked for cell in trial_cells]
        run_sweep(config, folder, data_dir, progress, executor=executor, hosts=hosts, cells=cells)
        rows = {cell_key(row): row for row in folder.runs}
        for name, trial, setting, trial_cells in asked:
            search.tell(name, trial, setting, trial_cells, rows)
