"""`bench.py gpu-check` (make gpu-check): every GPU path proved in one short command, into one folder.

Written for a first few minutes on a GPU machine (BUDGET_S: a step that would start after it is
skipped, saying so), offline, with the frameworks preinstalled:

  facts       check.json records the machine: GPUs, driver, packages, the cells' variables
  gpu         a GPU is visible (device nodes, CUDA_VISIBLE_DEVICES), and what nvidia-smi says of it
  products    each installed library multiplies on the GPU, at float32 precision against float64
              (TF32 or bfloat16 would show), timed as the ceilings are
  residency   each adapter's training set is on the device after load_data (allocator memory grew)
  sync        each adapter's steady step with and without a read-back per step (harness/execute/device_probe.py)
  parity      every installed adapter (its first GPU variant) against the NumPy float64 reference on
              the GPU: products, convolutions, optimizers and dropout at float32 precision
  run         configs/gpu.toml for 2 epochs, 1 repeat, into run/ in the same folder

Each step is passed, failed, skipped (with why) or unclear; check.md and check.json hold them all.
On a machine without a GPU the GPU steps are skipped with the reason and the command exits 0; it
exits 1 when a step failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import devices
from harness.adapter import ROOT
from harness.config import Cell, Config, resolve
from harness.results.records import atomic_write
from harness.results.run_folder import RunFolder

GPU_CONFIG = ROOT / "configs" / "gpu.toml"
RUN_EPOCHS = 2
BUDGET_S = 480  # the whole check: a step that would start after this is skipped, saying so


@dataclass
class Step:
    step: str
    subject: str
    status: str  # passed, failed, skipped, unclear
    detail: str


def gpu_config(device: str) -> Config:
    """configs/gpu.toml on `device`, one variant per adapter (the first that runs there)."""
    raw = tomllib.loads(GPU_CONFIG.read_text())
    config = resolve({**raw, "device": device}, "gpu-check")
    first = {name: variants[:1] for name, variants in config.variants.items() if variants}
    return resolve({**raw, "device": device, "variants": first, "frameworks": list(first)}, "gpu-check")


def check_gpu() -> tuple[list[Step], str | None]:
    """The gpu step, and why the GPU steps cannot run (None when they can)."""
    from harness.results.environment import gpus

    device, why = devices.resolve("auto")
    if device != "gpu":
        return [Step("gpu", "device", "skipped", why)], f"no GPU here ({why})"
    found = gpus()
    named = "; ".join(f"{g.get('name')} ({g.get('memory.total')}, driver {g.get('driver_version')}, "
                      f"CUDA {g.get('cuda_version')})" for g in found) or "nvidia-smi is missing or says nothing"
    return [Step("gpu", "device", "passed", f"{why}: {named}")], None


def check_products(config: Config, folder: Path) -> list[Step]:
    from harness.execute import ceilings

    measured = ceilings.measure(config, folder, progress=False, floor=False)
    steps = []
    for library, result in measured.get("libraries", {}).items():
        if result.get("status") != "ok":
            steps.append(Step("products", library, "skipped" if result.get("status") == "skipped" else "failed",
                              result.get("error", "")))
            continue
        float32 = result.get("precision") == "float32"
        steps.append(Step("products", library, "passed" if float32 else "failed",
                          f"{result.get('precision')}: median error {result.get('product_error', float('nan')):.1e} "
                          f"of the RMS ({result.get('precision_set', '?')}); {result['gflops']:,.0f} GFLOP/s "
                          f"at {config.matmul_size}², {result.get('library')}"))
    return steps


def probe_adapters(config: Config, folder: Path, deadline: float) -> list[Step]:
    """The residency and sync steps: one worker per adapter (its first variant) on the config's device."""
    from harness.execute.process import run_worker, worker_environment

    steps = []
    for framework, variants in config.variants.items():
        info = config.adapters[framework]
        for model in config.models:
            subject = f"{framework}/{variants[0]} {model}"
            reason = info.unsupported(model, config.device, variants[0])
            if reason:
                steps += [Step(name, subject, "skipped", reason) for name in ("residency", "sync")]
                continue
            cell = Cell(framework, variants[0], model, config.device, 0, config.seed)
            job = {"mode": "device", "cell": cell.__dict__, "config": config.values, "device": config.device,
                   "adapter": info.job(variants[0])}
            log = folder / "logs" / f"probe-{framework}-{variants[0]}-{model}.log"
            _, done = run_worker(job, log, worker_environment(config), deadline - time.monotonic())
            if done.get("status") != "ok":
                status = "skipped" if done.get("status") == "skipped" else "failed"
                steps += [Step(name, subject, status, done.get("error", "")) for name in ("residency", "sync")]
                continue
            steps.append(residency_step(subject, done))
            steps.append(sync_step(subject, done))
    return steps


def residency_step(subject: str, done: dict) -> Step:
    if done.get("resident") is None:
        return Step("residency", subject, "unclear", done["residency"])
    measured = f"{done['device_mb_added']:.1f} MB added for {done['data_mb']:.1f} MB of training data"
    declared = "copied from the host" in done["residency"]
    status = "passed" if done["resident"] or declared else "failed"
    return Step("residency", subject, status, f"{done['residency']}: {measured}")


def sync_step(subject: str, done: dict) -> Step:
    if done["asynchronous"] is None:
        return Step("sync", subject, "skipped", done["synchrony"])
    timed = f" ({done['step_us']:.0f} µs a step, {done['step_us_with_read']:.0f} with the read)"
    return Step("sync", subject, "passed" if done["asynchronous"] else "unclear", done["synchrony"] + timed)


