#!/usr/bin/env python3
"""mnist-bench: the same MNIST models (MLP, CNN, LSTM, ViT), trained the same way, in every framework.

Thin command line over harness/: it parses arguments and calls the machinery. No ML
framework (and nothing heavy) is imported here, so `list` and `--help` start at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UserError


def overrides(args: argparse.Namespace) -> dict:
    """Command-line values that replace the config's."""
    split = lambda text: [s.strip() for s in text.split(",") if s.strip()] if text else None  # noqa: E731
    return {
        "frameworks": split(args.frameworks),
        "models": split(args.models),
        "epochs": args.epochs,
        "repeats": getattr(args, "repeats", None),
        "device": args.device,
        "threads": args.threads,
        "data_dir": getattr(args, "data_dir", None),
        "ceilings": getattr(args, "ceilings", None),
        "executor": getattr(args, "executor", None),
    }


# Flags that choose what a run does: a resumed run does what its first session set up.
RUN_CHOICES = ("config", "frameworks", "models", "epochs", "repeats", "device", "threads", "out", "ceilings",
               "executor")


def command_run(args: argparse.Namespace) -> int:
    from harness.config import load_config
    from harness.results.run_folder import RunFolder

    if args.resume:
        given = [name for name in RUN_CHOICES if getattr(args, name, None) is not None]
        if given:
            flags = ", ".join("CONFIG" if n == "config" else f"--{n.replace('_', '-')}" for n in given)
            raise UserError(f"--resume carries on a run as its first session set it up, so {flags} would change it: "
                            "drop them, or start a new run")
        folder, config = RunFolder.existing(args.resume), None
        if folder.config().get("merged_from"):
            raise UserError(f"{args.resume} was made by bench.py merge: resume the runs it merged, then merge again")
    else:
        config = load_config(args.config, overrides(args))
        folder = RunFolder.create(config.name, args.out)
    with folder.locked(new=not args.resume):
        return run_in(folder, config, args)


def run_in(folder, config, args: argparse.Namespace) -> int:
    """Start this session in the locked folder (checking a resume against the first), measure, run, summarise."""
    import signal

    from harness.config import resolve
    from harness.execute import ceilings
    from harness.execute.process import worker_environment
    from harness.results import environment, report
    from harness.results.hosts import HostBook
    from harness.results.run_folder import differences
    from harness.runner import prepare_data, run_sweep
    from harness.tuning.sweep import planned

    try:
        mixed: list[str] = []
        if config is None:  # resuming: the saved config, checked against this session's code, packages, machine
            saved = folder.config()
            config = resolve(saved, saved.get("name", "resumed"))
            now = {**environment.collect(config.threads, worker_environment(config), None, config),
                   "config": config.values}
            first = (folder.sessions() or [{}])[0]
            mixed = differences(first, now)
            if mixed and not args.allow_mixed:
                raise UserError(f"{folder.directory} was started with other " + "; ".join(mixed) + ": resume it with "
                                "the same code, packages, machine and config, or pass --allow-mixed to mix them "
                                "(summary.md then says which rows came from which session)")
            matmul = first.get("matmul")  # a resumed run keeps the ceilings its first cells were judged against
            folder.keep_finished()
        else:
            folder.write_config(config.values)
            now = {**environment.collect(config.threads, worker_environment(config), None, config),
                   "config": config.values}
            matmul = None
        if config.executor != "local":  # each node checks its own data and measures itself (harness/execute/remote.py)
            from harness.execute.remote import run_remote

            run_remote(config, folder, {**now, "differs_from_first": mixed}, args.data_dir, args.ray_address,
                       progress=not args.quiet)
        else:
            data_dir = prepare_data(config, args.data_dir)  # the data is there, or the run stops before anything else
            if matmul is None:
                matmul = ceilings.measure(config, folder.directory, progress=not args.quiet)
            machine = environment.machine(now)
            folder.start_session({**now, "executor": "local", "machine": machine, "matmul": matmul,
                                  "differs_from_first": mixed})
            print(f"{planned(config)} -> {folder.directory}", file=sys.stderr)
            run_sweep(config, folder, data_dir, progress=not args.quiet, ceilings=matmul,
                      hosts=HostBook(ceilings=matmul, machine=machine))
    except KeyboardInterrupt:
        for name in ("SIGINT", "SIGTERM"):  # a second Ctrl-C must not break the files being written
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        print(f"\ninterrupted: finished cells are in {folder.directory}; "
              f"carry on with: python bench.py run --resume {folder.directory}", file=sys.stderr)
        if folder.runs:
            report.write_summary(folder.directory)
        return 130
    print(report.write_summary(folder.directory))
    print(f"results: {folder.directory}", file=sys.stderr)
    return 0


