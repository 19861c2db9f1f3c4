"""Matrix-product ceilings and the efficiency columns: timing, summaries, a real probe, a whole run."""

import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from harness.adapter import AdapterInfo, discover
from harness.config import Config, load_config
from harness.execute import ceilings, probes
from harness.results import efficiency
from harness.results.report import ceilings_text, efficiency_table

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.toml"
PROBED = ("numpy", "torch", "jax", "tensorflow")


def fake_clock(monkeypatch, durations):
    """perf_counter as a clock that only the fake product advances, by the given durations in turn."""
    now, steps = [0.0], iter(durations)
    monkeypatch.setattr(probes.time, "perf_counter", lambda: now[0])

    def product():
        now[0] += next(steps)

    return product


def test_time_product_reports_the_best_and_median_of_the_timed_products(monkeypatch):
    # two warm-ups (not timed), then products until both MIN_REPEATS and BUDGET_S (2 s) are reached
    product = fake_clock(monkeypatch, [9, 9, 0.4, 0.1, 0.2, 0.3, 0.5, 0.6, 7])
    result = probes.time_product(product, 1000)
    assert result["repeats"] == 6  # 0.4 + ... + 0.5 = 1.5 s < BUDGET_S, so one more
    assert result["gflops"] == pytest.approx(2 * 1000**3 / 0.1 / 1e9)
    assert result["median_gflops"] == pytest.approx(2 * 1000**3 / 0.35 / 1e9)  # median of 6: (0.3 + 0.4) / 2
    assert result["median_gflops"] <= result["gflops"]


def test_time_product_runs_at_least_min_repeats_however_slow(monkeypatch):
    product = fake_clock(monkeypatch, [5.0] * 50)
    result = probes.time_product(product, 10)
    assert result["repeats"] == probes.MIN_REPEATS
    assert result["gflops"] == pytest.approx(2 * 10**3 / 5.0 / 1e9)


def test_time_product_with_a_real_product(monkeypatch):
    import time

    monkeypatch.setattr(probes, "BUDGET_S", 0.05)
    calls = []

    def product():
        calls.append(1)
        time.sleep(0.01)

    result = probes.time_product(product, 100)
    assert result["repeats"] >= probes.MIN_REPEATS and len(calls) == result["repeats"] + probes.WARM_UP
    upper = 2 * 100**3 / 0.01 / 1e9  # a product takes at least the 10 ms it sleeps
    assert upper / 20 < result["median_gflops"] <= result["gflops"] <= upper


def test_summarise_names_the_best_library_that_worked_as_the_peak():
    results = {
        "numpy": {"status": "ok", "gflops": 50.0},
        "torch": {"status": "ok", "gflops": 80.0},
        "jax": {"status": "error", "gflops": 999.0, "error": "boom"},
        "tensorflow": {"status": "timeout"},
    }
    summary = ceilings.summarise(results, 512, "cpu")
    assert summary["peak"] == {"library": "torch", "gflops": 80.0}
    assert summary["libraries"] == results and summary["size"] == 512 and summary["device"] == "cpu"
    assert ceilings.summarise({"jax": {"status": "error"}}, 512, "cpu")["peak"] == {}


def test_efficiency_against_the_own_ceiling_and_the_peak():
    run = {"samples_per_second": 1000.0, "flops_per_sample": 4e6}
    measured = ceilings.summarise({"numpy": {"status": "ok", "gflops": 40.0},
                                   "torch": {"status": "ok", "gflops": 80.0},
                                   "jax": {"status": "error", "error": "boom"}}, 512, "cpu")
    columns = efficiency.efficiency(run, "numpy", measured)
    assert columns == pytest.approx({"ceiling_library": "numpy", "gflops": 4.0, "ceiling_gflops": 40.0,
                                     "ceiling_fraction": 0.1, "peak_gflops": 80.0, "peak_fraction": 0.05})
    failed = efficiency.efficiency(run, "jax", measured)  # its own product failed: no own ceiling, still the peak
    assert failed["ceiling_library"] == "jax" and failed["peak_fraction"] == pytest.approx(0.05)
    assert "ceiling_fraction" not in failed and "ceiling_gflops" not in failed
    assert efficiency.efficiency(run, "numpy", None) == {"ceiling_library": "numpy", "gflops": pytest.approx(4.0)}
    assert efficiency.efficiency(run, "numpy", {}) == {"ceiling_library": "numpy", "gflops": pytest.approx(4.0)}
    one_epoch = {"samples_per_second": None, "flops_per_sample": 4e6}
    assert efficiency.efficiency(one_epoch, "numpy", measured) == {"ceiling_library": "numpy"}


