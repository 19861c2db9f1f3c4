"""[sweep]: many settings of one config, each setting a part of its cells' identity.

A setting maps config keys ("optimizer.lr", "mlp.hidden", "batch_size") to values. Every setting is
checked by applying it to the resolved config and resolving that again, so a wrong key or value is
refused in the config's own sentence, prefixed with "[sweep]". The modes:

- grid: every combination of the listed values; zip: the lists paired value by value;
- optuna: a search (harness/tuning/search.py) over [sweep.space], one study per framework, variant and model;
- selected: exactly the listed (framework, variant, model, setting) cells: what `bench.py final` writes.

A model's cells vary only the keys that reach it (a CNN is not trained once per mlp.hidden), so a
setting holds the top-level and [optimizer] keys and those of its own model's table. Searching modes
evaluate on a validation hold-out (docs/DESIGN.md, "Sweeps and honest selection").
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace

from harness.config import MODELS, NUMBER, OPTIMIZER, TOP, TRAINING_IMAGES, Cell, Config, ConfigError

PREFIX = "sweep."  # a setting's columns in runs.csv and epochs.csv: sweep.optimizer.lr
MODES = ("grid", "zip", "optuna", "selected")
SEARCHING = ("grid", "zip", "optuna")  # the modes that choose a setting, and so must not look at the test set
SAMPLERS = ("tpe", "random")
SWEPT_TOP = ("batch_size", "standardize")  # beside every [optimizer] key and every model key but target_accuracy
HOLD_OUT_SHARE = 12  # a sweep's default hold-out: a twelfth of the training images (MNIST's 5000 of 60000)
RANGE_KEYS = {"low", "high", "log", "step"}
OPTIONS = {"grid": {"mode"}, "zip": {"mode"}, "optuna": {"mode", "trials", "sampler", "space"},
           "selected": {"mode", "source", "selected"}}


class SweepError(ConfigError):
    """A [sweep] value a user must fix."""


# -- settings: frozen for a Cell, as text for the records ---------------------------------------------------------


def freeze(value):
    """A hashable copy (lists become tuples), for a Cell's setting."""
    if isinstance(value, dict):
        return tuple((k, freeze(v)) for k, v in value.items())
    return tuple(freeze(v) for v in value) if isinstance(value, list | tuple) else value


def thaw(value):
    return [thaw(v) for v in value] if isinstance(value, tuple) else value


def setting_of(cell: Cell) -> dict:
    return {key: thaw(value) for key, value in cell.setting}


def text(value) -> str:
    """A value as its sweep column holds it: a string as is, anything else as JSON (0.001, [512, 512], true)."""
    return value if isinstance(value, str) else json.dumps(thaw(value))


def parse(value: str):
    """The value a sweep column's text stands for (the inverse of `text`)."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def columns(setting: dict) -> dict[str, str]:
    """The setting as runs.csv and epochs.csv columns."""
    return {PREFIX + key: text(value) for key, value in setting.items()}


def describe(setting: dict) -> str:
    """optimizer.lr=0.00443 mlp.hidden=[512]: for labels, messages and tables (a search's rates to 3 digits; the
    records keep every digit)."""
    return " ".join(f"{key}={short(value)}" for key, value in setting.items())


def short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else text(value)


def slug(setting: dict) -> str:
    """The setting in a file name (logs, saved parameters): keys sorted, odd characters replaced."""
    words = "-".join(f"{key}={text(value)}" for key, value in sorted(setting.items()))
    return re.sub(r"[^A-Za-z0-9._=-]", "_", words)


# -- applying a setting -------------------------------------------------------------------------------------------


def apply(values: dict, setting: dict) -> dict:
    """The resolved values with the setting's keys replaced (tables copied, never changed in place)."""
    values = dict(values)
    for key, value in setting.items():
        table, _, name = key.rpartition(".")
        if table:
            values[table] = {**values[table], name: thaw(value)}
        else:
            values[name] = thaw(value)
    return values


def cell_config(config: Config, cell: Cell) -> Config:
    """The config as the cell's worker sees it: its own setting applied."""
    return replace(config, values=apply(config.values, setting_of(cell))) if cell.setting else config


def mode(config: Config | dict) -> str | None:
    values = config.values if isinstance(config, Config) else config
    return (values.get("sweep") or {}).get("mode")


