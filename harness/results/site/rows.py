"""What makes a row: the columns that tell one table row, one plotted line, one history line from another.

runs.csv grows columns over time. A row is (framework, variant, backend, model, device) on one
machine, plus any sweep setting that varies within it (batch size, threads, dataset, a column
named sweep*, or an unknown text column). Unknown numeric columns are measurements, shown
beside the known ones; nothing unknown makes the site fail.
"""

from __future__ import annotations

import pandas as pd

from harness.results.records import RUN_COLUMNS
from harness.results.stats import GROUP

SETTINGS = ("batch_size", "threads", "dataset")
FILTER_KEYS = ("framework", "variant", "model", "device", "machine")  # what the pages filter by


def _unknown(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c not in RUN_COLUMNS and c != "machine"]


def sweep_columns(runs: pd.DataFrame) -> list[str]:
    """Settings that take more than one value within one row: the axes of a sweep."""
    numeric = {c for c in _unknown(runs) if pd.api.types.is_numeric_dtype(runs[c])}
    candidates = [c for c in SETTINGS if c in runs]
    candidates += [c for c in _unknown(runs) if c.startswith("sweep") or c not in numeric]
    if runs.empty or not candidates:
        return []
    grouped = runs.groupby(GROUP + ["machine"], dropna=False)
    return [c for c in candidates if grouped[c].nunique(dropna=False).gt(1).any()]


def extra_measures(runs: pd.DataFrame) -> list[str]:
    """Numeric columns this version does not know (e.g. floor_fraction): shown generically."""
    sweeps = set(sweep_columns(runs))
    return [c for c in _unknown(runs) if c not in sweeps and pd.api.types.is_numeric_dtype(runs[c])
            and runs[c].notna().any()]


def row_columns(runs: pd.DataFrame) -> list[str]:
    """The columns a table groups by: GROUP, the machine, and any sweep settings."""
    return GROUP + ["machine"] + sweep_columns(runs)


def varying(rows: pd.DataFrame, columns: list[str]) -> list[str]:
    """Those of `columns` that take more than one value in `rows`: what a label must name to tell rows apart."""
    return [c for c in columns if c in rows and rows[c].nunique(dropna=False) > 1]


def distinguishing(rows: pd.DataFrame, columns: list[str]) -> list[str]:
    """Those of `columns` that tell apart rows of one framework and variant: what a label must name beyond them."""
    if rows.empty:
        return []
    grouped = rows.groupby(["framework", "variant"], dropna=False)
    return [c for c in columns if c in rows and c not in ("framework", "variant", "model")
            and grouped[c].nunique(dropna=False).gt(1).any()]


def label(keys: dict, shown: list[str]) -> str:
    """'numpy/numpy', then whatever else tells this row from the others: 'torch/eager · gpu · batch_size=64'."""
    parts = [f"{keys['framework']}/{keys['variant']}"]
    for column in shown:
        if column in ("framework", "variant", "model") or column not in keys:
            continue
        value = keys[column]
        parts.append(str(value) if column in ("backend", "device", "machine") else f"{column}={value}")
    return " · ".join(parts)
