"""The efficiency columns of runs.csv: a row's training FLOP/s against what the machine can do.

Achieved FLOP/s counts the model's training FLOPs (harness/models/) per second of a steady
epoch, so it includes whatever else the step does (activations, the optimizer, Python). The
references are the ceilings of harness/execute/ceilings.py, measured on the machine that ran the row:
the machine's peak (the best 4096² product of any library), the row's own library's product, and
the op floor of the row's model at its batch size (the fastest library's time for each heavy
operation of one step, summed): floor_fraction = the row's samples/s over the floor's.
"""

from __future__ import annotations


def efficiency(run: dict, library: str, ceilings: dict | None, floor_key: str | None = None) -> dict:
    """The runs.csv efficiency columns of one finished cell (blank when something is unknown).

    `floor_key` names the row's op floor in ceilings["floor"] (harness.models.floor_key).
    """
    columns = {"ceiling_library": library}
    speed, flops = run.get("samples_per_second"), run.get("flops_per_sample")
    floor = ((ceilings or {}).get("floor") or {}).get(floor_key) or {}
    if floor.get("samples_per_second"):
        columns["floor_samples_per_second"] = floor["samples_per_second"]
        if speed:
            columns["floor_fraction"] = speed / floor["samples_per_second"]
    if not speed or not flops:
        return columns
    columns["gflops"] = flops * speed / 1e9
    if not ceilings:
        return columns
    own = ceilings["libraries"].get(library, {})
    if own.get("status") == "ok":
        columns["ceiling_gflops"] = own["gflops"]
        columns["ceiling_fraction"] = columns["gflops"] / own["gflops"]
    if ceilings.get("peak"):
        columns["peak_gflops"] = ceilings["peak"]["gflops"]
        columns["peak_fraction"] = columns["gflops"] / ceilings["peak"]["gflops"]
    return columns
