"""benchmarks/overhead.py: which rows it compares and on how much data (no training here)."""

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def overhead():
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "benchmarks" / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arguments(**given) -> argparse.Namespace:
    values = {"config": str(ROOT / "configs" / "smoke.toml"), "frameworks": None, "models": None, "epochs": 3,
              "train": None, "rounds": 1, "csv": None}
    return argparse.Namespace(**{**values, **given})


def test_each_model_gets_its_own_config_and_default_size(overhead):
    configs = overhead.benchmark_configs(arguments())
    assert [c.values["models"] for c in configs] == [["mlp"], ["cnn"]]
    assert [c.values["synthetic"]["train"] for c in configs] == [51200, 12800]
    for config in configs:
        assert config.values["dataset"] == "synthetic"
        assert config.values["repeats"] == 1 and config.values["matmul_size"] == 0  # no ceilings to measure
        assert config.values["cnn"]["epochs"] == config.values["mlp"]["epochs"] == 3


def test_train_size_and_models_can_be_chosen(overhead):
    configs = overhead.benchmark_configs(arguments(train=512, models="cnn"))
    assert [(c.values["models"], c.values["synthetic"]["train"]) for c in configs] == [(["cnn"], 512)]


def test_the_ratio_compares_medians_and_flags_a_miss(overhead):
    rows = [{"framework": "numpy", "variant": "numpy", "model": "mlp", "harness": [90.0, 95.0, 100.0],
             "bare": [100.0, 100.0, 110.0]}]
    table = overhead.table(rows)
    assert table.loc[0, "ratio"] == 0.95
    assert table.loc[0, "goal met"] == "NO"


def test_a_framework_without_a_bare_loop_is_reported_not_crashed(overhead):
    from harness.config import Cell

    config = overhead.benchmark_configs(arguments(frameworks="numpy"))[0]
    cell = Cell("nobare", "v", "mlp", "cpu", 0, 0)
    config.adapters["nobare"] = config.adapters["numpy"]
    with pytest.raises(overhead.Skipped, match="has no bare loop"):
        overhead.bare_speed(cell, config)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_a_bare_loop_runs_on_the_cells_device_with_the_cells_environment(overhead, monkeypatch, device):
    """Harness and bare loop must compare one device: the job names it, and the environment holds it."""
    import json
    import subprocess
    from dataclasses import replace

    from harness.config import Cell

    config = overhead.benchmark_configs(arguments(frameworks="numpy"))[0]
    config = replace(config, values={**config.values, "device": device})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    seen = {}

    def run(command, env, **kwargs):
        seen.update(job=json.loads(command[-1]), env=env)
        return subprocess.CompletedProcess(command, 1, "", "stopped by the test")

    monkeypatch.setattr(overhead.subprocess, "run", run)
    overhead.bare_speed(Cell("numpy", "numpy", "mlp", device, 0, 0), config)
    assert seen["job"]["device"] == device
    assert seen["env"]["KERAS_TORCH_DEVICE"] == ("cuda" if device == "gpu" else "cpu")
    assert (seen["env"].get("CUDA_VISIBLE_DEVICES") == "") == (device == "cpu")


@pytest.mark.parametrize("framework", ["numpy", "torch", "jax"])
def test_every_bare_loop_reads_the_device_from_its_job(framework):
    assert 'job["device"]' in (ROOT / "benchmarks" / "bare" / f"{framework}_loop.py").read_text()


def test_the_quick_configs_subsets_and_models_without_a_bare_loop_are_left_out(overhead):
    configs = overhead.benchmark_configs(arguments(config=str(ROOT / "configs" / "quick.toml")))
    assert [c.values["models"] for c in configs] == [["mlp"], ["cnn"]]  # quick's rnn and vit have no bare loop
    assert all(c.values[m]["train_samples"] == 0 for c in configs for m in c.values["models"])
    with pytest.raises(overhead.UserError, match="--models names 'rnn': the bare loops"):
        overhead.benchmark_configs(arguments(models="mlp,rnn"))