def check_parity(config: Config, deadline: float) -> tuple[list[Step], str]:
    from dataclasses import replace

    from harness.parity import problems, run_parity, table

    left = max(1, int(deadline - time.monotonic()))  # no cell may run past the check's budget
    results = run_parity(replace(config, values={**config.values, "timeout_s": left}))
    installed = {name for name, info in config.adapters.items() if not info.missing_modules()}
    found = problems(results, installed)
    steps = []
    for (framework, variant, model), rows in _group(results).items():
        failed = [r for r in rows if r.status in ("FAIL", "error")]
        skipped = [r for r in rows if r.status == "skipped"]
        subject = f"{framework}/{variant} {model}"
        if failed:
            steps.append(Step("parity", subject, "failed", "; ".join(f"{r.check} {r.status}" for r in failed)))
        elif skipped:
            steps.append(Step("parity", subject, "skipped", skipped[0].detail))
        else:
            worst = min(rows, key=lambda r: r.margin)  # margin: tolerance / measure
            steps.append(Step("parity", subject, "passed", f"{len(rows)} checks; the closest, {worst.check}, at "
                              f"{1 / worst.margin:.2f} of its tolerance"))
    if found and not any(s.status == "failed" for s in steps):
        steps.append(Step("parity", "all", "failed", "; ".join(found)))
    return steps, table(results)


def _group(results) -> dict:
    grouped: dict = {}
    for r in results:
        grouped.setdefault((r.framework, r.variant, r.model), []).append(r)
    return grouped


def check_run(config: Config, folder: Path, deadline: float) -> list[Step]:
    """configs/gpu.toml, short (2 epochs, 1 repeat, each adapter's first GPU variant), into run/, through
    the command line a user would type; on MNIST from this machine, never downloaded."""
    from harness import data
    from harness.errors import UserError

    try:
        data.locate(config.dataset, data_dir=config.data_dir or None, allow_download=False)
    except UserError as missing:
        return [Step("run", "configs/gpu.toml", "skipped", f"{missing} (MNIST_BENCH_DATA names a folder)")]
    short = folder / "run.toml"
    lines = GPU_CONFIG.read_text().replace('name = "gpu"', 'name = "gpu-check"')
    variants = "\n".join(f"{name} = {json.dumps(list(chosen))}" for name, chosen in config.variants.items())
    short.write_text(f"{lines}\n[variants]\n{variants}\n")
    command = [sys.executable, "bench.py", "run", str(short), "--epochs", str(RUN_EPOCHS), "--repeats", "1",
               "--ceilings", "cached", "--out", str(folder / "run"), "--quiet"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=deadline - time.monotonic())
    except subprocess.TimeoutExpired:
        return [Step("run", "configs/gpu.toml", "failed", "ran past the check's budget (run/ keeps what finished)")]
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "logs" / "run.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [Step("run", "configs/gpu.toml", "failed", f"exit {done.returncode}: {last}")]
    import csv

    with (folder / "run" / "runs.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    bad = [r for r in rows if r["status"] not in ("ok", "skipped")]
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    return [Step("run", "configs/gpu.toml", "failed" if bad else "passed",
                 f"{RUN_EPOCHS} epochs, 1 repeat: {summary} (run/summary.md)")]


def run_check(out: str | None = None, progress: bool = True, budget_s: float = BUDGET_S) -> int:
    """Every step, written to the check's folder; 0 unless a step failed."""
    folder = RunFolder.create("gpu-check", out).directory
    started = time.monotonic()
    deadline = started + budget_s
    steps, no_gpu = check_gpu()
    config = gpu_config("cpu" if no_gpu else "gpu")
    parity: list[str] = []
    say = (lambda text: print(text, file=sys.stderr)) if progress else (lambda text: None)

    def check_parity_keeping_its_table(config, folder, deadline):
        found, table = check_parity(config, deadline)
        parity.append(table)
        return found

    plan = [("products", lambda: check_products(config, folder)),
            ("residency and sync", lambda: probe_adapters(config, folder, deadline)),
            ("parity", lambda: check_parity_keeping_its_table(config, folder, deadline)),
            ("run", lambda: check_run(config, folder, deadline))]
    for name, step in plan:
        if no_gpu or time.monotonic() > deadline:
            why = no_gpu or f"the check's budget of {budget_s:.0f} s was spent before this step"
            steps += [Step(part, "all", "skipped", why) for part in name.split(" and ")]
            continue
        say(f"gpu-check: {name}")
        steps += step()
    parity_table = parity[0] if parity else ""
    steps.insert(0, Step("facts", "machine", "passed", "check.json: GPUs, driver and CUDA, packages, CPU, "
                                                        "and the variables every cell runs with"))
    seconds = time.monotonic() - started
    write(folder, steps, parity_table, seconds, config)
    print(markdown(steps, seconds))
    print(f"gpu-check: {folder}", file=sys.stderr)
    return 1 if any(s.status == "failed" for s in steps) else 0


def markdown(steps: list[Step], seconds: float) -> str:
    import pandas as pd

    counts = {status: sum(s.status == status for s in steps) for status in ("passed", "failed", "unclear", "skipped")}
    told = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    table = pd.DataFrame([asdict(s) for s in steps]).to_markdown(index=False)
    return f"# GPU check\n\n{told}, in {seconds:.0f} s.\n\n{table}\n"


def write(folder: Path, steps: list[Step], parity_table: str, seconds: float, config: Config) -> None:
    from harness.execute.process import worker_environment
    from harness.results import environment

    facts = environment.collect(config.threads, worker_environment(config), None, config)
    record = {"seconds": seconds, "steps": [asdict(s) for s in steps], "environment": facts}
    atomic_write(folder / "check.json", json.dumps(record, indent=1, default=str) + "\n")
    atomic_write(folder / "check.md", markdown(steps, seconds) + (f"\n## Parity\n\n{parity_table}\n"
                                                                 if parity_table else ""))
