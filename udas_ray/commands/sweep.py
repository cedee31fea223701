"""Ray Tune search over loss weights, thresholds or any config key; writes RUN_DIR/best.yaml.

    udas-sweep [--config conf/sweep.yaml] [key=value ...]    (= python jobs/sweep.py)

The space is ``tune.space`` in the config (loguniform / uniform / choice / grid per key). ASHA
stops weak trials early on the target-val mIoU the stages report while training (or fifo);
Optuna can choose the samples (tune.search=optuna). Every trial is an MLflow run in the
sweep's experiment: compare them in `make ui RUN=<run.dir>`. Running the same command again
resumes an interrupted sweep without losing its finished trials, if its search space and base
config are the same (otherwise it is refused, naming the keys; run.fresh=true starts over).
"""

import json
import sys
from pathlib import Path

import yaml

from udas_ray import atomic, cli, cluster
from udas_ray.data.splits import load_splits
from udas_ray.config import config_path
from udas_ray.driver import CONFIG_FILE, MANIFEST_FILE, check_run_dir
from udas_ray.errors import UdasError
from udas_ray.sweep import (METRIC, check_resume, parse_space, record_inputs, reset_sweep_dir, run_trial,
                            trial_config, tune_space)

SWEEP_CONFIG = config_path("sweep")  # the shipped conf/sweep.yaml


def experiment_dir(run_dir: Path) -> Path:
    return run_dir / "tune" / "sweep"


def build_tuner(cfg, parsed, run_dir: Path):
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    t = cfg.tune
    trainable = ray.tune.with_resources(run_trial, {"cpu": t.cpus_per_trial})
    experiment = experiment_dir(run_dir)
    if ray.tune.Tuner.can_restore(experiment):  # main checked its space and base config
        print(f"resuming the sweep in {experiment}")
        return ray.tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
    record_inputs(run_dir, cfg)  # what a resume must match
    search = None
    if t.search == "optuna":
        if any(kind == "grid" for kind, _ in parsed.values()):
            raise UdasError("tune.search=optuna cannot take grid distributions; use choice instead")
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(seed=cfg.run.seed)
    scheduler = (ASHAScheduler(grace_period=t.grace_period, reduction_factor=t.reduction_factor, max_t=10_000)
                 if t.scheduler == "asha" else FIFOScheduler())
    # Every trial writes into the sweep's tracking store: one experiment to compare them in.
    base = cfg.override({"tune.space": {}, "mlflow.tracking_uri": cfg.tracking_uri}).to_dict()
    return ray.tune.Tuner(
        trainable,
        param_space={"base": base, "params": tune_space(parsed), "trials_dir": str(run_dir / "trials"),
                     "sweep_name": run_dir.name},
        tune_config=ray.tune.TuneConfig(metric=METRIC, mode="max", num_samples=t.num_samples,
                                        max_concurrent_trials=t.max_concurrent_trials,
                                        scheduler=scheduler, search_alg=search),
        run_config=ray.tune.RunConfig(name="sweep", storage_path=str(run_dir / "tune")),
    )


def close_stopped_trials(cfg, run_dir: Path) -> None:
    """Trials ASHA stopped (or that failed) leave MLflow runs RUNNING: mark them KILLED."""
    from udas_ray import tracking

    for manifest_path in (run_dir / "trials").glob(f"*/{MANIFEST_FILE}"):
        manifest = json.loads(manifest_path.read_text())
        unfinished = [s.get("mlflow_run_id") for s in manifest["stages"].values() if s.get("status") != "done"]
        if not unfinished:
            continue
        for run_id in [manifest.get("parent_run_id"), *unfinished]:
            if run_id and tracking.run_exists(cfg.tracking_uri, run_id):
                tracking.RunLogger(cfg.tracking_uri, run_id).finish("KILLED")


@cli.entry_point
def main(argv=None):
    args = cli.parser(__doc__.splitlines()[0], default_config=SWEEP_CONFIG).parse_args(argv)
    cfg = cli.config_from(args)
    parsed = parse_space(cfg)  # every bad key, bound or list fails here, before any trial
    if cfg.scaling.num_workers < 1:
        raise UdasError("scaling.num_workers=0 (training inside the driver) does not work inside a Tune trial; "
                        "use scaling.num_workers=1 or more")
    check_run_dir(cfg)
    run_dir = Path(cfg.run.dir).resolve()
    if cfg.run.fresh:
        reset_sweep_dir(run_dir)
    else:
        from ray.tune import Tuner

        if Tuner.can_restore(experiment_dir(run_dir)):
            check_resume(run_dir, cfg)
    for line in load_splits(cfg).describe():
        print(line)
    cluster.connect(cfg, dashboard=True)
    cluster.check_fits(cfg, reserved=cfg.tune.cpus_per_trial, what="the trial itself (tune.cpus_per_trial)")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run_dir / CONFIG_FILE, cfg.to_yaml())
    results = build_tuner(cfg, parsed, run_dir).fit()

    close_stopped_trials(cfg, run_dir)
    rows = []
    for r in results:
        params = (r.config or {}).get("params", {})
        rows.append({"trial": Path(r.path).name if r.path else None, **params,
                     "miou": (r.metrics or {}).get(METRIC), "finished": bool((r.metrics or {}).get("pipeline_finished")),
                     "error": str(r.error).splitlines()[0] if r.error else None})
    finished = [row for row in rows if row["finished"] and row["miou"] is not None]
    if not finished:
        raise UdasError(f"{run_dir}: no trial finished; see the trial errors in {run_dir / 'tune'}")
    best = max(finished, key=lambda row: row["miou"])
    keys = list(parsed)
    print("\n" + "  ".join(f"{k:>22}" for k in keys) + f"  {'mIoU':>7}  status")
    for row in sorted(rows, key=lambda row: -(row["miou"] or -1)):
        status = "finished" if row["finished"] else ("error" if row["error"] else "stopped early")
        values = "  ".join(f"{row.get(k)!s:>22.22}" for k in keys)
        print(f"{values}  {row['miou'] if row['miou'] is not None else float('nan'):7.2f}  {status}")
    best_cfg = trial_config(cfg.override({"tune.space": {}}).to_dict(), {k: best[k] for k in keys},
                            str(run_dir / "best"))
    atomic.write_text(run_dir / "best.yaml", "# the best trial of " + str(run_dir) + f": mIoU {best['miou']:.2f}\n"
                                       + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
    atomic.write_json(run_dir / "sweep.json", {"metric": METRIC, "best": best, "trials": rows})
    print("\nbest: " + ", ".join(f"{k}={best[k]}" for k in keys) + f"  mIoU {best['miou']:.2f}")
    print(f"wrote {run_dir / 'best.yaml'}; run it with: udas-train --config {run_dir / 'best.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
