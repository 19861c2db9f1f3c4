"""bench.py site: a static HTML site of every run, for people who follow the benchmark over time.

runs.py finds and reads run folders; machine.py names the machine a row ran on; history.py
lines each row up across runs and marks the changes compare's rule calls real; tables.py,
figures.py and html.py turn them into tables, Plotly figures and pages; index_page.py,
run_page.py and history_page.py are the pages; build.py writes the folder. Plotly is imported
inside functions only, so bench.py starts fast without it.
"""

from harness.results.site.build import build_site

__all__ = ["build_site"]
