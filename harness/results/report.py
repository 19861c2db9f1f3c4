"""summary.md: the tables a person reads, built from runs.csv with pandas, and the plots.

Each row is one (framework, variant, backend, model, device). Timings are the median over
repeats with the min-max range beside them; accuracy is the mean ± standard deviation with
the half-width of its 95% interval. n says how many repeats finished.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.results.plots import write_plots
from harness.results.records import (
    EPOCH_COLUMNS,
    RUN_COLUMNS,
    SWEEP_PREFIX,
    atomic_write,
    read_json,
    read_records,
    sweep_columns,
)
from harness.results.stats import GROUP, cell_statistics, t_interval
from harness.results.sweep_report import final_lines, setting_columns, sweep_lines

TIMING_COLUMNS = {  # runs.csv column -> (heading, format of one value)
    "samples_per_second": ("steady samples/s", lambda v: f"{v:,.0f}"),
    "first_epoch_seconds": ("first epoch s", lambda v: f"{v:.2f}"),
    "steady_epoch_seconds": ("steady epoch s", lambda v: f"{v:.2f}"),
    "time_to_target_seconds": ("time to target s", lambda v: f"{v:.1f}"),
    "eval_seconds": ("eval s", lambda v: f"{v:.2f}"),
    "setup_seconds": ("setup s", lambda v: f"{v:.1f}"),
}
EFFICIENCY_COLUMNS = {
    "gflops": ("GFLOP/s", lambda v: f"{v:,.0f}"),
    "peak_fraction": ("% of machine peak", lambda v: f"{100 * v:.0f}"),
    "ceiling_fraction": ("% of own ceiling", lambda v: f"{100 * v:.0f}"),
    "floor_fraction": ("% of op floor", lambda v: f"{100 * v:.0f}"),
    "import_rss_mb": ("RSS after import MB", lambda v: f"{v:,.0f}"),
    "peak_rss_mb": ("peak RSS MB", lambda v: f"{v:,.0f}"),
    "peak_device_memory_mb": ("peak device MB", lambda v: f"{v:,.0f}"),  # the allocator's peak in use
}


OPTIONAL_EFFICIENCY = ("floor_fraction", "peak_device_memory_mb")  # columns shown only where some row has them
STEADY = {"samples_per_second", "steady_epoch_seconds", "gflops", "peak_fraction", "ceiling_fraction", "floor_fraction"}
SINGLE = "¹"  # marks a figure that rests on one sample
SINGLE_NOTE = (f"{SINGLE} one sample (a single repeat, or a single steady epoch of one): no spread to judge it by; "
               "compare such figures only beyond 25%.")


def median_with_range(values: pd.Series, fmt, samples: int | None = None) -> str:
    """median (min–max) over the repeats; a figure resting on one sample is marked with SINGLE."""
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return fmt(values.iloc[0]) + (SINGLE if (samples or 1) == 1 else "")
    return f"{fmt(values.median())} ({fmt(values.min())}–{fmt(values.max())})"


def accuracy_text(values: pd.Series) -> str:
    """mean ± sd (95% CI ±half-width) in percent, or the single value."""
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{100 * values.iloc[0]:.2f}{SINGLE}"
    half = t_interval(values.to_numpy(float))
    return f"{100 * values.mean():.2f} ± {100 * values.std(ddof=1):.2f} (CI ±{100 * half:.2f})"


def model_table(runs: pd.DataFrame, by_session: bool = False, by_machine: bool = False) -> pd.DataFrame:
    """Accuracy and timings, one row per framework variant: medians (min–max) over the repeats that finished.

    `by_session`: one row per session too, for a folder that mixes sessions which differ; `by_machine`: one row
    per machine too, for a folder whose rows ran on several.
    """
    rows = []
    group_by = GROUP + setting_columns(runs) + (["machine"] if by_machine else []) + (["session"] if by_session else [])
    split = "validation" if "eval_split" in runs and (runs["eval_split"] == "validation").all() else "test"
    for keys, group in runs.groupby(group_by, sort=False, dropna=False):
        row = dict(zip(group_by, keys))
        row["n"] = len(group)
        row[f"{split} accuracy %"] = accuracy_text(pd.to_numeric(group["final_accuracy"], errors="coerce").dropna())
        row.update(_medians(group, TIMING_COLUMNS))
        if "optimizer_form" in group:
            row["optimizer form"] = "; ".join(dict.fromkeys(group["optimizer_form"].dropna().astype(str))) or "–"
        rows.append(row)
    # in the order the cells ran; a sweep's settings named by their keys
    return pd.DataFrame(rows).drop(columns=["model"]).rename(columns=lambda c: c.removeprefix(SWEEP_PREFIX))


def efficiency_table(runs: pd.DataFrame, by_machine: bool = False) -> pd.DataFrame:
    """Achieved training FLOP/s against the machine's peak and the row's own library's ceiling; memory."""
    rows = []
    group_by = GROUP + (["machine"] if by_machine else [])

    def measured(column: str) -> bool:
        return pd.to_numeric(runs.get(column, pd.Series(dtype=float)), errors="coerce").notna().any()

    # device memory on a GPU only, the op floor where it was measured (not in runs of an older layout)
    shown = {k: v for k, v in EFFICIENCY_COLUMNS.items() if k not in OPTIONAL_EFFICIENCY or measured(k)}
    for keys, group in runs.groupby(group_by, sort=False, dropna=False):
        row = dict(zip(GROUP[:2], keys)) | ({"machine": keys[-1]} if by_machine else {})
        row["own ceiling"] = _ceiling_text(group)
        row.update(_medians(group, shown))
        rows.append(row)
    return pd.DataFrame(rows)


