"""Teacher-stage throughput: Ray Train fed by Ray Data vs a plain single-process PyTorch loop.

    python bench/teacher_throughput.py [--steps 300] [key=value ...]

Both run the same teacher (CutMix with labeled target + adversarial term: three forward
passes and a discriminator step per iteration) on the same model, data and cores, one after
the other in this run. Reported:
  * steps/s of the training loop (after a warm-up), Ray over plain: goal >= 0.9x
  * the share of step time the Ray trainer waited for its next batch: goal < 5 %
  * wall-clock seconds including Ray Train's fixed start/stop cost
Results are printed and written to bench/results/teacher_throughput.json.
"""

import argparse
import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from udas_ray.cli import DEFAULT_CONFIG
from udas_ray.cluster import connect
from udas_ray.config import load_config
from udas_ray.data.splits import load_splits
from udas_ray.stages import kinds, segment
from udas_ray.stages.runtime import read_history

RESULTS = Path(__file__).parent / "results"


def rate_after_warmup(history: list[dict]) -> tuple[float, float]:
    """Mean steps/s and data-wait share over the log windows after the first (warm-up) one."""
    windows = [h for h in history if "steps_per_s" in h]
    windows = windows[1:] or windows
    return (sum(h["steps_per_s"] for h in windows) / len(windows),
            sum(h["data_wait_share"] for h in windows) / len(windows))


def main():
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [
            f"run.dir={tmp}", "data.target.labeled=30", f"train.steps={args.steps}",
            f"train.eval_every={args.steps}", f"train.checkpoint_every={args.steps}", "train.log_every=25",
            "scaling.num_workers=1", *args.overrides])
        splits = load_splits(cfg, check_files=False)
        spec = kinds.build_spec(cfg, splits, "teacher", "teacher", Path(tmp) / "teacher")
        # Every slot of the log windows feeds the rate; the final eval is outside the windows.
        threads = max(1, round(cfg.scaling.cpus_per_worker + cfg.scaling.data_cpus))

        torch.set_num_threads(threads)
        start = time.perf_counter()
        segment.run_plain(cfg, replace(spec, out_dir=f"{tmp}/plain"), checkpoint_dir=Path(tmp) / "plain-ckpt")
        plain_wall = time.perf_counter() - start
        plain_rate, plain_wait = rate_after_warmup(read_history(f"{tmp}/plain"))

        connect(cfg)
        start = time.perf_counter()
        metrics = segment.run_on_ray(cfg, replace(spec, out_dir=f"{tmp}/ray"), storage=Path(tmp) / "ray")
        ray_wall = time.perf_counter() - start
        ray_rate, ray_wait = rate_after_warmup(read_history(f"{tmp}/ray"))
        plain_miou = segment.read_metrics(f"{tmp}/plain")["miou"]
    out = {
        "steps": args.steps, "batch_size": cfg.train.batch_size, "image_size": list(cfg.data.image_size),
        "model": cfg.model.name, "torch_threads_plain": threads,
        "ray": {"workers": cfg.scaling.num_workers, "cpus_per_worker": cfg.scaling.cpus_per_worker,
                "data_workers": cfg.scaling.data_workers, "data_cpus": cfg.scaling.data_cpus},
        "plain_steps_per_s": round(plain_rate, 2), "ray_steps_per_s": round(ray_rate, 2),
        "ray_over_plain": round(ray_rate / plain_rate, 3),
        "ray_data_wait_share": round(ray_wait, 4), "plain_data_share": round(plain_wait, 4),
        "plain_wall_s": round(plain_wall, 1), "ray_wall_s": round(ray_wall, 1),
        "final_val_miou": {"plain": round(plain_miou, 2), "ray": round(metrics["miou"], 2)},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "teacher_throughput.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
