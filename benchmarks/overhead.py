#!/usr/bin/env python3
"""What the harness costs: each row's steady throughput in bench.py against a bare loop of its framework.

For every (framework, variant, model) of a config, this runs the row's cell exactly as
`bench.py run` does (its own worker process, threads, affinity, events, evaluation between
epochs) and the framework's bare loop (benchmarks/bare/<framework>_loop.py: a plain script as
the framework's users write one) with the same environment, model sizes, optimizer, batch size
and data. Rounds alternate which goes first, so drift on the machine hits both alike. The
ratio harness / bare of the median steady samples/s should be at least 0.97.

Both train on the synthetic MNIST-shaped set (--train images): throughput does not depend on
the pixels. The default sizes give epochs of one to three seconds (400 batches for the MLP, 100
for the CNN), long enough that what bench.py does once per epoch is weighed as in a real run.

    python benchmarks/overhead.py [CONFIG] [--frameworks a,b] [--models mlp,cnn] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.config import load_config, model_optimizer, network_settings  # noqa: E402
from harness.errors import UserError  # noqa: E402

GOAL = 0.97
TRAIN_IMAGES = {"mlp": 51200, "cnn": 12800}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "variants.toml"))
    parser.add_argument("--frameworks", help="comma-separated (default: the config's)")
    parser.add_argument("--models", help="comma-separated: mlp,cnn")
    parser.add_argument("--rounds", type=int, default=3, help="harness and bare runs per row (default 3)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is warm-up (default 4)")
    parser.add_argument("--train", type=int, help="training images (default: MLP 51200, CNN 12800)")
    parser.add_argument("--csv", help="also write the table as CSV")
    return parser.parse_args()


def benchmark_configs(args: argparse.Namespace) -> list:
    """One config per model: its rows and settings on the synthetic set, without ceilings (nothing here needs them)."""
    split = lambda text: text.split(",") if text else None  # noqa: E731
    overrides = {"frameworks": split(args.frameworks), "epochs": args.epochs}
    planned = load_config(args.config).values["models"]
    models = split(args.models) or [m for m in planned if m in TRAIN_IMAGES]
    if not args.models and set(planned) - set(models):
        print(f"note: {', '.join(m for m in planned if m not in models)} left out: the bare loops train "
              f"{' and '.join(TRAIN_IMAGES)} only", file=sys.stderr)
    unknown = sorted(set(models) - set(TRAIN_IMAGES))
    if unknown:
        raise UserError(f"--models names {unknown[0]!r}: the bare loops (benchmarks/bare/) train "
                        f"{' and '.join(TRAIN_IMAGES)} only")
    configs = []
    for model in models:
        config = load_config(args.config, {**overrides, "models": [model]})
        config.values.update(dataset="synthetic", repeats=1, matmul_size=0)
        config.values["synthetic"] = {"train": args.train or TRAIN_IMAGES[model], "eval": 1000}
        config.values[model]["train_samples"] = 0  # both loops train on every synthetic image
        configs.append(config)
    return configs


class Skipped(Exception):
    """The harness skipped the cell (an adapter that does not run it here): no row to compare."""


def harness_speed(cell, config, folder: Path) -> float | None:
    from harness.runner import run_cell

    run, _ = run_cell(cell, config, None, folder)
    if run.get("status") == "skipped":
        raise Skipped(run.get("error", ""))
    return run.get("samples_per_second") if run.get("status") == "ok" else None


def bare_speed(cell, config) -> float | None:
    """Run the framework's bare loop in a fresh process with the cell's environment; steady samples/s."""
    import statistics

    from harness.execute.process import pin_threads, worker_environment

    values, info = config.values, config.adapters[cell.framework]
    settings = values[cell.model]
    job = {"model": cell.model, "variant": cell.variant, "device": cell.device, "epochs": settings["epochs"],
           "seed": cell.seed,
           "batch_size": values["batch_size"], "train": values["synthetic"]["train"], "threads": values["threads"],
           "lr": model_optimizer(values, cell.model)["lr"], "options": values["options"].get(cell.framework, {}),
           **network_settings(settings)}
    # the cell's own environment: its threads, BLAS and malloc settings, and its device (a CPU cell sees no GPU;
    # Keras on PyTorch takes its device from KERAS_TORCH_DEVICE, as the adapter sets it)
    env = {**worker_environment(config), **info.variant_env.get(cell.variant, {}),
           "KERAS_TORCH_DEVICE": "cuda" if cell.device == "gpu" else "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks" / "bare")])}
    script = ROOT / "benchmarks" / "bare" / f"{cell.framework}_loop.py"
    if not script.exists():
        raise Skipped(f"{cell.framework} has no bare loop ({script.relative_to(ROOT)}): nothing to compare with")
    result = subprocess.run([sys.executable, str(script), json.dumps(job)], env=env, capture_output=True, text=True,
                            preexec_fn=lambda: pin_threads(values["threads"]), timeout=values["timeout_s"])
    epochs = [json.loads(line)["train_seconds"] for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or len(epochs) < 2:
        print(f"bare loop {cell.label} failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return (job["train"] // job["batch_size"]) * job["batch_size"] / statistics.median(epochs[1:])


def run_once(kind: str, cell, config, scratch: Path) -> float | None:
    return harness_speed(cell, config, scratch) if kind == "harness" else bare_speed(cell, config)


def measure(config, rounds: int) -> list[dict]:
    from tqdm import tqdm

    cells = [c for c in config.cells() if not config.adapters[c.framework].unsupported(c.model, c.device, c.variant)]
    rows = []
    with tempfile.TemporaryDirectory() as scratch, tqdm(total=len(cells) * rounds * 2, unit="run") as bar:
        for cell in cells:
            row = {"framework": cell.framework, "variant": cell.variant, "model": cell.model, "harness": [],
                   "bare": []}
            try:
                for round_ in range(rounds):
                    order = ["harness", "bare"] if round_ % 2 == 0 else ["bare", "harness"]
                    for kind in order:
                        bar.set_description(f"{cell.framework}/{cell.variant} {cell.model} {kind}")
                        speed = run_once(kind, cell, config, Path(scratch))
                        row[kind] += [speed] if speed else []
                        bar.update()
            except Skipped as reason:
                print(f"{cell.label}: skipped: {reason}", file=sys.stderr)
                continue
            rows.append(row)
    return rows


def table(rows: list[dict]):
    import numpy as np
    import pandas as pd

    def spread(values):
        return f"{np.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})" if values else "–"

    records = []
    for row in rows:
        ratio = np.median(row["harness"]) / np.median(row["bare"]) if row["harness"] and row["bare"] else np.nan
        records.append({"framework": row["framework"], "variant": row["variant"], "model": row["model"],
                        "bench.py samples/s": spread(row["harness"]), "bare loop samples/s": spread(row["bare"]),
                        "ratio": round(ratio, 3), "goal met": "yes" if ratio >= GOAL else "NO"})
    return pd.DataFrame(records)


def main() -> int:
    args = arguments()
    try:
        configs = benchmark_configs(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = table([row for config in configs for row in measure(config, args.rounds)])
    print(result.to_markdown(index=False))
    print(f"\nratio = median bench.py / median bare loop steady samples/s over {args.rounds} rounds; goal ≥ {GOAL}")
    if args.csv:
        result.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
