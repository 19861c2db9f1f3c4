"""index.html: every run (date, machine, commit, config, rows, how its cells ended) and the regressions.

The regressions are the steps from one run to the next that compare's rule calls worse beyond
the noise (throughput or first epoch slower, accuracy lower), newest first, so a reader sees
on the first page whether anything got worse; history.html has every change and the lines.
"""

from __future__ import annotations

from collections import Counter

from harness.results.site.history import METRICS, Line, changes
from harness.results.site.html import Cell, Row, esc, filter_bar, link, page, paragraph, section, table
from harness.results.site.rows import row_columns
from harness.results.site.runs import Run


def index_page(runs: list[Run], lines: list[Line], notes: list[str]) -> str:
    machines = sorted({m for run in runs for m in run.machines})
    intro = (f"{len(runs)} run{'s' if len(runs) != 1 else ''} on {len(machines)} "
             f"machine{'s' if len(machines) != 1 else ''}, ordered by commit date. "
             "Each run's page has its tables, figures and environment; the history page lines every row up "
             "across runs.")
    choices = {"machine": machines, "config": [str(run.config.get("name", "")) for run in runs]}
    body = ["<h1>mnist-bench results</h1>", paragraph(intro), filter_bar(choices),
            section("Regressions", regressions(lines), anchor="regressions"),
            section("Runs", table("runs", *runs_table(runs)), anchor="runs")]
    if notes:
        body.append(section("Left out", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"))
    return page("mnist-bench results", "\n".join(body), plots=False)


def runs_table(runs: list[Run]) -> tuple[list[str], list[Row]]:
    headings = ["date (UTC)", "run", "machine", "commit", "config", "rows", "cells"]
    rows = []
    for run in reversed(runs):  # newest first
        statuses = Counter(run.runs["status"]) if not run.runs.empty else Counter()
        ok = run.ok
        count = len(ok.groupby(row_columns(ok), dropna=False)) if not ok.empty else 0
        cells = [Cell(run.date[:19].replace("T", " "), sort=run.date),
                 Cell(markup=link(f"runs/{run.slug}.html", run.name), sort=run.name),
                 Cell("; ".join(run.machines)),
                 Cell(run.short_commit, sort=run.commit_date, title=f"{run.commit} ({run.commit_date})"),
                 Cell(str(run.config.get("name", "?"))),
                 Cell(str(count), sort=count),
                 Cell(", ".join(f"{status} {n}" for status, n in statuses.most_common()) or "none",
                      sort=sum(statuses.values()))]
        rows.append(Row(cells, {"machine": "|".join(run.machines), "config": str(run.config.get("name", ""))}))
    return headings, rows


def regressions(lines: list[Line]) -> str:
    """The table of regressions, or the sentence that there are none."""
    found = changes(lines, worse_only=True)
    if not found:
        return paragraph("None: between consecutive runs of any row, compare's rule calls no change for the worse "
                         "(slower throughput or first epoch, lower accuracy) beyond the noise.")
    return table("regressions", *change_table(found))


def change_table(found: list) -> tuple[list[str], list[Row]]:
    """One row per change: the row, the metric, the two runs, the medians and compare's verdict."""
    headings = ["run", "commit", "framework", "variant", "model", "device", "machine", "metric", "before", "after",
                "after/before", "verdict"]
    rows = []
    for line, metric, point in found:
        heading, fmt, scale = METRICS[metric]
        before = point.previous
        cells = [Cell(markup=link(f"runs/{point.run.slug}.html", point.run.name), sort=" ".join(point.run.order)),
                 Cell(f"{before.run.short_commit} → {point.run.short_commit}"),
                 *[Cell(str(line.key[c])) for c in ("framework", "variant", "model", "device", "machine")],
                 Cell(heading),
                 Cell(fmt(scale * before.median), sort=before.median),
                 Cell(fmt(scale * point.median), sort=point.median),
                 Cell(f"×{point.ratio:.3f}", sort=point.ratio),
                 Cell(markup=f'<span class="{_css(point.verdict)}">{esc(point.verdict)}</span>', sort=point.verdict)]
        rows.append(Row(cells, dict(line.key)))
    return headings, rows


def _css(verdict: str) -> str:
    return "worse" if verdict in ("slower", "lower") else "better"
