"""Property: any config and any command line either runs or is refused in one sentence, never a traceback.

Hypothesis draws configs (any subset of the keys, valid values, and then, half the time, one to
three keys given a value of the wrong type or range, or a key that does not exist) and argument
lists, writes each as TOML and runs `bench.py run` on it in this process. Each must either run on
the synthetic set (exit 0, its results written) or exit with status 2 and one line that starts
with "error: ". Valid values are drawn small, so that what runs runs in a second or two; a bad
value is never a larger valid one (a million epochs would run, correctly, for hours).

30 examples by default; HYPOTHESIS_PROFILE=thorough draws 300.
"""

import itertools
import json
import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bench

REAL = {"mnist", "fashion_mnist", "all", "torch", "jax", "keras", "tensorflow", "cached", "measure", "auto", "gpu"}
garbage = st.one_of(  # no positive integers: as a size or a count they would be valid, and could be huge
    st.text(max_size=6).filter(lambda t: t not in REAL),
    st.integers(-3, 0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.one_of(st.integers(-2, 3), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# What every drawn config starts from, so that an omitted key never means every framework or a large model.
BASE = {"ceilings": "off", "dataset": "synthetic", "frameworks": ["numpy"], "batch_size": 16}
BASE_TABLES = {"synthetic": {"train": 64, "eval": 32}, "mlp": {"epochs": 1, "hidden": [16]},
               "cnn": {"epochs": 1, "channels": [4, 8], "dense": 16}}
TOP = {
    "frameworks": st.just(["numpy"]),
    "models": st.sampled_from([["mlp"], ["cnn"], ["cnn", "mlp"]]),
    "repeats": st.integers(1, 2),
    "seed": st.integers(0, 99),
    "threads": st.integers(0, 1),
    "batch_size": st.integers(8, 48),
    "eval_batch_size": st.integers(8, 100),
    "validation": st.integers(0, 16),
    "eval_split": st.sampled_from(["test", "validation"]),
    "standardize": st.booleans(),
    "timeout_s": st.just(60),
    "device": st.just("cpu"),
    "blas": st.sampled_from(["environment", "native"]),
    "max_rss_mb": st.just(0),
    "eval_every_steps": st.integers(0, 3),
    "stop_at_target": st.booleans(),
    "name": st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
}
TABLES = {
    "optimizer": {"lr": st.floats(1e-4, 0.1), "betas": st.just([0.9, 0.999]), "eps": st.floats(1e-9, 1e-3),
                  "lr_decay": st.floats(0.5, 1.0), "schedule": st.sampled_from(["epoch_decay", "warmup_cosine"]),
                  "warmup": st.floats(0, 0.5), "lr_start": st.floats(0, 1), "lr_end": st.floats(0, 1),
                  "schedule_epochs": st.floats(0, 2)},
    "mlp": {"epochs": st.integers(1, 2), "hidden": st.lists(st.integers(1, 12), min_size=1, max_size=2),
            "dropout": st.floats(0, 0.6), "target_accuracy": st.floats(0.1, 1.0)},
    "cnn": {"epochs": st.integers(1, 2), "channels": st.lists(st.integers(1, 4), min_size=1, max_size=2),
            "dense": st.integers(1, 12), "dropout": st.floats(0, 0.6),
            "kernel_size": st.one_of(st.integers(1, 5), st.lists(st.integers(1, 5), min_size=1, max_size=2))},
    "synthetic": {"train": st.integers(48, 96), "eval": st.integers(16, 48)},
    "variants": {"numpy": st.just(["numpy"])},
    "options": {"numpy": st.just({})},
}
FLAGS = {  # mostly valid values
    "--epochs": st.one_of(st.integers(1, 2), st.integers(1, 2), st.integers(-1, 0), st.text(max_size=3)),
    "--repeats": st.one_of(st.integers(1, 2), st.integers(1, 2), st.integers(-1, 0), st.text(max_size=3)),
    "--threads": st.one_of(st.integers(0, 1), st.integers(0, 1), st.integers(-1, 3), st.text(max_size=3)),
    "--models": st.sampled_from(["mlp", "cnn", "mlp,cnn", "mlp", "rnn", ",,"]),
    "--frameworks": st.sampled_from(["numpy", "numpy", "nope", "numpy,numpy"]),
    "--device": st.sampled_from(["cpu", "cpu", "tpu"]),
    "--ceilings": st.sampled_from(["off", "off", "sometimes"]),
}


@st.composite
def configs(draw):
    """A config of valid values (which may still clash: Nesterov without momentum, a batch larger than the
    data), with, half the time, one to three keys broken: a wrong value, or a key that does not exist."""
    top = {**BASE, **{key: draw(value) for key, value in TOP.items() if draw(st.booleans())}}
    tables = {table: dict(values) for table, values in BASE_TABLES.items()}
    for table, keys in TABLES.items():
        if draw(st.booleans()):
            drawn = {key: draw(value) for key, value in keys.items() if draw(st.booleans())}
            tables.setdefault(table, {}).update(drawn)
    optimizer = tables.setdefault("optimizer", {})  # a coherent optimizer: SGD's momentum, AdamW's decay
    optimizer["name"] = draw(st.sampled_from(["sgd", "adam", "adamw"]))
    if optimizer["name"] == "sgd":
        optimizer.pop("betas", None), optimizer.pop("eps", None)
        optimizer["momentum"] = draw(st.sampled_from([0.0, 0.9]))
        optimizer["nesterov"] = optimizer["momentum"] > 0 and draw(st.booleans())
    elif optimizer["name"] == "adamw":
        optimizer["weight_decay"] = draw(st.floats(0, 0.1))
    if top.get("eval_split") == "validation":
        top["validation"] = draw(st.integers(1, 16))
    if draw(st.booleans()):
        places = [(None, key) for key in [*TOP, *BASE]]
        places += [(t, key) for t, keys in TABLES.items() for key in keys]
        places += [("optimizer", key) for key in ("name", "momentum", "nesterov", "weight_decay")]
        for table, key in draw(st.lists(st.sampled_from(places + [(None, "epochz"), ("mlp", "hiden")]),
                                        min_size=1, max_size=3)):
            (tables.setdefault(table, {}) if table else top)[key] = draw(garbage)
    return top, tables


@st.composite
def arguments(draw):
    chosen = draw(st.lists(st.sampled_from(sorted(FLAGS)), unique=True, max_size=3))
    return list(itertools.chain.from_iterable((flag, str(draw(FLAGS[flag]))) for flag in chosen))


def toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(toml(v) for v in value) + "]"


def document(top: dict, tables: dict) -> str:
    lines = [f"{key} = {toml(value)}" for key, value in top.items()]
    for table, values in tables.items():
        lines += ["", f"[{table}]"] + [f"{key} = {toml(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


RAN = {"examples": 0, "ran": 0, "refused": 0}


settings.register_profile("thorough", max_examples=300)


@settings(settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "default")), deadline=None,
          max_examples=300 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 30,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(config=configs(), argv=arguments())
def test_any_config_runs_or_is_refused_in_one_sentence(tmp_path_factory, capsys, config, argv):
    folder = tmp_path_factory.mktemp("property")
    path = folder / "random.toml"
    path.write_text(document(*config))
    capsys.readouterr()
    code = bench.main(["run", str(path), *argv, "--out", str(folder / "run"), "--quiet"])
    out, err = capsys.readouterr()
    RAN["examples"] += 1
    assert "Traceback" not in err + out
    if code == 0:
        RAN["ran"] += 1
        assert (folder / "run" / "runs.csv").exists() and (folder / "run" / "summary.md").exists()
        return
    RAN["refused"] += 1
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and err.rstrip().endswith(errors[0]), (code, err)


def test_zz_report_how_many_configs_were_tried():
    """Runs after the property (file order): how many of the drawn configs ran and how many were refused."""
    print(f"\nproperty test: {RAN['examples']} generated configs: {RAN['ran']} ran, {RAN['refused']} refused")
    assert RAN["examples"] == 0 or RAN["ran"] > 0 and RAN["refused"] > 0
