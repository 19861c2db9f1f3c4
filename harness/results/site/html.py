"""Small HTML-writing helpers: the page frame, tables that sort and filter, the filter bar.

Everything is escaped here, so page modules hand over plain values. Rows carry their filter
keys as data- attributes, Plotly traces carry them in `meta`; assets/site.js matches both
against the filter bar. Pages reference scripts and styles relatively, so the site works
from a file:// URL with no network.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from html import escape

from harness.results.site.rows import FILTER_KEYS


def esc(value) -> str:
    return escape("" if value is None else str(value), quote=True)


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, the value it sorts by (numbers sort as numbers), and optional raw HTML."""

    text: str = ""
    sort: float | str | None = None
    markup: str | None = None  # already-escaped HTML shown instead of text (a link, a mark)
    title: str | None = None

    def render(self) -> str:
        attributes = ""
        if isinstance(self.sort, numbers.Real) and math.isfinite(self.sort):
            attributes += f' data-sort="{float(self.sort)!r}"'
        elif isinstance(self.sort, str):
            attributes += f' data-sort="{esc(self.sort)}"'
        if self.title:
            attributes += f' title="{esc(self.title)}"'
        return f"<td{attributes}>{self.markup if self.markup is not None else esc(self.text)}</td>"


@dataclass
class Row:
    cells: list[Cell]
    keys: dict = field(default_factory=dict)  # filter key -> value (or values joined by "|")
    css: str = ""


def link(href: str, text: str) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def table(table_id: str, headings: list[str], rows: list[Row], caption: str = "") -> str:
    """A sortable, filterable table (click a heading to sort) and the line that counts its shown rows."""
    head = "".join(f'<th scope="col" tabindex="0">{esc(h)}</th>' for h in headings)
    body = "\n".join(_row(row) for row in rows)
    caption_html = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table id="{esc(table_id)}" class="filterable sortable">{caption_html}'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>"
            f'<p class="count" data-count-for="{esc(table_id)}">{len(rows)} of {len(rows)} rows</p>')


def _row(row: Row) -> str:
    attributes = "".join(f' data-{key}="{esc(value)}"' for key, value in row.keys.items() if key in FILTER_KEYS
                         or key == "config")
    css = f' class="{esc(row.css)}"' if row.css else ""
    return f"<tr{attributes}{css}>" + "".join(cell.render() for cell in row.cells) + "</tr>"


def filter_bar(choices: dict[str, list[str]]) -> str:
    """A select per filter key that has two or more values, and a text search over the rows."""
    selects = []
    for key, values in choices.items():
        values = sorted({str(v) for v in values if str(v)})
        if len(values) < 2:
            continue
        options = '<option value="">all</option>' + "".join(f'<option value="{esc(v)}">{esc(v)}</option>'
                                                           for v in values)
        selects.append(f'<label>{esc(key)} <select data-key="{esc(key)}" name="{esc(key)}">{options}</select></label>')
    search = '<label>search <input type="search" name="search" placeholder="any text in a row"></label>'
    return f'<form class="filters" role="search" onsubmit="return false">{"".join(selects)}{search}</form>'


def page(title: str, body: str, depth: int = 0, plots: bool = True) -> str:
    """A whole page: assets referenced relatively (`depth` folders below the site's root), nav, body.

    `plots`: the page draws figures, so it loads Plotly's bundle (before the figures' own scripts run).
    """
    up = "../" * depth
    plotly = f'<script src="{up}assets/plotly.min.js"></script>\n' if plots else ""
    nav = (f'<nav>{link(up + "index.html", "runs")} · {link(up + "history.html", "history")}</nav>')
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="stylesheet" href="{up}assets/site.css">
{plotly}<script src="{up}assets/site.js" defer></script>
</head>
<body>
<header><span class="brand">mnist-bench</span> {nav}</header>
<main>
{body}
</main>
</body>
</html>
"""


def section(heading: str, content: str, level: int = 2, anchor: str = "") -> str:
    """A headed section; its id is section-<anchor>, apart from the ids of the tables inside it."""
    anchor_html = f' id="section-{esc(anchor)}"' if anchor else ""
    return f"<section{anchor_html}><h{level}>{esc(heading)}</h{level}>\n{content}\n</section>"


def paragraph(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def definitions(items: list[tuple[str, str]]) -> str:
    """A two-column table of facts (the environment): name, value."""
    rows = "".join(f"<tr><th scope=\"row\">{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def details(summary: str, text: str) -> str:
    """Collapsed raw text (a JSON file), for the reader who wants everything."""
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def grid(blocks: list[str]) -> str:
    """Figures side by side, as many to a line as the window holds."""
    return '<div class="figures">' + "".join(f'<div class="figure">{b}</div>' for b in blocks) + "</div>"
