"""Ray Tune sweeps over any config keys: the search space in YAML, one pipeline per trial.

    tune:
      num_samples: 4
      space:
        loss.lambda_adv: {loguniform: [1.0e-4, 1.0e-2]}
        loss.lambda_cm: {uniform: [0.5, 2.0]}
        pseudo.threshold: {choice: [0.8, 0.9, 0.95]}
        self_training.rounds: {grid: [1, 2]}

Each trial runs the whole self-training pipeline in ``RUN_DIR/trials/<trial>`` and is an MLflow
run (with its stages nested under it) in the sweep's experiment, its swept values as params.
Every target-val evaluation of every stage reaches Tune as ``miou``, so ASHA can stop a weak
trial while its teacher is still training; the trial's last ``miou`` is its final stage's.

Tune's restore resumes an interrupted sweep with the space and base config it started with,
whatever the command line says now; so the first start records them (``sweep_inputs.json``,
:func:`record_inputs`) and a resume with another space or base config is refused naming the
keys (:func:`check_resume`); ``run.fresh=true`` starts the sweep over (:func:`reset_sweep_dir`).
"""

from __future__ import annotations

import difflib
import json
import math
import shutil
from pathlib import Path
from typing import Any

from udas_ray.config import Config, flatten
from udas_ray.errors import UdasError

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "grid")
METRIC = "miou"
INPUTS_FILE = "sweep_inputs.json"
# what a fresh sweep removes; mlflow.db (the trials' history) stays
SWEEP_OUTPUTS = ("tune", "trials", "best.yaml", "sweep.json", INPUTS_FILE)


def _number(value, where: str) -> float:
    try:
        number = float(value)  # YAML reads 1e-4 (no dot) as a string
    except (TypeError, ValueError):
        raise UdasError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise UdasError(f"{where}: {value!r} is not a finite number")
    return number