def _medians(group: pd.DataFrame, columns: dict) -> dict:
    def samples(column: str) -> int:  # steady figures rest on every steady epoch of every repeat
        if column in STEADY and "steady_epochs" in group:
            return int(pd.to_numeric(group["steady_epochs"], errors="coerce").fillna(1).sum())
        return len(group)

    return {heading: median_with_range(pd.to_numeric(group.get(column, pd.Series(dtype=float)), errors="coerce"), fmt,
                                       samples(column))
            for column, (heading, fmt) in columns.items()}


def _ceiling_text(group: pd.DataFrame) -> str:
    """'jax 387 GFLOP/s': the library whose product is the row's ceiling, and that ceiling."""
    library = group.get("ceiling_library", pd.Series(dtype=object)).dropna()
    gflops = pd.to_numeric(group.get("ceiling_gflops", pd.Series(dtype=float)), errors="coerce").dropna()
    if library.empty:
        return "–"
    return f"{library.iloc[0]} {gflops.iloc[0]:,.0f} GFLOP/s" if not gflops.empty else str(library.iloc[0])


def ceilings_text(matmul: dict) -> str:
    """One sentence on the measured matrix-product ceilings, best first."""
    libraries = matmul.get("libraries", {})
    measured = {k: v for k, v in libraries.items() if v.get("status") == "ok"}
    if not libraries:
        return "Matrix-product ceilings were not measured (ceilings = \"off\"), so there are no efficiency figures."
    if not measured:
        return ("No library could measure its matrix-product ceiling on this device (environment.json says why, "
                "logs/matmul-*.log hold the output), so there are no efficiency figures.")
    size = matmul.get("size")
    ranked = sorted(measured.items(), key=lambda kv: -kv[1]["gflops"])
    listed = ", ".join(f"{name} {r['gflops']:,.0f}" for name, r in ranked)
    cached = sorted(name for name, r in measured.items() if str(r.get("source", "")).startswith("cached"))
    source = f" ({', '.join(cached)} from the cache of earlier measurements here)" if cached else ""
    return (f"Matrix-product ceilings ({size}×{size} float32, best of repeats, GFLOP/s): {listed}{source}; "
            f"the machine's peak is {ranked[0][0]}'s. Training FLOP/s count the products a step computes "
            f"(forward, weight gradients, and input gradients of every layer but the first) over a steady "
            f"epoch, so they include everything else the step does.")


def floor_table(floor: dict) -> pd.DataFrame:
    """One model's op floor: each heavy operation of a step, the library that ran it fastest alone, and its time."""
    rows = [{"operation": r["operation"], "shape": r["shape"], "MFLOP": f"{r['flops'] / 1e6:,.1f}",
             "fastest": r["fastest"] or "–", "ms": f"{1e3 * r['seconds']:.3f}" if r["seconds"] else "–",
             "every library, ms": ", ".join(f"{k} {1e3 * v:.3f}" for k, v in sorted(r["times"].items(),
                                                                                     key=lambda kv: kv[1]))}
            for r in floor.get("operations", [])]
    return pd.DataFrame(rows)


def floor_text(matmul: dict, key: str | None) -> list[str]:
    """The op floor of one model, as a sentence and its table (nothing when it was not measured)."""
    floor = (matmul.get("floor") or {}).get(key) if key else None
    if not floor or not floor.get("operations"):
        return []
    if not floor.get("complete"):
        missing = [r["operation"] for r in floor["operations"] if not r["fastest"]]
        return ["", f"No op floor: no library timed {', '.join(missing)} (environment.json says why)."]
    return ["", f"Op floor ({key}): {1e3 * floor['seconds']:.2f} ms a step, {floor['samples_per_second']:,.0f} "
            "samples/s: each heavy operation of one training step timed alone in every library, the fastest "
            "one's median summed.", "", floor_table(floor).to_markdown(index=False)]


