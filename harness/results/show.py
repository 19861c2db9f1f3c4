"""bench.py show: what each framework learned, drawn from the parameters its cells saved (save_params = true).

For each (framework, variant, model), one cell: repeat 0 of its best setting (select's rule, in a sweep),
or of its one setting. Its saved parameters go into the NumPy reference's forward pass, in float32 on the
host (parity shows that every framework computes this same function), which predicts the run's own
evaluation split again: the test set, or a sweep's validation hold-out, which keeps the test set unseen
until `bench.py final`. So show needs no ML framework, and its accuracy should be the one the run
recorded. The figures, in RUN/show/, side by side for every framework:

    <model>-weights.png    the first layer: each hidden unit's 784 input weights as a 28x28 image (MLP),
                           the convolution filters (CNN) or patch projections (ViT), the input kernel (LSTM)
    <model>-confusion.png  the confusion matrix: true digit against predicted
    <model>-mistakes.png   the misclassified images the model was surest of
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.tuning import sweep
from harness.errors import UserError
from harness.results.records import RUN_COLUMNS, read_json, read_records
from harness.results.selection import best_settings, setting_of

UNITS = 16  # hidden units, filters or projections drawn per framework
MISTAKES = 8  # misclassified images drawn per framework
SPLITS = {"test": "the test set", "validation": "the validation hold-out"}


@dataclass
class Shown:
    """One framework's cell: its row, its predictions on the evaluation split, and the images and labels."""

    row: dict
    params: dict
    probabilities: np.ndarray
    images: np.ndarray
    labels: np.ndarray

    @property
    def label(self) -> str:
        return f"{self.row['framework']}/{self.row['variant']}"

    @property
    def accuracy(self) -> float:
        return float((self.probabilities.argmax(axis=1) == self.labels).mean())


def show(directory: Path, data_dir: str | None = None) -> list[str]:
    """Draw every model's figures into RUN/show/; return the lines to print."""
    directory = Path(directory)
    config = read_json(directory / "config.json")
    rows = shown_rows(directory, config)
    out, lines, sets = directory / "show", [], {}
    out.mkdir(exist_ok=True)
    for model in dict.fromkeys(r["model"] for r in rows):
        shown = [_shown(directory, row, config, data_dir, sets) for row in rows if row["model"] == model]
        split = SPLITS[config["eval_split"]]
        lines += [agreement(one, split) for one in shown]
        names = [draw(shown, model, out, split) for draw in (weights, confusion, mistakes)]
        lines.append(f"{model}: " + ", ".join(str(out / n) for n in names))
    return lines


def _shown(directory: Path, row: dict, config: dict, data_dir: str | None, sets: dict) -> Shown:
    """A row's saved parameters and their predictions on its evaluation split (each split loaded once, in `sets`)."""
    from harness.results.params import load

    params, spec = load(directory / row["params_file"])
    values = sweep.apply(config, setting_of(row))  # standardize may be swept
    key = (values["validation"], values["eval_split"], values["standardize"])
    sets[key] = sets.get(key) or evaluation_set(values, data_dir)
    (x, images), labels = sets[key]
    return Shown(row, params, predict(params, spec, x, values["threads"]), images, labels)


def shown_rows(directory: Path, config: dict) -> list[dict]:
    """Repeat 0 (or the first saved) of each (framework, variant, model)'s best setting, with saved parameters."""
    if not config:
        raise UserError(f"{directory} has no config.json: give the folder of a run, e.g. results/<time>-sweep-lr")
    saved = [r for r in read_records(directory / "runs.csv", RUN_COLUMNS) if r.get("params_file") and
             r["status"] == "ok" and (directory / r["params_file"]).is_file()]
    if not saved:
        raise UserError(f"{directory} holds no saved parameters: run its config with save_params = true, and show "
                        "draws what each cell learned from them")
    best = {}
    if sweep.mode(config) in sweep.SEARCHING:
        best = {(e["framework"], e["variant"], e["model"]): e["setting"] for e in best_settings(directory)["chosen"]}
    chosen: dict[tuple, dict] = {}
    for row in sorted(saved, key=lambda r: int(r["repeat"])):
        cell = (row["framework"], row["variant"], row["model"])
        if cell in best and setting_of(row) != best[cell]:
            continue
        chosen.setdefault(cell, row)
    unsupported = _unsupported({row["model"] for row in chosen.values()})
    if unsupported:
        raise UserError(f"the NumPy reference does not implement the {unsupported[0]} yet, so show cannot run its "
                        "saved parameters: drop the model or add it to frameworks/numpy_adapter.py")
    return list(chosen.values())


