"""The machine a row ran on, as one short name: rows compare over time only on the same machine.

runs.csv may carry a `machine` column; where it does, its value wins, the fingerprint a run records
(harness/results/environment.machine) shown by the name of the host record it belongs to. Otherwise
the name comes from the session that wrote the row: the CPU model and its core count, and the GPUs
by name.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd


def machine_name(session: dict) -> str:
    """'Intel(R) Xeon(R) Processor, 2 cores; NVIDIA H200': what a reader tells machines apart by."""
    cpu = session.get("cpu") or {}
    name = str(cpu.get("model") or "unknown CPU")
    cores = cpu.get("cores")
    if cores:
        name += f", {cores} cores"
    gpus = Counter(str(gpu.get("name", "GPU")) for gpu in session.get("gpus") or [])
    if gpus:
        name += "; " + ", ".join(gpu if count == 1 else f"{count}× {gpu}" for gpu, count in gpus.items())
    return name


def with_machine(runs: pd.DataFrame, sessions: list[dict]) -> pd.DataFrame:
    """runs with a filled `machine` column: the file's own where it has one, else its session's machine."""
    runs = runs.copy()
    by_session = {s.get("session"): machine_name(s) for s in sessions}
    fallback = machine_name(sessions[0]) if sessions else "unknown machine"
    numbers = pd.to_numeric(runs["session"], errors="coerce") if "session" in runs else pd.Series(index=runs.index)
    derived = numbers.map(by_session)
    derived = derived.fillna(fallback)
    if "machine" in runs:  # a fingerprint reads as its host's name (hosts: a remote executor's nodes)
        named = {record["machine"]: machine_name(record) for s in sessions
                 for record in [s, *(s.get("hosts") or {}).values()] if record.get("machine")}
        runs["machine"] = runs["machine"].map(lambda m: named.get(m, m) if isinstance(m, str) else m)
        runs["machine"] = runs["machine"].where(runs["machine"].notna() & (runs["machine"].astype(str) != ""), derived)
    else:
        runs["machine"] = derived
    runs["machine"] = runs["machine"].astype(str)
    return runs
