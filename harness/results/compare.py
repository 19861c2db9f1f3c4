"""Two runs side by side: the ratio B/A per metric and a verdict that knows about noise.

Rows are matched on (framework, variant, backend, model, device) and on the machine that ran them
(runs.csv's `machine`): two machines' speeds are not a change, so rows of the same cell on different
machines are refused, in one sentence, unless asked for (--across-machines), and the output then says
so. Rows written before machines were recorded match any machine, and the output says that too.
A difference counts only
when the repeats say it is real, at a false-positive rate of at most 5% (tests/test_compare.py
measures it by drawing from the run-to-run spread of results/reference-cpu):
  - 4+ repeats a side: a Mann-Whitney rank test, p < 0.05;
  - 2-3 a side: Welch's t-test on the logarithms, p < 0.05 (timings vary by factors, not sums;
    ranges that merely do not overlap would be called 33% of the time with two samples);
  - a single sample on either side has no spread to judge by: only a change beyond
    SINGLE_SAMPLE_NOISE, over three times the spread seen between repeats here, is called.
Differences under NOISE_FLOOR are never called, however consistent.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import UserError
from harness.results.stats import GROUP, HIGHER_IS_BETTER

DEFAULT_METRICS = ["samples_per_second", "first_epoch_seconds", "time_to_target_seconds", "final_accuracy"]
NOISE_FLOOR = 0.01
SINGLE_SAMPLE_NOISE = 0.25
ALPHA = 0.05


def read_runs(path: str | Path, metrics: list[str] = ()) -> pd.DataFrame:
    """runs.csv of a result folder (or the file itself), finished repeats only; it must hold `metrics`."""
    from harness.results.records import read_records

    path = Path(path)
    csv_path = path / "runs.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise UserError(f"{path} is neither a result folder with runs.csv nor a runs.csv file")
    read_records(csv_path, [*GROUP, "repeat", "status", *metrics])  # refuses a truncated file, lost columns, old layout
    runs = pd.read_csv(csv_path, keep_default_na=False, na_values=[""])
    runs["backend"] = runs["backend"].fillna("")
    runs["machine"] = runs["machine"].fillna("").astype(str) if "machine" in runs else ""
    return runs[runs["status"] == "ok"]


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether samples a and b differ beyond their own noise (see the module docstring)."""
    ratio = np.median(b) / np.median(a)
    if abs(ratio - 1) <= NOISE_FLOOR:
        return False
    if min(len(a), len(b)) == 1:
        return abs(ratio - 1) > SINGLE_SAMPLE_NOISE
    from scipy import stats

    if min(len(a), len(b)) >= 4:
        return bool(stats.mannwhitneyu(a, b).pvalue < ALPHA)
    if np.ptp(np.log(a)) == 0 and np.ptp(np.log(b)) == 0:  # no spread at all: the t-test is undefined
        return True
    with warnings.catch_warnings():  # nearly equal samples: scipy warns, and the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        return bool(stats.ttest_ind(np.log(a), np.log(b), equal_var=False).pvalue < ALPHA)


def verdict(metric: str, a: np.ndarray, b: np.ndarray) -> str:
    if not len(a) or not len(b):
        return "n/a"
    if not differs(a, b):
        return "same"
    better = (np.median(b) > np.median(a)) == HIGHER_IS_BETTER.get(metric, False)
    if metric.endswith("accuracy"):
        return "higher" if better else "lower"
    return "faster" if better else "slower"


def check_metrics(metrics: list[str]) -> None:
    from harness.results.records import RUN_COLUMNS

    unknown = [m for m in metrics if m not in RUN_COLUMNS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}: use columns of runs.csv such as {', '.join(DEFAULT_METRICS)}")


def machines(runs: pd.DataFrame) -> list[str]:
    """The machines a side's rows ran on (empty for rows written before machines were recorded)."""
    return sorted({m for m in runs.get("machine", pd.Series(dtype=str)) if m})


