"""The paper's data-dependency experiment: SL vs UDAS mIoU over labeled-target budgets.

    udas-budgets [--config conf/default.yaml] [data_dependency.budgets=[all,500,0]] [key=value ...]
    (= python jobs/data_dependency.py)

Each budget is a full pipeline in RUN_DIR/budget_N (the supervised baseline on the N labeled
images, then the teacher and the rounds with them; N=0 is pure UDA and has no SL point, and it
also trains the budget-free baselines, source-only and oracle, when target-train has labels).
With run.seeds=[...] every budget runs once per seed (RUN_DIR/budget_N/seed_S) and the table
shows mean ± std. Writes
RUN_DIR/data_dependency.png (SL and UDAS curves, source-only and oracle lines, UDAS - SL per
budget) and RUN_DIR/data_dependency.json (the table), and logs both to MLflow. Interrupted, it
resumes budget by budget like udas-train.
"""

import sys
from pathlib import Path

from udas_ray import budgets, cli, cluster, preflight, tracking
from udas_ray.data.splits import load_splits, read_target
from udas_ray.driver import driver_actor
from udas_ray.runlock import RunLock


@cli.entry_point
def main(argv=None):
    args = cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = cli.config_from(args)
    target_train = read_target(cfg, "train")
    available = len(target_train)
    counts = budgets.resolve_budgets(cfg.data_dependency.budgets, available)  # fails before any training
    run_dir = Path(cfg.run.dir).resolve()
    seeds = cfg.run.seeds or [cfg.run.seed]

    def budget_config(n: int, seed: int):
        folder = run_dir / f"budget_{n}" / (f"seed_{seed}" if cfg.run.seeds else "")
        # One tracking store for all budgets, so `make ui RUN=<run.dir>` compares them.
        return cfg.override({"data.target.labeled": n, "run.seed": seed, "run.seeds": None,
                             "run.supervised": n > 0, "run.baselines": n == 0 and target_train.has_labels,
                             "run.dir": str(folder), "mlflow.tracking_uri": cfg.tracking_uri})

    configs = {(n, seed): budget_config(n, seed) for n in counts for seed in seeds}
    splits = {key: load_splits(c) for key, c in configs.items()}
    preflight.check([(configs[key], splits[key]) for key in configs])
    print(f"labeled-target budgets: {counts} of {available} target-train images, seeds {seeds}")

    with RunLock(run_dir):  # a second job on this run.dir fails here, before any Ray work
        results = run_budgets(cfg, configs, splits)
    table, baselines = budgets.table_rows(results)
    png = budgets.plot(table, baselines, run_dir / "data_dependency.png",
                       f"{cfg.data.source.format} -> {cfg.data.target.format}: mIoU vs labeled target")
    js = budgets.write_table(table, baselines, run_dir / "data_dependency.json")
    if cfg.tracking_uri:  # else mlflow.enabled=false
        log_to_mlflow(cfg, table, png, js, run_dir)
    print()
    print(budgets.format_table(table, baselines))
    print(f"\nwrote {png} and {js}")
    return 0


def run_budgets(cfg, configs: dict, splits: dict) -> dict:
    """One pipeline per (budget, seed), one after the other; their summaries."""
    import ray

    cluster.connect(cfg)  # one pipeline at a time
    Driver = driver_actor(cfg.scaling)
    return {key: ray.get(Driver.remote(configs[key], splits[key]).run.remote()) for key in configs}


def log_to_mlflow(cfg, table: list[dict], png: Path, js: Path, run_dir: Path) -> None:
    """The budgets' mIoU as one MLflow run's metrics, stepped by the labeled count, with the table files."""
    uri = cfg.tracking_uri
    try:
        run_id = tracking.create_run(uri, cfg.mlflow.experiment, f"data dependency {run_dir.name}")
        logger = tracking.RunLogger(uri, run_id)
        for row in table:
            values = {"udas_miou": row["udas"], "sl_miou": row["supervised"], "udas_minus_sl": row["delta"]}
            logger.metrics({k: v for k, v in values.items() if v is not None}, step=row["labeled"])
        logger.artifact(png)
        logger.artifact(js)
        logger.finish()
    except Exception as exc:  # the table and plot are on disk either way
        print(f"MLflow logging failed ({exc}); results are in {run_dir}")


if __name__ == "__main__":
    sys.exit(main())