def step_profile(rows: pd.DataFrame, floor: dict | None) -> pd.DataFrame:
    """A steady step of each row split into its own library's heavy operations (timed alone) and everything else."""
    if not floor or not floor.get("own_seconds"):
        return pd.DataFrame()
    found = []
    for (framework, variant), group in rows.groupby(["framework", "variant"], sort=False):
        speed = pd.to_numeric(group["samples_per_second"], errors="coerce").median()
        library = group["ceiling_library"].dropna().iloc[0] if "ceiling_library" in group and \
            group["ceiling_library"].notna().any() else None
        own = floor["own_seconds"].get(library)
        if not speed or own is None or pd.isna(speed):
            continue
        step = floor["batch"] / speed
        found.append({"framework": framework, "variant": variant, "steady step ms": f"{1e3 * step:.2f}",
                      f"{library} heavy operations ms": f"{1e3 * own:.2f} ({100 * own / step:.0f}%)",
                      "everything else ms": (f"{1e3 * (step - own):.2f} ({100 * (step - own) / step:.0f}%)"
                                             if step > own else "– (its operations ran faster inside the step than "
                                                                 "alone)"),
                      "op floor ms": f"{1e3 * floor['seconds']:.2f}" if floor.get("seconds") else "–"})
    frame = pd.DataFrame(found)
    if not frame.empty:  # the library column's heading differs per row: one column, named once
        library_columns = [c for c in frame.columns if c.endswith("heavy operations ms")]
        frame["own library's heavy operations ms"] = frame[library_columns].bfill(axis=1).iloc[:, 0]
        frame = frame.drop(columns=library_columns)
        frame = frame[["framework", "variant", "steady step ms", "own library's heavy operations ms",
                       "everything else ms", "op floor ms"]]
    return frame


def device_text(session: dict, device: str | None) -> list[str]:
    """The GPU, and the precision each library's products were measured at (TF32 or bfloat16 would show)."""
    lines = []
    for gpu in session.get("gpus") or []:
        lines.append(f"GPU: {gpu.get('name', '?')}, {gpu.get('memory.total', '?')}, driver "
                     f"{gpu.get('driver_version', '?')}, CUDA {gpu.get('cuda_version', '?')}.")
    measured = {name: r for name, r in (session.get("matmul") or {}).get("libraries", {}).items()
                if "product_error" in r}
    if measured:
        def builds(r: dict) -> str:
            named = [f"{label} {r[key]}" for key, label in (("cuda", "CUDA"), ("cudnn", "cuDNN"), ("runtime", ""))
                     if r.get(key)]
            return "; " + ", ".join(part.strip() for part in named) if named else ""

        listed = ", ".join(f"{name} {r['precision']} ({r['product_error']:.1e}{builds(r)})"
                           for name, r in measured.items())
        lines.append(f"Products on the {device or '?'} (median error of a float32 product against float64, "
                     f"relative to its RMS): {listed}.")
    return ["", " ".join(lines)] if lines else []


