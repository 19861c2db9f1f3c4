"""A cell's trained parameters on disk (save_params = true): params/<cell>.npz in the run folder.

Canonical names and layout (float32 NumPy arrays, as every adapter's get_params gives them), and the
model they belong to: its name and settings as JSON under MODEL, so that a file alone rebuilds its
spec. `bench.py show` reads them back into the NumPy reference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

MODEL = "__model__"  # not a canonical name: those are layer.parameter


def save(path: str | Path, params: dict[str, np.ndarray], model: str, settings: dict) -> None:
    """In the spec's order (forward order), through a temporary file: a cell stopped mid-write leaves no file,
    never half of one."""
    from harness.models import model_spec

    order = model_spec(model, **settings).param_shapes
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    with partial.open("wb") as f:
        description = json.dumps({"model": model, "settings": settings})
        np.savez(f, **{name: np.asarray(params[name], np.float32) for name in order},
                 **{MODEL: np.array(description)})
    os.replace(partial, target)


def load(path: str | Path):
    """(parameters by canonical name, the model's ModelSpec) of a saved file."""
    from harness.models import model_spec

    with np.load(path, allow_pickle=False) as saved:
        described = json.loads(str(saved[MODEL]))
        spec = model_spec(described["model"], **described["settings"])
        params = {name: saved[name] for name in spec.param_shapes}
    return params, spec