def _unsupported(models: set[str]) -> list[str]:
    from frameworks.numpy_adapter import NumpyAdapter

    return sorted(models - set(NumpyAdapter.models))


def evaluation_set(values: dict, data_dir: str | None):
    """((the images the model reads, the same images to draw), labels) of the run's evaluation split."""
    from harness import data, synthetic

    if values["dataset"] == "synthetic":
        sizes = values["synthetic"]
        found = synthetic.synthetic(sizes["train"], sizes["eval"], seed=values["seed"],
                                    validation=values["validation"], eval_split=values["eval_split"])
        return (found.x_eval, found.x_eval), found.y_eval
    split = {"validation": values["validation"], "eval_split": values["eval_split"], "allow_download": False,
             "data_dir": data_dir or values["data_dir"] or None}
    raw = data.load(values["dataset"], **split)
    read = data.load(values["dataset"], standardize=True, **split) if values["standardize"] else raw
    return (read.x_eval, raw.x_eval), raw.y_eval


def predict(params: dict, spec, images: np.ndarray, threads: int, chunk: int = 1000) -> np.ndarray:
    """Class probabilities from the NumPy reference's forward pass, in float32, dropout off."""
    from frameworks.numpy_adapter import NumpyAdapter, log_softmax
    from harness.models import OptimizerSpec

    adapter = NumpyAdapter(spec, OptimizerSpec(), device="cpu", variant="numpy", seed=0, threads=threads or 1,
                           options={})
    adapter.set_params(params)
    adapter.load_data(images[:1], np.zeros(1, np.int32), images, np.zeros(len(images), np.int32))
    logits = [adapter.forward(adapter.x_eval[start:start + chunk], train=False)[0]
              for start in range(0, len(images), chunk)]
    return np.exp(log_softmax(np.concatenate(logits), np)) if logits else np.zeros((0, 10))


def agreement(shown: Shown, split: str) -> str:
    """The accuracy recomputed from the saved parameters beside the one the run recorded."""
    row, setting = shown.row, sweep.describe(setting_of(shown.row))
    recorded = float(row["final_accuracy"])
    same = "as the run recorded" if abs(shown.accuracy - recorded) < 5e-4 else "the run recorded"
    return (f"{shown.label} {row['model']} #{row['repeat']}{' ' + setting if setting else ''}: the NumPy forward "
            f"pass of its saved parameters gives {shown.accuracy:.2%} on {split}, {same} {recorded:.2%}")


# -- the figures --------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def first_kernel(params: dict) -> tuple[str, np.ndarray]:
    """The first layer's kernel: the first parameter in forward order whose name ends in 'kernel'."""
    return next((name, value) for name, value in params.items() if name.endswith("kernel"))


def weights(shown: list[Shown], model: str, out: Path, split: str) -> str:
    """Per framework, its first layer: 28x28 images of dense input weights, k x k filters, or the matrix."""
    name, kernel = first_kernel(shown[0].params)
    if kernel.ndim == 4 or kernel.shape[0] == 784:
        return _unit_pictures(shown, model, out, name, kernel)
    plt = _pyplot()  # the LSTM's input kernel: the 28 pixels of an image row by the gates' units
    figure, axes = plt.subplots(len(shown), 1, figsize=(10, 1.6 * len(shown) + 0.8), squeeze=False,
                                layout="constrained")
    for (axis,), one in zip(axes, shown):
        kernel = first_kernel(one.params)[1]
        limit = abs(kernel).max() or 1
        axis.imshow(kernel, cmap="RdBu_r", aspect="auto", vmin=-limit, vmax=limit)
        width = kernel.shape[1] // 4  # the gates' column blocks, in the canonical order i, f, g, o
        for gate, name in enumerate("ifgo"):
            axis.axvline(gate * width - 0.5, color="black", linewidth=0.8)
            axis.text((gate + 0.5) * width, -1, name, ha="center", va="bottom", fontsize="small")
        axis.set_yticks([0, 27])
        axis.set_ylabel(one.label, rotation=0, ha="right", fontsize="small")
    figure.suptitle(f"{model.upper()}: {name}, the 28 pixels of a row (down) into the gates' units (across); red "
                    "positive, blue negative")
    return _save(figure, out / f"{model}-weights.png")


