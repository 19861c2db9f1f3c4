"""TOML config -> a validated Config and its plan of cells (framework x variant x model x repeat).

Every key is checked: an unknown key, a wrong type or an impossible value is refused
with one sentence naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.adapter import AdapterInfo, discover
from harness.devices import resolve as resolve_device
from harness.errors import UserError
from harness.models import SCHEDULES, ModelSpec, OptimizerSpec, model_spec

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quick.toml"


class ConfigError(UserError):
    """A config or command-line value a user must fix; the message says how."""


NUMBER = (int, float)


# key: (type or types, default, check returning an error phrase or None)
def _positive(v):
    return None if v > 0 else "must be greater than 0"


def _non_negative(v):
    return None if v >= 0 else "must be 0 or more"


def _choice(*options):
    return lambda v: None if v in options else f"must be one of {', '.join(map(repr, options))}"


def _fraction(v):
    return None if 0 <= v < 1 else "must be in [0, 1)"


def _sizes(v):
    ok = v and all(isinstance(n, int) and n > 0 for n in v)
    return None if ok else "must be a non-empty list of positive integers"


def _kernel_sizes(v):
    sizes = [v] if isinstance(v, int) and not isinstance(v, bool) else v
    ok = isinstance(sizes, list) and sizes and all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                   for n in sizes)
    return None if ok else "must be a positive integer, or a list of them (one per convolution)"


def _patch_side(v):
    return None if v > 0 and 28 % v == 0 else "must divide the image's side of 28: 1, 2, 4, 7, 14 or 28"


def _betas(v):
    ok = len(v) == 2 and all(isinstance(b, NUMBER) and 0 <= b < 1 for b in v)
    return None if ok else "must be two numbers in [0, 1)"


TOP = {
    "name": (str, None, None),
    "description": (str, "", None),
    "dataset": (str, "mnist", _choice("mnist", "fashion_mnist", "synthetic")),
    "data_dir": (str, "", None),
    "validation": (int, 0, _non_negative),
    "eval_split": (str, "test", _choice("test", "validation")),
    "standardize": (bool, False, None),
    "frameworks": (list, ["all"], None),
    "models": (list, ["mlp", "cnn"], None),
    "device": (str, "cpu", _choice("cpu", "gpu", "auto")),
    "repeats": (int, 1, _positive),
    "seed": (int, 0, _non_negative),
    "threads": (int, 0, _non_negative),
    "timeout_s": (NUMBER, 1800, _positive),
    "batch_size": (int, 128, _positive),
    "eval_batch_size": (int, 1000, _positive),
    "blas": (str, "environment", _choice("environment", "native")),
    "matmul_size": (int, 4096, _positive),
    "ceilings": (str, "cached", _choice("cached", "measure", "off")),
    "max_rss_mb": (NUMBER, 0, _non_negative),
    "eval_every_steps": (int, 0, _non_negative),
    "stop_at_target": (bool, False, None),
    "executor": (str, "local", _choice("local", "ray", "slurm")),
    "evaluate": (str, "epoch", _choice("epoch", "end")),  # "end": one evaluation, after training (bench.py final)
    "save_params": (bool, False, None),  # each cell's trained parameters in params/<cell>.npz (bench.py show)
}
OPTIMIZER = {
    "name": (str, "adam", _choice("sgd", "adam", "adamw")),
    "lr": (NUMBER, 1e-3, _positive),
    "momentum": (NUMBER, 0.0, _fraction),
    "nesterov": (bool, False, None),
    "betas": (list, [0.9, 0.999], _betas),
    "eps": (NUMBER, 1e-8, _positive),
    "weight_decay": (NUMBER, 0.0, _non_negative),
    "lr_decay": (NUMBER, 1.0, lambda v: None if 0 < v <= 1 else "must be in (0, 1]: the factor per epoch"),
    "schedule": (str, "epoch_decay", _choice(*SCHEDULES)),
    "warmup": (NUMBER, 0.0, _fraction),
    "lr_start": (NUMBER, 0.0, lambda v: None if 0 <= v <= 1 else "must be in [0, 1]: a fraction of lr"),
    "lr_end": (NUMBER, 0.0, lambda v: None if 0 <= v <= 1 else "must be in [0, 1]: a fraction of lr"),
    "schedule_epochs": (NUMBER, 0.0, _non_negative),
}
MODEL_COMMON = {
    "epochs": (int, None, _positive),
    "train_samples": (int, 0, _non_negative),  # train on the first N training images; 0 = all of them
    "lr": (NUMBER, 0, _non_negative),  # this model's learning rate in place of [optimizer]'s; 0 = [optimizer]'s
    "dropout": (NUMBER, None, _fraction),
    "target_accuracy": (NUMBER, None, lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
}
MODELS = {
    "mlp": {**MODEL_COMMON, "hidden": (list, [512, 512], _sizes)},
    "cnn": {**MODEL_COMMON, "channels": (list, [32, 64], _sizes), "dense": (int, 128, _positive),
            "kernel_size": ((int, list), 3, _kernel_sizes)},
    "rnn": {**MODEL_COMMON, "hidden": (int, 128, _positive)},
    "vit": {**MODEL_COMMON, "width": (int, 64, _positive), "depth": (int, 2, _positive),
            "heads": (int, 4, _positive), "mlp": (int, 128, _positive), "patch": (int, 7, _patch_side)},
}
MODEL_DEFAULTS = {
    "mlp": {"epochs": 3, "dropout": 0.2, "target_accuracy": 0.97},
    "cnn": {"epochs": 3, "dropout": 0.5, "target_accuracy": 0.98},
    "rnn": {"epochs": 10, "dropout": 0.1, "target_accuracy": 0.985},
    "vit": {"epochs": 12, "dropout": 0.2, "target_accuracy": 0.97},
}


def with_model_defaults(values: dict) -> dict:
    """A resolved config with each model table's keys that have defaults filled in where missing: a run folder
    written before a key existed (train_samples) compares equal to one of the same settings written after."""
    tables = {m: {**{k: d for k, (_, d, _) in MODELS[m].items() if d is not None}, **values[m]}
              for m in MODELS if isinstance(values.get(m), dict)}
    return {**values, **tables}


# A model table's keys that say how it is trained, not what the network is.
TRAINING_KEYS = ("epochs", "target_accuracy", "train_samples", "lr")


def model_optimizer(values: dict, model: str) -> dict:
    """The [optimizer] table as a model trains with it: its own lr where its table sets one."""
    own = values[model].get("lr") or values["optimizer"]["lr"]
    return {**values["optimizer"], "lr": own}


def network_settings(table: dict) -> dict:
    """A model table's network: its sizes and dropout, without TRAINING_KEYS."""
    return {k: v for k, v in table.items() if k not in TRAINING_KEYS}


