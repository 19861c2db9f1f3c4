"""summary.md's words on a sweep: what was evaluated on, each setting's accuracy, and where a final run's
settings came from."""

from __future__ import annotations

import pandas as pd

from harness.tuning import sweep
from harness.results.records import sweep_columns
from harness.results.stats import GROUP

TOP_TRIALS = 5  # trials per study listed in a search's table


def setting_columns(rows: pd.DataFrame) -> list[str]:
    """The sweep columns that hold a value in these rows (one model's: other models' keys stay blank)."""
    return [c for c in sweep_columns(rows.columns) if rows[c].notna().any()]


def _accuracy(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if len(values) < 2:
        return f"{100 * values.iloc[0]:.2f}" if len(values) else "–"
    return f"{100 * values.mean():.2f} ± {100 * values.std(ddof=1):.2f}"


def _setting(row, keys: list[str]) -> str:
    return sweep.describe({k[len(sweep.PREFIX):]: sweep.parse(row[k]) for k in keys if pd.notna(row[k])})


def sweep_lines(rows: pd.DataFrame, config: dict) -> list[str]:
    """For a grid, zip or search: what the accuracy is measured on, then each setting's (or the best trials')."""
    settings = config["sweep"]
    keys = setting_columns(rows)
    if not keys:
        return []
    held = config.get("validation", 0)
    where = (f"the validation hold-out (the last {held:,} training images, never trained on)"
             if config.get("eval_split") == "validation" else "the test set")
    lines = [f"A sweep ({_mode_text(settings, rows['model'].iloc[0])}): accuracies are the final accuracy on {where}; the test set is "
             "left for the settings chosen: `bench.py select RUN` names each row's best, `bench.py final RUN` trains "
             "it again and tests it once.", ""]
    if settings["mode"] == "optuna":
        return lines + [f"Each study's {TOP_TRIALS} best trials (mean ± sd over the repeats):", "",
                        best_trials(rows, keys).to_markdown(index=False), ""]
    return lines + ["Mean ± sd over the repeats, in %; each column's best in bold:", "",
                    setting_table(rows, keys).to_markdown(index=False), ""]


def _mode_text(settings: dict, model: str) -> str:
    if settings["mode"] == "optuna":
        return f"an Optuna search, {settings['sampler']} sampler, {settings['trials']} trials per study"
    axes = [k for k in settings if k != "mode" and sweep.reaches(k, model)]
    return f"{'every combination of' if settings['mode'] == 'grid' else 'side by side,'} {', '.join(axes)}"


def setting_table(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One line per setting, one column per framework variant: the mean accuracy over the repeats."""
    frame = rows.assign(exact=rows[keys].astype(str).agg(" ".join, axis=1),
                        row=rows["framework"] + "/" + rows["variant"])
    labels = {exact: _setting(row, keys) for exact, row in zip(frame["exact"], frame.to_dict("records"))}
    groups = frame.groupby(["exact", "row"], sort=False)["final_accuracy"]
    means, texts = groups.apply(lambda v: pd.to_numeric(v, errors="coerce").mean()), groups.apply(_accuracy)
    table = texts.unstack("row")
    for column in table.columns:
        best = means.xs(column, level="row").idxmax()
        table.loc[best, column] = f"**{table.loc[best, column]}**"
    table = table.reindex(list(labels)).fillna("–")
    table.index = [labels[exact] for exact in table.index]
    return table.rename_axis("setting").reset_index()


def best_trials(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per study, its best trials by mean accuracy: trial, setting, accuracy."""
    found = []
    for row, group in rows.groupby(["framework", "variant"], sort=False):
        trials = group.groupby(keys, sort=False, dropna=False)
        scored = sorted(((pd.to_numeric(t["final_accuracy"], errors="coerce").mean(), t) for _, t in trials),
                        key=lambda pair: -pair[0])
        for mean, trial in scored[:TOP_TRIALS]:
            first = trial.iloc[0]
            found.append({"framework": row[0], "variant": row[1],
                          "trial": int(pd.to_numeric(trial["trial"], errors="coerce").min())
                          if "trial" in trial else "–",
                          "setting": _setting(first, keys), "accuracy %": _accuracy(trial["final_accuracy"])})
    return pd.DataFrame(found)


def final_lines(rows: pd.DataFrame, config: dict) -> list[str]:
    """For a final run: where its settings came from, and each one's validation accuracy beside its test accuracy."""
    settings = config["sweep"]
    keys = setting_columns(rows)
    chosen = {(e["framework"], e["variant"], e["model"]): e for e in settings["selected"]}
    table = []
    for (framework, variant), group in rows.groupby(["framework", "variant"], sort=False):
        entry = chosen.get((framework, variant, group["model"].iloc[0]), {})
        validation = entry.get("accuracy")
        spread = f" ± {100 * entry['std']:.2f}" if entry.get("std") is not None else ""
        table.append({"framework": framework, "variant": variant, "setting": _setting(group.iloc[0], keys),
                      "validation accuracy % (sweep)": f"{100 * validation:.2f}{spread}" if validation else "–",
                      "test accuracy % (final)": _accuracy(group["final_accuracy"]), "n": len(group)})
    return [f"The settings `bench.py select` chose in `{settings['source']}` by the mean final validation accuracy "
            f"over its repeats, trained again with new seeds on the whole training set and evaluated once, on the "
            "test set, after the last epoch (evaluate = \"end\"):", "", pd.DataFrame(table).to_markdown(index=False),
            ""]


def group_columns(rows: pd.DataFrame) -> list[str]:
    """GROUP and the setting: what one row of a sweep's tables is."""
    return GROUP + setting_columns(rows)