def test_adapter_library_and_probe_declarations():
    adapters = discover()
    keras, torch = adapters["keras"], adapters["torch"]
    assert {v: keras.library(v) for v in keras.variants} == {"tensorflow": "tensorflow", "jax": "jax",
                                                              "torch": "torch"}
    assert {torch.library(v) for v in torch.variants} == {"torch"}
    assert adapters["numpy"].library("cupy") == "numpy"
    assert {name: info.has_probe for name, info in adapters.items()} == {
        "numpy": True, "torch": True, "jax": True, "keras": False, "tensorflow": True}
    assert {name: info.has_op_probe for name, info in adapters.items()} == {
        "numpy": True, "torch": True, "jax": True, "keras": False, "tensorflow": True}


def test_libraries_to_probe_takes_every_installed_adapter_with_a_probe():
    adapters = {**discover(), **discover(ROOT / "tests" / "adapters")}
    config = load_config(SMOKE, adapters=adapters)
    chosen = ceilings.libraries_to_probe(config)
    installed = {name for name in PROBED if not adapters[name].missing_modules()}
    assert set(chosen) == installed and chosen["numpy"] == "numpy"  # not keras, not faulty: no probe


def test_libraries_to_probe_picks_the_first_variant_that_runs_on_the_device():
    info = AdapterInfo(name="fake", path=ROOT / "frameworks" / "fake_adapter.py", class_name="Fake", extra="x",
                       variants=("gpu_only", "missing", "plain", "later"), variant_devices={"gpu_only": ("gpu",)},
                       variant_modules={"missing": ("no_such_module_for_tests",)}, has_probe=True)
    assert info.runs_on("cpu") == ["missing", "plain", "later"] and info.runs_on("gpu") == ["gpu_only"]
    probes = lambda device, adapters: ceilings.libraries_to_probe(Config("x", {"device": device}, adapters))  # noqa: E731
    assert probes("cpu", {"fake": info}) == {"fake": "plain"}
    assert probes("gpu", {"fake": info}) == {"fake": "gpu_only"}
    assert probes("cpu", {"fake": replace(info, has_probe=False)}) == {}


