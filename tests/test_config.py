import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import ConfigError, load_config, resolve

ROOT = Path(__file__).resolve().parent.parent


def test_quick_config_resolves_every_framework_and_default():
    config = load_config(ROOT / "configs" / "quick.toml")
    assert config.name == "quick"
    assert "numpy" in config.frameworks
    assert config.models == ["mlp", "cnn", "rnn", "vit"] and {config.values[m]["epochs"] for m in config.models} == {2}
    assert config.values["mlp"]["train_samples"] == 20000 and config.values["vit"]["train_samples"] == 8000
    assert config.threads >= 1
    assert config.optimizer.name == "adam" and config.optimizer.betas == (0.9, 0.999)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")))
def test_every_shipped_config_is_valid(path):
    assert load_config(path).cells()


def test_the_lstm_and_the_vit_are_configured_like_the_others():
    config = resolve({"models": ["rnn", "vit"], "rnn": {"hidden": 64}, "vit": {"width": 32, "heads": 2}}, "x")
    assert config.models == ["rnn", "vit"]
    assert config.model("rnn").hidden == 64 and config.model("rnn").dropout == 0.1
    vit = config.model("vit")
    assert (vit.width, vit.heads, vit.depth, vit.mlp, vit.patch) == (32, 2, 2, 128, 7)
    assert config.values["vit"]["target_accuracy"] == 0.97


def test_train_samples_is_how_the_model_is_trained_not_the_network():
    config = resolve({"cnn": {"train_samples": 10000}}, "x")
    assert config.values["cnn"]["train_samples"] == 10000 and config.values["mlp"]["train_samples"] == 0
    assert config.model("cnn") == resolve({}, "x").model("cnn")  # the same network, its op floor's key too


def test_a_models_own_rate_replaces_the_shared_one_for_it_alone():
    from harness.config import model_optimizer

    config = resolve({"vit": {"lr": 2e-3}}, "x")
    assert model_optimizer(config.values, "vit")["lr"] == 2e-3
    assert model_optimizer(config.values, "mlp") == config.values["optimizer"]  # lr = 0: the [optimizer] table's
    assert config.model("vit") == resolve({}, "x").model("vit")  # a training setting: the network is the same
    with pytest.raises(ConfigError, match=re.escape("vit.lr = -0.1 must be 0 or more")):
        resolve({"vit": {"lr": -0.1}}, "x")


def test_a_config_written_before_train_samples_compares_equal_to_one_written_after():
    from harness.config import with_model_defaults

    now = resolve({}, "x").values
    before = {**now, "mlp": {k: v for k, v in now["mlp"].items() if k != "train_samples"}}
    assert before != now and with_model_defaults(before) == with_model_defaults(now) == now


def test_overrides_replace_config_values():
    config = resolve({}, "x", {"frameworks": ["numpy"], "models": ["cnn"], "epochs": 5, "repeats": 2})
    assert config.frameworks == ["numpy"] and config.models == ["cnn"]
    assert config.values["cnn"]["epochs"] == 5
    cells = config.cells()
    assert len(cells) == 2 * len(config.variants["numpy"])
    assert {c.seed for c in cells} == {0, 1}


