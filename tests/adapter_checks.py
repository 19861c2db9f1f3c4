"""Everything the tests check of one adapter variant, model after model, in one fresh process, as in a benchmark.

    python -m tests.adapter_checks '{"adapter": ..., "variant": ..., "models": [...], "out": DIR}'

Runs, for each model, parity's recipe (harness/parity.py observe, whose arrays go to
DIR/<model>/observations.npz for tests/test_parity.py) and the conformance checks parity does not
make (printed as one JSON object, model -> checks or the error that stopped them, for
tests/test_conformance.py). One process per variant: Keras picks its backend at import; the
models share it, as parity's many adapters of one model already do (each builds, seeds and, in a
compiled variant, compiles afresh), and the framework is imported once.
"""

import json
import sys
import traceback
from pathlib import Path

import numpy as np

from harness.adapter import DeviceUnavailable, Unsupported, load_adapter
from harness.parity import BATCH, BATCHES, DROPOUT_BATCH, DROPOUT_STEPS, SEED, observe, parity_data, sharpened

# configs/smoke.toml's sizes, as a config resolves them (kernel_size and patch at their defaults): the parity
# fault tests run at these too, so that one reference of each model serves both.
SIZES = {"mlp": {"hidden": [32]}, "cnn": {"channels": [8, 16], "dense": 32, "kernel_size": 3}, "rnn": {"hidden": 16},
         "vit": {"width": 16, "depth": 1, "heads": 2, "mlp": 32, "patch": 7}}  # one block: every op of a deeper one
RATE = {"mlp": 0.2, "cnn": 0.3, "rnn": 0.1, "vit": 0.2}  # smoke.toml's; 0.3, not 0.5, tells rate from 1 - rate
OPTIONS = {"eval_batch_size": 100, "allow_slow": True}


def conformance(make, built: list, model: str) -> dict:
    """What parity does not look at: parameter copies, determinism under a seed, the GPU refusal.

    It reuses parity's adapters (`built`, in the order observe() made them), so nothing compiles twice.
    """
    seen = {}
    trained = built[0]  # SGD, after its three epochs
    params = trained.get_params()
    seen["names"] = sorted(params) == sorted(trained.model.param_shapes)
    seen["float32"] = all(v.dtype == np.float32 and v.shape == trained.model.param_shapes[k] for k, v in params.items())
    kept = {k: v.copy() for k, v in params.items()}
    trained.train_epoch(np.arange(BATCHES * BATCH, dtype=np.int32).reshape(BATCHES, BATCH))  # must not reach into them
    unchanged = all(np.array_equal(params[k], kept[k]) for k in params)
    for value in params.values():
        if value.flags.writeable:  # read-only arrays (JAX's) cannot reach the model
            value[...] = 99.0  # the caller's copy: the model must not see it
    seen["copies"] = unchanged and all(not np.any(v == 99.0) for v in trained.get_params().values())

    # A second adapter with the same seed, made and used like parity's first dropout one, draws the same masks.
    dropped = next(a for a in built if a.model.dropout > 0)
    data, again = parity_data(), make(dropped.model, dropped.optimizer)
    again.set_params(sharpened(dropped.model.init_params(SEED)))
    again.load_data(data.x_train, data.y_train, data.x_eval, data.y_eval)
    again.evaluate()
    fixed = np.tile(np.arange(DROPOUT_BATCH, dtype=np.int32), (DROPOUT_STEPS, 1))
    seen["same_seed_calls"] = [again.train_epoch(fixed) for _ in range(2)]
    seen["backend"] = again.backend
    seen["thread_pools"] = again.thread_pools()
    try:
        make(dropped.model, dropped.optimizer, device="gpu")
        seen["gpu"] = "built"
    except DeviceUnavailable as reason:
        seen["gpu"] = f"device unavailable: {reason}"
    except Unsupported as reason:
        seen["gpu"] = f"unsupported: {reason}"
    return seen


def check(adapter_class, variant: str, model: str, out: Path) -> dict:
    """One model's parity observations (saved under out) and conformance checks (returned)."""
    built = []

    def make(spec, optimizer, device="cpu"):
        built.append(adapter_class(spec, optimizer, device=device, variant=variant, seed=SEED, threads=1,
                                   options=dict(OPTIONS)))
        return built[-1]

    seen = observe(make, model, SIZES[model], RATE[model])
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "observations.npz", **seen)
    return conformance(make, list(built), model)


def main(job: dict) -> dict:
    """model -> its conformance checks, or {"error": traceback} for a model that raised (the others still run)."""
    adapter_class = load_adapter(job["adapter"])
    results = {}
    for model in job["models"]:
        try:
            results[model] = check(adapter_class, job["variant"], model, Path(job["out"]) / model)
        except Exception:
            results[model] = {"error": traceback.format_exc()}
    return results


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
