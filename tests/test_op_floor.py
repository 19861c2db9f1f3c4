"""The op floor: a step's heavy operations, their probes in every library, the fastest summed, the columns."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.adapter import discover
from harness.config import load_config
from harness.execute import ceilings
from harness.execute.probes import operands
from harness.models import floor_key, model_spec
from harness.results.efficiency import efficiency

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "smoke.toml"
SPECS = [model_spec("mlp"), model_spec("cnn"), model_spec("cnn", channels=[24, 32], kernel_size=[5, 3], dense=256),
         model_spec("mlp", hidden=[32])]
SEQUENCE_SPECS = [model_spec("rnn"), model_spec("vit"), model_spec("vit", patch=4, width=48, heads=3, depth=1)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: floor_key(s, 64))
def test_a_steps_operations_are_the_flops_the_model_counts(spec):
    operations = spec.step_operations(64)
    assert sum(o.flops for o in operations) == spec.flops_per_sample * 64
    first = spec.layers[0][0]
    assert f"{first} input gradient" not in {o.name for o in operations}  # no one needs the images' gradient
    assert {f"{prefix} {role}" for prefix, _ in spec.layers for role in ("forward", "weight gradient")} <= \
        {o.name for o in operations}
    forward = [o for o in operations if o.role == "forward"]
    assert operations[: len(forward)] == forward  # the forward pass first, then the backward pass


@pytest.mark.parametrize("spec", SEQUENCE_SPECS, ids=lambda s: floor_key(s, 64))
def test_the_lstm_and_the_transformer_steps_scale_with_the_batch_and_skip_the_images_gradient(spec):
    operations = spec.step_operations(64)
    assert sum(o.flops for o in operations) == spec.flops_per_sample * 64
    first = "lstm input" if spec.name == "rnn" else "patch"
    assert {f"{first} forward", f"{first} weight gradient"} <= {o.name for o in operations}
    assert f"{first} input gradient" not in {o.name for o in operations}
    assert not any(o.kind == "bmm" and o.role == "weight gradient" for o in operations)  # no weight in q k^T, p v
    forward = [o for o in operations if o.role == "forward"]
    assert operations[: len(forward)] == forward


def test_a_repeated_operation_counts_its_flops_and_floor_time_once_per_repeat():
    by_name = {o.name: o for o in model_spec("rnn", hidden=8).step_operations(4)}
    recurrent = by_name["lstm recurrent forward"]
    assert recurrent.count == 28 and recurrent.flops == 28 * 2 * 4 * 8 * 32 and recurrent.shape == "28 x (4x8 @ 8x32)"
    assert by_name["lstm recurrent input gradient"].count == 27  # h_0 is a constant: no gradient for it
    spec = model_spec("rnn", hidden=8)
    keys = {ceilings.operation_key(o.as_dict()) for o in spec.step_operations(4)}
    floor = ceilings.op_floor(spec, 4, {"a": {"status": "ok", "times": {key: {"seconds": 1.0} for key in keys}}})
    assert {row["operation"]: row["seconds"] for row in floor["operations"]}["lstm recurrent forward"] == 28.0
    assert floor["seconds"] == sum(o.count for o in spec.step_operations(4))


def test_operations_name_their_shapes_as_a_step_holds_them():
    by_name = {o.name: o for o in model_spec("mlp").step_operations(128)}
    assert by_name["dense0 forward"].shape == "128x784 @ 784x512"
    assert by_name["dense0 weight gradient"].shape == "128x784 (transposed) @ 128x512"  # x^T dy
    assert by_name["dense1 input gradient"].shape == "128x512 @ 512x512 (transposed)"  # dy W^T
    conv = {o.name: o for o in model_spec("cnn").step_operations(8)}["conv1 input gradient"]
    assert conv.shape == "8x13x13x32 * 3x3x32x64" and conv.flops == 2 * 8 * 11 * 11 * 9 * 32 * 64
    attention = {o.name: o for o in model_spec("vit").step_operations(2)}  # 2 samples x 4 heads, 17 tokens of 16
    assert attention["block0 scores forward"].shape == "8x17x16 @ 8x16x17"  # q @ k^T
    assert attention["block0 scores left gradient"].shape == "8x17x17 @ 8x16x17 (transposed)"  # ds (k^T)^T
    assert attention["block0 mixing right gradient"].shape == "8x17x17 (transposed) @ 8x17x16"  # p^T dO


def timings(**libraries) -> dict:
    """ceilings' per-library operation timings from {library: {operation name: seconds}} of the MLP at batch 4."""
    spec = model_spec("mlp", hidden=[8])
    keys = {o.name: ceilings.operation_key(o.as_dict()) for o in spec.step_operations(4)}
    return spec, {library: {"status": "ok", "times": {keys[name]: {"seconds": s} for name, s in times.items()}}
                  for library, times in libraries.items()}


