"""The figures beside summary.md: learning curves, throughput and time to target, per model.

Each framework row is one (framework/variant) line or bar; curves show the median over
repeats at each epoch, bars the median with the min-max range as an error bar.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROW = ["framework", "variant"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _ticker():
    import matplotlib.ticker

    return matplotlib.ticker


def _label(keys) -> str:
    return "/".join(str(k) for k in keys)


def learning_curves(epochs: pd.DataFrame, model: str, path: Path) -> None:
    """Test accuracy against epoch and against training wall-clock seconds (compile included)."""
    plt = _pyplot()
    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    rows = epochs[epochs["model"] == model].copy()
    rows["elapsed"] = rows.groupby(ROW + ["repeat"])["train_seconds"].cumsum()
    for keys, group in rows.groupby(ROW, sort=False):
        curve = group.groupby("epoch")[["eval_accuracy", "elapsed"]].median()
        by_epoch.plot(curve.index, 100 * curve["eval_accuracy"], marker="o", label=_label(keys))
        by_time.plot(curve["elapsed"], 100 * curve["eval_accuracy"], marker="o", label=_label(keys))
    by_epoch.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{model.upper()}: accuracy per epoch")
    by_time.set(xlabel="training time (s, compile included)", title=f"{model.upper()}: accuracy against time")
    by_time.set_xscale("log")  # compile-heavy rows start late; log time keeps every row readable
    by_time.xaxis.set_major_formatter(_ticker().ScalarFormatter())
    by_epoch.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    by_epoch.legend(fontsize="small")
    for axis in (by_epoch, by_time):
        axis.grid(alpha=0.3)
    _save(figure, path)


def bars(runs: pd.DataFrame, model: str, metric: str, xlabel: str, title: str, path: Path, scale: float = 1) -> bool:
    """Horizontal bars, median over repeats with min-max whiskers; False when there is nothing to draw."""
    if metric not in runs:
        return False
    rows = runs[(runs["model"] == model)].copy()
    rows[metric] = scale * pd.to_numeric(rows[metric], errors="coerce")
    stats = rows.dropna(subset=[metric]).groupby(ROW, sort=False)[metric].agg(["median", "min", "max"])
    if stats.empty:
        return False
    stats = stats.sort_values("median")
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(stats) + 1.5))
    errors = [stats["median"] - stats["min"], stats["max"] - stats["median"]]
    labels = [_label(k) for k in stats.index]
    axis.barh(labels, stats["median"], xerr=errors, capsize=3, color="tab:blue", alpha=0.8)
    axis.set(xlabel=xlabel, title=title)
    axis.grid(axis="x", alpha=0.3)
    _save(figure, path)
    return True


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)


def write_plots(directory: Path, runs: pd.DataFrame, epochs: pd.DataFrame, config: dict) -> dict[str, list[str]]:
    """All figures of a run folder; returns the file names per model, for summary.md to link."""
    ok = runs[runs["status"] == "ok"]
    epochs = epochs.merge(ok[ROW + ["model", "device", "repeat"]], on=ROW + ["model", "device", "repeat"])
    written: dict[str, list[str]] = {}
    for model in dict.fromkeys(ok["model"]):
        names = []
        if not epochs[epochs["model"] == model].empty:
            learning_curves(epochs, model, directory / f"{model}-accuracy.png")
            names.append(f"{model}-accuracy.png")
        target = config.get(model, {}).get("target_accuracy", "")
        figures = [
            ("samples_per_second", "training samples per second (steady epochs)", "steady throughput", "throughput", 1),
            ("time_to_target_seconds", "seconds (training, compile included)",
             f"time to {target} test accuracy", "time-to-target", 1),
            ("peak_fraction", "% of the machine's peak float32 matrix-product FLOP/s",
             "training FLOP/s as a share of the machine's peak", "efficiency", 100),
        ]
        for metric, xlabel, title, suffix, scale in figures:
            name = f"{model}-{suffix}.png"
            if bars(ok, model, metric, xlabel, f"{model.upper()}: {title}", directory / name, scale):
                names.append(name)
        written[model] = names
    return written
