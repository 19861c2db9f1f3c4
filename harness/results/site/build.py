"""Writes the site: index.html, history.html, runs/<run>.html and assets/, all in one folder.

The folder is self-contained: Plotly's bundled plotly.min.js is copied once into assets/ with
the site's own script and style, and every page refers to them relatively, so the site opens
from disk or any static host with no network. Building again replaces what an earlier build
wrote; a folder holding anything else is refused, so no other file is ever overwritten.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.results.records import atomic_write
from harness.results.site.history import changes, history
from harness.results.site.history_page import history_page
from harness.results.site.index_page import index_page
from harness.results.site.run_page import run_page
from harness.results.site.runs import find_runs

ASSETS = Path(__file__).parent / "assets"
MARKER = ".mnist-bench-site"  # says a folder was written by this command, so a rebuild may replace it
WRITTEN = ("index.html", "history.html", "runs", "assets")


@dataclass
class Built:
    """What a build wrote, for the command's one-line report."""

    out: Path
    runs: int
    rows: int
    regressions: int
    notes: list[str]


def build_site(paths: list[Path], out: Path) -> Built:
    """The site of every run under `paths`, written to `out`."""
    runs, notes = find_runs([Path(p) for p in paths])
    lines = history(runs)
    pages = {"index.html": index_page(runs, lines, notes), "history.html": history_page(runs, lines)}
    pages |= {f"runs/{run.slug}.html": run_page(run) for run in runs}
    _prepare(Path(out))
    _copy_assets(Path(out) / "assets")
    for name, text in pages.items():
        _write(Path(out) / name, text)
    return Built(Path(out), len(runs), len(lines), len(changes(lines, worse_only=True)), notes)


def _prepare(out: Path) -> None:
    """An empty or new folder, or one an earlier build wrote (its files removed); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: give --out a new folder, an empty one, or a site this command built")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"{out} holds other files: give --out a new folder, an empty one, or a site this command "
                        "built (it is replaced)")
    for name in WRITTEN:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    _write(out / MARKER, "written by bench.py site; a rebuild replaces this folder's pages\n")


def _copy_assets(folder: Path) -> None:
    """Plotly's own bundle, once, and the site's script and style."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise UserError("the site needs Plotly, which is not installed: pip install -e '.[site]'") from None
    _write(folder / "plotly.min.js", get_plotlyjs())
    for asset in ASSETS.iterdir():
        if asset.suffix in (".js", ".css"):
            _write(folder / asset.name, asset.read_text())


def _write(path: Path, text: str) -> None:
    """Written whole (records.atomic_write), then readable by all, as a web server serving the folder needs."""
    atomic_write(path, text)
    os.chmod(path, 0o644)
