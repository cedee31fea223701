"""The whole UDAS pipeline: [source-only] -> teacher -> R x (pseudo-labels -> student) -> [oracle].

    udas-train [--config conf/default.yaml | --config NAME] [key=value ...]    (= python jobs/self_train.py)
    ray job submit --working-dir . -- python jobs/self_train.py run.dir=/shared/runs/x

Prints every stage's target-val mIoU and pixel accuracy and writes RUN_DIR/summary.json.
Run it again with the same run.dir to resume after an interruption. With run.seeds=[0,1,2]
the pipeline runs once per seed (in RUN_DIR/seed_N) and the table shows mean ± std.
"""

import sys
from pathlib import Path

from udas_ray import atomic, cli, cluster, preflight, summary
from udas_ray.data.splits import load_splits
from udas_ray.driver import CONFIG_FILE, check_run_dir, driver_actor
from udas_ray.paths import absolute_paths
from udas_ray.runlock import RunLock


def seed_configs(cfg):
    """One config per seed, each in its own run directory."""
    if not cfg.run.seeds:
        return {cfg.run.seed: cfg}
    root = Path(cfg.run.dir)
    # One tracking store for all seeds, so `make ui RUN=<run.dir>` compares them.
    return {s: cfg.override({"run.seed": s, "run.seeds": None, "run.dir": str(root / f"seed_{s}"),
                             "mlflow.tracking_uri": cfg.tracking_uri}) for s in cfg.run.seeds}


@cli.entry_point
def main(argv=None):
    args = cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    result = run_pipeline(cli.config_from(args))
    print()
    print(summary.table(result))
    print(f"\nsummary: {result['run_dir']}/{summary.SUMMARY_FILE}")
    return 0


def run_pipeline(cfg) -> dict:
    """The whole pipeline of ``cfg`` (checks, then one driver per seed under the run.dir's lock);
    the summary it also writes to RUN_DIR/summary.json. Resumes what a run.dir already holds."""
    cfg = absolute_paths(cfg)
    # Everything that can be wrong with the input fails here, before any Ray work.
    configs = seed_configs(cfg)
    if cfg.run.seeds:
        check_run_dir(cfg)
    splits = {}
    for seed, seed_cfg in configs.items():
        check_run_dir(seed_cfg)
        splits[seed] = load_splits(seed_cfg)  # the labeled subset depends on the seed
    preflight.check([(configs[seed], splits[seed]) for seed in configs])
    for line in next(iter(splits.values())).describe():
        print(line)
    with RunLock(cfg.run.dir):  # a second job on this run.dir fails here, before any Ray work
        return run_pipelines(cfg, configs, splits)


def run_pipelines(cfg, configs: dict, splits: dict) -> dict:
    """One driver actor per seed, at most run.concurrent_seeds at once; the (aggregated) summary."""
    import ray

    cluster.connect(cfg, drivers=min(cfg.run.concurrent_seeds, len(configs)))
    Driver = driver_actor(cfg.scaling)
    results, pending, queue = {}, {}, list(configs)
    while queue or pending:  # at most run.concurrent_seeds pipelines at once
        while queue and len(pending) < cfg.run.concurrent_seeds:
            seed = queue.pop(0)
            pending[Driver.remote(configs[seed], splits[seed]).run.remote()] = seed
        done, _ = ray.wait(list(pending), num_returns=1)
        results[pending.pop(done[0])] = ray.get(done[0])
    if cfg.run.seeds:
        run_dir = Path(cfg.run.dir).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run_dir / CONFIG_FILE, cfg.to_yaml())
        result = summary.aggregate(results)
        result["run_dir"] = str(run_dir)
        summary.write(run_dir, result)
        return result
    return results[cfg.run.seed]


if __name__ == "__main__":
    sys.exit(main())