def _unit_pictures(shown: list[Shown], model: str, out: Path, name: str, kernel: np.ndarray) -> str:
    """The first UNITS units' input weights (or filters), each as an image on its own symmetric scale."""
    plt = _pyplot()
    columns = min(UNITS, kernel.shape[-1])
    figure, axes = plt.subplots(len(shown), columns, figsize=(1.1 * columns + 1.5, 1.2 * len(shown) + 0.9),
                                squeeze=False, layout="constrained")
    for row, one in zip(axes, shown):
        kernel = first_kernel(one.params)[1]
        for unit, axis in enumerate(row):
            image = kernel[..., 0, unit] if kernel.ndim == 4 else kernel[:, unit].reshape(28, 28)
            limit = abs(image).max() or 1
            axis.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
            axis.set_xticks([]), axis.set_yticks([])
        row[0].set_ylabel(one.label, rotation=0, ha="right", fontsize="small")
    what = "input weights of the first hidden units, as 28x28 images" if kernel.ndim == 2 else "first filters"
    figure.suptitle(f"{model.upper()}: {name}, the {what} (red positive, blue negative), repeat 0 of every "
                    "framework")
    return _save(figure, out / f"{model}-weights.png")


def confusion(shown: list[Shown], model: str, out: Path, split: str) -> str:
    """Per framework, the confusion matrix on the split, rows the true digit; the diagonal shaded apart."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown) + 0.5, 4.3), squeeze=False,
                                layout="constrained")
    for axis, one in zip(axes[0], shown):
        counts = np.zeros((10, 10), int)
        np.add.at(counts, (one.labels, one.probabilities.argmax(axis=1)), 1)
        errors = counts * (1 - np.eye(10, dtype=int))
        axis.imshow(errors, cmap="Reds")
        for (true, predicted), count in np.ndenumerate(counts):
            if count:
                axis.text(predicted, true, str(count), ha="center", va="center",
                          fontsize=5.5 if true == predicted else 6.5, color="grey" if true == predicted else "black")
        axis.set(title=f"{one.label}: {one.accuracy:.2%}", xlabel="predicted", xticks=range(10), yticks=range(10))
        axis.tick_params(labelsize=7)
    axes[0][0].set_ylabel("true digit")
    figure.suptitle(f"{model.upper()}: confusion on {split} (the errors shaded; the diagonal in grey)")
    return _save(figure, out / f"{model}-confusion.png")


def mistakes(shown: list[Shown], model: str, out: Path, split: str) -> str:
    """Per framework, the misclassified images it gave the highest probability to its wrong answer."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(shown), MISTAKES, figsize=(1.2 * MISTAKES + 1.5, 1.45 * len(shown) + 0.8),
                                squeeze=False, layout="constrained")
    for row, one in zip(axes, shown):
        predicted = one.probabilities.argmax(axis=1)
        wrong = np.flatnonzero(predicted != one.labels)
        surest = wrong[np.argsort(-one.probabilities[wrong, predicted[wrong]])][:MISTAKES]
        for axis, index in zip(row, [*surest, *([None] * MISTAKES)]):
            axis.set_xticks([]), axis.set_yticks([])
            if index is None:
                axis.axis("off")
                continue
            axis.imshow(one.images[index].reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
            axis.set_title(f"{one.labels[index]}→{predicted[index]} {one.probabilities[index, predicted[index]]:.0%}",
                           fontsize=8)
        row[0].set_ylabel(one.label, rotation=0, ha="right", fontsize="small")
    figure.suptitle(f"{model.upper()}: the misclassified images of {split} each was surest of (true→predicted, "
                    "probability)")
    return _save(figure, out / f"{model}-mistakes.png")


def _save(figure, path: Path) -> str:
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)
    return path.name