def parse_space(cfg: Config) -> dict[str, tuple[str, list]]:
    """``{key: (distribution, arguments)}``, every key and every bound checked against the schema."""
    space = cfg.tune.space
    if not space:
        raise UdasError("tune.space is empty; name at least one config key to search, e.g. "
                        "tune.space={loss.lambda_adv: {loguniform: [1.0e-4, 1.0e-2]}}")
    leaves = flatten(cfg.to_dict())
    parsed = {}
    for key, spec in space.items():
        where = f"tune.space.{key}"
        if key not in leaves or key.startswith("tune."):
            guess = difflib.get_close_matches(key, [k for k in leaves if not k.startswith("tune.")], n=1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            raise UdasError(f"tune.space: unknown config key {key!r}{hint}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise UdasError(f"{where}: give one of {', '.join(DISTRIBUTIONS)}, e.g. {{uniform: [0.5, 2.0]}}")
        kind, args = next(iter(spec.items()))
        if kind in ("loguniform", "uniform"):
            if not isinstance(args, list) or len(args) != 2:
                raise UdasError(f"{where}: {kind} takes [low, high]")
            low, high = (_number(a, where) for a in args)
            if low >= high:
                raise UdasError(f"{where}: the low bound {low:g} is not below the high bound {high:g}")
            if kind == "loguniform" and low <= 0:
                raise UdasError(f"{where}: loguniform needs a positive low bound, got {low:g}")
            args = [low, high]
        elif not isinstance(args, list) or not args:
            raise UdasError(f"{where}: {kind} needs a non-empty list of values")
        for value in args:  # each bound or option must be a valid value of the key
            try:
                cfg.override({key: value})
            except UdasError as exc:
                raise UdasError(f"{where}: {value!r} is not a valid value: {exc}") from None
        parsed[key] = (kind, list(args))
    return parsed


def tune_space(parsed: dict[str, tuple[str, list]]) -> dict[str, Any]:
    from ray import tune

    make = {"loguniform": lambda a: tune.loguniform(*a), "uniform": lambda a: tune.uniform(*a),
            "choice": tune.choice, "grid": tune.grid_search}
    return {key: make[kind](args) for key, (kind, args) in parsed.items()}


def trial_config(base: dict, params: dict[str, Any], trial_dir: str) -> Config:
    cfg = Config.model_validate(base)
    return cfg.override({**params, "run.dir": trial_dir, "run.fresh": False, "tune.space": {}})


def _stage_reports():
    """A Ray Train callback that forwards each stage's target-val evaluations to Tune as ``miou``."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class StageEvaluations(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            m = metrics[0]
            if "val_miou" in m:
                super().after_report(run_context, [{METRIC: m["val_miou"], "stage_step": m.get("step")}], None)

    return [StageEvaluations()]


def run_trial(config: dict) -> None:
    """The Tune function trainable: the whole pipeline for one sampled configuration."""
    from ray import tune

    from udas_ray.data.splits import load_splits
    from udas_ray.driver import Pipeline

    trial_dir = str(Path(config["trials_dir"]) / tune.get_context().get_trial_name())
    cfg = trial_config(config["base"], config["params"], trial_dir)
    pipeline = Pipeline(cfg, load_splits(cfg, check_files=False), train_callbacks=_stage_reports,
                        run_name=f"trial {tune.get_context().get_trial_name()}",
                        tags={"sweep": config["sweep_name"], **{f"swept.{k}": str(v) for k, v in config["params"].items()}})
    result = pipeline.run()
    final = result["stages"][-1]
    tune.report({METRIC: final["miou"], "final_stage": final["name"], "pixel_accuracy": final["pixel_accuracy"],
                 "run_dir": trial_dir, "pipeline_finished": True})


# ---------------------------------------------------------------------------- resuming
def sweep_inputs(cfg: Config) -> dict:
    """The search space and the base config (flat; without the keys a resume may change: the
    driver's, except the ``tune`` section, which Tune's restore would silently keep)."""
    from udas_ray.driver import RESUMABLE_KEYS

    ignore = (*(k for k in RESUMABLE_KEYS if k != "tune"), "tune.space", "tune.cpus_per_trial")
    base = {k: v for k, v in cfg.flat().items() if not any(k == p or k.startswith(p + ".") for p in ignore)}
    return {"space": cfg.tune.space, "base": base}


def record_inputs(run_dir: str | Path, cfg: Config) -> None:
    from udas_ray.atomic import write_json

    write_json(Path(run_dir) / INPUTS_FILE, sweep_inputs(cfg))


def input_changes(recorded: dict, current: dict) -> list[str]:
    """``["tune.space.x: a -> b", "loss.y: 1 -> 2", ...]``; a base key only one side has (the
    schema changed) is not a change, a space key is."""
    old, new = recorded.get("space", {}), current["space"]
    out = [f"tune.space.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
           if old.get(k) != new.get(k)]
    old, new = recorded.get("base", {}), current["base"]
    out += [f"{k}: {old[k]!r} -> {new[k]!r}" for k in new if k in old and old[k] != new[k]]
    return out


def check_resume(run_dir: str | Path, cfg: Config) -> None:
    """Refuse to resume the sweep in ``run_dir`` with another space or base config (naming the
    keys). A sweep started before its inputs were recorded gets today's recorded."""
    path = Path(run_dir) / INPUTS_FILE
    if not path.is_file():
        record_inputs(run_dir, cfg)
        return
    changes = input_changes(json.loads(path.read_text()), sweep_inputs(cfg))
    if changes:
        shown = ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise UdasError(f"{run_dir} holds a sweep over another search space or base config ({shown}); resuming "
                        "it would run the old one: choose another run.dir, or pass run.fresh=true to start it over")


def reset_sweep_dir(run_dir: str | Path) -> None:
    """``run.fresh``: forget the trials, Tune's state and the results of an earlier sweep."""
    for name in SWEEP_OUTPUTS:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
