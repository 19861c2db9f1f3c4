"""The GPU check and the GPU facts, as far as a CPU can take them: the command on a machine without a GPU,
the probes' workers on the CPU, and every verdict shown both ways on made-up measurements."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness import gpu_check
from harness.config import resolve
from harness.execute import ceilings, probes
from harness.results.report import device_text

ROOT = Path(__file__).resolve().parent.parent


def test_without_a_gpu_it_skips_every_gpu_step_saying_why_and_exits_0(tmp_path, monkeypatch):
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "-1"}  # a GPU machine's, too, looks like this
    done = subprocess.run([sys.executable, "bench.py", "gpu-check", "--out", str(tmp_path / "check")], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "check" / "check.json").read_text())
    steps = {s["step"]: s for s in record["steps"]}
    assert list(steps) == ["facts", "gpu", "products", "residency", "sync", "parity", "run"]
    assert steps["facts"]["status"] == "passed" and record["environment"]["cpu"]["model"]
    assert all(s["status"] == "skipped" and s["detail"] for name, s in steps.items() if name != "facts")
    assert "CUDA_VISIBLE_DEVICES='-1'" in steps["products"]["detail"] or "no NVIDIA device node" in \
        steps["products"]["detail"]
    assert "| products" in done.stdout and (tmp_path / "check" / "check.md").exists()


def test_a_step_that_would_start_after_the_budget_is_skipped_saying_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "check_gpu", lambda: ([gpu_check.Step("gpu", "device", "passed", "faked")], None))
    monkeypatch.setattr(gpu_check, "gpu_config", lambda device: resolve({"frameworks": ["numpy"]}, "x"))
    assert gpu_check.run_check(str(tmp_path / "check"), progress=False, budget_s=-1) == 0
    steps = json.loads((tmp_path / "check" / "check.json").read_text())["steps"]
    skipped = [s for s in steps if s["step"] in ("products", "residency", "sync", "parity", "run")]
    assert len(skipped) == 5 and all("budget of -1 s was spent" in s["detail"] for s in skipped)


def test_the_check_never_writes_into_a_folder_that_holds_something(tmp_path):
    (tmp_path / "check").mkdir()
    (tmp_path / "check" / "kept.txt").write_text("mine")
    done = subprocess.run([sys.executable, "bench.py", "gpu-check", "--out", str(tmp_path / "check")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (tmp_path / "check" / "kept.txt").read_text() == "mine"


def test_the_probe_worker_measures_a_step_with_and_without_a_read_back(tmp_path):
    """The GPU steps' worker, run on the CPU: it builds, loads, times both ways and reports."""
    config = resolve({"frameworks": ["numpy"], "models": ["mlp"], "device": "cpu", "threads": 1,
                      "dataset": "synthetic", "mlp": {"hidden": [32]}}, "probe")
    steps = gpu_check.probe_adapters(config, tmp_path, deadline=time.monotonic() + 120)
    by_step = {s.step: s for s in steps}
    assert by_step["residency"].status == "unclear" and "reports no device memory" in by_step["residency"].detail
    assert by_step["sync"].status in ("passed", "unclear") and "µs a step" in by_step["sync"].detail


@pytest.mark.parametrize("done, status", [
    ({"resident": True, "residency": "on the device", "device_mb_added": 13.0, "data_mb": 12.3}, "passed"),
    ({"resident": False, "residency": "on the host", "device_mb_added": 0.1, "data_mb": 12.3}, "failed"),
    ({"resident": False, "residency": "on the host (the adapter declares batches copied from the host)",
      "device_mb_added": 0.1, "data_mb": 12.3}, "passed"),
    ({"resident": None, "residency": "not measured: the framework reports no device memory here"}, "unclear"),
])
def test_data_left_on_the_host_fails_unless_the_row_says_so(done, status):
    assert gpu_check.residency_step("x", done).status == status


class RoundsLikeTF32:
    """A framework whose products round their inputs to TF32's 10-bit mantissas, as a GPU with TF32 on does."""

    @staticmethod
    def matmul_on_device(device, a, b):
        def tf32(x):
            bits = x.astype(np.float32).view(np.uint32) & np.uint32(0xFFFFE000)
            return bits.view(np.float32)
        return tf32(a) @ tf32(b), {"precision_set": "allow_tf32=True"}


class FullFloat32:
    @staticmethod
    def matmul_on_device(device, a, b):
        return a @ b, {"precision_set": "float32"}