def match_on(a: pd.DataFrame, b: pd.DataFrame, across_machines: bool) -> tuple[list[str], str]:
    """The columns rows are matched on, and what the output must say about machines ("" when nothing).

    UserError when the same cells ran on different machines and --across-machines was not given.
    """
    in_a, in_b = machines(a), machines(b)
    if not in_a or not in_b:
        side = "A's and B's" if not in_a and not in_b else "A's" if not in_a else "B's"
        return GROUP, "" if not in_a and not in_b else (
            f"{side} rows do not record their machine (written before machines were recorded): rows are matched on "
            "the cell alone, whatever machine ran them.")
    if across_machines:
        if in_a == in_b:
            return GROUP + ["machine"], ""
        return GROUP, (f"Rows of different machines are set side by side (--across-machines): A ran on "
                       f"{', '.join(in_a)}, B on {', '.join(in_b)}; a ratio is then a difference of machines as "
                       "much as of code.")
    cells_a = {tuple(k) for k in a[GROUP].drop_duplicates().itertuples(index=False)}
    cells_b = {tuple(k) for k in b[GROUP].drop_duplicates().itertuples(index=False)}
    for cell in sorted(cells_a & cells_b):
        on_a = set(a.loc[(a[GROUP] == pd.Series(cell, index=GROUP)).all(axis=1), "machine"])
        on_b = set(b.loc[(b[GROUP] == pd.Series(cell, index=GROUP)).all(axis=1), "machine"])
        if not on_a & on_b:
            raise UserError(f"A and B ran {'/'.join(map(str, cell[:2]))} {cell[3]} on different machines (A: "
                            f"{', '.join(sorted(on_a))}; B: {', '.join(sorted(on_b))}), whose speeds are not a change "
                            "of code: compare runs of one machine, or pass --across-machines to set them side by side")
    return GROUP + ["machine"], ""


def compare(a: pd.DataFrame, b: pd.DataFrame, metrics: list[str], across_machines: bool = False) -> pd.DataFrame:
    """One row per matched cell and metric, plus the cells found on one side only.

    Rows match on the cell and the machine (see match_on); the table's attrs["note"] says what the output must
    tell about machines.
    """
    check_metrics(metrics)
    on, note = match_on(a, b, across_machines)
    on += [c for c in a.columns if str(c).startswith("sweep.") and c in b.columns]  # two sweeps: setting by setting
    groups_a, groups_b = (dict(list(side.groupby(on, sort=False, dropna=False))) for side in (a, b))
    rows = []
    for key in list(groups_a) + [k for k in groups_b if k not in groups_a]:
        row = dict(zip(on, key))
        if key not in groups_b or key not in groups_a:
            rows.append({**row, "metric": "", "verdict": "only in " + ("A" if key in groups_a else "B")})
            continue
        for metric in metrics:
            va = pd.to_numeric(groups_a[key][metric], errors="coerce").dropna().to_numpy(float)
            vb = pd.to_numeric(groups_b[key][metric], errors="coerce").dropna().to_numpy(float)
            median_a = np.median(va) if len(va) else np.nan
            median_b = np.median(vb) if len(vb) else np.nan
            rows.append({**row, "metric": metric, "n_a": len(va), "n_b": len(vb), "median_a": median_a,
                         "median_b": median_b, "ratio_b_a": median_b / median_a, "verdict": verdict(metric, va, vb)})
    table = pd.DataFrame(rows)
    table.attrs["note"] = note
    return table


def regressions(table: pd.DataFrame, percent: float) -> pd.DataFrame:
    """Rows that are slower beyond noise by more than `percent` (in the metric's bad direction)."""
    slower = table[table["verdict"].isin(["slower", "lower"])].copy()
    higher_better = slower["metric"].map(lambda m: HIGHER_IS_BETTER.get(m, False))
    loss = np.where(higher_better, 1 - slower["ratio_b_a"], slower["ratio_b_a"] - 1)
    return slower[loss * 100 > percent]


def markdown(table: pd.DataFrame, a_name: str, b_name: str) -> str:
    shown = table.copy()
    for column in ("median_a", "median_b"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:,.4g}")
    if "ratio_b_a" in shown:
        shown["ratio_b_a"] = shown["ratio_b_a"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    shown = shown.rename(columns={"median_a": "A median", "median_b": "B median", "ratio_b_a": "B/A"})
    header = f"A: {a_name}\nB: {b_name}\n\n" + (f"{table.attrs['note']}\n\n" if table.attrs.get("note") else "")
    return header + shown.fillna("").to_markdown(index=False)
