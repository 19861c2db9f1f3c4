"""The figures of a sweep, beside summary.md: what each swept value did, framework by framework.

- <model>-sweep-<key>.png: accuracy against the key's values, one line per framework variant: the median
  over repeats with the min-max as an error bar, on a log axis for values spread over a decade or more
  (rates); with other keys swept too, each value's best setting of them (the best that value allows).
- <model>-sweep-heatmap.png: a two-key grid's mean accuracy, one panel per framework variant.
- <model>-sweep-curves.png: the learning curves, one panel per setting, every framework in it; frameworks
  that train the same model the same way draw the same curve.
- An Optuna search: <model>-search.png, each trial's accuracy against each searched key and the best so
  far against the trial, one colour per framework; <model>-search-curves.png, each study's best trial.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.tuning import sweep
from harness.results.plots import ROW, _label, _pyplot, _save, _ticker
from harness.results.records import sweep_columns

CURVE_PANELS = 24  # settings drawn in one figure of curves; a larger grid keeps its first ones
SPLIT_NAMES = {"validation": "validation", "test": "test"}


def write_sweep_plots(directory: Path, runs: pd.DataFrame, epochs: pd.DataFrame | None, config: dict) -> dict:
    """Every sweep figure of a run folder; the file names per model, for summary.md."""
    settings = config["sweep"]
    split = SPLIT_NAMES.get(config.get("eval_split"), "evaluation")
    ok = runs[runs["status"] == "ok"].copy()
    ok["accuracy"] = 100 * pd.to_numeric(ok["final_accuracy"], errors="coerce")
    written: dict[str, list[str]] = {}
    for model in dict.fromkeys(ok["model"]):
        rows = ok[ok["model"] == model].copy()
        keys = [c for c in sweep_columns(rows.columns) if rows[c].notna().any()]
        rows["setting"] = rows[keys].astype(str).agg(" ".join, axis=1)
        curves = _epochs_of(epochs, rows, keys) if epochs is not None else pd.DataFrame()
        if not keys:
            continue
        if settings["mode"] == "optuna":
            names = [search_plot(rows, keys, settings["space"], model, split, directory)]
            names += [best_curves(rows, curves, keys, model, split, directory)] if not curves.empty else []
        else:
            names = [value_plot(rows, key, keys, settings, model, split, directory) for key in keys]
            if len(keys) == 2 and settings["mode"] == "grid":
                names.append(heatmap(rows, keys, settings, model, split, directory))
            order = list(dict.fromkeys(rows["setting"]))
            names += [setting_curves(curves, keys, order, model, split, directory)] if not curves.empty else []
        written[model] = names
    return written


def _epochs_of(epochs: pd.DataFrame, rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """epochs.csv rows of the finished cells, each epoch's last evaluation (with evaluations within epochs)."""
    on = ROW + ["model", "device", "repeat", *keys]
    found = epochs.merge(rows[on].drop_duplicates(), on=on)
    if "step" in found and found["step"].notna().any():
        found = found.sort_values("step").groupby(on + ["epoch"], sort=False, dropna=False).tail(1)
    return found


def _values(settings: dict, key: str, rows: pd.DataFrame) -> list[str]:
    """The key's values as their column text, in the order the sweep lists them (else as they ran)."""
    name = key[len(sweep.PREFIX):]
    listed = [sweep.text(v) for v in settings.get(name, [])] if isinstance(settings.get(name), list) else []
    seen = list(dict.fromkeys(rows[key].dropna()))
    return [v for v in listed if v in seen] + [v for v in seen if v not in listed]


def _numbers(texts: list[str]) -> list[float] | None:
    """The texts as numbers, or None when any is not one (a list, a name)."""
    values = [sweep.parse(t) for t in texts]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values]
    return None


def _log_axis(numbers: list[float] | None) -> bool:
    """Rates and decays: positive values spread over a decade or more."""
    return bool(numbers) and min(numbers) > 0 and max(numbers) / min(numbers) >= 10