SYNTHETIC = {"train": (int, 512, _positive), "eval": (int, 256, _positive)}
SLURM = {  # [slurm]: how `executor = "slurm"` submits cells (harness/execute/slurm.py)
    "partition": (str, "", None),  # sbatch --partition; "" = the cluster's default
    "time_limit_min": (int, 60, _positive),  # sbatch --time of each cell's job
    "array_parallelism": (int, 0, _non_negative),  # cells at once (--array=...%N); 0 = as many as the cluster gives
    "sbatch": (dict, {}, lambda v: None if all(isinstance(x, (str, int)) for x in v.values())
               else "must map sbatch options to strings, integers or true"),  # e.g. {account = "proj"}
    "folder": (str, "", None),  # submitit's folder, on the shared file system; "" = <run folder>/slurm
    "python": (str, "", None),  # the Python the nodes run; "" = this one
}
TABLES = ("optimizer", *MODELS, "variants", "options", "synthetic", "slurm")


@dataclass(frozen=True)
class Cell:
    """One process's work: one framework variant training one model once."""

    framework: str
    variant: str
    model: str
    device: str
    repeat: int
    seed: int
    setting: tuple = ()  # a sweep's (key, value) pairs, values frozen (harness/tuning/sweep.py); part of the identity
    trial: int | None = None  # the Optuna trial that ran it (harness/tuning/search.py); not part of the identity

    @property
    def key(self) -> tuple:
        from harness.tuning.sweep import columns, setting_of

        return (self.framework, self.variant, self.model, self.device, self.repeat,
                *sorted(columns(setting_of(self)).items()))

    @property
    def label(self) -> str:
        from harness.tuning.sweep import describe, setting_of

        setting = f" {describe(setting_of(self))}" if self.setting else ""
        return f"{self.framework}/{self.variant} {self.model} {self.device} #{self.repeat}{setting}"