def test_the_floor_is_the_fastest_library_per_operation_summed():
    spec, found = timings(
        a={"dense0 forward": 1.0, "dense1 forward": 5.0, "dense1 weight gradient": 1.0, "dense1 input gradient": 2.0,
           "dense0 weight gradient": 1.0},
        b={"dense0 forward": 2.0, "dense1 forward": 1.0, "dense1 weight gradient": 3.0, "dense1 input gradient": 1.0,
           "dense0 weight gradient": 2.0})
    floor = ceilings.op_floor(spec, 4, found)
    assert [row["fastest"] for row in floor["operations"]] == ["a", "b", "a", "b", "a"]
    assert floor["seconds"] == 5.0 and floor["samples_per_second"] == 4 / 5.0 and floor["complete"]
    assert floor["own_seconds"] == {"a": 10.0, "b": 9.0}


def test_a_floor_with_an_operation_no_library_timed_is_unknown():
    spec, found = timings(a={"dense0 forward": 1.0, "dense1 forward": 1.0, "dense1 weight gradient": 1.0,
                             "dense1 input gradient": 1.0},  # no library timed dense0's weight gradient
                          b={"dense0 forward": 1.0})
    floor = ceilings.op_floor(spec, 4, {**found, "c": {"status": "skipped", "error": "no op_probe"}})
    assert not floor["complete"] and floor["seconds"] is None and floor["samples_per_second"] is None
    assert floor["own_seconds"] == {}  # neither timed every operation


def test_the_floor_columns_are_the_rows_speed_over_the_floors():
    key = floor_key(model_spec("mlp"), 128)
    matmul = {"libraries": {}, "peak": {}, "floor": {key: {"samples_per_second": 50_000.0}}}
    run = {"samples_per_second": 40_000.0, "flops_per_sample": 3_209_216}
    columns = efficiency(run, "numpy", matmul, key)
    assert columns["floor_samples_per_second"] == 50_000.0 and columns["floor_fraction"] == pytest.approx(0.8)
    assert "floor_fraction" not in efficiency(run, "numpy", matmul, floor_key(model_spec("mlp"), 64))


PROBE_CHECK = """
import json, sys
import numpy as np
from harness.adapter import load_adapter
from harness.execute.probes import operands
job = json.loads(sys.argv[1])
adapter = load_adapter(job["adapter"])
for operation in job["operations"]:
    run = adapter.op_probe("cpu", operation, 1)
    print(json.dumps({"name": operation["name"], "result": adapter.op_result(operation, run()).tolist()}))
"""


def reference(operation: dict) -> np.ndarray:
    """The operation computed in float64 from the probe's own inputs."""
    given = {k: v.astype(np.float64) for k, v in operands(operation).items()}
    role = operation["role"]
    if operation["kind"] in ("matmul", "bmm"):
        a = given["a"].swapaxes(-1, -2) if role in ("weight gradient", "right gradient") else given["a"]
        b = given["b"].swapaxes(-1, -2) if role in ("input gradient", "left gradient") else given["b"]
        return a @ b
    x, w, dy = given["x"], given["w"], given["dy"]
    k = w.shape[0]
    ho, wo = x.shape[1] - k + 1, x.shape[2] - k + 1
    patches = np.stack([x[:, i:i + ho, j:j + wo] for i in range(k) for j in range(k)], axis=3)  # N H' W' kk C
    if role == "forward":
        return np.einsum("nhwkc,kco->nhwo", patches, w.reshape(k * k, *w.shape[2:]))
    if role == "weight gradient":
        return np.einsum("nhwkc,nhwo->kco", patches, dy).reshape(w.shape)
    dx = np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            dx[:, i:i + ho, j:j + wo] += dy @ w[i, j].T
    return dx


