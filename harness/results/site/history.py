"""Each row across runs, ordered by commit date, with compare's verdict on every step from one run to the next.

A history row is (framework, variant, model, device, machine) and any sweep setting: the
backend is left out, since a library upgrade renames it while the row stays the same. Each
point holds the finished repeats of that row in one run; its verdict is compare.verdict
against the previous run that has the row, the rule `bench.py compare` applies (a change is
called only when the repeats say it is real, at a false-positive rate of at most 5%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.results.compare import verdict
from harness.results.site.rows import sweep_columns
from harness.results.site.runs import Run

KEY = ["framework", "variant", "model", "device", "machine"]
METRICS = {  # runs.csv column -> (heading, format of one value, scale)
    "samples_per_second": ("steady samples/s", lambda v: f"{v:,.0f}", 1),
    "first_epoch_seconds": ("first epoch s", lambda v: f"{v:.2f}", 1),
    "final_accuracy": ("test accuracy %", lambda v: f"{v:.2f}", 100),
}
WORSE = ("slower", "lower")
BETTER = ("faster", "higher")


@dataclass
class Point:
    """One row's samples of one metric in one run, and what compare's rule says of the step from the last run."""

    run: Run
    values: np.ndarray
    verdict: str = ""  # "" for the row's first run; else same, faster, slower, higher or lower
    previous: Point | None = None

    @property
    def median(self) -> float:
        return float(np.median(self.values))

    @property
    def low(self) -> float:
        return float(self.values.min())

    @property
    def high(self) -> float:
        return float(self.values.max())

    @property
    def ratio(self) -> float:
        """This run's median over the previous run's (NaN for the row's first run)."""
        return self.median / self.previous.median if self.previous is not None else float("nan")

    @property
    def changed(self) -> bool:
        return self.verdict in WORSE + BETTER


@dataclass
class Line:
    """A history row: its key and, per metric, its points in commit order."""

    key: dict
    points: dict[str, list[Point]]


def key_columns(runs: list[Run]) -> list[str]:
    """KEY and every sweep setting any of the runs varies."""
    sweeps = [c for run in runs for c in sweep_columns(run.ok)]
    return KEY + list(dict.fromkeys(sweeps))


def history(runs: list[Run]) -> list[Line]:
    """Every row of every run, its points ordered by commit date, each judged against the row's previous point."""
    columns = key_columns(runs)
    lines: dict[tuple, Line] = {}
    for run in sorted(runs, key=lambda r: r.order):
        ok = run.ok.copy()
        for column in columns:
            if column not in ok:
                ok[column] = ""
        for keys, group in ok.groupby(columns, sort=False, dropna=False):
            line = lines.setdefault(keys, Line(dict(zip(columns, keys)), {m: [] for m in METRICS}))
            for metric in METRICS:
                values = _positive(group.get(metric))
                if len(values):
                    line.points[metric].append(_point(run, metric, values, line.points[metric]))
    return list(lines.values())


def _positive(column: pd.Series | None) -> np.ndarray:
    """The finite positive samples (the rule compares logarithms); the rest cannot be judged."""
    if column is None:
        return np.array([])
    values = pd.to_numeric(column, errors="coerce").to_numpy(float)
    return values[np.isfinite(values) & (values > 0)]


def _point(run: Run, metric: str, values: np.ndarray, earlier: list[Point]) -> Point:
    previous = earlier[-1] if earlier else None
    called = verdict(metric, previous.values, values) if previous is not None else ""
    return Point(run=run, values=values, verdict=called, previous=previous)


def changes(lines: list[Line], worse_only: bool = False) -> list[tuple[Line, str, Point]]:
    """Every step compare's rule calls real, newest first; with `worse_only`, the regressions alone."""
    wanted = WORSE if worse_only else WORSE + BETTER
    found = [(line, metric, point) for line in lines for metric, points in line.points.items()
             for point in points if point.verdict in wanted]
    return sorted(found, key=lambda change: change[2].run.order, reverse=True)
