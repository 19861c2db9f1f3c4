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


def _log_seconds(axis) -> None:
    """A log-scale seconds axis labelled at 1, 2 and 5 times the powers of ten, in plain numbers."""
    ticker = _ticker()
    axis.set_xscale("log")
    axis.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())


def learning_curves(epochs: pd.DataFrame, model: str, path: Path, split: str = "test",
                    measure: str = "eval_accuracy") -> None:
    """Accuracy on the evaluation split (or, evaluated only at the end, the training loss) against epoch and
    against training wall-clock seconds (compile included)."""
    scale, what = (100, f"{split} accuracy (%)") if measure == "eval_accuracy" else (1, "training loss")
    plt = _pyplot()
    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    rows = epochs[epochs["model"] == model].copy()
    rows["elapsed"] = rows.groupby(ROW + ["repeat"])["train_seconds"].cumsum()
    if "step" in rows and rows["step"].notna().any():  # several evaluations an epoch: each epoch's last one
        rows = rows.sort_values("step").groupby(ROW + ["repeat", "epoch"], sort=False).tail(1)
    for keys, group in rows.groupby(ROW, sort=False):
        curve = group.groupby("epoch")[[measure, "elapsed"]].median()
        by_epoch.plot(curve.index, scale * curve[measure], marker="o", label=_label(keys))
        by_time.plot(curve["elapsed"], scale * curve[measure], marker="o", label=_label(keys))
    by_epoch.set(xlabel="epoch", ylabel=what, title=f"{model.upper()}: {what.split(' (')[0]} per epoch")
    by_time.set(xlabel="training time (s, compile included)", title=f"{model.upper()}: {what.split(' (')[0]} "
                "against time")
    _log_seconds(by_time)  # compile-heavy rows start late; log time keeps every row readable
    by_epoch.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    by_epoch.legend(fontsize="small")
    for axis in (by_epoch, by_time):
        axis.grid(alpha=0.3)
    _save(figure, path)


def speedrun_curves(epochs: pd.DataFrame, model: str, target: float, path: Path) -> None:
    """Every seed's test accuracy against its training seconds (compile included, evaluations apart), one colour
    per row, and the target: where each curve crosses the line is that seed's time to target."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 5))
    rows = epochs[epochs["model"] == model].copy()
    rows["elapsed"] = rows.groupby(ROW + ["repeat"])["train_seconds"].cumsum()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (keys, group), colour in zip(rows.groupby(ROW, sort=False), colours * 4):
        for i, (_, seed) in enumerate(group.groupby("repeat")):
            axis.plot(seed["elapsed"], 100 * seed["eval_accuracy"], color=colour, alpha=0.6, linewidth=1,
                      label=_label(keys) if i == 0 else None)
    axis.axhline(100 * target, color="black", linestyle="--", linewidth=1, label=f"target {100 * target:g}%")
    axis.set(xlabel="training seconds (from the first step, compile included, evaluations apart)",
             ylabel="test accuracy (%)", title=f"{model.upper()}: accuracy against time, every seed")
    _log_seconds(axis)
    axis.set_ylim(max(100 * target - 4, float(100 * rows["eval_accuracy"].min()) - 0.5 if len(rows) else 0), 100)
    axis.legend(fontsize="small", loc="lower right")
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


EFFICIENCY = {"peak_fraction": "of the machine's peak product", "ceiling_fraction": "of its own library's product",
              "floor_fraction": "of the op floor (its step's operations, fastest library each)"}


def efficiency_bars(runs: pd.DataFrame, model: str, path: Path) -> bool:
    """Per row, its training speed as a share of each reference it has: grouped bars, median with min-max whiskers."""
    rows = runs[runs["model"] == model].copy()
    shown = [m for m in EFFICIENCY if m in rows and pd.to_numeric(rows[m], errors="coerce").notna().any()]
    if not shown:
        return False
    for metric in shown:
        rows[metric] = 100 * pd.to_numeric(rows[metric], errors="coerce")
    stats = rows.groupby(ROW, sort=False)[shown].agg(["median", "min", "max"])
    stats = stats.sort_values((shown[0], "median"))
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(9, 0.55 * len(stats) * len(shown) / 2 + 2))
    height = 0.8 / len(shown)
    positions = range(len(stats))
    for i, metric in enumerate(shown):
        median = stats[(metric, "median")]
        errors = [median - stats[(metric, "min")], stats[(metric, "max")] - median]
        axis.barh([p + (i - (len(shown) - 1) / 2) * height for p in positions], median, height=height, xerr=errors,
                  capsize=2, label=f"% {EFFICIENCY[metric]}", alpha=0.85)
    axis.set_yticks(list(positions), [_label(k) for k in stats.index])
    axis.set(xlabel="% (the row's training FLOP/s against each reference)",
             title=f"{model.upper()}: how close each row comes to what the machine can do")
    axis.axvline(100, color="grey", linewidth=0.8)
    axis.legend(fontsize="small", loc="lower right")
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
    cell = ROW + ["model", "device", "repeat"] + [c for c in ok.columns if c.startswith("sweep.") and c in epochs]
    epochs = epochs.merge(ok[cell], on=cell)
    swept = (config.get("sweep") or {}).get("mode") in ("grid", "zip", "optuna")
    written: dict[str, list[str]] = {}
    for model in dict.fromkeys(ok["model"]):
        names = []
        target = config.get(model, {}).get("target_accuracy", "")
        if config.get("stop_at_target") and not epochs[epochs["model"] == model].empty:
            speedrun_curves(epochs, model, target, directory / f"{model}-speedrun.png")
            names.append(f"{model}-speedrun.png")
        elif not epochs[epochs["model"] == model].empty and not swept:  # a sweep draws a panel per setting
            measure = "train_loss" if config.get("evaluate") == "end" else "eval_accuracy"
            learning_curves(epochs, model, directory / f"{model}-accuracy.png", config.get("eval_split", "test"),
                            measure)
            names.append(f"{model}-accuracy.png")
        figures = [
            ("samples_per_second", "training samples per second (steady epochs)", "steady throughput", "throughput", 1),
            ("time_to_target_seconds", "seconds (training, compile included)",
             f"time to {target} test accuracy", "time-to-target", 1),
        ]
        for metric, xlabel, title, suffix, scale in figures:
            name = f"{model}-{suffix}.png"
            if bars(ok, model, metric, xlabel, f"{model.upper()}: {title}", directory / name, scale):
                names.append(name)
        if efficiency_bars(ok, model, directory / f"{model}-efficiency.png"):
            names.append(f"{model}-efficiency.png")
        written[model] = names
    return written