@dataclass(frozen=True)
class Config:
    name: str
    values: dict  # the resolved config, every key filled in (written beside the results)
    adapters: dict[str, AdapterInfo] = field(repr=False)

    def __getattr__(self, key):
        try:
            return self.__dict__["values"][key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def optimizer(self) -> OptimizerSpec:
        values = self.values["optimizer"]
        return OptimizerSpec(**{**values, "betas": tuple(values["betas"])})

    def model(self, name: str) -> ModelSpec:
        return model_spec(name, **network_settings(self.values[name]))

    def cells(self) -> list[Cell]:
        """Every cell the config plans; in an Optuna search, the cells each trial runs, before the study gives
        them a setting."""
        from harness.tuning.sweep import settings_of

        return [
            Cell(framework, variant, model, self.device, repeat, self.seed + repeat, setting)
            for model in self.models
            for framework in self.frameworks
            for variant in self.variants[framework]
            for setting in settings_of(self, framework, variant, model)
            for repeat in range(self.repeats)
        ]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity: a cpuset container's share), not all the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_table(table: dict, schema: dict, where: str) -> dict:
    """Type- and value-check one TOML table against its schema; fill defaults."""
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]!r}: known keys are {', '.join(schema)}")
    resolved = {}
    for key, (kind, default, check) in schema.items():
        value = table.get(key, default)
        if value is None:
            raise ConfigError(f"{where}{key} is required")
        is_bool = isinstance(value, bool)
        if (is_bool and kind is not bool) or not isinstance(value, kind):
            expected = (kind.__name__ if isinstance(kind, type) else "a number" if kind == NUMBER
                        else " or ".join(k.__name__ for k in kind))
            raise ConfigError(f"{where}{key} = {value!r} must be {expected}")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{where}{key} = {value!r} {problem}")
        resolved[key] = value
    return resolved


def _names(where: str, values: list) -> list[str]:
    """A list of distinct strings, or one sentence saying what is wrong with it."""
    for value in values:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must list names (strings), not {value!r}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(f"{where} lists {repeated[0]!r} more than once: name it once")
    return values


def _expand_frameworks(names: list, adapters: dict[str, AdapterInfo]) -> list[str]:
    _names("frameworks", names)
    chosen: list[str] = []
    for name in names:
        for one in adapters if name == "all" else [name]:
            if one not in adapters:
                raise ConfigError(f"unknown framework {one!r}: known frameworks are {', '.join(adapters)}, or 'all'")
            if one not in chosen:
                chosen.append(one)
    if not chosen:
        raise ConfigError("frameworks is empty: name at least one of " + ", ".join(adapters))
    return chosen


def _device_variants(info: AdapterInfo, device: str) -> list[str]:
    """By default, the variants that run on the device (or the first, to report why none does)."""
    return info.runs_on(device) or list(info.variants[:1])


def _resolve_variants(requested: dict, frameworks: list[str], adapters: dict[str, AdapterInfo], device: str) -> dict:
    unknown = sorted(set(requested) - set(adapters))
    if unknown:
        raise ConfigError(f"unknown framework {unknown[0]!r} in [variants]: known frameworks are {', '.join(adapters)}")
    variants = {}
    for framework in frameworks:
        wanted = requested.get(framework, _device_variants(adapters[framework], device))
        if not isinstance(wanted, list) or not wanted:
            raise ConfigError(f"variants.{framework} must be a non-empty list of variant names")
        for v in _names(f"variants.{framework}", wanted):
            if v not in adapters[framework].variants:
                known = ", ".join(adapters[framework].variants)
                raise ConfigError(f"variants.{framework} names unknown variant {v!r}: {framework} has {known}")
        variants[framework] = wanted
    return variants


SEED_LIMIT = 2**31  # JAX keys and TensorFlow seeds hold 32 bits
TRAINING_IMAGES = {"mnist": 60000, "fashion_mnist": 60000}


