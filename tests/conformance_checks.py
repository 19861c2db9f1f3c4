"""The conformance checks of one adapter variant, run in a fresh process (python -m tests.conformance_checks).

A process per variant, as in a benchmark: Keras picks its backend at import, and
frameworks keep global state. Prints one JSON object of observations for the test.
"""

import json
import sys

import numpy as np

from harness.adapter import Unsupported, load_adapter
from harness.models import OptimizerSpec, model_spec
from harness.synthetic import synthetic
from harness.worker import batch_order

SIZES = {"mlp": {"hidden": [32]}, "cnn": {"channels": [8, 16], "dense": 32}}
OPTIMIZER = OptimizerSpec("adam", lr=1e-2)


def build(adapter_class, spec, variant, device="cpu", seed=0):
    return adapter_class(spec, OPTIMIZER, device=device, variant=variant, seed=seed, threads=1,
                         options={"eval_batch_size": 100, "allow_slow": True})


def train(adapter_class, spec, variant, dataset, epochs=3, seed=0):
    adapter = build(adapter_class, spec, variant, seed=seed)
    adapter.set_params(spec.init_params(seed))
    adapter.load_data(dataset.x_train, dataset.y_train, dataset.x_eval, dataset.y_eval)
    before = adapter.evaluate()
    losses = [adapter.train_epoch(b) for b in batch_order(len(dataset.x_train), 32, seed, epochs)]
    return adapter, before, losses, adapter.evaluate()


def main(job: dict) -> dict:
    adapter_class = load_adapter(job["adapter"])
    spec = model_spec(job["model"], dropout=0.1, **SIZES[job["model"]])
    dataset = synthetic(train=256, eval=128, seed=3)
    seen = {}

    initial = spec.init_params(7)
    adapter = build(adapter_class, spec, job["variant"])
    adapter.set_params(initial)
    out = adapter.get_params()
    seen["roundtrip_names"] = sorted(out) == sorted(initial)
    seen["roundtrip_error"] = max(float(np.abs(out[k] - initial[k]).max()) for k in initial)
    seen["roundtrip_float32"] = all(v.dtype == np.float32 and v.shape == initial[k].shape for k, v in out.items())

    adapter, before, losses, after = train(adapter_class, spec, job["variant"], dataset)
    seen.update(losses=losses, before=before, after=after, backend=adapter.backend)
    trained = adapter.get_params()
    seen["params_changed"] = all(not np.array_equal(trained[k], spec.init_params(0)[k]) for k in trained)
    seen["trained_shapes"] = all(trained[k].shape == s for k, s in spec.param_shapes.items())
    _, _, again, again_after = train(adapter_class, spec, job["variant"], dataset)
    seen.update(repeat_losses=again, repeat_after=again_after)

    try:
        build(adapter_class, spec, job["variant"], device="gpu")
        seen["gpu"] = "built"
    except Unsupported as reason:
        seen["gpu"] = f"unsupported: {reason}"
    return seen


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
