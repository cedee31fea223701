"""Pseudo-label throughput and memory: the Ray Data actor pool vs a plain PyTorch loop.

    python bench/pseudo_throughput.py [--images 600] [--out bench/results/pseudo_throughput.json] [key=value ...]

On the embedded target-train images with the default teacher architecture (weights do not
change the cost), in one run on the same cores:
  * image-views per second: a plain single-process loop (torch on both cores) vs the actor pool
    with 2 actors of 1 CPU each: goal >= 1.0x
  * 1 actor vs 2 actors: goal >= 1.8x
  * peak memory of the whole Ray session (driver + every Ray process, RSS) while labelling N and
    10 N images: goal <= 1.2x (images stream through; only histograms come back)
  * the teacher's GFLOP/s in each figure: the forward FLOPs of one view (udas_ray.flops) x
    views/s, a lower bound of the work as reading, merging and PNG writing are not counted.
    These are inference figures; a rate above the machine's peak (bench/peak.py's JSON, else
    measured now) still stops the benchmark with both numbers (bench/common.py).
Results are printed and written to bench/results/pseudo_throughput.json (--out) with the CPU,
torch and Ray versions, thread counts and date. ``--limit 16 --images 16`` labels only the first
16 images (and 16 vs 160 for the memory check): a check that the benchmark runs, not a result.
"""

import argparse
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import torch

from common import RESULTS, check_peak, machine_peak, metadata, write_result
from udas_ray.checkpoints import save_model
from udas_ray.classes import NUM_CLASSES
from udas_ray.cli import DEFAULT_CONFIG
from udas_ray.cluster import connect
from udas_ray.config import load_config
from udas_ray.data.splits import load_splits
from udas_ray.flops import count_step_flops
from udas_ray.inference import predict_probs
from udas_ray.models import SCRATCH, build_segmenter
from udas_ray.stages import pseudo

PLAIN_THREADS = 2


class PeakMemory:
    """Samples the RSS of this process and all its descendants (the local Ray session)."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _rss(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self):
        self.baseline = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def flops_per_view(model, cfg) -> float:
    """Forward FLOPs of the teacher on one view, counted on the K views of one image as
    pseudo.merge_views runs them."""
    views = np.zeros((cfg.pseudo.k, *cfg.data.image_size, 3), np.uint8)
    with torch.no_grad():
        return count_step_flops(lambda: predict_probs(model.eval(), views)) / cfg.pseudo.k


def plain_views_per_s(cfg, split, model_path, staging: Path) -> float:
    """The same work as one actor (decode, resize, K views, merge, two PNGs, histogram), in-process."""
    torch.set_num_threads(PLAIN_THREADS)
    predictor = pseudo.TeacherPredictor(str(model_path), tuple(cfg.data.image_size),
                                        pseudo.ViewParams(k=cfg.pseudo.k, flip=cfg.pseudo.flip), str(staging),
                                        threads=PLAIN_THREADS)
    batch_size = cfg.pseudo.batch_size
    start = time.perf_counter()
    for i in range(0, len(split), batch_size):
        chunk = split.samples[i : i + batch_size]
        predictor({"image": [s.image for s in chunk], "name": [s.name for s in chunk],
                    "seed": np.arange(i, i + len(chunk))})
    return len(split) * cfg.pseudo.k / (time.perf_counter() - start)


def ray_views_per_s(cfg, split, model_path, staging: Path, actors: int) -> float:
    run_cfg = cfg.override({"pseudo.actors": actors, "pseudo.cpus_per_actor": 1})
    start = time.perf_counter()
    pseudo.predict_to_staging(run_cfg, split, model_path, staging)
    return len(split) * cfg.pseudo.k / (time.perf_counter() - start)


def renamed(split, copies: int):
    """The split ``copies`` times over, with distinct names (the same files on disk)."""
    samples = tuple(replace(s, name=f"c{c}_{s.name}") for c in range(copies) for s in split.samples)
    return replace(split, samples=samples)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--images", type=int, default=600, help="N for the memory check (10 N is the large set)")
    p.add_argument("--limit", type=int, default=None, help="label only the first LIMIT target-train images")
    p.add_argument("--out", default=str(RESULTS / "pseudo_throughput.json"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = load_config(args.config, [f"run.dir={tmp}", *args.overrides])
        split = load_splits(cfg, check_files=False).target_train
        if args.limit:
            split = replace(split, samples=split.samples[: args.limit])
        peak = machine_peak(PLAIN_THREADS)
        model = build_segmenter(cfg.model.name, NUM_CLASSES, SCRATCH, **cfg.model.options)
        view_flops = flops_per_view(model, cfg)
        model_path = save_model(tmp / "teacher.pt", model, model_name=cfg.model.name, num_classes=NUM_CLASSES,
                                model_options=dict(cfg.model.options), stage="bench", step=0, config={})

        def fresh(name):
            path = tmp / name
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            return path

        plain = plain_views_per_s(cfg, split, model_path, fresh("plain"))
        connect(cfg.override({"scaling.ray_num_cpus": 2}))
        ray_views_per_s(cfg, replace(split, samples=split.samples[:32]), model_path, fresh("warmup"), 2)  # start-up, once
        one = ray_views_per_s(cfg, split, model_path, fresh("one"), 1)
        two = ray_views_per_s(cfg, split, model_path, fresh("two"), 2)

        small, large = renamed(split, max(1, args.images // len(split))), renamed(split, 10 * max(1, args.images // len(split)))
        with PeakMemory() as mem_small:
            ray_views_per_s(cfg, small, model_path, fresh("small"), 2)
        with PeakMemory() as mem_large:
            ray_views_per_s(cfg, large, model_path, fresh("large"), 2)
    figures = {"plain loop": plain, "Ray Data, 1 actor": one, "Ray Data, 2 actors": two}
    gflops = {name: view_flops * views / 1e9 for name, views in figures.items()}
    out = {
        # each actor gets 1 CPU (ray_views_per_s) and TeacherPredictor max(1, int(CPUs)) threads
        **metadata(plain_loop=PLAIN_THREADS, pseudo_actor=1),
        "images": len(split), "views_per_image": cfg.pseudo.k, "image_size": list(cfg.data.image_size),
        "model": cfg.model.name, "batch_size": cfg.pseudo.batch_size,
        "plain_views_per_s": round(plain, 1), "ray_1_actor_views_per_s": round(one, 1),
        "ray_2_actors_views_per_s": round(two, 1),
        "pool_over_plain": round(two / plain, 3), "two_over_one_actor": round(two / one, 3),
        "memory": {"small_images": len(small), "large_images": len(large),
                   "small_peak_mb": round(mem_small.peak / 2**20), "large_peak_mb": round(mem_large.peak / 2**20),
                   "large_over_small": round(mem_large.peak / mem_small.peak, 3)},
        "forward_flops_per_view": int(view_flops),
        "gflops_per_s": {name: round(g, 1) for name, g in gflops.items()},
        "peak": peak,
    }
    check_peak(gflops, peak, out)
    write_result(out, args.out)


if __name__ == "__main__":
    main()