def probe_errors(info, operations: list[dict]) -> dict[str, float]:
    """Each operation's largest error, relative to the result's scale, as the library's probe computed it."""
    job = {"adapter": info.job(info.runs_on("cpu")[0]), "operations": operations}
    done = subprocess.run([sys.executable, "-c", PROBE_CHECK, json.dumps(job)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = {}
    for line in done.stdout.splitlines():
        found = json.loads(line)
        operation = next(o for o in operations if o["name"] == found["name"])
        expected, result = reference(operation), np.asarray(found["result"])
        errors[found["name"]] = (float(np.abs(result - expected).max() / np.abs(expected).max())
                                 if result.shape == expected.shape else float("inf"))
    return errors


SMALL = [{**o.as_dict(), "name": f"{spec.name} {o.name}"}  # names unique across the models
         for spec in (model_spec("mlp", hidden=[16]), model_spec("cnn", channels=[4, 8], dense=16),
                      model_spec("rnn", hidden=8), model_spec("vit", width=8, depth=1, heads=2, mlp=16))
         for o in spec.step_operations(3)]


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "tensorflow"])
def test_every_librarys_probe_computes_the_operation_it_names(name):
    info = discover()[name]
    if info.missing_modules():
        pytest.skip(f"{name} is not installed: {info.install_command}")
    errors = probe_errors(info, SMALL)
    assert set(errors) == {o["name"] for o in SMALL}
    assert max(errors.values()) < 1e-4, errors


def test_a_probe_that_times_another_operation_is_caught(tmp_path):
    """The check above fails for a probe that forgets the weight gradient's transposition."""
    wrong = tmp_path / "wrong_adapter.py"
    wrong.write_text(
        "from frameworks.numpy_adapter import NumpyAdapter\n"
        "class WrongAdapter(NumpyAdapter):\n"
        "    name = 'wrong'\n    extra = 'dev'\n    variants = ('numpy',)\n    devices = ('cpu',)\n"
        "    @staticmethod\n"
        "    def op_probe(device, operation, threads):\n"
        "        if operation['role'] == 'weight gradient' and operation['kind'] == 'matmul':\n"
        "            operation = {**operation, 'role': 'forward', 'dims': operation['dims']}\n"
        "        return NumpyAdapter.op_probe(device, operation, threads)\n")
    info = discover(tmp_path)["wrong"]
    errors = probe_errors(info, [o for o in SMALL if o["kind"] == "matmul"])
    assert errors["mlp dense1 weight gradient"] > 1e-2 and errors["mlp dense1 forward"] < 1e-4


def test_the_floor_is_measured_in_a_worker_cached_and_used_by_the_run(tmp_path):
    config = load_config(SMOKE, {"ceilings": "cached", "models": ["mlp"]}, adapters={"numpy": discover()["numpy"]})
    config.values["matmul_size"] = 128
    cache = tmp_path / "ceilings.json"
    measured = ceilings.measure(config, tmp_path, progress=False, cache=cache)
    key = floor_key(config.model("mlp"), config.batch_size)
    floor = measured["floor"][key]
    assert floor["complete"] and floor["samples_per_second"] > 0 and floor["model"] == "mlp"
    assert {row["fastest"] for row in floor["operations"]} == {"numpy"}
    assert measured["operations"]["numpy"]["source"] == "measured in this run"
    again = ceilings.measure(config, tmp_path, progress=False, cache=cache)
    assert again["operations"]["numpy"]["source"].startswith("cached") and again["floor"][key]["seconds"] == \
        floor["seconds"]
    assert "floor" not in ceilings.measure(config, tmp_path, progress=False, cache=cache, floor=False)
