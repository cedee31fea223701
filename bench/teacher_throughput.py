"""Teacher-stage throughput: Ray Train fed by Ray Data vs a plain single-process PyTorch loop.

    python bench/teacher_throughput.py [--steps 300] [--out bench/results/teacher_throughput.json] [key=value ...]

Both run the same teacher (CutMix with labeled target + adversarial term: three forward
passes and a discriminator step per iteration) on the same model, data and cores, one after
the other in this run. Reported:
  * steps/s of the training loop (after a warm-up), Ray over plain: goal >= 0.9x
  * the share of step time the Ray trainer waited for its next batch: goal < 5 %
  * wall-clock seconds including Ray Train's fixed start/stop cost
  * GFLOP/s of each loop: the FLOPs of one training step (counted by the loop on its first
    step, udas_ray.flops) x its steps/s, and MFU against the machine's peak (bench/peak.py's
    JSON, else measured now), which the loops also use (train.peak_gflops). A rate above that
    peak stops the benchmark with both numbers (bench/common.py).
Results are printed and written to bench/results/teacher_throughput.json (--out) with the CPU,
torch and Ray versions, thread counts and date. Runs under 100 steps log every 5 steps, so that a
quick check (--steps 20) still has windows after the warm-up one.
"""

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from common import RESULTS, check_peak, machine_peak, metadata, write_result
from udas_ray.cli import DEFAULT_CONFIG
from udas_ray.cluster import connect
from udas_ray.config import load_config
from udas_ray.data.splits import load_splits
from udas_ray.stages import kinds, segment
from udas_ray.stages.runtime import read_history, threads_for


def rate_after_warmup(history: list[dict]) -> tuple[float, float]:
    """Mean steps/s and data-wait share over the log windows after the first (warm-up) one."""
    windows = [h for h in history if "steps_per_s" in h]
    windows = windows[1:] or windows
    return (sum(h["steps_per_s"] for h in windows) / len(windows),
            sum(h["data_wait_share"] for h in windows) / len(windows))


def flops_per_step(history: list[dict]) -> int:
    """The FLOPs of one training step, as the loop counted them on its first step."""
    return next(h["flops_per_step"] for h in history if "flops_per_step" in h)


def main():
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default=str(RESULTS / "teacher_throughput.json"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    log_every = 25 if args.steps >= 100 else 5
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [
            f"run.dir={tmp}", "data.target.labeled=30", f"train.steps={args.steps}",
            f"train.eval_every={args.steps}", f"train.checkpoint_every={args.steps}", f"train.log_every={log_every}",
            "scaling.num_workers=1", *args.overrides])
        # The plain loop gets the CPUs of the Ray worker and its data actor together.
        threads = threads_for(cfg.scaling.cpus_per_worker + cfg.scaling.data_cpus)
        worker_threads = threads_for(cfg.scaling.cpus_per_worker)
        peak = machine_peak(max(threads, worker_threads))
        if cfg.train.peak_gflops is None:  # the loops' MFU against the same peak as this result's
            cfg = cfg.override({"train.peak_gflops": peak["gflops_per_s"]})
        splits = load_splits(cfg, check_files=False)
        spec = kinds.build_spec(cfg, splits, "teacher", "teacher", Path(tmp) / "teacher")
        # Every slot of the log windows feeds the rate; the final eval is outside the windows.
        torch.set_num_threads(threads)
        start = time.perf_counter()
        segment.run_plain(cfg, replace(spec, out_dir=f"{tmp}/plain"), checkpoint_dir=Path(tmp) / "plain-ckpt")
        plain_wall = time.perf_counter() - start
        plain_rate, plain_wait = rate_after_warmup(read_history(f"{tmp}/plain"))
        plain_flops = flops_per_step(read_history(f"{tmp}/plain"))

        connect(cfg)
        start = time.perf_counter()
        metrics = segment.run_on_ray(cfg, replace(spec, out_dir=f"{tmp}/ray"), storage=Path(tmp) / "ray")
        ray_wall = time.perf_counter() - start
        ray_rate, ray_wait = rate_after_warmup(read_history(f"{tmp}/ray"))
        ray_flops = flops_per_step(read_history(f"{tmp}/ray"))
        plain_miou = segment.read_metrics(f"{tmp}/plain")["miou"]
    plain_gflops, ray_gflops = plain_flops * plain_rate / 1e9, ray_flops * ray_rate / 1e9
    out = {
        **metadata(plain_loop=threads, ray_train_worker=worker_threads),
        "steps": args.steps, "log_every": log_every, "batch_size": cfg.train.batch_size,
        "image_size": list(cfg.data.image_size), "model": cfg.model.name,
        "ray_resources": {"workers": cfg.scaling.num_workers, "cpus_per_worker": cfg.scaling.cpus_per_worker,
                "data_workers": cfg.scaling.data_workers, "data_cpus": cfg.scaling.data_cpus},
        "plain_steps_per_s": round(plain_rate, 2), "ray_steps_per_s": round(ray_rate, 2),
        "ray_over_plain": round(ray_rate / plain_rate, 3),
        "ray_data_wait_share": round(ray_wait, 4), "plain_data_share": round(plain_wait, 4),
        "plain_wall_s": round(plain_wall, 1), "ray_wall_s": round(ray_wall, 1),
        "final_val_miou": {"plain": round(plain_miou, 2), "ray": round(metrics["miou"], 2)},
        "flops_per_step": {"plain": plain_flops, "ray": ray_flops},
        "plain_gflops_per_s": round(plain_gflops, 1), "ray_gflops_per_s": round(ray_gflops, 1),
        "peak": peak,
        "plain_mfu": round(plain_gflops / peak["gflops_per_s"], 4), "ray_mfu": round(ray_gflops / peak["gflops_per_s"], 4),
    }
    check_peak({"plain loop": plain_gflops, "Ray Train": ray_gflops}, peak, out)
    write_result(out, args.out)


if __name__ == "__main__":
    main()