def _check_combinations(values: dict) -> None:
    """Values that are fine alone but not together."""
    try:
        OptimizerSpec(**{**values["optimizer"], "betas": tuple(values["optimizer"]["betas"])})
    except ValueError as error:
        raise ConfigError(f"the [optimizer] table cannot be mapped onto any framework: {error}") from None
    for model in _names("models", values["models"]):
        if model not in MODELS:
            raise ConfigError(f"unknown model {model!r}: known models are {', '.join(MODELS)}")
    for model in MODELS:
        try:
            model_spec(model, **network_settings(values[model]))
        except ValueError as error:
            raise ConfigError(f"[{model}] describes no network: {error}") from None
    if not values["models"]:
        raise ConfigError("models is empty: name at least one of " + ", ".join(MODELS))
    if values["evaluate"] == "end" and (values["stop_at_target"] or values["eval_every_steps"]):
        raise ConfigError("evaluate = 'end' evaluates once, after training, so stop_at_target and eval_every_steps "
                          "have no evaluation to act on: drop them or set evaluate = 'epoch'")
    if values["eval_split"] == "validation" and not values["validation"]:
        raise ConfigError("eval_split = 'validation' needs a hold-out: set validation to a sample count, e.g. 5000")
    images = TRAINING_IMAGES.get(values["dataset"], values["synthetic"]["train"])
    if values["validation"] >= images:
        raise ConfigError(f"validation = {values['validation']} leaves no training images of the {images}: "
                          "hold out fewer")
    _check_training_sets(values, images - values["validation"])
    _check_schedule(values)
    if values["seed"] + values["repeats"] > SEED_LIMIT:
        raise ConfigError(f"seed = {values['seed']} plus repeats must stay below 2^31 (frameworks keep 32-bit seeds)")
    cpus = available_cpus()
    if values["executor"] == "local" and values["threads"] > cpus:
        raise ConfigError(f"threads = {values['threads']} is more than the {cpus} CPUs this process may use: "
                          f"use at most {cpus} (0 takes them all)")
    _check_executor(values)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", values["name"]) or values["name"].startswith("."):
        raise ConfigError(f"name = {values['name']!r} names the results folder: use letters, digits, '.', '_' "
                          "and '-'")


def _check_executor(values: dict) -> None:
    """What a remote executor cannot do: decide the nodes' device here, or stop a cell's job before its timeout."""
    executor = values["executor"]
    if executor != "local" and values["device"] == "auto":
        raise ConfigError(f"device = 'auto' looks at this machine's GPUs, not the nodes': with executor = "
                          f"{executor!r} set device to 'cpu' or 'gpu'")
    limit = values["slurm"]["time_limit_min"]
    if executor == "slurm" and limit * 60 <= values["timeout_s"]:
        raise ConfigError(f"slurm.time_limit_min = {limit} ends each cell's job before timeout_s = "
                          f"{values['timeout_s']:g} s: raise the limit above timeout_s (the first job on a node also "
                          "measures its ceilings)")


def training_images(values: dict, model: str) -> int:
    """How many images one epoch of the model trains on: train_samples, else every image not held out."""
    images = TRAINING_IMAGES.get(values["dataset"], values["synthetic"]["train"]) - values["validation"]
    return values[model]["train_samples"] or images


def _check_training_sets(values: dict, images: int) -> None:
    """Each planned model's training set holds a batch, and train_samples no more images than there are."""
    for model in values["models"]:
        wanted = values[model]["train_samples"]
        if wanted > images:
            raise ConfigError(f"{model}.train_samples = {wanted} is more than the {images} training images: use "
                              f"at most {images}, or 0 for all of them")
        if values["batch_size"] > (wanted or images):
            raise ConfigError(f"batch_size = {values['batch_size']} is more than the {wanted or images} training "
                              f"images of the {model}: use a smaller batch or more data")


def _check_schedule(values: dict) -> None:
    """A warm-up and cosine decay needs a step of decay after its warm-up, in every model's training."""
    settings = values["optimizer"]
    if settings["schedule"] != "warmup_cosine":
        return
    for model in values["models"]:
        steps_per_epoch = training_images(values, model) // values["batch_size"]
        total = values[model]["epochs"] * steps_per_epoch
        spec = OptimizerSpec(**{**settings, "betas": tuple(settings["betas"])}, steps_per_epoch=steps_per_epoch,
                             total_steps=total)
        if spec.schedule_steps - spec.warmup_steps < 1:
            raise ConfigError(f"the warmup_cosine schedule of the {model} ends before its warm-up does "
                              f"({spec.schedule_steps} steps, {spec.warmup_steps} of them warming up): lengthen "
                              "schedule_epochs (or the epochs) or shorten warmup")


