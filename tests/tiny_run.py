"""The tiny NumPy run on synthetic data that the show and sweep tests start through bench.py: seconds a cell."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = """dataset = "synthetic"
frameworks = ["numpy"]
threads = 1
batch_size = 32
timeout_s = 60
ceilings = "off"
save_params = true

[synthetic]
train = 240
eval = 96

[optimizer]
lr = 1e-2
"""


def tiny_config(head: str, tables: str) -> str:
    """A config's text: `head`'s top-level keys (name, models, ...), the shared settings, then `tables`."""
    return f"{head.strip()}\n{SETTINGS}\n{tables.strip()}\n"


def bench(*args):
    return subprocess.run([sys.executable, "bench.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