def summary_markdown(runs: pd.DataFrame, environment: dict, config: dict, plots: dict | None = None) -> str:
    ok = runs[runs["status"] == "ok"]
    sessions = environment.get("sessions") or [{}]
    first = sessions[0]
    cpu = first.get("cpu", {}).get("model", "?")
    threads = first.get("threads") or "each node's own"  # 0: a remote executor's nodes each used their cores
    lines = [f"# {config.get('name', 'run')}: {config.get('dataset', '')}", ""]
    lines.append(
        f"{cpu}, {threads} threads, BLAS {config.get('blas', 'environment')}, "
        f"Python {first.get('python', '?')}, {first.get('time_utc', '')}. "
        f"Median over repeats (min–max when n > 1); throughput from steady epochs (2..N) only; "
        f"time to target counts training from the first step, compile included."
    )
    matmuls = ceilings_by_machine(sessions)  # machine -> the ceilings its rows were judged against
    several = len(machines_of(runs)) > 1
    if several or any("hosts" in s for s in sessions):
        lines += machines_text(sessions)
    for machine, matmul in matmuls.items() if several else list(matmuls.items())[:1]:
        lines += ["", (f"On `{machine}`: " if several else "") + ceilings_text(matmul)]
    lines += device_text(first, config.get("device"))
    lines += sessions_text(sessions, runs)
    mixed = any(s.get("differs_from_first") for s in sessions)
    first_matmul = next(iter(matmuls.values()), {})
    for model in dict.fromkeys(runs["model"]):
        rows = ok[ok["model"] == model]
        if rows.empty:
            continue
        settings = config.get(model, {})
        lines += ["", f"## {model_heading(model, settings)}", ""]
        if config.get("stop_at_target"):
            lines += speedrun_text(runs[runs["model"] == model], settings, config)
        mode = (config.get("sweep") or {}).get("mode")
        if mode:
            lines += final_lines(rows, config) if mode == "selected" else sweep_lines(rows, config)
        lines.append(model_table(rows, by_session=mixed, by_machine=several).to_markdown(index=False))
        if "gflops" in rows and rows["gflops"].notna().any():
            lines += ["", "Efficiency and memory:", "", efficiency_table(rows, several).to_markdown(index=False)]
        key = floor_key_of(config, model)
        floor = ((first_matmul or {}).get("floor") or {}).get(key)
        lines += floor_text(first_matmul or {}, key) if not several else []
        profile = step_profile(rows, floor) if not several else pd.DataFrame()
        if not profile.empty:
            lines += ["", "A steady step, split into the row's own library's heavy operations (each timed alone, "
                      "as for the floor) and everything else (elementwise work, the optimizer, the framework's "
                      "own overhead):", "", profile.to_markdown(index=False)]
        lines += [""] + [f"![{name}]({name})" for name in (plots or {}).get(model, [])]
    if SINGLE in "\n".join(lines):
        lines += ["", SINGLE_NOTE]
    failed = runs[runs["status"] != "ok"]
    if not failed.empty:
        lines += ["", "## Cells that did not finish", ""]
        table = failed[GROUP + setting_columns(failed) + ["repeat", "status", "error"]].fillna("")
        lines.append(table.to_markdown(index=False))
    return "\n".join(lines) + "\n"


def model_heading(model: str, settings: dict) -> str:
    """A model's section heading: its epochs, the training images where not all, its own rate where it has one,
    and its target."""
    subset = f" of the first {settings['train_samples']:,} training images" if settings.get("train_samples") else ""
    rate = f", learning rate {settings['lr']:g}" if settings.get("lr") else ""
    return (f"{model.upper()}: {settings.get('epochs', '?')} epochs{subset}{rate}, "
            f"target accuracy {settings.get('target_accuracy', '?')}")


def speedrun_text(rows: pd.DataFrame, settings: dict, config: dict) -> list[str]:
    """The time-to-target table under MLPerf's rules (harness/results/speedrun.py), before the usual table."""
    from harness.results.speedrun import speedrun_table

    every = config.get("eval_every_steps") or "every epoch's"
    return [f"Time to {100 * settings.get('target_accuracy', 0):g}% test accuracy, MLPerf's rules: each seed's clock "
            "runs from the first training step (compilation included) to the first evaluation at the target "
            f"(evaluated after {every} steps of an epoch and at its end; the evaluations' own time apart); the "
            "score is the mean after dropping the fastest and the slowest seed, and a row where more than one "
            "seed in ten missed the target gets none; the last column scores the same seeds with the evaluations "
            "inside the clock, as MLPerf's wall clock has them. \"first epoch s\" below is the time to the stop "
            "where a seed stopped within its first epoch.", "", speedrun_table(rows).to_markdown(index=False), "",
            "Every seed's run:", ""]


def floor_key_of(config: dict, model: str) -> str | None:
    """The op floor's key of a model in a run's resolved config (None for an old config without the model)."""
    from harness.config import network_settings
    from harness.models import floor_key, model_spec

    settings = network_settings(config.get(model, {}))
    try:
        return floor_key(model_spec(model, **settings), config.get("batch_size", 128))
    except (TypeError, ValueError):
        return None


def machines_of(runs: pd.DataFrame) -> list[str]:
    """The machines the folder's finished rows ran on (none for rows written before machines were recorded)."""
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    return sorted({str(m) for m in ok.get("machine", pd.Series(dtype=str)).dropna() if str(m)})


def host_records(sessions: list[dict]) -> dict[str, dict]:
    """host -> its first record over the sessions: a local session is its own host's record, a remote
    executor's session holds one per node."""
    found: dict[str, dict] = {}
    for session in sessions:
        if "hosts" in session:
            for host, record in session["hosts"].items():
                found.setdefault(host, record)
        elif session.get("host"):
            found.setdefault(session["host"], session)
    return found


