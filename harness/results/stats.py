"""Statistics over repeats: never one sample presented as the figure.

Timings are skewed (a slow outlier is common, a fast one is not), so they are summarised
by the median and the interquartile range; accuracy is close to normal over seeds, so it
gets mean, standard deviation and a 95% t-interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP = ["framework", "variant", "backend", "model", "device"]
TIMINGS = ["samples_per_second", "first_epoch_seconds", "steady_epoch_seconds", "time_to_target_seconds",
           "eval_seconds", "setup_seconds", "gflops", "peak_fraction", "ceiling_fraction", "peak_rss_mb"]
HIGHER_IS_BETTER = {m: True for m in ("samples_per_second", "final_accuracy", "best_accuracy", "gflops",
                                      "peak_fraction", "ceiling_fraction")}


def t_interval(values: np.ndarray, confidence: float = 0.95) -> float:
    """Half-width of the t-interval of the mean (NaN for fewer than two values)."""
    if len(values) < 2:
        return float("nan")
    from scipy import stats

    return float(stats.t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def describe(values: pd.Series) -> dict[str, float]:
    """Median, quartiles, min and max of the finite values, and their count."""
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(float)
    if not len(v):
        return {"n": 0}
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    return {"n": len(v), "median": median, "q1": q1, "q3": q3, "min": v.min(), "max": v.max()}


def cell_statistics(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (framework, variant, backend, model, device), and sweep setting, over its finished repeats."""
    ok = runs[runs["status"] == "ok"]
    rows = []
    group_by = GROUP + [c for c in ok.columns if str(c).startswith("sweep.")]
    for keys, group in ok.groupby(group_by, sort=False, dropna=False):
        row = dict(zip(group_by, keys))
        row["repeats"] = len(group)
        accuracy = pd.to_numeric(group["final_accuracy"], errors="coerce").dropna().to_numpy(float)
        row.update(accuracy_mean=accuracy.mean() if len(accuracy) else np.nan,
                   accuracy_std=accuracy.std(ddof=1) if len(accuracy) > 1 else np.nan,
                   accuracy_ci95=t_interval(accuracy))
        for metric in (m for m in TIMINGS if m in group):
            for stat, value in describe(group[metric]).items():
                if stat != "n":
                    row[f"{metric}_{stat}"] = value
        rows.append(row)
    return pd.DataFrame(rows)
