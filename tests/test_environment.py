"""environment.json and the environment every worker gets (threads, the BLAS choice)."""

import os
import re

import pytest

from harness.config import resolve
from harness.execute.process import OPENBLAS_OVERRIDES, worker_environment
from harness.results import environment

MATMUL = {"size": 256, "device": "cpu", "libraries": {"numpy": {"status": "ok", "gflops": 50.0}},
          "peak": {"library": "numpy", "gflops": 50.0}}


@pytest.fixture
def steered(monkeypatch):
    """A shell that steers OpenBLAS to a kernel and cache size, as some machines do."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "262144")
    monkeypatch.setenv("OMP_NUM_THREADS", "99")


def test_native_blas_removes_the_openblas_overrides(steered):
    env = worker_environment(resolve({"threads": 1, "blas": "native"}, "x"))
    assert not set(OPENBLAS_OVERRIDES) & set(env)
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"  # this process's own environment is left alone
    assert env["PATH"] == os.environ["PATH"]


def test_environment_blas_keeps_the_overrides_and_threads_follow_the_config(steered):
    env = worker_environment(resolve({"threads": 1}, "x"))
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["OPENBLAS_L2_SIZE"] == "262144"
    for name in ("OMP", "MKL", "OPENBLAS", "BLIS", "NUMEXPR"):
        assert env[f"{name}_NUM_THREADS"] == "1"  # the config's, not the shell's 99
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == env["MNIST_BENCH_THREADS"] == "1"


def test_steering_variables_keep_only_what_steers_blas_and_frameworks():
    env = {"PATH": "/bin", "HOME": "/h", "OMP_NUM_THREADS": "2", "XLA_FLAGS": "--x", "OPENBLAS_CORETYPE": "Zen",
           "CUDA_VISIBLE_DEVICES": "0", "MY_OMP_THING": "1"}
    steering = environment.steering_variables(env)
    assert list(steering) == ["CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "XLA_FLAGS"]


def test_cpu_describes_the_processor():
    cpu = environment.cpu()
    assert isinstance(cpu["model"], str) and cpu["model"]
    assert set(cpu["flags"]) <= set(environment.CPU_FLAGS) and isinstance(cpu["flags"], list)
    assert 1 <= cpu["usable_cores"] <= cpu["cores"]
    assert cpu["family_model_stepping"].count("/") == 2
    assert all(re.fullmatch(r"L\d \w+", name) for name in cpu["caches"])


def test_collect_records_the_worker_environment_and_the_ceilings():
    worker_env = {"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3", "HOME": "/h"}
    collected = environment.collect(3, worker_env, MATMUL)
    assert {"cpu", "threads", "packages", "environment_variables", "worker_environment_variables", "matmul",
            "git", "python", "time_utc"} <= set(collected)
    assert {"model", "cores", "usable_cores", "flags"} <= set(collected["cpu"])
    assert isinstance(collected["cpu"]["flags"], list)
    assert collected["worker_environment_variables"] == {"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3"}
    assert collected["matmul"] == MATMUL and collected["threads"] == 3
    assert "numpy" in collected["packages"]
    git = collected["git"]
    assert isinstance(git["dirty"], bool)
    assert re.fullmatch(r"[0-9a-f]{40}", git["commit"]) or not (environment.ROOT / ".git").exists()


def test_collect_without_a_worker_environment_or_ceilings(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    collected = environment.collect(1)
    assert collected["matmul"] == {}
    assert collected["worker_environment_variables"] == collected["environment_variables"]
    assert collected["worker_environment_variables"]["OMP_NUM_THREADS"] == "7"


def test_every_module_an_adapter_in_the_run_declares_has_its_version():
    config = resolve({"frameworks": ["numpy", "keras"], "threads": 1}, "x")
    versions = environment.adapter_versions(config)
    assert set(versions) == {"numpy", "keras"}
    assert versions["numpy"]["numpy"].startswith("numpy ")
    assert set(versions["keras"]) >= {"keras", "tensorflow", "jax", "torch"}  # every variant's backend
    assert environment.module_versions(["no_such_module_for_tests"]) == {"no_such_module_for_tests": "not installed"}
    assert environment.module_versions(["numpy.linalg"])["numpy.linalg"].startswith("numpy ")


def test_threads_zero_means_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert resolve({}, "x").threads == 2