def ceilings_by_machine(sessions: list[dict]) -> dict[str, dict]:
    """machine -> the ceilings its rows were judged against (the first host of that machine's)."""
    found: dict[str, dict] = {}
    for record in host_records(sessions).values():
        found.setdefault(record.get("machine", ""), record.get("matmul") or {})
    return found or {"": (sessions[0].get("matmul") or {}) if sessions else {}}


def machines_text(sessions: list[dict]) -> list[str]:
    """The machines of the folder, one line each: its fingerprint, hosts, CPU, cores, memory, GPUs."""
    machines: dict[str, dict] = {}
    for host, record in host_records(sessions).items():
        entry = machines.setdefault(record.get("machine", ""), {"hosts": [], "record": record})
        entry["hosts"].append(host)
    rows = []
    for machine, entry in machines.items():
        record = entry["record"]
        cpu, peak = record.get("cpu") or {}, (record.get("matmul") or {}).get("peak") or {}
        rows.append({"machine": machine or "?", "hosts": ", ".join(entry["hosts"]), "CPU": cpu.get("model", "?"),
                     "usable cores": cpu.get("usable_cores", "?"), "memory GiB": record.get("memory_gib", "?"),
                     "GPUs": ", ".join(g.get("name", "?") for g in record.get("gpus") or []) or "none",
                     "peak GFLOP/s": f"{peak['library']} {peak['gflops']:,.0f}" if peak else "–"})
    return ["", "Machines (each row's `machine`: a fingerprint of the CPU, usable cores, GPUs, memory, Python and "
            "numerical packages; each was measured on its own host):", "", pd.DataFrame(rows).to_markdown(index=False)]


def sessions_text(sessions: list[dict], runs: pd.DataFrame) -> list[str]:
    """Nothing for a run written in one go; which session wrote which rows, and what differed, otherwise."""
    counts = runs["session"].value_counts().to_dict() if "session" in runs else {}
    if any(s.get("source") for s in sessions):  # bench.py merge: each session names the folder it came from
        described = "; ".join(f"session {s.get('session')}: {s['source']['folder']} (its session "
                              f"{s['source']['session']}, {s.get('time_utc', '?')}, host {s.get('host', '?')}): "
                              f"{counts.get(s.get('session'), 0)} rows" for s in sessions)
        return ["", f"Merged by bench.py merge from {len(sessions)} sessions: {described}."]
    if len(sessions) < 2:
        return []
    described = ", ".join(f"session {s.get('session')} ({s.get('time_utc', '?')}, commit "
                          f"{str(s.get('git', {}).get('commit', ''))[:10]}): {counts.get(s.get('session'), 0)} cells"
                          for s in sessions)
    lines = ["", f"Resumed: this folder was written by {len(sessions)} sessions: {described}."]
    for s in sessions:
        if s.get("differs_from_first"):
            lines.append(f"**This folder mixes sessions**: session {s['session']} differed from the first in "
                         + "; ".join(s["differs_from_first"]) + " (it was resumed with --allow-mixed); the tables "
                         "below show each row's session.")
    return lines


def read_frame(path: Path) -> pd.DataFrame:
    """runs.csv or epochs.csv as a DataFrame, a sweep's settings kept as the text they were written as."""
    settings = sweep_columns(pd.read_csv(path, nrows=0).columns)
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=dict.fromkeys(settings, str))


def write_summary(directory: Path) -> str:
    """(Re)build summary.md from the files of a run folder; return its text."""
    runs_path = directory / "runs.csv"
    if not runs_path.exists():
        raise UserError(f"{directory} has no runs.csv: give the folder of a run, e.g. results/<time>-quick")
    read_records(runs_path, RUN_COLUMNS)  # refuses a truncated file, missing columns or another layout
    runs = read_frame(runs_path)
    environment = read_json(directory / "environment.json")
    config = read_json(directory / "config.json")
    if runs.empty:
        atomic_write(directory / "summary.md", "# no cells finished\n")
        return "# no cells finished\n"
    epochs_path = directory / "epochs.csv"
    epochs = None
    if epochs_path.exists():
        read_records(epochs_path, EPOCH_COLUMNS)
        epochs = read_frame(epochs_path)
    plots = write_plots(directory, runs, epochs, config) if epochs is not None and not epochs.empty else {}
    if (config.get("sweep") or {}).get("mode") in ("grid", "zip", "optuna"):
        from harness.results.sweep_plots import write_sweep_plots

        for model, names in write_sweep_plots(directory, runs, epochs, config).items():
            plots.setdefault(model, []).extend(names)
    atomic_write(directory / "statistics.csv", cell_statistics(runs).to_csv(index=False))
    text = summary_markdown(runs, environment, config, plots)
    atomic_write(directory / "summary.md", text)
    return text