def command_select(args: argparse.Namespace) -> int:
    from harness.results.selection import CRITERION, SELECTION_FILE, select, selection_table

    directory = Path(args.run)
    selection = select(directory)
    print(selection_table(selection).to_markdown(index=False))
    print(f"\nchosen by {CRITERION}, on the {selection['eval_split']} split; written to {directory / SELECTION_FILE}; "
          f"bench.py final {directory} trains these settings again and tests them once", file=sys.stderr)
    return 0


def command_final(args: argparse.Namespace) -> int:
    from harness.results.run_folder import RunFolder
    from harness.tuning.final import final_config

    config = final_config(Path(args.run), args.repeats)
    folder = RunFolder.create(config.name, args.out)
    with folder.locked(new=True):
        return run_in(folder, config, args)


def command_show(args: argparse.Namespace) -> int:
    from harness.results.show import show

    for line in show(Path(args.run), args.data_dir):
        print(line)
    return 0


def command_list(args: argparse.Namespace) -> int:
    from harness.adapter import discover

    for info in discover().values():
        missing = info.missing_modules()
        state = "available" if not missing else f"not installed ({', '.join(missing)}): {info.install_command}"
        print(f"{info.name:<11} {state}")
        print(f"{'':<11} models {', '.join(info.models)}; devices {', '.join(info.devices)}")
        for variant in info.variants:
            extra = info.missing_modules(variant)[len(missing):] if not missing else []
            devices = info.variant_devices.get(variant, info.devices)
            note = f" (needs {', '.join(extra)})" if extra else ""
            print(f"{'':<11}   variant {variant:<12} {', '.join(devices)}{note}")
    return 0


def command_parity(args: argparse.Namespace) -> int:
    from harness.adapter import discover
    from harness.config import load_config
    from harness.parity import closest, problems, run_parity, table

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give the number of cells to check at once, 1 or more")
    config = load_config(args.config, {**overrides(args), "executor": "local"})  # parity runs here, whatever the run's

    def progress(r) -> None:
        print(f"{r.framework}/{r.variant} {r.model} {r.check}: {r.status}", file=sys.stderr)

    results = run_parity(config, on_result=progress, jobs=args.jobs)
    print(table(results))
    print("\n" + closest(results))
    installed = {name for name, info in discover().items() if not info.missing_modules()}
    found = problems(results, installed)
    for problem in found:
        print(f"parity: {problem}", file=sys.stderr)
    return 1 if found else 0


def command_gpu_check(args: argparse.Namespace) -> int:
    from harness.gpu_check import run_check

    return run_check(args.out, progress=not args.quiet)


def command_report(args: argparse.Namespace) -> int:
    from harness.results import report

    directory = Path(args.directory)
    if not directory.is_dir():
        raise UserError(f"{directory} is not a folder: give a run folder such as results/<time>-quick")
    print(report.write_summary(directory))
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from harness.results import compare

    metrics = args.metric or compare.DEFAULT_METRICS
    compare.check_metrics(metrics)
    table = compare.compare(compare.read_runs(args.a, metrics), compare.read_runs(args.b, metrics), metrics,
                            across_machines=args.across_machines)
    print(compare.markdown(table, args.a, args.b))
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.fail_on_regression is not None:
        worse = compare.regressions(table, args.fail_on_regression)
        if not worse.empty:
            print(f"\n{len(worse)} row(s) worse than A by more than {args.fail_on_regression}% beyond noise",
                  file=sys.stderr)
            return 1
    return 0


