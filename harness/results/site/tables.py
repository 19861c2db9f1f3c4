"""A run's tables, summarised as summary.md summarises them, with a sort value behind every figure.

Figures are the median (min–max) over the repeats that finished and accuracy the mean ± sd
(report.py's own formatting, so the site and summary.md read the same); each cell sorts by
its median or mean. Columns with no value in the run are left out; numeric columns this
version does not know are shown after the efficiency columns.
"""

from __future__ import annotations

import pandas as pd

from harness.results.report import EFFICIENCY_COLUMNS, STEADY, TIMING_COLUMNS, accuracy_text, median_with_range
from harness.results.site.html import Cell, Row
from harness.results.site.rows import FILTER_KEYS, extra_measures, row_columns, varying
from harness.results.stats import GROUP


def numeric(column: pd.Series | None) -> pd.Series:
    return pd.to_numeric(column, errors="coerce") if column is not None else pd.Series(dtype=float)


def _has_data(runs: pd.DataFrame, column: str) -> bool:
    return column in runs and numeric(runs[column]).notna().any()


def extra_formats(runs: pd.DataFrame) -> dict:
    """Headings and formats for unknown numeric columns: a *_fraction in percent, anything else to 4 digits."""
    formats = {}
    for column in extra_measures(runs):
        if column.endswith("_fraction"):
            formats[column] = (f"% {column.removesuffix('_fraction').replace('_', ' ')}", lambda v: f"{100 * v:.0f}")
        else:
            formats[column] = (column.replace("_", " "), lambda v: f"{v:,.4g}")
    return formats


def _spread(group: pd.DataFrame, column: str, fmt) -> Cell:
    values = numeric(group.get(column)).dropna()
    samples = len(group)
    if column in STEADY and "steady_epochs" in group:  # a steady figure rests on every steady epoch of every repeat
        samples = int(numeric(group["steady_epochs"]).fillna(1).sum())
    return Cell(median_with_range(values, fmt, samples), sort=values.median() if len(values) else None)


def _identity(keys: dict, columns: list[str]) -> tuple[list[Cell], dict]:
    """The cells that name a row, and the keys the filter bar matches it by."""
    cells = [Cell(str(keys[c])) for c in columns]
    return cells, {k: keys[k] for k in FILTER_KEYS if k in keys}


def _shown_identity(runs: pd.DataFrame) -> list[str]:
    """GROUP, and the machine and sweep settings where they vary in this run."""
    columns = row_columns(runs)
    return GROUP + [c for c in columns[len(GROUP):] if c in varying(runs, columns)]


def results_table(runs: pd.DataFrame) -> tuple[list[str], list[Row]]:
    """Accuracy and timings, one row per row of the run."""
    ok = runs[runs["status"] == "ok"]
    identity = _shown_identity(ok)
    timings = {c: v for c, v in TIMING_COLUMNS.items() if _has_data(ok, c)}
    headings = identity + ["n", "test accuracy %"] + [heading for heading, _ in timings.values()]
    with_form = "optimizer_form" in ok and ok["optimizer_form"].notna().any()
    headings += ["optimizer form"] if with_form else []
    rows = []
    grouping = row_columns(ok)
    for keys, group in ok.groupby(grouping, sort=False, dropna=False):
        keys = dict(zip(grouping, keys))
        cells, filters = _identity(keys, identity)
        accuracy = numeric(group["final_accuracy"]).dropna()
        cells += [Cell(str(len(group)), sort=len(group)),
                  Cell(accuracy_text(accuracy), sort=accuracy.mean() if len(accuracy) else None)]
        cells += [_spread(group, column, fmt) for column, (_, fmt) in timings.items()]
        if with_form:
            cells.append(Cell("; ".join(dict.fromkeys(group["optimizer_form"].dropna().astype(str))) or "–"))
        rows.append(Row(cells, filters))
    return headings, rows


def efficiency_table(runs: pd.DataFrame) -> tuple[list[str], list[Row]]:
    """FLOP/s against the ceilings, memory, and unknown measures; no rows when the run has none of them."""
    ok = runs[runs["status"] == "ok"]
    columns = {**{c: v for c, v in EFFICIENCY_COLUMNS.items() if _has_data(ok, c)}, **extra_formats(ok)}
    if not columns:
        return [], []
    identity = [c for c in _shown_identity(ok) if c != "backend"]
    headings = identity + ["own ceiling"] + [heading for heading, _ in columns.values()]
    rows = []
    grouping = row_columns(ok)
    for keys, group in ok.groupby(grouping, sort=False, dropna=False):
        keys = dict(zip(grouping, keys))
        cells, filters = _identity(keys, identity)
        cells.append(Cell(_ceiling(group)))
        cells += [_spread(group, column, fmt) for column, (_, fmt) in columns.items()]
        rows.append(Row(cells, filters))
    return headings, rows


def _ceiling(group: pd.DataFrame) -> str:
    """'numpy 277 GFLOP/s': the library whose product is the row's ceiling, and that ceiling."""
    library = group.get("ceiling_library", pd.Series(dtype=object)).dropna()
    gflops = numeric(group.get("ceiling_gflops")).dropna()
    if library.empty:
        return "–"
    return f"{library.iloc[0]} {gflops.iloc[0]:,.0f} GFLOP/s" if not gflops.empty else str(library.iloc[0])


def unfinished_table(runs: pd.DataFrame) -> tuple[list[str], list[Row]]:
    """The cells that did not finish: status and the reason."""
    failed = runs[runs["status"] != "ok"]
    headings = ["framework", "variant", "model", "device", "repeat", "status", "error"]
    rows = [Row([Cell(str(r.get(c, "") if pd.notna(r.get(c, "")) else "")) for c in headings],
                {k: r[k] for k in FILTER_KEYS if k in r}) for r in failed.to_dict("records")]
    return headings, rows
