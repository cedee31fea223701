"""Teacher-stage throughput: a plain single-process PyTorch loop vs Ray Train fed by Ray Data,
in Ray Train's in-process mode (scaling.num_workers=0, conf/default.yaml) and on one Train worker.

    python bench/teacher_throughput.py [--steps 300] [--modes plain,in_process,worker]
                                       [--out bench/results/teacher_throughput.json] [key=value ...]

All run the same teacher (with labeled target images, as given by data.target.labeled: CutMix
both ways, the labeled images whole, intra-domain ClassMix and the adversarial term; with
data.target.labeled=0 the 0-label teacher) on the same model, data and cores, one after the
other in this run. Reported per mode:
  * steps/s of the training loop (after a warm-up window), and over the plain loop: goal >= 0.9x
  * the share of step time the loop waited for its next batch: goal < 5 % under Ray
  * wall-clock seconds including Ray Train's fixed start/stop cost
  * GFLOP/s: the FLOPs of one training step (counted by the loop on its first step,
    udas_ray.flops) x its steps/s, and MFU against the machine's peak (bench/peak.py's JSON,
    else measured now), which the loops also use (train.peak_gflops). A rate above that peak
    stops the benchmark with both numbers (bench/common.py).
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

from common import RESULTS, check_peak, machine_peak, mean_of, metadata, windows_after_warmup, write_result
from udas_ray.cli import DEFAULT_CONFIG
from udas_ray.cluster import connect
from udas_ray.config import load_config
from udas_ray.data.splits import load_splits
from udas_ray.stages import kinds, segment
from udas_ray.stages.runtime import read_history, threads_for


def flops_per_step(history: list[dict]) -> int:
    """The FLOPs of one training step, as the loop counted them on its first step."""
    return next(h["flops_per_step"] for h in history if "flops_per_step" in h)


MODES = {"plain": None, "in_process": 0, "worker": 1}  # name -> scaling.num_workers (None: no Ray)


def main():
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--out", default=str(RESULTS / "teacher_throughput.json"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    modes = args.modes.split(",")
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes: choose from {', '.join(MODES)}")
    log_every = 25 if args.steps >= 100 else 5
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [
            f"run.dir={tmp}", "data.target.labeled=30", f"train.steps={args.steps}",
            f"train.eval_every={args.steps}", f"train.checkpoint_every={args.steps}", f"train.log_every={log_every}",
            *args.overrides])
        # The plain loop and the in-process stage get the CPUs of a Train worker and its data actor together.
        threads = threads_for(cfg.scaling.cpus_per_worker + cfg.scaling.data_cpus)
        worker_threads = threads_for(cfg.scaling.cpus_per_worker)
        peak = machine_peak(max(threads, worker_threads))
        if cfg.train.peak_gflops is None:  # the loops' MFU against the same peak as this result's
            cfg = cfg.override({"train.peak_gflops": peak["gflops_per_s"]})
        splits = load_splits(cfg, check_files=False)
        spec = kinds.build_spec(cfg, splits, "teacher", "teacher", Path(tmp) / "teacher")
        for mode in modes:
            out_dir = f"{tmp}/{mode}"
            start = time.perf_counter()
            if MODES[mode] is None:  # every slot of the log windows feeds the rate; the final eval is outside them
                torch.set_num_threads(threads)
                segment.run_plain(cfg, replace(spec, out_dir=out_dir), checkpoint_dir=Path(tmp) / "plain-ckpt")
            else:
                connect(cfg)
                segment.run_on_ray(cfg.override({"scaling.num_workers": MODES[mode]}),
                                             replace(spec, out_dir=out_dir), storage=Path(tmp) / f"ray-{mode}")
            wall = time.perf_counter() - start
            metrics = segment.read_metrics(out_dir)
            history = read_history(out_dir)
            windows = windows_after_warmup(history)
            rate, wait = mean_of(windows, "steps_per_s"), mean_of(windows, "data_wait_share")
            flops = flops_per_step(history)
            gflops = flops * rate / 1e9
            results[mode] = {"steps_per_s": round(rate, 2), "data_wait_share": round(wait, 4), "wall_s": round(wall, 1),
                             "flops_per_step": flops, "gflops_per_s": round(gflops, 1),
                             "mfu": round(gflops / peak["gflops_per_s"], 4), "final_val_miou": round(metrics["miou"], 2)}
    if "plain" in results:
        for mode, r in results.items():
            r["over_plain"] = round(r["steps_per_s"] / results["plain"]["steps_per_s"], 3)
    out = {
        **metadata(plain_loop_and_in_process=threads, ray_train_worker=worker_threads),
        "steps": args.steps, "log_every": log_every, "batch_size": cfg.train.batch_size,
        "image_size": list(cfg.data.image_size), "model": cfg.model.name, "labeled_target": cfg.data.target.labeled,
        "ray_resources": {"cpus_per_worker": cfg.scaling.cpus_per_worker, "data_workers": cfg.scaling.data_workers,
                          "data_cpus": cfg.scaling.data_cpus},
        "peak": peak, "modes": results,
    }
    print(f"\n{'mode':<12} {'steps/s':>8} {'x plain':>8} {'wait':>6} {'wall s':>7} {'GFLOP/s':>8} {'MFU':>6}")
    for mode, r in results.items():
        print(f"{mode:<12} {r['steps_per_s']:>8.2f} {r.get('over_plain', float('nan')):>8.3f} "
              f"{100 * r['data_wait_share']:>5.1f}% {r['wall_s']:>7.1f} {r['gflops_per_s']:>8.1f} {100 * r['mfu']:>5.1f}%")
    check_peak({mode: r["gflops_per_s"] for mode, r in results.items()}, peak, out)
    write_result(out, args.out)


if __name__ == "__main__":
    main()
