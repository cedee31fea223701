"""The paper's data-dependency experiment: SL vs UDAS mIoU over labeled-target budgets.

    python jobs/data_dependency.py [--config conf/default.yaml] [data_dependency.budgets=[all,500,0]] [key=value ...]

Each budget is a full pipeline in RUN_DIR/budget_N (the supervised baseline on the N labeled
images, then the teacher and the rounds with them; N=0 is pure UDA and has no SL point).
Writes RUN_DIR/data_dependency.png (both curves) and RUN_DIR/data_dependency.json (the table),
and logs both to MLflow. Interrupted, it resumes budget by budget like jobs/self_train.py.
"""

import sys
from pathlib import Path

from udas_ray import budgets, cli, cluster, tracking
from udas_ray.data.splits import load_splits, read_target
from udas_ray.driver import driver_actor
from udas_ray.summary import final_stage


@cli.entry_point
def main(argv=None):
    args = cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = cli.config_from(args)
    available = len(read_target(cfg, "train"))
    counts = budgets.resolve_budgets(cfg.data_dependency.budgets, available)  # fails before any training
    run_dir = Path(cfg.run.dir).resolve()
    # One tracking store for all budgets, so `make ui RUN=<run.dir>` compares them.
    configs = {n: cfg.override({"data.target.labeled": n, "run.supervised": True, "run.baselines": False,
                                "run.dir": str(run_dir / f"budget_{n}"), "mlflow.tracking_uri": cfg.tracking_uri})
               for n in counts}
    splits = {n: load_splits(c) for n, c in configs.items()}
    print(f"labeled-target budgets: {counts} of {available} target-train images")

    import ray

    cluster.connect(cfg)
    Driver = driver_actor()
    table = []
    for n in counts:
        result = ray.get(Driver.remote(configs[n].to_dict(), splits[n]).run.remote())
        rows = {r["name"]: r for r in result["stages"]}
        final = final_stage(result["stages"])
        table.append({"labeled": n, "supervised": rows.get("supervised", {}).get("miou"),
                      "udas": rows[final]["miou"], "udas_stage": final, "run_dir": result["run_dir"]})
    png = budgets.plot(table, run_dir / "data_dependency.png",
                       f"{cfg.data.source.format} -> {cfg.data.target.format}: mIoU vs labeled target")
    js = budgets.write_table(table, run_dir / "data_dependency.json")
    uri = cfg.tracking_uri
    try:
        run_id = tracking.create_run(uri, cfg.mlflow.experiment, f"data dependency {run_dir.name}")
        logger = tracking.RunLogger(uri, run_id)
        for row in table:
            logger.metrics({"udas_miou": row["udas"], "sl_miou": row["supervised"]}, step=row["labeled"])
        logger.artifact(png)
        logger.artifact(js)
        logger.finish()
    except Exception as exc:  # the table and plot are on disk either way
        print(f"MLflow logging failed ({exc}); results are in {run_dir}")
    print()
    print(budgets.format_table(table))
    print(f"\nwrote {png} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
