"""Device choice without a framework: "auto" on faked device nodes and CUDA_VISIBLE_DEVICES values, and what
a cell's worker may see of the GPU."""

from __future__ import annotations

import pytest

from harness import devices
from harness.config import resolve
from harness.execute.process import worker_environment

ONE_GPU = ["/dev/nvidia0"]


@pytest.mark.parametrize("nodes, visible, expected", [
    ([], None, "cpu"),  # no device node
    (ONE_GPU, None, "gpu"),
    (["/dev/nvidia3"], None, "gpu"),  # a container exposing another node than nvidia0
    (ONE_GPU, "", "cpu"),
    (ONE_GPU, "-1", "cpu"),
    (ONE_GPU, "7", "cpu"),  # an index beyond the GPUs: CUDA sees none
    (ONE_GPU, "0", "gpu"),
    (ONE_GPU, "GPU-8f6e1b2a-0000", "gpu"),
    (ONE_GPU, "MIG-0d9c2f11", "gpu"),
    (ONE_GPU, "-1,0", "cpu"),  # CUDA stops at the first invalid entry
    (["/dev/nvidia0", "/dev/nvidia1"], "1, 0", "gpu"),
])
def test_auto_reads_the_device_nodes_and_cuda_visible_devices_as_cuda_does(nodes, visible, expected):
    device, why = devices.resolve("auto", nodes=nodes, visible=visible)
    assert device == expected and why.startswith("auto: ")


def test_only_gpu_nodes_count(tmp_path):
    for name in ("nvidia0", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (tmp_path / name).touch()
    assert devices.device_nodes(str(tmp_path / "nvidia[0-9]*")) == [str(tmp_path / "nvidia0"),
                                                                     str(tmp_path / "nvidia2")]


def test_an_explicit_device_is_taken_as_given():
    assert devices.resolve("gpu", nodes=[], visible="")[0] == "gpu"
    assert devices.resolve("cpu", nodes=ONE_GPU, visible=None)[0] == "cpu"


def test_a_config_with_device_auto_resolves_through_the_same_rule(monkeypatch):
    monkeypatch.setattr(devices, "device_nodes", lambda pattern="": ONE_GPU)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert resolve({"device": "auto", "frameworks": ["numpy"]}, "x").device == "gpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert resolve({"device": "auto", "frameworks": ["numpy"]}, "x").device == "cpu"


def test_cpu_cells_hide_every_gpu_from_their_framework(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # the user's setting is for GPU runs, not CPU cells
    env = worker_environment(resolve({"device": "cpu", "frameworks": ["numpy"]}, "x"))
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["JAX_PLATFORMS"] == "cpu"
    assert "NVIDIA_TF32_OVERRIDE" not in env


def test_gpu_cells_compute_in_float32_and_keep_the_users_own_settings(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("CUPY_TF32", "1")  # asked for: kept, and recorded in environment.json
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    env = worker_environment(resolve({"device": "gpu", "frameworks": ["numpy"]}, "x"))
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and "JAX_PLATFORMS" not in env
    assert env["NVIDIA_TF32_OVERRIDE"] == "0" and env["CUPY_CACHE_IN_MEMORY"] == "1" and env["CUPY_TF32"] == "1"