def test_product_precision_tells_float32_from_tf32():
    exact = probes.product_precision(FullFloat32, "cpu")
    rounded = probes.product_precision(RoundsLikeTF32, "cpu")
    assert exact["precision"] == "float32" and exact["product_error"] < 1e-5
    assert rounded["precision"].startswith("reduced") and rounded["product_error"] > 1e-4


def test_every_shipped_adapter_with_a_probe_measures_its_precision():
    from harness.adapter import Adapter, discover

    for info in discover().values():
        if info.has_probe:
            source = info.path.read_text()
            assert "def matmul_on_device" in source, info.name
    assert probes.product_precision(Adapter, "cpu")["precision"].startswith("not measured")


def test_products_step_fails_a_reduced_precision_library(monkeypatch, tmp_path):
    config = resolve({"frameworks": ["numpy"], "device": "cpu"}, "x")
    measured = {"libraries": {
        "torch": {"status": "ok", "precision": "reduced (TF32, bfloat16 or lower)", "product_error": 3e-4,
                  "precision_set": "allow_tf32=True", "gflops": 400000.0, "library": "cuda 12.8 (cublas)"},
        "jax": {"status": "ok", "precision": "float32", "product_error": 1e-6, "precision_set": "highest",
                "gflops": 50000.0, "library": "xla-gpu"},
        "tensorflow": {"status": "skipped", "error": "TensorFlow sees no GPU here"}}}
    monkeypatch.setattr(ceilings, "measure", lambda *a, **k: measured)
    steps = {s.subject: s.status for s in gpu_check.check_products(config, tmp_path)}
    assert steps == {"torch": "failed", "jax": "passed", "tensorflow": "skipped"}


def test_summary_names_the_gpu_and_each_librarys_measured_precision():
    session = {"gpus": [{"name": "NVIDIA H200", "memory.total": "143771 MiB", "driver_version": "570.1",
                         "cuda_version": "12.8"}],
               "matmul": {"libraries": {"torch": {"status": "ok", "precision": "float32", "product_error": 9e-7,
                                                  "cuda": "12.8", "cudnn": "91002"}}}}
    text = " ".join(device_text(session, "gpu"))
    assert "NVIDIA H200" in text and "driver 570.1" in text and "CUDA 12.8" in text
    assert "torch float32 (9.0e-07; CUDA 12.8, cuDNN 91002)" in text


class MemoryHook:
    """CuPy's MemoryHook registry as cupy/cuda/memory_hook.pyx has it: one hook per name and thread."""

    registry: dict = {}
    name = "MemoryHook"

    def __enter__(self):
        if self.name in self.registry:
            raise KeyError(f"memory hook {self.name} already exists")
        self.registry[self.name] = self
        return self

    def __exit__(self, *_):
        del self.registry[self.name]


def test_cupy_peak_memory_counts_memory_in_use_not_the_pool():
    """The CuPy hook on a stand-in pool: the peak of bytes in use, from what was in use when it started;
    two hooks at once (two adapters in one parity worker) do not collide."""
    from frameworks.numpy_adapter import peak_in_use_hook

    fake = SimpleNamespace(cuda=SimpleNamespace(MemoryHook=MemoryHook),
                           get_default_memory_pool=lambda: SimpleNamespace(used_bytes=lambda: 100))
    with peak_in_use_hook(fake) as hook, peak_in_use_hook(fake) as other:
        for kind, size in [("malloc", 50), ("malloc", 30), ("free", 50), ("malloc", 10), ("free", 30)]:
            getattr(hook, f"{kind}_postprocess")(device_id=0, mem_size=size, mem_ptr=0, pmem_id=0, size=size)
    assert hook.peak == 180 and hook.in_use == 110 and other.peak == 100
    assert MemoryHook.registry == {}


@pytest.mark.parametrize("before, after, on_host, expected", [
    (200.0, 212.6, False, True),  # the training set's 12.3 MB arrived, on top of what was in use
    (200.0, 201.0, False, False),  # it stayed on the host
    (200.0, 201.0, True, False),
    (None, None, False, None),
])
def test_residency_is_the_growth_of_memory_in_use_during_load_data(before, after, on_host, expected):
    from harness.execute.device_probe import residency

    found = residency(before, after, int(12.3 * 2**20), on_host)
    assert found["resident"] is expected
    assert ("declares batches copied from the host" in found["residency"]) == on_host


@pytest.mark.parametrize("asynchronous, status", [(True, "passed"), (False, "unclear"), (None, "skipped")])
def test_the_sync_step_says_what_the_timing_can_tell(asynchronous, status):
    done = {"asynchronous": asynchronous, "synchrony": "…", "step_us": 100.0, "step_us_with_read": 130.0}
    assert gpu_check.sync_step("x", done).status == status