def settings_of(config: Config, framework: str, variant: str, model: str) -> list[tuple]:
    """The frozen settings the cells of one (framework, variant, model) train; [()] without a sweep (and for a
    search, whose trials get theirs from the study)."""
    sweep = config.values.get("sweep")
    if not sweep or sweep["mode"] == "optuna":
        return [()]
    if sweep["mode"] == "selected":
        return [freeze(entry["setting"]) for entry in sweep["selected"]
                if (entry["framework"], entry["variant"], entry["model"]) == (framework, variant, model)]
    return [freeze(s) for s in model_settings(expand(sweep), model)]


def expand(sweep: dict) -> list[dict]:
    """Every setting of a grid (each combination, the first key slowest) or a zip (the lists side by side)."""
    axes = {key: values for key, values in sweep.items() if key not in OPTIONS["grid"]}
    combined = itertools.product(*axes.values()) if sweep["mode"] == "grid" else zip(*axes.values())
    return [dict(zip(axes, values)) for values in combined]


def reaches(key: str, model: str) -> bool:
    """Whether a swept key changes a model's training: any key but another model's."""
    table = key.partition(".")[0] if "." in key else ""
    return table not in MODELS or table == model


def model_settings(settings: list[dict], model: str) -> list[dict]:
    """The settings as one model's cells see them: other models' keys dropped, repeats removed."""
    found: dict[str, dict] = {}
    for setting in settings:
        own = {k: v for k, v in setting.items() if reaches(k, model)}
        found.setdefault(json.dumps(own, sort_keys=True), own)
    return list(found.values())


def planned(config: Config) -> str:
    """What a run will train, for its first line: "50 cells", or a search's trials."""
    if mode(config) == "optuna":
        studies = len({c.key[:4] for c in config.cells()})
        sweep = config.values["sweep"]
        return (f"{sweep['trials']} trials in each of {studies} stud{'ies' if studies > 1 else 'y'} "
                f"({config.repeats} cell{'s' * (config.repeats > 1)} a trial)")
    return f"{len(config.cells())} cells"


# -- checking [sweep] ---------------------------------------------------------------------------------------------


def swept_keys() -> list[str]:
    """Every key a sweep may vary: hyper-parameters, never what decides the cells or how they are timed."""
    # the target and the training set's size say what a row is judged by and on, not a setting to choose
    fixed = ("target_accuracy", "train_samples")
    models = [f"{m}.{k}" for m, schema in MODELS.items() for k in schema if k not in fixed]
    return [*SWEPT_TOP, *(f"optimizer.{k}" for k in OPTIMIZER), *models]


def schema_of(key: str) -> tuple:
    """(type, default, check) of a config key, from the config's own tables."""
    table, _, name = key.rpartition(".")
    return TOP[name] if not table else OPTIMIZER[name] if table == "optimizer" else MODELS[table][name]


