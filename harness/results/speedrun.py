"""The time-to-accuracy track's score, after MLPerf Training's rules (configs/speedrun.toml).

Each seed of a row trains until an evaluation first reaches the target (stop_at_target), its clock
running from the first training step, compilation included, with the evaluations' own time apart
(MLPerf's wall clock keeps them in: that figure is reported beside the score).
A row's score is the mean of its seeds' times after dropping the fastest and the slowest; a seed
that never reached the target counts as the slowest, so one miss is dropped like any slow seed. A
row where more than one seed in ten missed (a seed whose cell failed misses too) gets no score, and
says so. With more misses allowed (20 seeds or more), as many are dropped from each end as there are
misses. (MLPerf allows one non-converging run whatever their number; for ten seeds the rules agree.)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

ROW = ["framework", "variant", "model", "device"]  # not the backend: a seed that failed before setup has none
MIN_SEEDS = 3  # dropping the fastest and the slowest needs at least one left


def score(times: list[float | None]) -> dict:
    """The MLPerf score of one row's seeds: their times to target, None (or NaN) for a seed that missed."""
    reached = sorted(t for t in times if t is not None and not math.isnan(t))
    seeds, missed = len(times), len(times) - len(reached)
    found = {"seeds": seeds, "reached": len(reached), "missed": missed}
    if seeds < MIN_SEEDS:
        return {**found, "score": None, "why": f"{seeds} seed{'s' * (seeds != 1)}: the rule needs {MIN_SEEDS} or more"}
    if missed > seeds // 10:
        return {**found, "score": None, "why": f"{missed} of {seeds} seeds missed the target (at most "
                                                 f"{seeds // 10} may)"}
    drop = max(1, missed)
    kept = reached[drop: len(reached) - (drop - missed)] if drop > missed else reached[drop:]
    return {**found, "score": float(np.mean(kept)), "std": float(np.std(kept, ddof=1)) if len(kept) > 1 else None,
            "kept_min": kept[0], "kept_max": kept[-1], "why": ""}


def _with_evaluations(seconds: pd.Series, group: pd.DataFrame) -> str:
    """The same score with the evaluations' time inside the clock, as MLPerf's wall clock counts it."""
    times = seconds.reindex(group.index).where(group["status"] == "ok").tolist()
    found = score(times)
    return f"{found['score']:.2f}" if found["score"] is not None else "–"


def speedrun_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (framework, variant): the score, its spread, how many seeds reached the target, epochs used."""
    rows = []
    for keys, group in runs.groupby(ROW, sort=False, dropna=False):
        group = group[group["status"] != "skipped"]  # a cell that cannot run here is no seed of the row
        if group.empty:
            continue
        finished = group[group["status"] == "ok"]
        reached = pd.to_numeric(group["time_to_target_seconds"], errors="coerce").where(group["status"] == "ok")
        found = score(reached.tolist())  # a seed that did not finish did not reach the target either
        with_evaluation = pd.to_numeric(finished.get("time_to_target_seconds"), errors="coerce") + pd.to_numeric(
            finished.get("eval_seconds_to_target"), errors="coerce")
        epochs = pd.to_numeric(finished.get("epochs_to_target"), errors="coerce").dropna()
        evaluating = pd.to_numeric(finished.get("eval_seconds_to_target"), errors="coerce").dropna()
        failed = len(group) - len(finished)
        rows.append({
            "framework": keys[0], "variant": keys[1],
            "score s": f"{found['score']:.2f}" if found["score"] is not None else f"no score: {found['why']}",
            "spread s": (f"{found['kept_min']:.2f}–{found['kept_max']:.2f}"
                         + (f" (sd {found['std']:.2f})" if found.get("std") is not None else "")
                         if found["score"] is not None else "–"),
            "seeds reaching the target": f"{found['reached']} of {found['seeds']}"
                                         + (f" ({failed} did not finish)" if failed else ""),
            "epochs used": f"{epochs.median():.2f} ({epochs.min():.2f}–{epochs.max():.2f})" if len(epochs) else "–",
            "evaluation s until then": f"{evaluating.median():.2f}" if len(evaluating) else "–",
            "score with evaluations s": _with_evaluations(with_evaluation, group),
        })
    return pd.DataFrame(rows)
