"""docs/adding-an-adapter.md works as written: its adapter, copied into a folder of its own, is listed,
passes parity and passes the conformance suite, and is shorter than any adapter in frameworks/."""

import os
import re
import subprocess
import sys

from tests.conftest import ADAPTERS, ROOT, require

GUIDE = ROOT / "docs" / "adding-an-adapter.md"


def guide_adapter() -> str:
    """The first Python block of the guide: the complete minimal adapter."""
    return re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.S).group(1)


def test_the_guides_adapter_is_shorter_than_every_shipped_one():
    lines = len(guide_adapter().splitlines())
    shortest = min(len(info.path.read_text().splitlines()) for info in ADAPTERS.values())
    assert lines < shortest, f"the guide's adapter has {lines} lines, frameworks/ holds one of {shortest}"


def test_the_guides_adapter_is_listed_passes_parity_and_the_conformance_suite(tmp_path):
    require(ADAPTERS["torch"], "eager")  # the guide's example is PyTorch
    folder = tmp_path / "adapters"
    folder.mkdir()
    (folder / "minitorch_adapter.py").write_text(guide_adapter())
    env = {**os.environ, "MNIST_BENCH_ADAPTERS": str(folder)}

    def run(*command, timeout=600):
        return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    listing = run("bench.py", "list")
    assert listing.returncode == 0 and re.search(r"^minitorch\s+available", listing.stdout, re.M), listing.stdout

    parity = run("bench.py", "parity", "configs/smoke.toml", "--frameworks", "minitorch", "--models", "mlp")
    assert parity.returncode == 0, parity.stdout + parity.stderr
    checked = re.findall(r"^\| minitorch\s+\| \w+\s+\| mlp .*\| pass ", parity.stdout, re.M)
    assert len(checked) == 8 and "FAIL" not in parity.stdout, parity.stdout  # start, 5 optimizers, 2 dropout

    conformance = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_conformance.py", "-k", "minitorch")
    assert conformance.returncode == 0, conformance.stdout[-3000:]
    assert re.search(r"\b4 passed\b", conformance.stdout), conformance.stdout[-500:]