@pytest.mark.parametrize(
    "raw, phrase",
    [
        ({"epochz": 3}, "unknown key 'epochz'"),
        ({"mlp": {"hiden": [3]}}, "unknown key mlp.'hiden'"),
        ({"repeats": "3"}, "repeats = '3' must be int"),
        ({"repeats": 0}, "repeats = 0 must be greater than 0"),
        ({"standardize": 1}, "standardize = 1 must be bool"),
        ({"repeats": True}, "repeats = True must be int"),
        ({"optimizer": {"lr": -1}}, "optimizer.lr = -1 must be greater than 0"),
        ({"optimizer": {"name": "rmsprop"}}, "optimizer.name = 'rmsprop' must be one of"),
        ({"optimizer": {"weight_decay": 0.1}}, "weight_decay is defined only for adamw"),
        ({"optimizer": {"name": "sgd", "nesterov": True}}, "nesterov needs sgd with a momentum above 0"),
        ({"optimizer": {"momentum": 0.9}}, "momentum is an sgd setting"),
        ({"threads": 10_000}, "threads = 10000 is more than the"),
        ({"batch_size": 100, "dataset": "synthetic", "synthetic": {"train": 64}}, "is more than the 64 training"),
        ({"validation": 60000}, "validation = 60000 leaves no training images"),
        ({"mlp": {"train_samples": 60001}}, "mlp.train_samples = 60001 is more than the 60000 training images"),
        ({"validation": 5000, "cnn": {"train_samples": 60000}}, "is more than the 55000 training images"),
        ({"mlp": {"train_samples": 100}}, "batch_size = 128 is more than the 100 training images of the mlp"),
        ({"mlp": {"train_samples": -1}}, "mlp.train_samples = -1 must be 0 or more"),
        ({"seed": 2**31}, "must stay below 2^31"),
        ({"name": "../elsewhere"}, "names the results folder"),
        ({"models": ["mlp", "mlp"]}, "models lists 'mlp' more than once"),
        ({"models": [["mlp"]]}, "models must list names (strings), not ['mlp']"),
        ({"frameworks": [3]}, "frameworks must list names (strings), not 3"),
        ({"models": []}, "models is empty"),
        ({"options": {"torch": {"channel_last": True}}}, "options.torch has no setting 'channel_last'"),
        ({"options": {"torch": {"channels_last": 1}}}, "options.torch.channels_last = 1 must be bool"),
        ({"options": {"keras": {"jit_compile": 1}}}, "options.keras.jit_compile = 1 must be one of 'auto', True"),
        ({"options": {"keras": {"steps_per_execution": 0}}}, "steps_per_execution = 0 must be greater than 0"),
        ({"options": {"numpy": {"dtype": "float64"}}}, "numpy accepts none"),
        ({"max_rss_mb": -5}, "max_rss_mb = -5 must be 0 or more"),
        ({"mlp": {"hidden": []}}, "mlp.hidden = [] must be a non-empty list"),
        ({"cnn": {"dropout": 1.0}}, "cnn.dropout = 1.0 must be in [0, 1)"),
        ({"dataset": "cifar"}, "dataset = 'cifar' must be one of"),
        ({"frameworks": ["tensorflw"]}, "unknown framework 'tensorflw': known frameworks are numpy"),
        ({"models": ["gru"]}, "unknown model 'gru': known models are mlp, cnn, rnn, vit"),
        ({"rnn": {"hidden": [128]}}, "rnn.hidden = [128] must be int"),
        ({"rnn": {"hidden": 0}}, "rnn.hidden = 0 must be greater than 0"),
        ({"vit": {"patch": 5}}, "vit.patch = 5 must divide the image's side of 28"),
        ({"vit": {"heads": 5}}, "[vit] describes no network: width = 64 does not split into 5 heads"),
        ({"vit": {"depth": 0}}, "vit.depth = 0 must be greater than 0"),
        ({"variants": {"numpy": ["fortran"]}}, "variants.numpy names unknown variant 'fortran'"),
        ({"eval_split": "validation"}, "needs a hold-out"),
        ({"optimizer": 3}, "optimizer must be a table"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(raw, phrase):
    with pytest.raises(ConfigError) as error:
        resolve(raw, "bad")
    assert phrase in str(error.value)
    assert "\n" not in str(error.value)


def test_invalid_toml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_cli_reports_bad_input_in_one_sentence_without_traceback():
    result = subprocess.run(
        [sys.executable, "bench.py", "run", "--frameworks", "nope"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown framework 'nope'")
    assert "Traceback" not in result.stderr


def test_blas_and_matmul_size_defaults():
    config = resolve({}, "x")
    assert config.blas == "environment" and config.matmul_size == 4096
    assert config.ceilings == "cached"
    assert resolve({"blas": "native", "ceilings": "off"}, "x").values["ceilings"] == "off"


@pytest.mark.parametrize(
    "raw, phrase",
    [
        ({"blas": "fast"}, "blas = 'fast' must be one of 'environment', 'native'"),
        ({"matmul_size": 0}, "matmul_size = 0 must be greater than 0"),
        ({"ceilings": "sometimes"}, "ceilings = 'sometimes' must be one of 'cached', 'measure', 'off'"),
        ({"matmul_size": 256.0}, "matmul_size = 256.0 must be int"),
    ],
)
def test_bad_blas_and_matmul_size_are_refused(raw, phrase):
    with pytest.raises(ConfigError) as error:
        resolve(raw, "bad")
    assert phrase in str(error.value) and "\n" not in str(error.value)


def test_lr_decay_must_be_a_factor_in_0_1():
    from harness.config import ConfigError, resolve

    assert resolve({"optimizer": {"lr_decay": 0.8}}, "t").values["optimizer"]["lr_decay"] == 0.8
    with pytest.raises(ConfigError, match="lr_decay"):
        resolve({"optimizer": {"lr_decay": 1.5}}, "t")


def test_schedule_kernel_and_evaluation_keys_are_checked():
    from harness.config import ConfigError, resolve

    speedrun = resolve({"optimizer": {"schedule": "warmup_cosine", "warmup": 0.3, "lr_start": 0.04},
                        "cnn": {"kernel_size": [5, 3], "channels": [24, 32]}, "eval_every_steps": 26,
                        "stop_at_target": True}, "t")
    assert speedrun.optimizer.schedule == "warmup_cosine" and speedrun.model("cnn").kernel_sizes == (5, 3)
    for raw, phrase in [({"optimizer": {"schedule": "cyclic"}}, "optimizer.schedule = 'cyclic' must be one of"),
                        ({"optimizer": {"warmup": 1.0, "schedule": "warmup_cosine"}}, "optimizer.warmup = 1.0"),
                        ({"optimizer": {"warmup": 0.2}}, "set schedule = 'warmup_cosine' to use them"),
                        ({"cnn": {"kernel_size": [3, 3, 3]}}, "one for all or one per convolution"),
                        ({"cnn": {"kernel_size": True}}, "cnn.kernel_size = True must be int or list"),
                        ({"cnn": {"kernel_size": [0]}}, "must be a positive integer, or a list of them"),
                        ({"eval_every_steps": -1}, "eval_every_steps = -1 must be 0 or more"),
                        ({"stop_at_target": "yes"}, "stop_at_target = 'yes' must be bool")]:
        with pytest.raises(ConfigError, match=re.escape(phrase)):
            resolve(raw, "t")


def test_every_shipped_config_loads():
    for path in sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.toml")):
        config = load_config(path)
        assert config.cells(), path.name
    gpu = load_config(Path(__file__).resolve().parent.parent / "configs" / "gpu.toml")
    assert gpu.device == "gpu" and gpu.variants["numpy"] == ["cupy"] and gpu.matmul_size == 8192
