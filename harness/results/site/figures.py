"""The site's interactive figures, drawn by Plotly: learning curves, bars per row, and each row's history.

Every trace is one row and carries the row's filter keys in `meta`, so the filter bar can hide
it; hovering a point shows the row's numbers with their spread (median, min–max, n). The
figures are written as <div>s without Plotly's JavaScript, which the site holds once in
assets/. Plotly is imported here, inside functions, never by bench.py at start-up.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.results.report import median_with_range
from harness.results.site.rows import FILTER_KEYS, distinguishing, label, row_columns

CONFIG = {"displaylogo": False, "responsive": True}
WORSE_COLOUR, BETTER_COLOUR = "#c62828", "#2e7d32"
LAYOUT = dict(template="none", font=dict(family="system-ui, sans-serif", size=12), paper_bgcolor="white",
              plot_bgcolor="white", margin=dict(l=70, r=20, t=40, b=50), hoverlabel=dict(align="left"),
              legend=dict(font=dict(size=11), orientation="h", yanchor="top", y=-0.2, x=0))

AXIS = dict(showgrid=True, gridcolor="#e5e5e5", zeroline=False, linecolor="#888", showline=True, ticks="outside")


def _title(text: str) -> dict:
    """Titles sit left, clear of Plotly's tool bar at the top right."""
    return dict(text=text, x=0.01, xanchor="left", y=0.98, yanchor="top")


def _go():
    """plotly.graph_objects, or one sentence saying how to install it."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        from harness.errors import UserError

        raise UserError("the site needs Plotly, which is not installed: pip install -e '.[site]'") from None
    return go


def palette(labels: list[str]) -> dict[str, str]:
    """One colour per row label, the same in every figure of a page."""
    _go()
    from plotly.colors import qualitative

    colours = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
    return {name: colours[i % len(colours)] for i, name in enumerate(dict.fromkeys(labels))}


def to_html(figure, div_id: str) -> str:
    """The figure as a <div> and its Plotly.newPlot call; the page loads plotly.min.js once."""
    height = figure.layout.height or 420
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG,
                          default_width="100%", default_height=f"{height}px")


def _meta(keys: dict) -> dict:
    return {k: str(keys[k]) for k in FILTER_KEYS if k in keys}


def _spread(values: np.ndarray, fmt) -> str:
    return f"{median_with_range(pd.Series(values, dtype=float), fmt, len(values))}, n={len(values)}"


def palette_of(ok: pd.DataFrame) -> dict[str, str]:
    """The colours of a run's rows, labelled per model as its figures label them."""
    names, columns = [], row_columns(ok)
    for model in dict.fromkeys(ok["model"]):
        rows = ok[ok["model"] == model]
        shown = distinguishing(rows, columns)
        names += [label(dict(zip(columns, keys)), shown) for keys, _ in rows.groupby(columns, sort=False, dropna=False)]
    return palette(names)


def curves(epochs: pd.DataFrame, model: str, columns: list[str], colours: dict) -> list:
    """Test accuracy against epoch (or step, where a run evaluates within epochs) and against training seconds
    (compile included): the median over repeats, bars to the min and max.

    `epochs` carry the row columns of their runs (`columns`: machine and sweep settings included).
    """
    go = _go()
    rows = epochs[epochs["model"] == model]
    by_epoch, by_time = go.Figure(), go.Figure()
    shown = distinguishing(rows, columns)
    unit = _unit(rows, columns)
    for keys, group in rows.groupby(columns, sort=False, dropna=False):
        keys = dict(zip(columns, keys))
        name = label(keys, shown)
        steps = _evaluations(group, unit)
        hover = [f"<b>{name}</b><br>{unit} {x}<br>accuracy % {_spread(a, lambda v: f'{v:.2f}')}"
                 f"<br>seconds {_spread(t, lambda v: f'{v:.1f}')}" for x, a, t in steps]
        accuracy = [np.median(a) for _, a, _ in steps]
        seconds = [np.median(t) for _, _, t in steps]
        common = dict(name=name, mode="lines+markers", meta=_meta(keys), line=dict(color=colours.get(name)),
                      hovertext=hover, hovertemplate="%{hovertext}<extra></extra>", y=accuracy,
                      error_y=_error([a for _, a, _ in steps]))
        by_epoch.add_trace(go.Scatter(x=[x for x, _, _ in steps], **common))
        by_time.add_trace(go.Scatter(x=seconds, error_x=_error([t for _, _, t in steps]), **common))
    by_epoch.update_layout(title=_title(f"{model.upper()}: test accuracy per {unit}"), height=560, **LAYOUT)
    by_epoch.update_xaxes(title=unit, **({"dtick": 1} if unit == "epoch" else {}), **AXIS)
    by_time.update_layout(title=_title(f"{model.upper()}: test accuracy against training time"), height=560,
                          **LAYOUT)
    by_time.update_xaxes(title="training seconds, compile included (log)", type="log", **AXIS)
    for figure in (by_epoch, by_time):
        figure.update_yaxes(title="test accuracy %", **AXIS)
    return [by_epoch, by_time]


def _unit(rows: pd.DataFrame, columns: list[str]) -> str:
    """'step' where some repeat evaluates more than once an epoch (and the file has steps), else 'epoch'."""
    if "step" not in rows or pd.to_numeric(rows["step"], errors="coerce").isna().all():
        return "epoch"
    per_epoch = rows.groupby(columns + ["repeat", "epoch"], dropna=False)
    return "step" if per_epoch.size().gt(1).any() else "epoch"