def flatten(table: dict, where: str = "") -> dict:
    """A [sweep] table with dotted keys: `optimizer.lr = [...]` (a TOML sub-table) and `"optimizer.lr" = [...]`
    mean the same; a range ({low, high}) stays a value."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict) and not RANGE_KEYS & set(value) and where + key not in ("space", "selected"):
            flat.update(flatten(value, f"{where}{key}."))
        else:
            flat[where + key] = value
    return flat


def resolve_sweep(raw: dict, table, name: str, overrides: dict | None, adapters: dict | None) -> Config:
    """The config of a raw TOML document with a [sweep] table: everything else checked by the config, then
    every setting of the sweep (or every end of a search's ranges) resolved through the same checks."""
    from harness.config import resolve

    if not isinstance(table, dict):
        raise SweepError(f"sweep must be a table ([sweep]), not {type(table).__name__}")
    table = flatten(table)
    chosen = table.get("mode", "grid")
    if chosen not in MODES:
        raise SweepError(f"sweep.mode = {chosen!r} must be one of {', '.join(map(repr, MODES))}")
    if chosen in SEARCHING:
        _refuse_the_test_set(raw)
        sizes = resolve({k: v for k, v in raw.items() if k not in ("validation", "eval_split")}, name, overrides,
                        adapters)
        base = resolve(_hold_out(raw, sizes), name, overrides, sizes.adapters)
    else:
        base = resolve(raw, name, overrides, adapters)
    check = {"grid": _check_grid, "zip": _check_grid, "optuna": _check_search, "selected": _check_selected}[chosen]
    sweep = check({**table, "mode": chosen}, base, overrides or {})
    return Config(base.name, {**base.values, "sweep": sweep}, base.adapters)


def _refuse_the_test_set(raw: dict) -> None:
    """A searching sweep never evaluates on the test set: its accuracy would be the one the settings were chosen by."""
    if raw.get("eval_split") == "test":
        raise SweepError("a sweep chooses its settings by the accuracy it evaluates, so eval_split = 'test' would "
                         "choose them on the test set and make its accuracy optimistic: drop eval_split (a sweep "
                         "evaluates on a validation hold-out) and report the test set once with bench.py final")


def _hold_out(raw: dict, sizes: Config) -> dict:
    """The raw config evaluating on a validation hold-out: the config's own, or a twelfth of the training images."""
    images = TRAINING_IMAGES.get(sizes.dataset, sizes.synthetic["train"])
    return {"validation": images // HOLD_OUT_SHARE, **raw, "eval_split": "validation"}


def check_setting(config: Config, setting: dict, overrides: dict | None = None) -> dict:
    """The resolved values of the config with the setting applied; SweepError in the config's own sentence."""
    from harness.config import resolve

    _check_keys(setting, config, overrides or {})
    plain = {k: v for k, v in apply(config.values, setting).items() if k != "sweep"}
    try:
        return resolve(plain, config.name, None, config.adapters).values
    except ConfigError as error:
        named = len(setting) == 1 and next(iter(setting)).rpartition(".")[2] in str(error)
        raise SweepError(f"[sweep] {error}" if named else f"[sweep] at {describe(setting)}: {error}") from None


def _check_keys(setting: dict, config: Config, overrides: dict) -> None:
    allowed = swept_keys()
    for key in setting:
        if key in allowed:
            table = key.partition(".")[0]
            if table in MODELS and table not in config.models and overrides.get("models") is None:  # --models
                raise SweepError(f"[sweep] varies {key}, but models = {config.models} trains no {table}: add "
                                 f"{table!r} to models or drop the key")
            if key.endswith(".epochs") and overrides.get("epochs") is not None:
                raise SweepError(f"[sweep] varies {key}, which --epochs sets for every model: drop one of them")
            own = next((m for m in config.models if config.values[m].get("lr") and f"{m}.lr" not in setting), None)
            if key == "optimizer.lr" and own:
                raise SweepError(f"[sweep] varies optimizer.lr, but {own}.lr = {config.values[own]['lr']:g} gives "
                                 f"the {own} its own rate, which the sweep would not reach: vary {own}.lr as well, "
                                 f"or remove {own}.lr")
            continue
        if key.count(".") > 1 or not key:
            raise SweepError(f"[sweep] {key!r} is not a config key: name one as 'key' or 'table.key', e.g. "
                             "'optimizer.lr'")
        table, _, name = key.rpartition(".")
        known = name in TOP if not table else (table == "optimizer" and name in OPTIMIZER) or \
            (table in MODELS and name in MODELS[table])
        if known or table in ("synthetic", "slurm", "variants", "options"):
            raise SweepError(f"[sweep] cannot vary {key}: a sweep varies hyper-parameters ({', '.join(SWEPT_TOP)}, "
                             "optimizer.*, and the model tables' keys but target_accuracy and train_samples), not "
                             "what decides the cells or how they are timed")
        if table in ("optimizer", *MODELS):
            own = [k.partition(".")[2] for k in allowed if k.startswith(f"{table}.")]
            raise SweepError(f"[sweep] unknown key {table}.{name!r}: known keys are {', '.join(own)}")
        raise SweepError(f"[sweep] unknown key {key!r}: a sweep varies {', '.join(SWEPT_TOP)}, optimizer.<key> and "
                         f"<model>.<key> ({', '.join(MODELS)})")


def _check_grid(table: dict, config: Config, overrides: dict) -> dict:
    axes = {k: v for k, v in table.items() if k != "mode"}
    misplaced = next((k for k in axes if k in OPTIONS["optuna"]), None)
    if misplaced:
        raise SweepError(f"sweep.{misplaced} belongs to a search: set mode = 'optuna', or drop it")
    if not axes:
        raise SweepError("[sweep] names no key to vary: add one, e.g. \"optimizer.lr\" = [0.001, 0.003]")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"[sweep] {key} = {values!r} must be a non-empty list of the values to try, e.g. "
                             f"{key} = [{text(values)}, ...]")
        texts = [text(v) for v in values]
        repeated = next((t for t in texts if texts.count(t) > 1), None)
        if repeated is not None:
            raise SweepError(f"[sweep] {key} lists {repeated} more than once: name each value once")
    lengths = {len(v) for v in axes.values()}
    if table["mode"] == "zip" and len(lengths) > 1:
        listed = ", ".join(f"{k} has {len(v)}" for k, v in axes.items())
        raise SweepError(f"[sweep] mode = 'zip' pairs the lists value by value, but {listed} values: give them the "
                         "same length, or use mode = 'grid' for every combination")
    sweep = {"mode": table["mode"], **axes}
    for setting in expand(sweep):
        check_setting(config, setting, overrides)
    return sweep


def _check_search(table: dict, config: Config, overrides: dict) -> dict:
    unknown = sorted(set(table) - OPTIONS["optuna"])
    if unknown:
        raise SweepError(f"[sweep] mode = 'optuna' searches the ranges of [sweep.space], so {unknown[0]!r} does not "
                         f"belong here: move it into [sweep.space] (known keys are {', '.join(OPTIONS['optuna'])})")
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise SweepError("mode = 'optuna' needs Optuna, which is not installed: pip install -e '.[tune]'")
    trials, sampler, space = table.get("trials"), table.get("sampler", "tpe"), table.get("space")
    if trials is None:
        raise SweepError("mode = 'optuna' needs trials: how many settings each study tries, e.g. trials = 20")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise SweepError(f"sweep.trials = {trials!r} must be a positive integer: how many settings each study tries")
    if sampler not in SAMPLERS:
        raise SweepError(f"sweep.sampler = {sampler!r} must be one of {', '.join(map(repr, SAMPLERS))}")
    if not isinstance(space, dict) or not space:
        raise SweepError("mode = 'optuna' needs [sweep.space] naming each key's range, e.g. \"optimizer.lr\" = "
                         "{low = 1e-4, high = 1e-1, log = true}")
    space = {key: _check_range(key, value, config, overrides) for key, value in flatten(space).items()}
    return {"mode": "optuna", "trials": trials, "sampler": sampler, "space": space}


def _check_range(key: str, value, config: Config, overrides: dict):
    """A list is a categorical choice; a table {low, high[, log][, step]} a range of numbers."""
    _check_keys({key: None}, config, overrides)
    if isinstance(value, list):
        _check_grid({"mode": "grid", key: value}, config, overrides)
        return value
    if not isinstance(value, dict) or not {"low", "high"} <= set(value) or set(value) - RANGE_KEYS:
        raise SweepError(f"sweep.space.{key} = {value!r} must be a range {{low = ..., high = ...[, log = true]"
                         "[, step = ...]} or a list of choices")
    kind = schema_of(key)[0]
    if kind not in (int, NUMBER):
        raise SweepError(f"sweep.space.{key} cannot be a range: {key} is not a number; list its choices instead")
    low, high, log, step = value["low"], value["high"], value.get("log", False), value.get("step")
    for bound in (low, high, step):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, kind)):
            what = "integers" if kind is int else "numbers"
            raise SweepError(f"sweep.space.{key} = {value!r}: its low, high and step must be {what}")
    if not isinstance(log, bool):
        raise SweepError(f"sweep.space.{key}.log = {log!r} must be true or false")
    if not low < high:
        raise SweepError(f"sweep.space.{key}: low = {low!r} must be below high = {high!r}")
    if log and (low <= 0 or step is not None):
        raise SweepError(f"sweep.space.{key}: a log range needs low > 0 and no step")
    if step is not None and step <= 0:
        raise SweepError(f"sweep.space.{key}.step = {step!r} must be greater than 0")
    for end in (low, high):
        check_setting(config, {key: end}, overrides)
    return {"low": low, "high": high, "log": log, **({"step": step} if step is not None else {})}


def _check_selected(table: dict, config: Config, overrides: dict) -> dict:
    entries, source = table.get("selected"), table.get("source", "")
    if not isinstance(entries, list) or not entries or not isinstance(source, str):
        raise SweepError("mode = 'selected' needs selected = [{framework, variant, model, setting = {...}}, ...] "
                         "(bench.py final writes it)")
    for entry in entries:
        if not isinstance(entry, dict) or not {"framework", "variant", "model", "setting"} <= set(entry) or \
                not isinstance(entry["setting"], dict):
            raise SweepError(f"sweep.selected entry {entry!r} must name framework, variant, model and setting")
        if entry["framework"] not in config.frameworks or entry["model"] not in config.models or \
                entry["variant"] not in config.variants[entry["framework"]]:
            raise SweepError(f"sweep.selected names {entry['framework']}/{entry['variant']} {entry['model']}, which "
                             "the config's frameworks, variants and models do not run")
        check_setting(config, entry["setting"], overrides)
    return {"mode": "selected", "source": source, "selected": entries}
