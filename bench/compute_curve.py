"""What compute buys on the embedded benchmark: the share of the domain gap closed against the
number of training steps per stage.

    python bench/compute_curve.py [--config conf/default.yaml] [--steps 600,1200,2400] [--seeds 0] [key=value ...]

Runs the whole pipeline (baselines included) once per step count and seed, each in
bench/results/compute_curve/steps_<n>/seed_<s> (rerunning resumes), with ``train.steps`` set to
that count (students follow it; evaluation and checkpoints every third / sixth of a stage), and
writes per step count the mIoU of source_only, the teacher, the final round and the oracle and the
gap closed, (final - source_only) / (oracle - source_only), to bench/results/compute_curve.md and
.json. 2400 steps is conf/long.yaml.
"""

import argparse
import json
import time
from pathlib import Path

import ray

from common import mean_std
from udas_ray.cli import DEFAULT_CONFIG
from udas_ray.cluster import connect
from udas_ray.config import load_config
from udas_ray.data.splits import load_splits
from udas_ray.driver import driver_actor

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("source_only", "teacher", "final", "oracle", "gap_closed")


def final_round(rows: dict) -> str:
    return [k for k in rows if k.startswith("round_")][-1]


def table(results: dict) -> str:
    """``results[steps][seed]`` = {source_only, teacher, final, oracle, gap_closed, minutes}."""
    lines = ["| steps per stage | seeds | source_only | teacher | final round | oracle | gap closed (%) | minutes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for steps, per_seed in sorted(results.items()):
        runs = list(per_seed.values())
        cells = [mean_std([r[c] for r in runs]) for c in COLUMNS]
        lines.append(f"| {steps} | {', '.join(map(str, per_seed))} | " + " | ".join(cells)
                     + f" | {mean_std([r['minutes'] for r in runs])} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--steps", default="600,1200,2400")
    p.add_argument("--seeds", default="0")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    base = load_config(args.config, args.overrides)
    connect(base)
    Driver = driver_actor(base.scaling)
    results = {}
    for steps in [int(s) for s in args.steps.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            cfg = base.override({"train.steps": steps, "train.eval_every": max(1, steps // 3),
                                 "train.checkpoint_every": max(1, steps // 6), "self_training.steps": None,
                                 "run.seed": seed, "run.baselines": True,
                                 "run.dir": str(RESULTS / "compute_curve" / f"steps_{steps}" / f"seed_{seed}"),
                                 "mlflow.tracking_uri": f"sqlite:///{RESULTS / 'compute_curve' / 'mlflow.db'}"})
            start = time.time()
            summary = ray.get(Driver.remote(cfg.to_dict(), load_splits(cfg)).run.remote())
            rows = {r["name"]: r["miou"] for r in summary["stages"]}
            so, oracle, final = rows["source_only"], rows["oracle"], rows[final_round(rows)]
            results.setdefault(steps, {})[seed] = {
                "source_only": so, "teacher": rows["teacher"], "final": final, "oracle": oracle,
                "gap_closed": 100 * (final - so) / (oracle - so), "minutes": (time.time() - start) / 60}
            print(steps, seed, json.dumps(results[steps][seed]), flush=True)
    text = table(results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compute_curve.md").write_text(text + "\n")
    (RESULTS / "compute_curve.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