def value_plot(rows, key: str, keys: list[str], settings: dict, model: str, split: str, directory: Path) -> str:
    """Accuracy against one key's values per framework variant: median and min-max over the repeats of each
    value's best setting."""
    plt = _pyplot()
    texts = _values(settings, key, rows)
    numbers = _numbers(texts)
    log = _log_axis(numbers)
    positions = numbers if numbers else list(range(len(texts)))
    figure, axis = plt.subplots(figsize=(8, 4.8))
    groups = list(rows.groupby(ROW, sort=False))
    spacing = 1 if numbers is None else _span(positions) / max(len(positions) - 1, 1)
    for index, (row, group) in enumerate(groups):
        shift = (index - (len(groups) - 1) / 2) * 0.012  # side by side, so that equal lines stay readable
        points = [(position, _best_setting(group[group[key] == value])) for position, value in zip(positions, texts)]
        points = [(x * 10**shift if log else x + 4 * shift * spacing, best) for x, best in points if best is not None]
        medians = [best.median() for _, best in points]
        spread = [[m - best.min() for m, (_, best) in zip(medians, points)],
                  [best.max() - m for m, (_, best) in zip(medians, points)]]
        axis.errorbar([x for x, _ in points], medians, yerr=spread, marker="o", capsize=3, label=_label(row))
    if log:
        axis.set_xscale("log")
        axis.xaxis.set_minor_locator(_ticker().NullLocator())
    axis.set_xticks(positions, [sweep.short(sweep.parse(t)) for t in texts])  # at the values swept
    others = [k[len(sweep.PREFIX):] for k in keys if k != key]
    given = f", the best of {', '.join(others)} at each value" if others else ""
    axis.set(xlabel=key[len(sweep.PREFIX):], ylabel=f"{split} accuracy (%)",
             title=f"{model.upper()}: final {split} accuracy against {key[len(sweep.PREFIX):]} (median, min–max over "
                   f"repeats{given})")
    axis.title.set_fontsize("medium")
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    name = f"{model}-sweep-{key[len(sweep.PREFIX):]}.png"
    _save(figure, directory / name)
    return name


def _span(positions: list[float]) -> float:
    return (max(positions) - min(positions)) or 1


def _best_setting(rows: pd.DataFrame) -> pd.Series | None:
    """The accuracies (one per repeat) of the setting with the highest mean among the rows."""
    if rows.empty:
        return None
    best = rows.groupby("setting", sort=False)["accuracy"].mean().idxmax()
    return rows.loc[rows["setting"] == best, "accuracy"]