OPTION_TYPES = {"bool": bool, "int": int, "number": (int, float), "str": str}


def _check_options(tables: dict, adapters: dict[str, AdapterInfo]) -> dict:
    """[options.<framework>]: only the settings an adapter declares it accepts, of the declared type."""
    for framework, options in tables.items():
        if framework not in adapters or not isinstance(options, dict):
            known = ", ".join(adapters)
            raise ConfigError(f"[options.{framework}] must be a table named after a known framework ({known})")
        accepts = adapters[framework].accepts
        for key, value in options.items():
            if key not in accepts:
                listed = ", ".join(accepts) or "none"
                raise ConfigError(f"options.{framework} has no setting {key!r}: {framework} accepts {listed}")
            kind = accepts[key]
            if isinstance(kind, list):  # one of these values, of the same type (True is not 1)
                if not any(type(value) is type(k) and value == k for k in kind):
                    raise ConfigError(f"options.{framework}.{key} = {value!r} must be one of "
                                      + ", ".join(map(repr, kind)))
            elif isinstance(value, bool) and kind != "bool" or not isinstance(value, OPTION_TYPES[kind]):
                raise ConfigError(f"options.{framework}.{key} = {value!r} must be {kind}")
            elif kind in ("int", "number") and value <= 0:
                raise ConfigError(f"options.{framework}.{key} = {value!r} must be greater than 0")
    return tables


def resolve(raw: dict, name: str, overrides: dict | None = None, adapters: dict | None = None) -> Config:
    """Validate a parsed TOML document, apply command-line overrides, fill every default.

    `adapters` defaults to every adapter in frameworks/ (tests add their own). A [sweep] table is checked
    by harness/tuning/sweep.py, each of its settings through this function.
    """
    raw = dict(raw)
    if "sweep" in raw:
        from harness.tuning.sweep import resolve_sweep

        return resolve_sweep(raw, raw.pop("sweep"), name, overrides, adapters)
    raw.setdefault("name", name)
    tables = {t: raw.pop(t, {}) for t in TABLES}
    for t, value in tables.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{t} must be a table ([{t}]), not {type(value).__name__}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    epochs = overrides.pop("epochs", None)
    raw.update(overrides)
    values = _check_table(raw, TOP, "")
    values["optimizer"] = _check_table(tables["optimizer"], OPTIMIZER, "optimizer.")
    for model, schema in MODELS.items():
        table = {**MODEL_DEFAULTS[model], **tables[model], **({"epochs": epochs} if epochs is not None else {})}
        values[model] = _check_table(table, schema, f"{model}.")
    values["synthetic"] = _check_table(tables["synthetic"], SYNTHETIC, "synthetic.")
    values["slurm"] = _check_table(tables["slurm"], SLURM, "slurm.")
    if values["threads"] == 0 and values["executor"] == "local":  # elsewhere 0 stays: each node's own cores
        values["threads"] = available_cpus()
    _check_combinations(values)
    values["device"] = resolve_device(values["device"])[0]
    adapters = adapters if adapters is not None else discover()
    values["frameworks"] = _expand_frameworks(values["frameworks"], adapters)
    values["variants"] = _resolve_variants(tables["variants"], values["frameworks"], adapters, values["device"])
    values["options"] = _check_options(tables["options"], adapters)
    return Config(values["name"], values, adapters)


def load_config(
    path: str | Path | None = None, overrides: dict | None = None, adapters: dict | None = None
) -> Config:
    """Read a TOML config file (configs/quick.toml by default) and resolve it."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass a path such as configs/quick.toml")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML ({e}): fix the line it names") from None
    return resolve(raw, path.stem, overrides, adapters)


def with_values(config: Config, **changes) -> Config:
    """A copy of the config with some resolved values replaced (used by tests and parity)."""
    return replace(config, values={**config.values, **changes})