def _evaluations(group: pd.DataFrame, unit: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(epoch or step, accuracy % of each repeat, cumulative training seconds of each repeat) per evaluation."""
    order = ["repeat", "epoch"] + (["step"] if "step" in group else [])
    group = group.sort_values(order).copy()
    group["elapsed"] = group.groupby("repeat")["train_seconds"].cumsum()
    return [(int(x), 100 * at["eval_accuracy"].to_numpy(float), at["elapsed"].to_numpy(float))
            for x, at in group.groupby(unit)]


def _error(samples: list[np.ndarray], scale: float = 1) -> dict:
    """Error bars from the median to the min and the max of each point's samples."""
    medians = [scale * np.median(s) for s in samples]
    return dict(type="data", symmetric=False, thickness=1, width=3,
                array=[scale * s.max() - m for s, m in zip(samples, medians)],
                arrayminus=[m - scale * s.min() for s, m in zip(samples, medians)])


def bars(ok: pd.DataFrame, model: str, metric: str, title: str, axis: str, colours: dict, scale: float = 1,
         fmt=lambda v: f"{v:,.4g}"):
    """Horizontal bars, one trace per row: the median over repeats, whiskers to the min and max; None if empty."""
    go = _go()
    rows = ok[ok["model"] == model]
    if metric not in rows or pd.to_numeric(rows[metric], errors="coerce").isna().all():
        return None
    columns = row_columns(ok)
    shown = distinguishing(rows, columns)
    figure, ranked = go.Figure(), []
    for keys, group in rows.groupby(columns, sort=False, dropna=False):
        keys = dict(zip(columns, keys))
        values = scale * pd.to_numeric(group[metric], errors="coerce").dropna().to_numpy(float)
        if not len(values):
            continue
        name = label(keys, shown)
        missing = len(group) - len(values)
        note = f"<br>no value in {missing} of {len(group)} repeats" if missing else ""
        figure.add_trace(go.Bar(x=[np.median(values)], y=[name], orientation="h", name=name, meta=_meta(keys),
                                marker=dict(color=colours.get(name)), error_x=_error([values]),
                                hovertext=[f"<b>{name}</b><br>{axis}: {_spread(values, fmt)}{note}"],
                                hovertemplate="%{hovertext}<extra></extra>"))
        ranked.append((np.median(values), name))
    order = [name for _, name in sorted(ranked)]
    figure.update_layout(title=_title(f"{model.upper()}: {title}"), barmode="overlay", showlegend=False,
                         height=max(220, 30 * len(order) + 120), **LAYOUT)
    figure.update_layout(margin=dict(l=20))
    figure.update_yaxes(categoryorder="array", categoryarray=order, automargin=True, **AXIS)
    figure.update_xaxes(title=axis, **AXIS)
    return figure


def history_figure(lines: list, runs: list, model: str, metric: str, heading: str, scale: float = 1):
    """A row's median across runs in commit order with min–max bars; a triangle where compare calls a change."""
    from harness.results.site.history import BETTER, WORSE

    go = _go()
    chosen = [line for line in lines if line.key["model"] == model and line.points[metric]]
    if not chosen:
        return None
    position = {id(run): i for i, run in enumerate(runs)}
    shown = distinguishing(pd.DataFrame([line.key for line in chosen]), list(chosen[0].key))
    colours = palette([label(line.key, shown) for line in chosen])
    figure = go.Figure()
    for line in chosen:
        points = line.points[metric]
        name = label(line.key, shown)
        symbols = ["triangle-down" if p.verdict in WORSE else "triangle-up" if p.verdict in BETTER else "circle"
                   for p in points]
        edges = [WORSE_COLOUR if p.verdict in WORSE else BETTER_COLOUR if p.verdict in BETTER else colours[name]
                 for p in points]
        figure.add_trace(go.Scatter(
            x=[position[id(p.run)] for p in points], y=[scale * p.median for p in points], name=name,
            mode="lines+markers", meta=_meta(line.key), line=dict(color=colours[name]),
            marker=dict(symbol=symbols, size=[15 if p.changed else 7 for p in points], color=edges),
            error_y=_error([p.values for p in points], scale),
            hovertext=[_history_hover(name, p, scale) for p in points], hovertemplate="%{hovertext}<extra></extra>"))
    figure.update_layout(title=_title(f"{model.upper()}: {heading}"), height=560, **LAYOUT)
    figure.update_xaxes(title="run, by commit date", tickvals=list(range(len(runs))), range=[-0.5, len(runs) - 0.5],
                        ticktext=[f"{r.short_commit}<br>{r.commit_date[:10]}" for r in runs], **AXIS)
    figure.update_yaxes(title=heading, **AXIS)
    return figure


def _history_hover(name: str, point, scale: float) -> str:
    values = scale * point.values
    text = (f"<b>{name}</b><br>run {point.run.name}<br>commit {point.run.short_commit}, {point.run.commit_date[:10]}"
            f"<br>{_spread(values, lambda v: f'{v:,.4g}')}")
    if point.verdict:
        text += f"<br>against the run before: ×{point.ratio:.3f}, {point.verdict}"
    return text
