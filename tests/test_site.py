"""bench.py site: a site built from real smoke runs, opened in headless Chromium, and its parts without a browser.

The fixture runs configs/smoke.toml twice (seeds 0 and 1, four repeats each: NumPy on synthetic
data, seconds), then copies the second with its MLP throughput cut to a twentieth, a change
compare's rule must call slower: smoke's millisecond epochs vary by up to 5x between repeats,
which four repeats a side (a rank test) still separate from a 20x change. The browser tests
drive Debian's chromium through chromedriver and skip, saying why, where either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import UserError
from harness.results.site import build_site
from harness.results.site.history import changes, history
from harness.results.site.runs import Run, find_runs
from harness.results.site.tables import efficiency_table

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DATES = ["2026-01-01T10:00:00+00:00", "2026-01-02T10:00:00+00:00", "2026-01-03T10:00:00+00:00"]
SLOWER = 20


def _set_date(folder: Path, date: str) -> None:
    environment = json.loads((folder / "environment.json").read_text())
    environment["sessions"][0]["time_utc"] = date
    (folder / "environment.json").write_text(json.dumps(environment))


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory) -> list[Path]:
    """Two real smoke runs (seeds 0 and 1, four repeats) and a copy of the second whose MLP is 20 times slower."""
    base = tmp_path_factory.mktemp("runs")
    seeded = base / "smoke-seed1.toml"
    seeded.write_text((ROOT / "configs" / "smoke.toml").read_text().replace("seed = 0", "seed = 1"))
    folders = [base / "a-seed0", base / "b-seed1"]
    started = [subprocess.Popen([sys.executable, "bench.py", "run", str(config), "--repeats", "4", "--out", str(out),
                                 "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for config, out in zip(["configs/smoke.toml", seeded], folders)]
    for process in started:
        _, errors = process.communicate(timeout=300)
        assert process.returncode == 0, errors[-2000:]
    slowed = base / "c-slower"
    shutil.copytree(folders[1], slowed)
    runs = pd.read_csv(slowed / "runs.csv", keep_default_na=False, na_values=[""])
    mlp = runs["model"] == "mlp"
    runs.loc[mlp, "samples_per_second"] = runs.loc[mlp, "samples_per_second"] / SLOWER
    runs.to_csv(slowed / "runs.csv", index=False)
    for folder, date in zip([*folders, slowed], DATES):
        _set_date(folder, date)
    return [*folders, slowed]


@pytest.fixture(scope="module")
def site(fixture_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    result = subprocess.run([sys.executable, "bench.py", "site", str(fixture_runs[0].parent), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 runs" in result.stdout
    return out


# -- without a browser --------------------------------------------------------------------------


def _run(name: str, date: str, throughput: list[float], accuracy: float = 0.98) -> Run:
    rows = [{"framework": "numpy", "variant": "numpy", "backend": "openblas", "model": "mlp", "device": "cpu",
             "repeat": i, "status": "ok", "samples_per_second": v, "first_epoch_seconds": 2.0 + i / 100,
             "final_accuracy": accuracy + i / 1000, "machine": "box", "session": 1} for i, v in enumerate(throughput)]
    environment = {"sessions": [{"session": 1, "time_utc": date, "git": {"commit": ""}}]}
    return Run(path=Path(name), runs=pd.DataFrame(rows), epochs=None, environment=environment, config={})


def test_history_marks_only_the_changes_compare_calls_real():
    runs = [_run("d", "2026-01-04", [500, 505, 510]),  # given out of order: history orders by date
            _run("a", "2026-01-01", [1000, 1010, 990]),
            _run("b", "2026-01-02", [1005, 995, 1012]),  # within the noise
            _run("c", "2026-01-03", [500, 505, 510])]  # half the throughput, three repeats a side
    [line] = history(runs)
    points = line.points["samples_per_second"]
    assert [p.run.name for p in points] == ["a", "b", "c", "d"]
    assert [p.verdict for p in points] == ["", "same", "slower", "same"]
    assert points[2].ratio == pytest.approx(505 / 1005)
    assert [p.verdict for p in line.points["final_accuracy"]] == ["", "same", "same", "same"]
    [(_, metric, point)] = changes([line], worse_only=True)
    assert metric == "samples_per_second" and point.run.name == "c"
    recovered = history(runs + [_run("e", "2026-01-05", [1000, 1010, 990])])[0]
    assert recovered.points["samples_per_second"][-1].verdict == "faster"
    assert len(changes([recovered])) == 2 and len(changes([recovered], worse_only=True)) == 1


def test_a_single_sample_is_called_only_beyond_a_quarter():
    runs = [_run("a", "2026-01-01", [1000]), _run("b", "2026-01-02", [800]), _run("c", "2026-01-03", [500])]
    assert [p.verdict for p in history(runs)[0].points["samples_per_second"]] == ["", "same", "slower"]


def test_machine_column_and_unknown_columns_are_used_not_refused(fixture_runs, tmp_path):
    folder = tmp_path / "later"
    shutil.copytree(fixture_runs[0], folder)
    runs = pd.read_csv(folder / "runs.csv", keep_default_na=False, na_values=[""])
    runs["machine"], runs["spill_fraction"], runs["note"] = "box-a", 0.5, "x"  # columns this version lacks
    runs.to_csv(folder / "runs.csv", index=False)
    [run], notes = find_runs([folder])
    assert not notes and set(run.runs["machine"]) == {"box-a"}
    headings, rows = efficiency_table(run.runs)
    assert "% spill" in headings and len(rows) == 2
    assert rows[0].cells[headings.index("% spill")].text == "50 (50–50)"
    build_site([folder], tmp_path / "site")
    page = (tmp_path / "site" / "runs" / "later.html").read_text()
    assert "MLP: % spill" in page and "box-a" in page  # its bars drawn, the machine named


def test_machine_is_derived_from_the_session(fixture_runs):
    [run], _ = find_runs([fixture_runs[0]])
    cores = json.loads((fixture_runs[0] / "environment.json").read_text())["sessions"][0]["cpu"]["cores"]
    assert run.machines[0].endswith(f", {cores} cores")


def test_index_lists_every_run_and_the_regression(site, fixture_runs):
    index = (site / "index.html").read_text()
    for folder in fixture_runs:
        assert f'href="runs/{folder.name}.html"' in index
        assert (site / "runs" / f"{folder.name}.html").is_file()
    regressions = index.split('<section id="section-regressions">')[1].split("</section>")[0]
    slowed = [row for row in regressions.split("<tr data-")[1:] if "c-slower" in row]
    assert len(slowed) == 1  # the MLP's throughput against b-seed1; nothing else of c-slower changed
    assert "steady samples/s" in slowed[0] and ">slower<" in slowed[0] and f"×{1 / SLOWER:.3f}" in slowed[0]


def test_the_site_needs_no_network(site):
    import re

    assert (site / "assets" / "plotly.min.js").stat().st_size > 1_000_000
    for page in site.rglob("*.html"):
        references = re.findall(r'(?:src|href)="([^"]*)"', page.read_text())
        assert references and not [r for r in references if "//" in r or r.startswith("/")], page


def test_a_path_that_is_no_run_gets_one_sentence(tmp_path):
    for path in (tmp_path / "missing", tmp_path):
        result = subprocess.run([sys.executable, "bench.py", "site", str(path), "--out", str(tmp_path / "out")],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
        assert "run folder" in result.stderr


def test_an_out_folder_holding_other_files_is_refused(fixture_runs, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds other files"):
        build_site([fixture_runs[0]], tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_a_rebuild_replaces_the_site(fixture_runs, tmp_path):
    out = tmp_path / "site"
    build_site(fixture_runs, out)
    built = build_site([fixture_runs[0]], out)
    assert built.runs == 1 and [p.name for p in (out / "runs").iterdir()] == [f"{fixture_runs[0].name}.html"]


# -- in a real browser --------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium "
                                           "chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with a fresh profile, its console log kept."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(browser, page: Path) -> None:
    """Load a page and assert it logged no error and refers to nothing but the site's own files."""
    browser.get(page.as_uri())
    browser.execute_script("return document.readyState")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    loaded = browser.execute_script(
        "return Array.from(document.querySelectorAll('script[src], link[href], img[src]')).map(e => e.src || e.href)")
    assert loaded and all(url.startswith("file://") for url in loaded), loaded