def test_libraries_to_probe_imports_no_framework():
    code = (
        "import sys; from harness.config import load_config; from harness.execute.ceilings import libraries_to_probe;"
        "print(sorted(libraries_to_probe(load_config('configs/smoke.toml'))));"
        "heavy = {'torch', 'jax', 'tensorflow', 'keras'} & set(sys.modules); assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "'numpy'" in result.stdout and "keras" not in result.stdout


def test_measure_times_numpy_in_a_worker_and_caches_it(tmp_path):
    config = load_config(SMOKE, {"ceilings": "cached"}, adapters={"numpy": discover()["numpy"]})
    config.values["matmul_size"] = 256
    cache = tmp_path / "ceilings.json"
    results = ceilings.measure(config, tmp_path, progress=False, cache=cache)
    numpy = results["libraries"]["numpy"]
    assert numpy["status"] == "ok" and "event" not in numpy and numpy["source"] == "measured in this run"
    assert 0 < numpy["median_gflops"] <= numpy["gflops"] and numpy["repeats"] >= probes.MIN_REPEATS
    assert numpy["library"] and "openblas" in numpy["thread_pools"].lower()
    assert results["peak"] == {"library": "numpy", "gflops": numpy["gflops"]}
    assert results["size"] == 256 and results["device"] == "cpu"
    assert (tmp_path / "logs" / "ceilings-numpy.log").exists()

    (tmp_path / "logs" / "ceilings-numpy.log").unlink()
    again = ceilings.measure(config, tmp_path, progress=False, cache=cache)["libraries"]["numpy"]
    assert again["gflops"] == numpy["gflops"] and again["source"].startswith("cached (measured ")
    assert not (tmp_path / "logs" / "ceilings-numpy.log").exists()  # no worker ran
    config.values["threads"] = 2  # another setting is another machine state: measured anew
    assert ceilings.measure(config, tmp_path, progress=False, cache=cache)["libraries"]["numpy"]["source"] == \
        "measured in this run"
    config.values.update(threads=1, ceilings="measure")
    assert ceilings.measure(config, tmp_path, progress=False, cache=cache)["libraries"]["numpy"]["source"] == \
        "measured in this run"
    config.values["ceilings"] = "off"
    assert ceilings.measure(config, tmp_path, progress=False, cache=cache) == {}


def test_the_cache_key_changes_with_what_decides_the_speed():
    config = load_config(SMOKE, adapters={"numpy": discover()["numpy"]})
    key = ceilings.fingerprint(config, "numpy", {})
    assert key == ceilings.fingerprint(config, "numpy", {"HOME": "/elsewhere"})  # not a steering variable
    assert key != ceilings.fingerprint(config, "numpy", {"OPENBLAS_CORETYPE": "Haswell"})
    config.values["matmul_size"] = 512
    assert key != ceilings.fingerprint(config, "numpy", {})


def test_measure_records_a_library_without_a_probe_as_skipped_and_names_no_peak(tmp_path):
    faulty = replace(discover(ROOT / "tests" / "adapters")["faulty"], has_probe=True)  # only the base class's
    config = load_config(SMOKE, adapters={"numpy": discover()["numpy"]})
    config = Config(config.name, {**config.values, "matmul_size": 8, "ceilings": "measure"}, {"faulty": faulty})
    results = ceilings.measure(config, tmp_path, progress=False, cache=tmp_path / "ceilings.json")
    assert results["libraries"]["faulty"]["status"] == "skipped"
    assert "defines no matmul_probe" in results["libraries"]["faulty"]["error"]
    assert results["peak"] == {}


def test_ceilings_text():
    assert "not measured" in ceilings_text({})
    text = ceilings_text(ceilings.summarise({"numpy": {"status": "ok", "gflops": 50.0},
                                             "torch": {"status": "ok", "gflops": 120.0},
                                             "jax": {"status": "error"}}, 256, "cpu"))
    assert "256×256" in text and text.index("torch 120") < text.index("numpy 50")
    assert "peak is torch's" in text and "jax" not in text


def test_efficiency_table_shows_the_own_ceiling_and_medians():
    base = {"framework": "numpy", "variant": "numpy", "backend": "openblas", "model": "mlp", "device": "cpu",
            "ceiling_library": "numpy", "ceiling_gflops": 40.0, "import_rss_mb": 100.0, "peak_rss_mb": 300.0}
    runs = pd.DataFrame([{**base, "gflops": 4.0, "ceiling_fraction": 0.1, "peak_fraction": 0.05},
                         {**base, "gflops": 6.0, "ceiling_fraction": 0.15, "peak_fraction": 0.075},
                         {**base, "framework": "torch", "variant": "eager", "ceiling_library": None,
                          "ceiling_gflops": None}])
    table = efficiency_table(runs).set_index("framework")
    assert table.loc["numpy", "own ceiling"] == "numpy 40 GFLOP/s"
    assert table.loc["numpy", "GFLOP/s"] == "5 (4–6)"
    assert table.loc["numpy", "% of own ceiling"] == "12 (10–15)"
    assert table.loc["torch", "own ceiling"] == "–" and table.loc["torch", "GFLOP/s"] == "–"


def read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_bench_run_measures_ceilings_and_resume_keeps_them(tmp_path):
    text = SMOKE.read_text()
    for key, value in (("ceilings", '"measure"'), ("frameworks", '["numpy"]'), ("models", '["mlp"]')):
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    config_path, out = tmp_path / "ceilings.toml", tmp_path / "run"
    config_path.write_text("matmul_size = 256\n" + text)
    command = [sys.executable, "bench.py", "run", str(config_path), "--out", str(out), "--quiet"]
    env = {**os.environ, "MNIST_BENCH_CACHE": str(tmp_path / "cache")}  # not the user's cache of ceilings
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    [run] = read(out / "runs.csv")
    assert run["status"] == "ok" and float(run["gflops"]) > 0 and run["ceiling_library"] == "numpy"
    assert 0 < float(run["ceiling_fraction"]) < 1.5 and 0 < float(run["peak_fraction"]) < 1.5
    assert float(run["floor_samples_per_second"]) > 0 and 0 < float(run["floor_fraction"]) < 1.5
    assert 0 < float(run["import_rss_mb"]) <= float(run["peak_rss_mb"])
    matmul = json.loads((out / "environment.json").read_text())["sessions"][0]["matmul"]
    assert matmul["peak"]["gflops"] > 0 and matmul["libraries"]["numpy"]["status"] == "ok"
    assert matmul["size"] == 256
    summary = (out / "summary.md").read_text()
    assert "Efficiency and memory" in summary and "Matrix-product ceilings" in summary
    assert "% of op floor" in summary and "Op floor (mlp 784-32-10 at batch 32)" in summary
    assert "dense0 weight gradient" in summary and "A steady step, split" in summary
    assert (out / "mlp-efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    resumed = subprocess.run([sys.executable, "bench.py", "run", "--resume", str(out), "--quiet"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr
    sessions = json.loads((out / "environment.json").read_text())["sessions"]
    assert [s["session"] for s in sessions] == [1, 2] and sessions[1]["matmul"] == matmul
    assert read(out / "runs.csv") == [run]
