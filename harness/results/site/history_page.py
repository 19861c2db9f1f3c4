"""history.html: every row's throughput, first-epoch time and accuracy across runs, and the changes called real.

Runs line up by commit date (the run's own date where the commit is not in this checkout).
Each point is a row's median over its repeats in one run, with min–max bars; a triangle marks
a step compare's rule calls real (down and red for worse, up and green for better).
"""

from __future__ import annotations

from harness.results.site import figures
from harness.results.site.history import METRICS, Line, changes, key_columns
from harness.results.site.html import Cell, Row, esc, filter_bar, grid, page, paragraph, section, table
from harness.results.site.index_page import change_table
from harness.results.site.rows import FILTER_KEYS
from harness.results.site.runs import Run

RULE = ("A change is marked where compare's rule calls it real: a Mann–Whitney test with 4+ repeats a side, "
        "Welch's t-test on the logarithms with 2–3, and with a single sample only a change beyond 25%; never under "
        "1%. Each step compares a run with the previous run that has the same row (framework, variant, model, "
        "device, machine).")


def history_page(runs: list[Run], lines: list[Line]) -> str:
    choices = {key: [str(line.key[key]) for line in lines] for key in FILTER_KEYS}
    found = changes(lines)
    body = ["<h1>History</h1>",
            paragraph(f"{len(lines)} row{'s' if len(lines) != 1 else ''} across {len(runs)} "
                      f"run{'s' if len(runs) != 1 else ''}, ordered by commit date. " + RULE),
            filter_bar(choices),
            section("Changes called real", table("changes", *change_table(found), caption="newest first") if found
                    else paragraph("None: no step between consecutive runs of a row is beyond the noise."),
                    anchor="changes")]
    body += _figures(runs, lines)
    for metric, (heading, _, _) in METRICS.items():
        body.append(section(heading, table(f"history-{metric}", *metric_table(runs, lines, metric)),
                            anchor=f"table-{metric}"))
    return page("history: mnist-bench", "\n".join(body))


def _figures(runs: list[Run], lines: list[Line]) -> list[str]:
    """Per model, one figure per metric: a trace per row."""
    sections = []
    for model in dict.fromkeys(line.key["model"] for line in lines):
        blocks = []
        for metric, (heading, _, scale) in METRICS.items():
            figure = figures.history_figure(lines, runs, model, metric, heading, scale)
            if figure is not None:
                blocks.append(figures.to_html(figure, f"history-{model}-{metric}"))
        sections.append(section(f"{model.upper()} across runs", grid(blocks), anchor=f"model-{model}"))
    return sections


def metric_table(runs: list[Run], lines: list[Line], metric: str) -> tuple[list[str], list[Row]]:
    """A row per history row, a column per run: the median (min–max), and the verdict where it is a change."""
    heading, fmt, scale = METRICS[metric]
    columns = key_columns(runs)
    headings = columns + [f"{run.short_commit} {run.commit_date[:10]}" for run in runs]
    rows = []
    for line in lines:
        by_run = {id(p.run): p for p in line.points[metric]}
        if not by_run:
            continue
        cells = [Cell(str(line.key[c])) for c in columns]
        cells += [_point_cell(by_run.get(id(run)), fmt, scale) for run in runs]
        rows.append(Row(cells, dict(line.key)))
    return headings, rows


def _point_cell(point, fmt, scale: float) -> Cell:
    if point is None:
        return Cell("–")
    low, high = fmt(scale * point.low), fmt(scale * point.high)
    text = fmt(scale * point.median) + (f" ({low}–{high})" if len(point.values) > 1 else "")
    if not point.changed:
        return Cell(text, sort=point.median, title=f"n={len(point.values)}, {point.verdict or 'first run'}")
    css = "worse" if point.verdict in ("slower", "lower") else "better"
    mark = "▼" if css == "worse" else "▲"
    markup = (f'{esc(text)} <span class="{css}" title="compare: {esc(point.verdict)}">{mark} {esc(point.verdict)} '
              f"×{point.ratio:.3f}</span>")
    return Cell(markup=markup, sort=point.median)