def _screenshot(browser, path: Path) -> Path:
    """A screenshot of the window, also copied to $MNIST_BENCH_SITE_SHOTS where that names a folder."""
    browser.save_screenshot(str(path))
    keep = os.environ.get("MNIST_BENCH_SITE_SHOTS")
    if keep:
        shutil.copy(path, Path(keep) / path.name)
    return path


def _row_counts(browser) -> dict[str, int]:
    return browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('table.filterable'))"
        ".map(t => [t.id, Array.from(t.tBodies[0].rows).filter(r => !r.hidden).length]))")


def _plots(browser) -> list[dict]:
    """Each rendered figure: its id, its traces' names and visibility, and whether Plotly drew its SVG."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => ({id: p.id, "
        "svg: p.querySelectorAll('svg.main-svg').length, traces: p.data.map(t => t.name), "
        "drawn: p.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length, "
        "visible: p._fullData.map(t => t.visible === true), folded: p.closest('.figure').hidden}))")


@needs_chromium
def test_index_loads_with_its_tables(browser, site, tmp_path):
    _open(browser, site / "index.html")
    counts = _row_counts(browser)
    assert counts["runs"] == 3 and counts["regressions"] >= 1  # b-seed1 against a-seed0 may differ too
    assert browser.find_element("css selector", "#runs tbody tr a").text == "c-slower"  # newest first
    _screenshot(browser, tmp_path / "index.png")


@needs_chromium
def test_run_page_renders_its_plots_and_a_filter_narrows_it(browser, site, tmp_path):
    from selenium.webdriver.support.ui import Select

    _open(browser, site / "runs" / "a-seed0.html")
    assert _row_counts(browser) == {"results": 2, "efficiency": 2}
    plots = _plots(browser)
    # per model: accuracy against epoch and against time, throughput, time to target (smoke has no ceilings)
    assert len(plots) == 8
    for plot in plots:
        assert plot["svg"] >= 1 and plot["traces"] == ["numpy/numpy"] and plot["drawn"] == 1, plot
    Select(browser.find_element("css selector", "select[data-key=model]")).select_by_value("cnn")
    assert _row_counts(browser) == {"results": 1, "efficiency": 1}
    shown = [row.text for row in browser.find_elements("css selector", "#results tbody tr") if row.is_displayed()]
    assert len(shown) == 1 and " cnn " in f" {shown[0]} "
    for plot in _plots(browser):  # the MLP's traces hidden, and its figures folded away
        cnn = plot["id"].startswith("cnn")
        assert plot["visible"] == [cnn] and plot["folded"] is not cnn, plot
    assert browser.find_element("css selector", "[data-count-for=results]").text == "1 of 2 rows"
    screenshot = _screenshot(browser, tmp_path / "run.png")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000


@needs_chromium
def test_run_table_sorts_by_the_heading_clicked(browser, site):
    _open(browser, site / "runs" / "a-seed0.html")
    headings = browser.find_elements("css selector", "#results thead th")
    throughput = next(h for h in headings if h.text == "steady samples/s")
    column = [h.text for h in headings].index("steady samples/s")

    def medians() -> list[float]:
        cells = browser.find_elements("css selector", f"#results tbody td:nth-child({column + 1})")
        return [float(cell.get_attribute("data-sort")) for cell in cells]

    throughput.click()
    assert throughput.get_attribute("aria-sort") == "ascending" and medians() == sorted(medians())
    throughput.click()
    assert throughput.get_attribute("aria-sort") == "descending" and medians() == sorted(medians(), reverse=True)


@needs_chromium
def test_history_page_marks_the_regression(browser, site, tmp_path):
    _open(browser, site / "history.html")
    counts = _row_counts(browser)
    assert counts["history-samples_per_second"] == 2 and counts["history-final_accuracy"] == 2
    assert counts["changes"] >= 1
    plots = {p["id"]: p for p in _plots(browser)}
    assert set(plots) == {f"history-{m}-{k}" for m in ("mlp", "cnn")
                          for k in ("samples_per_second", "first_epoch_seconds", "final_accuracy")}
    assert all(p["svg"] >= 1 and p["traces"] == ["numpy/numpy"] for p in plots.values())
    symbols = browser.execute_script(
        "return document.getElementById('history-mlp-samples_per_second').data[0].marker.symbol")
    assert len(symbols) == 3 and symbols[2] == "triangle-down"
    _screenshot(browser, tmp_path / "history.png")
