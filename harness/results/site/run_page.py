"""runs/<run>.html: one run's tables, its interactive figures per model, and the environment it ran in.

The tables hold what summary.md holds (sortable, and filtered by the bar at the top, which also
hides the matching traces of every figure); the figures are summary.md's plots, drawn so that
hovering a point reads its numbers; the environment is the first session's facts, then every
file in full.
"""

from __future__ import annotations

import json

import pandas as pd

from harness.results.report import EFFICIENCY_COLUMNS, ceilings_text, model_heading
from harness.results.site import figures
from harness.results.site.html import definitions, details, esc, filter_bar, grid, page, paragraph, section, table
from harness.results.site.rows import FILTER_KEYS, row_columns
from harness.results.site.runs import Run
from harness.results.site.tables import efficiency_table, extra_formats, results_table, unfinished_table
from harness.results.stats import GROUP

BARS = [  # runs.csv column, title, axis, scale, format
    ("samples_per_second", "steady throughput", "training samples per second (steady epochs)", 1,
     lambda v: f"{v:,.0f}"),
    ("time_to_target_seconds", "time to target accuracy", "seconds to the target (training, compile included)", 1,
     lambda v: f"{v:.1f}"),
    ("peak_fraction", "share of the machine's peak", "training FLOP/s, % of the machine's peak product", 100,
     lambda v: f"{v:.1f}"),
    ("ceiling_fraction", "share of its own ceiling", "training FLOP/s, % of its own library's product", 100,
     lambda v: f"{v:.1f}"),
]


def run_page(run: Run) -> str:
    """The whole page of one run."""
    ok = run.ok
    choices = {key: list(run.runs[key].astype(str)) for key in FILTER_KEYS if key in run.runs}
    body = [f"<h1>{_title(run)}</h1>", paragraph(_facts(run)), filter_bar(choices)]
    if ok.empty:
        body.append(paragraph("No cell of this run finished."))
    else:
        body.append(section("Results", table("results", *results_table(run.runs), caption=_caption()),
                            anchor="results"))
        headings, rows = efficiency_table(run.runs)
        if rows:
            body.append(section("Efficiency and memory", table("efficiency", headings, rows)
                                + paragraph(ceilings_text(run.first.get("matmul") or {})), anchor="efficiency"))
        body += _model_sections(run)
    headings, rows = unfinished_table(run.runs)
    if rows:
        body.append(section("Cells that did not finish", table("unfinished", headings, rows), anchor="unfinished"))
    body.append(section("Environment", _environment(run), anchor="environment"))
    return page(f"{run.name}: mnist-bench", "\n".join(body), depth=1)


def _title(run: Run) -> str:
    return esc(f"{run.config.get('name', 'run')}: {run.name}")


def _facts(run: Run) -> str:
    sessions = len(run.sessions)
    resumed = f", written by {sessions} sessions" if sessions > 1 else ""
    description = run.config.get("description", "")
    threads = run.first.get("threads", "?")
    return (f"{description + '. ' if description else ''}Started {run.date[:16].replace('T', ' ')} UTC{resumed} "
            f"on {'; '.join(run.machines)}, commit {run.short_commit}, Python {run.first.get('python', '?')}, "
            f"{threads} thread{'' if threads == 1 else 's'} per cell, dataset {run.config.get('dataset', '?')}.")


def _caption() -> str:
    return ("Median over the repeats that finished (min–max when n > 1); accuracy mean ± sd (95% CI); "
            "throughput from steady epochs (2..N) only; time to target counts training from the first step, "
            "compile included. Click a heading to sort.")


def _epochs(run: Run) -> pd.DataFrame | None:
    """epochs.csv of the finished cells, with their machine and sweep settings from runs.csv."""
    if run.epochs is None or run.epochs.empty:
        return None
    epochs, ok = run.epochs.copy(), run.ok
    if "backend" in epochs:
        epochs["backend"] = epochs["backend"].fillna("")
    on = [c for c in GROUP + ["repeat", "seed", "session"] if c in epochs and c in ok]
    carried = [c for c in row_columns(ok) if c not in on]
    return epochs.merge(ok[on + carried].drop_duplicates(), on=on)


def _model_sections(run: Run) -> list[str]:
    """Per model: accuracy curves, then the bars (throughput, time to target, efficiency) that have data."""
    ok, epochs = run.ok, _epochs(run)
    colours = figures.palette_of(ok)
    columns = row_columns(ok)
    sections = []
    for model in dict.fromkeys(ok["model"]):
        drawn = []
        if epochs is not None and not epochs[epochs["model"] == model].empty:
            drawn += figures.curves(epochs, model, columns, colours)
        for metric, title, axis, scale, fmt in BARS + _other_fractions(ok):
            figure = figures.bars(ok, model, metric, title, axis, colours, scale, fmt)
            if figure is not None:
                drawn.append(figure)
        blocks = [figures.to_html(f, f"{model}-plot-{i}") for i, f in enumerate(drawn)]
        settings = run.config.get(model, {})
        sections.append(section(model_heading(model, settings), grid(blocks), anchor=f"model-{model}"))
    return sections


def _other_fractions(ok: pd.DataFrame) -> list[tuple]:
    """Bars for any other efficiency share the run has (a *_fraction column, known or not), as BARS has them."""
    headings = {c: heading for c, (heading, _) in {**EFFICIENCY_COLUMNS, **extra_formats(ok)}.items()}
    drawn = {metric for metric, *_ in BARS}
    return [(c, heading, heading, 100, lambda v: f"{v:.1f}") for c, heading in headings.items()
            if c.endswith("_fraction") and c not in drawn and c in ok]


def _environment(run: Run) -> str:
    """Each session's facts, its packages, and environment.json and config.json in full."""
    parts = []
    for session in run.sessions:
        parts.append(f"<h3>Session {session.get('session', 1)}</h3>" + definitions(_session_facts(session)))
    packages = run.first.get("packages") or {}
    if packages:
        parts.append("<h3>Packages</h3>" + definitions(sorted(packages.items())))
    parts.append(details("environment.json", json.dumps(run.environment, indent=2)))
    parts.append(details("config.json", json.dumps(run.config, indent=2)))
    return "\n".join(parts)


def _session_facts(session: dict) -> list[tuple[str, str]]:
    cpu = session.get("cpu") or {}
    git = session.get("git") or {}
    gpus = "; ".join(f"{g.get('name', '?')} ({g.get('memory.total', '?')}, driver {g.get('driver_version', '?')}, "
                     f"CUDA {g.get('cuda_version', '?')})" for g in session.get("gpus") or []) or "none"
    facts = [
        ("started (UTC)", session.get("time_utc", "")),
        ("host", session.get("host", "")),
        ("command", " ".join(str(c) for c in session.get("command") or [])),
        ("CPU", f"{cpu.get('model', '?')} (family/model/stepping {cpu.get('family_model_stepping', '?')}), "
                f"{cpu.get('cores', '?')} cores, {cpu.get('usable_cores', '?')} usable"),
        ("CPU flags", ", ".join(cpu.get("flags") or []) or "–"),
        ("memory", f"{session.get('memory_gib', '?')} GiB"),
        ("GPUs", gpus),
        ("threads per cell", session.get("threads", "")),
        ("Python", session.get("python", "")),
        ("platform", session.get("platform", "")),
        ("commit", f"{git.get('commit', '?')}{' (uncommitted changes)' if git.get('dirty') else ''}"),
    ]
    if session.get("differs_from_first"):
        facts.append(("differs from the first session", "; ".join(session["differs_from_first"])))
    return facts
