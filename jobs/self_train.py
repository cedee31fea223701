"""The whole UDAS pipeline: [source-only] -> teacher -> R x (pseudo-labels -> student) -> [oracle].

    python jobs/self_train.py [--config conf/default.yaml] [key=value ...]
    ray job submit --working-dir . -- python jobs/self_train.py run.dir=/shared/runs/x

Prints every stage's target-val mIoU and pixel accuracy and writes RUN_DIR/summary.json.
Run it again with the same run.dir to resume after an interruption.
"""

import sys

from udas_ray import cli, cluster, summary
from udas_ray.data.splits import load_splits
from udas_ray.driver import check_run_dir, driver_actor


@cli.entry_point
def main(argv=None):
    args = cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = cli.config_from(args)
    # Everything that can be wrong with the input fails here, before any Ray work.
    check_run_dir(cfg)
    splits = load_splits(cfg)
    for line in splits.describe():
        print(line)

    import ray

    cluster.connect(cfg)
    driver = driver_actor().remote(cfg.to_dict(), splits)
    result = ray.get(driver.run.remote())
    print()
    print(summary.table(result))
    print(f"\nsummary: {result['run_dir']}/{summary.SUMMARY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
