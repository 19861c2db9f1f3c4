"""bench.py select: each (framework, variant, model)'s best setting of a sweep, chosen on validation.

The criterion is the mean final validation accuracy over the repeats, among the settings whose every
planned repeat finished ok (a setting that diverged once is not one to choose); the spread (standard
deviation, min-max) and the next best setting are kept beside it, so a lead smaller than the spread
shows. A best value at the end of a swept range is marked: the best may lie beyond it. The choice goes
to RUN/selection.json, which `bench.py final` reads.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from harness.tuning import sweep
from harness.errors import UserError
from harness.results.records import RUN_COLUMNS, read_json, read_records, sweep_columns, write_json

SELECTION_FILE = "selection.json"
CRITERION = ("the highest mean final validation accuracy over the repeats, among the settings whose every repeat "
             "finished")


def setting_of(row: dict) -> dict:
    """A runs.csv row's setting, from its sweep columns (blank where the key does not reach its model)."""
    return {column[len(sweep.PREFIX):]: sweep.parse(row[column]) for column in sweep_columns(row) if row[column]}


def sweep_config(directory: Path) -> dict:
    """The run's resolved config; UserError unless it is a sweep that chose on validation."""
    config = read_json(directory / "config.json")
    if not config:
        raise UserError(f"{directory} has no config.json: give the folder of a sweep, e.g. results/<time>-sweep-lr")
    if sweep.mode(config) not in sweep.SEARCHING:
        raise UserError(f"{directory} is not a sweep (its config has no [sweep] of mode grid, zip or optuna): "
                        "select picks among the settings of one")
    return config


def select(directory: Path) -> dict:
    """The selection of a sweep's folder, written to RUN/selection.json."""
    selection = best_settings(directory)
    write_json(Path(directory) / SELECTION_FILE, selection)
    return selection


def best_settings(directory: Path) -> dict:
    """Each (framework, variant, model)'s best setting of a sweep's folder, by CRITERION."""
    directory = Path(directory)
    config = sweep_config(directory)
    rows = read_records(directory / "runs.csv", RUN_COLUMNS)
    if not rows:
        raise UserError(f"{directory} has no finished cells yet: run the sweep (or resume it) first")
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in rows:
        cell = (row["framework"], row["variant"], row["model"])
        groups.setdefault(cell, {}).setdefault(json.dumps(setting_of(row), sort_keys=True), []).append(row)
    chosen = [choose(cell, settings, config) for cell, settings in groups.items()]
    return {"source": str(directory), "criterion": CRITERION, "eval_split": config["eval_split"],
            "validation": config["validation"], "repeats": config["repeats"],
            "chosen": [entry for entry in chosen if entry["setting"] is not None],
            "without_choice": [entry for entry in chosen if entry["setting"] is None]}


def choose(cell: tuple, settings: dict[str, list[dict]], config: dict) -> dict:
    """One (framework, variant, model)'s best setting, its spread, and the next best."""
    framework, variant, model = cell
    scored = []
    for rows in settings.values():
        complete = len(rows) >= config["repeats"] and all(r["status"] == "ok" for r in rows)
        if complete:
            scored.append(score(rows))
    scored.sort(key=lambda s: -s["accuracy"])  # stable: of equal scores, the first swept
    entry = {"framework": framework, "variant": variant, "model": model, "settings_tried": len(settings),
             "settings_complete": len(scored), "setting": None}
    if not scored:
        statuses = sorted({r["status"] for rows in settings.values() for r in rows} - {"ok"})
        entry["why"] = f"no setting finished every repeat ({', '.join(statuses) or 'too few repeats'})"
        return entry
    best = scored[0]
    entry.update(best)
    entry["next"] = scored[1] if len(scored) > 1 else None
    entry["at_edge"] = at_edge(best["setting"], config["sweep"], model)
    return entry


def score(rows: list[dict]) -> dict:
    accuracies = [float(r["final_accuracy"]) for r in rows]
    trials = sorted({int(r["trial"]) for r in rows if r.get("trial")})
    return {"setting": setting_of(rows[0]), "accuracy": statistics.fmean(accuracies),
            "std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
            "min": min(accuracies), "max": max(accuracies), "n": len(accuracies),
            **({"trial": trials[-1]} if trials else {})}


def at_edge(setting: dict, settings: dict, model: str) -> list[str]:
    """The numeric keys whose best value is the lowest (but 0) or highest of the three or more values a grid or
    zip tried, or near a search's range end: the best may lie beyond."""
    edges = []
    for key, value in setting.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if settings["mode"] == "optuna":
            spec = settings["space"].get(key)
            if isinstance(spec, dict) and _near_end(value, spec):
                edges.append(key)
        elif key in settings:
            tried = [v for v in settings[key] if isinstance(v, int | float)]
            if len(tried) > 2 and value == max(tried) or len(tried) > 2 and value == min(tried) != 0:
                edges.append(key)  # (below 0 no rate, dropout or decay goes)
    return edges


def _near_end(value: float, spec: dict) -> bool:
    """Within a twentieth of the range (on its log scale, for a log range) of either end."""
    import math

    low, high = spec["low"], spec["high"]
    if spec.get("log"):
        low, high, value = math.log(low), math.log(high), math.log(value)
    return min(value - low, high - value) < (high - low) / 20


def percent(entry: dict) -> str:
    """mean ± sd (n) in percent, or the single value."""
    if entry.get("std") is None:
        return f"{100 * entry['accuracy']:.2f} (n = {entry['n']})"
    return f"{100 * entry['accuracy']:.2f} ± {100 * entry['std']:.2f} (n = {entry['n']})"


def selection_table(selection: dict):
    """One row per (framework, variant, model): the best setting, its validation accuracy, the next best."""
    import pandas as pd

    split = selection["eval_split"]
    rows = []
    for entry in selection["chosen"]:
        following = entry.get("next")
        edge = ", ".join(entry["at_edge"])
        rows.append({"model": entry["model"], "framework": entry["framework"], "variant": entry["variant"],
                     "best setting": sweep.describe(entry["setting"]) + (f" (trial {entry['trial']})"
                                                                         if "trial" in entry else ""),
                     f"{split} accuracy %": percent(entry),
                     "next best": f"{sweep.describe(following['setting'])}: {percent(following)}" if following
                     else "–",
                     "note": f"best at the end of the range of {edge}: the best may lie beyond" if edge else ""})
    for entry in selection["without_choice"]:
        rows.append({"model": entry["model"], "framework": entry["framework"], "variant": entry["variant"],
                     "best setting": "–", "note": entry["why"]})
    return pd.DataFrame(rows).fillna("")
