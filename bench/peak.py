"""This machine's own peak FLOP/s (float32, and bfloat16) at a given torch thread count: the denominator of MFU.

    python bench/peak.py [--threads N] [--repeats 10] [--out bench/results/peak.json]

Five measurements, taken in turn (one repeat of each per round, so a busy neighbour slows
them alike; udas_ray.flops.time_calls), each after a warm-up:
  * a square float32 matmul (--size, default 2048)
  * a 3x3 convolution 64 -> 64 on an (8, 64, 96, 192) input, the segmenter's image size,
    forward only, in the default NCHW layout
  * the same convolution with input and weight channels-last
  * the matmul and the channels-last convolution in bfloat16
FLOPs come from udas_ray.flops.count_step_flops, not from a formula typed here. For each
measurement the table gives GFLOP/s at the median and at the fastest repeat; the peak is the
largest fastest-repeat rate of the float32 ones (``peak_gflops_per_s``), and of the bfloat16
ones (``peak_gflops_per_s_bf16``) for stages that compute in it (the machine is shared, so the
fastest repeat is the one least disturbed). Printed as a table and written as JSON with the benchmarks' common metadata (CPU
model and speed-relevant flags, torch and Ray versions, threads, date; bench/common.py). It is
the peak the other benchmarks check their GFLOP/s against (so it is not checked itself). Training processes measure a
shorter matmul peak of their own, in the dtype they compute in (udas_ray.flops.measure_peak),
unless train.peak_gflops is set.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from common import PEAK_FILE, metadata
from udas_ray.flops import count_step_flops, time_calls


def workloads(size: int) -> dict:
    """name -> a no-argument callable doing the work once (inputs built here, outside the timing)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    x, w = torch.randn(8, 64, 96, 192), torch.randn(64, 64, 3, 3)
    x_cl, w_cl = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    return {
        f"matmul {size}x{size}": lambda: torch.mm(a, b),
        "conv3x3 64->64 (8,64,96,192) NCHW": lambda: F.conv2d(x, w, padding=1),
        "conv3x3 64->64 (8,64,96,192) channels_last": lambda: F.conv2d(x_cl, w_cl, padding=1),
    }


def bf16_workloads(size: int) -> dict:
    """The matmul and the channels-last convolution in bfloat16: the peak of a stage that
    computes in it (``train.precision=bf16``). On CPUs without native bf16 they may run slower
    than float32; measured either way."""
    a, b = torch.randn(size, size, dtype=torch.bfloat16), torch.randn(size, size, dtype=torch.bfloat16)
    x = torch.randn(8, 64, 96, 192, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    return {
        f"matmul {size}x{size} bfloat16": lambda: torch.mm(a, b),
        "conv3x3 64->64 (8,64,96,192) channels_last bfloat16": lambda: F.conv2d(x, w, padding=1),
    }


def fastest(rows: dict, bf16: set[str]) -> tuple[str, str]:
    """The float32 and the bfloat16 workload with the fastest repeat."""
    best = lambda names: max(names, key=lambda n: rows[n]["gflops_per_s_best"])  # noqa: E731
    return best(n for n in rows if n not in bf16), best(n for n in rows if n in bf16)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--size", type=int, default=2048, help="matmul side")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default=str(PEAK_FILE))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    bf16 = bf16_workloads(args.size)
    works = {**workloads(args.size), **bf16}
    with torch.no_grad():
        flops = {name: count_step_flops(fn) for name, fn in works.items()}
    times = time_calls(works, args.repeats, args.warmup)
    rows = {}
    for name, ts in times.items():
        rows[name] = {"flops": flops[name], "median_s": round(statistics.median(ts), 5), "best_s": round(min(ts), 5),
                      "gflops_per_s_median": round(flops[name] / statistics.median(ts) / 1e9, 1),
                      "gflops_per_s_best": round(flops[name] / min(ts) / 1e9, 1)}
    peak_name, bf16_name = fastest(rows, set(bf16))
    out = {
        **metadata(), "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": args.warmup,
        "measurements": rows,
        "peak_gflops_per_s": rows[peak_name]["gflops_per_s_best"], "peak_from": peak_name,
        "peak_gflops_per_s_bf16": rows[bf16_name]["gflops_per_s_best"], "peak_bf16_from": bf16_name,
    }

    width = max(len(n) for n in rows)
    print(f"{out['cpu']['model']}, {out['threads']} threads, torch {out['torch']}, {out['date']}")
    print(f"{'workload':{width}s}  {'GFLOP':>7s}  {'median ms':>9s}  {'GFLOP/s med':>11s}  {'GFLOP/s best':>12s}")
    for name, r in rows.items():
        print(f"{name:{width}s}  {r['flops'] / 1e9:7.2f}  {r['median_s'] * 1e3:9.1f}  "
              f"{r['gflops_per_s_median']:11.1f}  {r['gflops_per_s_best']:12.1f}")
    print(f"peak {out['peak_gflops_per_s']} GFLOP/s ({peak_name}); "
          f"bfloat16 {out['peak_gflops_per_s_bf16']} GFLOP/s ({bf16_name})")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
