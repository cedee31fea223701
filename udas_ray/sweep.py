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
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from udas_ray.config import Config, flatten
from udas_ray.errors import UdasError

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "grid")
METRIC = "miou"


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
