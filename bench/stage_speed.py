"""Training-step speed of every kind of segmentation stage, NCHW vs channels-last, side by side.

    python bench/stage_speed.py [--steps 40] [--rounds 3] [--kinds source_only,teacher,...]
                                [--threads N] [--out bench/results/stage_speed.json] [key=value ...]

For each stage kind the stage's own task (models, optimizer, loss terms: what a Train worker
builds) trains in this process on a few batches its batch builder made beforehand, so the
figure is the training step alone: no data loading, evaluation or Ray. The two layouts
(``train.channels_last`` false / true) take turns within each round, kind after kind, so a busy
neighbour slows both alike; the figure per layout is the median over rounds of steps/s.
FLOPs per step are counted once per kind and layout (udas_ray.flops, torch's FlopCounterMode:
matmuls and convolutions, forward and backward); GFLOP/s = FLOPs x steps/s, MFU against this
machine's peak (bench/peak.py's JSON, else a matmul measured now). A rate above the peak stops
the benchmark (bench/common.py).

Kinds: source_only, teacher (0 labeled target images: segmentation + adversarial term),
teacher_labeled (30 labeled target images: + CutMix both ways, the images whole, ClassMix onto
unlabeled target), student (a round's student on pseudo-labels; the target-train labels stand
in for them here), oracle. The style stage (CycleGAN) runs NCHW (models/memory_format.py).
"""

import argparse
import itertools
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import RESULTS, check_peak, machine_peak, metadata, write_result
from udas_ray import flops, tracking
from udas_ray.cli import DEFAULT_CONFIG
from udas_ray.config import load_config
from udas_ray.data.splits import load_splits
from udas_ray.stages import kinds, loop
from udas_ray.stages.runtime import PlainSession

KINDS = {  # bench name -> (stage kind, extra overrides)
    "source_only": ("source_only", []),
    "teacher": ("teacher", []),
    "teacher_labeled": ("teacher", ["data.target.labeled=30"]),
    "student": ("student", []),
    "oracle": ("oracle", []),
}
LAYOUTS = {"nchw": False, "channels_last": True}


class Trainer:
    """One stage's task in this process, fed from batches built beforehand."""

    def __init__(self, config: str, kind: str, extra: list[str], channels_last: bool, tmp: Path, overrides: list[str],
                 n_batches: int = 4):
        cfg = load_config(config, [f"run.dir={tmp}", *extra, *overrides, f"train.channels_last={channels_last}",
                                   "train.adabn=false"])
        splits = load_splits(cfg, check_files=False)
        stage_kind, _ = KINDS[kind]
        pseudo = splits.target_train if stage_kind == "student" else None
        spec = kinds.build_spec(cfg, splits, stage_kind, kind, tmp / kind, pseudo=pseudo)
        builder_cls, kwargs = loop.batch_kwargs(cfg, spec)
        self.batches = list(itertools.islice(loop.plain_batches(builder_cls(**kwargs), spec.batch_size(cfg)), n_batches))
        session = PlainSession(tmp / kind / "ckpt")
        self.task = spec.task(cfg, session, tracking.NullLogger())
        self.task.prepare(session)
        self.index = 0
        self.flops_per_step = flops.count_step_flops(lambda: self.step())

    def step(self):
        self.task.set_lr(0)  # the rate does not depend on the learning rate's value
        self.task.train_step(self.batches[self.index % len(self.batches)])
        self.index += 1

    def rate(self, steps: int, warmup: int = 3) -> float:
        for _ in range(warmup):
            self.step()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps / (time.perf_counter() - t0)


def main():
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--steps", type=int, default=40, help="timed steps per kind, layout and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default=str(RESULTS / "stage_speed.json"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    names = args.kinds.split(",")
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        p.error(f"unknown kind(s) {unknown}; choose from {list(KINDS)}")
    torch.set_num_threads(args.threads)
    peak = machine_peak(args.threads)
    rates = {n: {layout: [] for layout in LAYOUTS} for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {(n, layout): Trainer(args.config, n, KINDS[n][1], cl, Path(tmp) / layout, args.overrides)
                    for n in names for layout, cl in LAYOUTS.items()}
        for r in range(args.rounds):
            for n in names:
                for layout in LAYOUTS:
                    rates[n][layout].append(trainers[n, layout].rate(args.steps))
                print(f"round {r + 1}/{args.rounds} {n}: " + ", ".join(
                    f"{layout} {rates[n][layout][-1]:.2f} steps/s" for layout in LAYOUTS), flush=True)
        flop_counts = {n: {layout: trainers[n, layout].flops_per_step for layout in LAYOUTS} for n in names}
    rows, figures = {}, {}
    for n in names:
        row = {}
        for layout in LAYOUTS:
            rate = statistics.median(rates[n][layout])
            gflops = flop_counts[n][layout] * rate / 1e9
            row[layout] = {"steps_per_s": round(rate, 2), "steps_per_s_each_round": [round(x, 2) for x in rates[n][layout]],
                           "gflop_per_step": round(flop_counts[n][layout] / 1e9, 2),
                           "gflops_per_s": round(gflops, 1), "mfu": round(gflops / peak["gflops_per_s"], 3)}
            figures[f"{n} {layout}"] = gflops
        row["channels_last_over_nchw"] = round(row["channels_last"]["steps_per_s"] / row["nchw"]["steps_per_s"], 3)
        rows[n] = row
    cfg = load_config(args.config, args.overrides)
    out = {**metadata(), "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
           "batch_size": cfg.train.batch_size, "image_size": list(cfg.data.image_size), "model": cfg.model.name,
           "peak": peak, "kinds": rows}
    print(f"\n{'kind':<16} {'layout':<14} {'steps/s':>8} {'GFLOP/step':>11} {'GFLOP/s':>8} {'MFU':>6}")
    for n, row in rows.items():
        for layout in LAYOUTS:
            f = row[layout]
            print(f"{n:<16} {layout:<14} {f['steps_per_s']:>8.2f} {f['gflop_per_step']:>11.2f} "
                  f"{f['gflops_per_s']:>8.1f} {100 * f['mfu']:>5.1f}%")
        print(f"{'':<16} channels-last / NCHW: {row['channels_last_over_nchw']:.2f}x")
    print(f"peak: {peak['gflops_per_s']} GFLOP/s ({peak['from']}), {args.threads} threads")
    check_peak(figures, peak, out)
    write_result(out, args.out)


if __name__ == "__main__":
    main()
