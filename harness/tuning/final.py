"""bench.py final: the settings a sweep chose on validation, trained again and tested once.

The final run is an ordinary run folder whose config is the sweep's with the chosen settings as
`[sweep] mode = "selected"` (one setting per framework, variant and model, and the sweep folder it
came from), and three changes: the whole training set (no hold-out: the setting is chosen, so the
images held out to choose it train the model now), the test set evaluated once, after the last epoch
(evaluate = "end"), and new seeds (after the sweep's), so that no repeat is the one that won the
selection by its luck. Its cells save their parameters (save_params), for `bench.py show`.
"""

from __future__ import annotations

from pathlib import Path

from harness.config import Config, resolve
from harness.errors import UserError
from harness.results.records import read_json
from harness.results.selection import select


def final_config(directory: Path, repeats: int | None = None) -> Config:
    directory = Path(directory)
    selection = select(directory)
    if not selection["chosen"]:
        reasons = "; ".join(f"{e['framework']}/{e['variant']} {e['model']}: {e['why']}"
                            for e in selection["without_choice"])
        raise UserError(f"{directory} has no setting to train again ({reasons}): finish the sweep with --resume")
    saved = read_json(directory / "config.json")
    if repeats is not None and repeats < 1:
        raise UserError(f"--repeats {repeats} must be 1 or more")
    chosen = selection["chosen"]
    frameworks = [f for f in saved["frameworks"] if any(e["framework"] == f for e in chosen)]
    raw = {k: v for k, v in saved.items() if k != "sweep"}
    raw.update(
        name=f"{saved['name']}-final",
        description=f"the settings bench.py select chose on validation in {directory}, trained on the whole "
                    "training set and evaluated once on the test set",
        **{m: {**saved[m], "train_samples": 0} for m in saved["models"]},  # every training image, as described
        validation=0, eval_split="test", evaluate="end", eval_every_steps=0, stop_at_target=False, save_params=True,
        repeats=repeats or saved["repeats"], seed=saved["seed"] + saved["repeats"],
        frameworks=frameworks, models=[m for m in saved["models"] if any(e["model"] == m for e in chosen)],
        variants={f: [v for v in saved["variants"][f] if any((e["framework"], e["variant"]) == (f, v)
                                                             for e in chosen)] for f in frameworks},
        sweep={"mode": "selected", "source": str(directory), "selected": [
            {key: e[key] for key in ("framework", "variant", "model", "setting", "accuracy", "std", "n")}
            for e in chosen]},
    )
    return resolve(raw, raw["name"])