def heatmap(rows, keys: list[str], settings: dict, model: str, split: str, directory: Path) -> str:
    """A two-key grid's mean accuracy over the repeats, one panel per framework variant, one colour scale."""
    plt = _pyplot()
    first, second = keys
    down, across = _values(settings, first, rows), _values(settings, second, rows)
    groups = list(rows.groupby(ROW, sort=False))
    means = {row: group.groupby([first, second])["accuracy"].mean() for row, group in groups}
    low = min(m.min() for m in means.values())
    high = max(m.max() for m in means.values())
    figure, axes = plt.subplots(1, len(groups), figsize=(0.9 * len(across) * len(groups) + 2, 0.6 * len(down) + 2),
                                squeeze=False)
    for axis, (row, mean) in zip(axes[0], means.items()):
        grid = [[mean.get((a, b), math.nan) for b in across] for a in down]
        image = axis.imshow(grid, cmap="viridis", vmin=low, vmax=high, aspect="auto")
        for i, line in enumerate(grid):
            for j, value in enumerate(line):
                if not math.isnan(value):
                    axis.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7,
                              color="white" if value < (low + high) / 2 else "black")
        axis.set_xticks(range(len(across)), across, fontsize=7, rotation=45)
        axis.set_yticks(range(len(down)), down, fontsize=7)
        axis.set(title=_label(row), xlabel=second[len(sweep.PREFIX):])
    axes[0][0].set_ylabel(first[len(sweep.PREFIX):])
    figure.colorbar(image, ax=list(axes[0]), label=f"mean {split} accuracy (%)")
    figure.suptitle(f"{model.upper()}: final {split} accuracy, mean over repeats", y=1.04)
    name = f"{model}-sweep-heatmap.png"
    figure.savefig(directory / name, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return name


def _curve(group: pd.DataFrame) -> pd.Series:
    return 100 * group.groupby("epoch")["eval_accuracy"].median()


def setting_curves(curves: pd.DataFrame, keys: list[str], order: list[str], model: str, split: str,
                   directory: Path) -> str:
    """One panel per setting (in `order`, the sweep's), every framework variant's learning curve in it (median over
    repeats)."""
    plt = _pyplot()
    curves = curves.assign(setting=curves[keys].astype(str).agg(" ".join, axis=1))
    groups = dict(list(curves.groupby("setting", sort=False)))
    settings = [(values, groups[values]) for values in order if values in groups][:CURVE_PANELS]
    columns = min(len(settings), 4)
    lines = math.ceil(len(settings) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(max(4 * columns, 9), 3 * lines + 0.6), squeeze=False,
                                sharex=True, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    rows = list(dict.fromkeys(tuple(r) for r in curves[ROW].itertuples(index=False)))
    for axis, (values, group) in zip(axes.flat, settings):
        for row, colour in zip(rows, colours * 4):
            own = group[(group[ROW] == pd.Series(row, index=ROW)).all(axis=1)]
            if not own.empty:
                curve = _curve(own)
                axis.plot(curve.index, curve.values, marker="o", markersize=3, color=colour, label=_label(row))
        first = group.iloc[0]
        axis.set_title(sweep.describe({k[len(sweep.PREFIX):]: sweep.parse(first[k]) for k in keys
                                       if pd.notna(first[k])}), fontsize="small")
        axis.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(settings):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize="x-small")
    for axis in axes[-1]:
        axis.set_xlabel("epoch")
    for axis in axes[:, 0]:
        axis.set_ylabel(f"{split} accuracy (%)")
    figure.suptitle(f"{model.upper()}: {split} accuracy per epoch, a panel per setting, every framework in it (median "
                    "over repeats)")
    name = f"{model}-sweep-curves.png"
    _save(figure, directory / name)
    return name


def _trials(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One line per trial (a setting of one study): its mean accuracy and trial number, in trial order."""
    trials = rows.groupby(ROW + keys, sort=False, dropna=False).agg(
        accuracy=("accuracy", "mean"), trial=("trial", "min")).reset_index()
    return trials.sort_values("trial")


def search_plot(rows, keys: list[str], space: dict, model: str, split: str, directory: Path) -> str:
    """Each trial's accuracy against each searched key, and the best so far against the trial number."""
    plt = _pyplot()
    trials = _trials(rows, keys)
    figure, axes = plt.subplots(1, len(keys) + 1, figsize=(4.2 * (len(keys) + 1), 4), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (row, group), colour in zip(trials.groupby(ROW, sort=False), colours * 4):
        for axis, key in zip(axes[0], keys):
            spec = space.get(key[len(sweep.PREFIX):])
            numbers = _numbers(list(group[key]))
            if numbers is None:
                choices = [sweep.text(c) for c in spec] if isinstance(spec, list) else sorted(set(group[key]))
                axis.set_xticks(range(len(choices)), choices, fontsize=7, rotation=30)
                numbers = [choices.index(v) for v in group[key]]
            axis.scatter(numbers, group["accuracy"], color=colour, alpha=0.75, s=18, label=_label(row))
            if isinstance(spec, dict) and spec.get("log"):
                axis.set_xscale("log")
            axis.set_xlabel(key[len(sweep.PREFIX):])
        axes[0][-1].plot(group["trial"], group["accuracy"].cummax(), drawstyle="steps-post", color=colour,
                         label=_label(row))
    axes[0][0].set_ylabel(f"mean {split} accuracy (%)")
    axes[0][-1].set(xlabel="trial", title="best so far")
    axes[0][-1].legend(fontsize="x-small")
    for axis in axes[0]:
        axis.grid(alpha=0.3)
    figure.suptitle(f"{model.upper()}: every trial of each framework's study")
    name = f"{model}-search.png"
    _save(figure, directory / name)
    return name


def best_curves(rows, curves: pd.DataFrame, keys: list[str], model: str, split: str, directory: Path) -> str:
    """Each study's best trial's learning curve (median over its repeats), its setting in the legend."""
    plt = _pyplot()
    trials = _trials(rows, keys)
    figure, axis = plt.subplots(figsize=(8, 4.8))
    for row, group in trials.groupby(ROW, sort=False):
        best = group.loc[group["accuracy"].idxmax()]
        own = curves[(curves[ROW] == pd.Series(row, index=ROW)).all(axis=1)]
        own = own[(own[keys].astype(str) == best[keys].astype(str)).all(axis=1)]
        setting = sweep.describe({k[len(sweep.PREFIX):]: sweep.parse(best[k]) for k in keys if pd.notna(best[k])})
        curve = _curve(own)
        axis.plot(curve.index, curve.values, marker="o", label=f"{_label(row)}: trial {int(best['trial'])}, {setting}")
    axis.set(xlabel="epoch", ylabel=f"{split} accuracy (%)", title=f"{model.upper()}: each study's best trial")
    axis.legend(fontsize="x-small")
    axis.grid(alpha=0.3)
    name = f"{model}-search-curves.png"
    _save(figure, directory / name)
    return name