def command_site(args: argparse.Namespace) -> int:
    from harness.results.site import build_site

    built = build_site([Path(p) for p in args.paths], Path(args.out))
    for note in built.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{built.runs} runs, {built.rows} history rows, {built.regressions} regressions: {built.out / 'index.html'}")
    return 0


def command_merge(args: argparse.Namespace) -> int:
    from harness.results.merge import merge

    out = merge([Path(p) for p in args.runs], Path(args.out), args.prefer)
    print(out.summary)
    print(f"merged {out.rows} rows of {len(args.runs)} runs on {out.machines} machine(s) -> {out.directory}"
          + (f" ({out.replaced} clashing rows resolved by --prefer {args.prefer})" if out.replaced else ""),
          file=sys.stderr)
    return 0


def command_fetch(args: argparse.Namespace) -> int:
    from harness import data

    folder = data.locate(args.dataset, data_dir=args.data_dir)
    data.load_raw(args.dataset, data_dir=folder, allow_download=False)
    print(f"{args.dataset}: verified files in {folder}")
    return 0


def add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="TOML config (default: configs/quick.toml)")
    parser.add_argument("--frameworks", help="comma-separated, e.g. numpy,torch (default: the config's)")
    parser.add_argument("--models", help="comma-separated: mlp,cnn,rnn,vit")
    parser.add_argument("--epochs", type=int, help="epochs for every model")
    parser.add_argument("--device", choices=["cpu", "gpu", "auto"])
    parser.add_argument("--threads", type=int, help="threads per cell (0 = all cores)")


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported as one sentence (main prints it and exits 2), not a usage dump."""

    def error(self, message: str):
        raise UserError(f"{message} (`{self.prog} --help` lists the options)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bench.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train every cell of a config and write results/")
    add_selection(run)
    run.add_argument("--repeats", type=int, help="repeats per cell, each with its own seed")
    run.add_argument("--data-dir", help="folder holding the four IDX files (.gz or raw)")
    run.add_argument("--out", help="result folder (default: results/<UTC time>-<config name>)")
    run.add_argument("--ceilings", choices=["cached", "measure", "off"],
                     help="matrix-product ceilings: from the cache where measured before (default), measured "
                          "again in this run, or off")
    run.add_argument("--executor", choices=["local", "ray", "slurm"],
                     help="where cells run: here one at a time (default), as Ray tasks one per node, or as a SLURM "
                          "job array through submitit (README.org, \"Running on a cluster\")")
    run.add_argument("--ray-address", default="auto", metavar="ADDRESS",
                     help="the Ray cluster's head (host:port) for --executor ray (default: auto, the one this "
                          "machine belongs to or RAY_ADDRESS)")
    run.add_argument("--resume", metavar="DIR", help="finish an interrupted run in DIR with its saved config")
    run.add_argument("--allow-mixed", action="store_true",
                     help="with --resume: carry on even though the code, packages, machine or config changed")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=command_run)

    listing = commands.add_parser("list", help="adapters, their variants, and whether they are installed")
    listing.set_defaults(func=command_list)

    parity = commands.add_parser("parity", help="check every adapter against the NumPy float64 reference")
    add_selection(parity)
    parity.add_argument("--jobs", type=int, default=1,
                        help="cells checked at once (with --threads 1 on a small machine; default 1)")
    parity.set_defaults(func=command_parity)

    comparison = commands.add_parser("compare", help="two runs side by side, with noise-aware verdicts")
    comparison.add_argument("a", help="the baseline: a result folder or its runs.csv")
    comparison.add_argument("b", help="the run compared with it")
    comparison.add_argument("--metric", action="append", help="a runs.csv column, repeatable (default: "
                            "samples_per_second, first_epoch_seconds, time_to_target_seconds, final_accuracy)")
    comparison.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    comparison.add_argument("--across-machines", action="store_true",
                            help="set rows of different machines side by side (refused otherwise: their speeds are "
                                 "not comparable)")
    comparison.add_argument("--fail-on-regression", type=float, metavar="PCT",
                            help="exit 1 when a row is worse by more than PCT percent beyond noise")
    comparison.set_defaults(func=command_compare)

    merge = commands.add_parser("merge", help="combine runs of several machines or times into one folder")
    merge.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or earlier merges) to combine")
    merge.add_argument("--out", required=True, metavar="DIR", help="the merged folder (new or empty)")
    merge.add_argument("--prefer", choices=["first", "last", "newest"],
                       help="which row wins where two runs hold the same cell, machine and repeat: the run named "
                            "first, the one named last, or the newer session (refused without it)")
    merge.set_defaults(func=command_merge)

    fetch = commands.add_parser("fetch", help="find or download a dataset, verify it and cache its arrays")
    fetch.add_argument("dataset", nargs="?", default="mnist", choices=["mnist", "fashion_mnist"])
    fetch.add_argument("--data-dir", help="folder holding the four IDX files (.gz or raw)")
    fetch.set_defaults(func=command_fetch)

    gpu_check = commands.add_parser("gpu-check", help="prove every GPU path in a few minutes (skips them without "
                                    "a GPU, saying why); one folder holds it all")
    gpu_check.add_argument("--out", help="the check's folder (default: results/<UTC time>-gpu-check)")
    gpu_check.add_argument("--quiet", action="store_true", help="no progress lines")
    gpu_check.set_defaults(func=command_gpu_check)

    site = commands.add_parser("site", help="a static HTML site of every run: tables, interactive plots, history")
    site.add_argument("paths", nargs="+", metavar="RUN_OR_RESULTS_DIR",
                      help="run folders, or results folders holding them (e.g. results)")
    site.add_argument("--out", required=True, metavar="DIR", help="the site's folder (new, empty, or an earlier site)")
    site.set_defaults(func=command_site)

    select = commands.add_parser("select", help="each framework's best setting of a sweep, chosen on validation")
    select.add_argument("run", metavar="RUN", help="a sweep's folder (a config with [sweep])")
    select.set_defaults(func=command_select)

    final = commands.add_parser("final", help="train a sweep's chosen settings again and test them once")
    final.add_argument("run", metavar="RUN", help="a sweep's folder; its selection is made again from runs.csv")
    final.add_argument("--repeats", type=int, help="repeats per setting, each with a new seed (default: the sweep's)")
    final.add_argument("--out", help="result folder (default: results/<UTC time>-<sweep name>-final)")
    final.add_argument("--data-dir", help="folder holding the four IDX files (.gz or raw)")
    final.add_argument("--quiet", action="store_true", help="no progress bar")
    final.set_defaults(func=command_final, resume=None, allow_mixed=False, ray_address="auto")

    show = commands.add_parser("show", help="draw what each framework learned: weights, confusion, mistakes")
    show.add_argument("run", metavar="RUN", help="a run folder whose config had save_params = true")
    show.add_argument("--data-dir", help="folder holding the four IDX files (.gz or raw)")
    show.set_defaults(func=command_show)

    report = commands.add_parser("report", help="rebuild summary.md of a run folder")
    report.add_argument("directory", help="a run folder, e.g. results/<time>-quick")
    report.set_defaults(func=command_report)
    return parser


def stop_on_sigterm() -> None:
    """Treat SIGTERM (a timeout, a job scheduler) like Ctrl-C: stop the worker, keep what finished."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
