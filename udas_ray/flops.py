"""FLOPs of a training step, and what a measured step rate makes of them.

Counting is torch's own ``FlopCounterMode``: it counts matrix multiplications and
convolutions (forward and, when autograd runs inside the counted call, backward), one
multiply-add = 2 FLOPs. BatchNorm, activations, pooling, interpolation, losses and the
optimizer update are not counted, so the figure is the dense-math work of a step, a
lower bound of all arithmetic. Model FLOP utilisation (MFU) is the achieved rate of that
work over a peak measured on the same machine (:func:`measure_peak`, bench/peak.py), not a
datasheet number.

The peak is a float32 matmul at a given torch thread count, the best of the repeats: the
machine is shared, and the least disturbed repeat is the closest to what it can do. On a busy
machine it still comes out low (down to a few % of bench/peak.py's figure when the two cores
run many jobs), so an MFU against it errs high; bench/peak.py's longer measurement on a quiet
machine, given as ``train.peak_gflops``, is the better denominator.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

__all__ = ["count_step_flops", "gflops_per_s", "mfu", "time_calls", "warm_up_counter", "measure_peak"]

_PEAKS: dict[tuple[int, int], float] = {}  # (threads, matmul side) -> GFLOP/s, measured in this process


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """A convolution's backward: the input gradient and the weight gradient each cost what the
    forward convolution did. torch's own formula ignores ``groups`` and counts a grouped
    convolution's backward as a dense one: a depthwise 3x3 of C channels C times too much, which
    put EfficientNet-Lite0's MFU above 100 %."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_step_flops(step_fn: Callable[[], object]) -> int:
    """Run ``step_fn()`` once under a FLOP counter; the total counted FLOPs.

    The call really runs (an optimizer step inside it does update the weights)."""
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})
    with counter:
        step_fn()
    return int(counter.get_total_flops())


def gflops_per_s(flops_per_step: float, steps_per_s: float) -> float:
    """Achieved GFLOP/s of a step costing ``flops_per_step`` run at ``steps_per_s``."""
    return flops_per_step * steps_per_s / 1e9


def mfu(flops_per_step: float, steps_per_s: float, peak_gflops_per_s: float) -> float:
    """Model FLOP utilisation: achieved GFLOP/s over ``peak_gflops_per_s`` (a fraction, not %)."""
    if peak_gflops_per_s <= 0:
        raise ValueError(f"peak_gflops_per_s must be positive, got {peak_gflops_per_s}")
    return gflops_per_s(flops_per_step, steps_per_s) / peak_gflops_per_s


def time_calls(works: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
               budget_s: float | None = None) -> dict[str, list[float]]:
    """Seconds of each call of each workload, the workloads taken in turn within a round (so a
    busy neighbour slows them alike), after ``warmup`` untimed rounds. Stops after ``repeats``
    rounds, or earlier once ``budget_s`` seconds of rounds have passed (at least one round)."""
    with torch.no_grad():
        for _ in range(warmup):
            for fn in works.values():
                fn()
        times = {name: [] for name in works}
        start = time.perf_counter()
        for _ in range(repeats):
            for name, fn in works.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            if budget_s is not None and time.perf_counter() - start >= budget_s:
                break
    return times


def warm_up_counter() -> None:
    """The counter's first use in a process imports torch._dynamo and friends (~1 s, 3 s on a
    busy machine): pay it here, outside any timing. An empty call is not enough; an op is."""
    count_step_flops(lambda: torch.ones(2, 2) @ torch.ones(2, 2))


def measure_peak(threads: int | None = None, seconds: float = 1.0, size: int = 1024,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> float:
    """Matmul GFLOP/s (``size`` x ``size`` in ``dtype``, best repeat) on ``device``: on a CPU at
    ``threads`` torch threads (default: the current count), measured once per process, thread count,
    dtype and device, then served from a cache (a stage computing in bfloat16 is held against a
    bfloat16 matmul, which on CPUs with native bf16 runs about twice as fast as float32); the
    thread count is restored afterwards. The counted first call is the warm-up; with it, the
    measurement takes about ``seconds`` (plus one call, and the counter's one-time imports if they
    are still to come). On a GPU the matmul is 8192 wide (a 1024 one leaves it mostly idle) and
    timed between synchronizations: a stage on a GPU held against the CPU's matmul reports an
    MFU of thousands of percent."""
    device = torch.device(device)
    if device.type == "cuda":
        return _gpu_peak(device, dtype, seconds)
    threads = threads or torch.get_num_threads()
    key = (threads, size, dtype)
    if key not in _PEAKS:
        before = torch.get_num_threads()
        try:
            if threads != before:
                torch.set_num_threads(threads)
            warm_up_counter()
            start = time.perf_counter()
            a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
            with torch.no_grad():
                flops = count_step_flops(lambda: torch.mm(a, b))
            budget = max(0.0, seconds - (time.perf_counter() - start))
            times = time_calls({"mm": lambda: torch.mm(a, b)}, repeats=10_000, warmup=0, budget_s=budget)["mm"]
            _PEAKS[key] = flops / min(times) / 1e9
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
    return _PEAKS[key]


def _gpu_peak(device: torch.device, dtype: torch.dtype, seconds: float, size: int = 8192, calls: int = 10) -> float:
    """The best of repeated bursts of ``calls`` matmuls, each burst timed between synchronizations;
    a float32 peak with TF32 matmuls allowed is another peak than without."""
    key = (str(device), size, dtype, torch.backends.cuda.matmul.allow_tf32)
    if key not in _PEAKS:
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        best, start = float("inf"), time.perf_counter()
        with torch.no_grad():
            torch.mm(a, b)
            torch.cuda.synchronize(device)
            while best == float("inf") or time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                for _ in range(calls):
                    torch.mm(a, b)
                torch.cuda.synchronize(device)
                best = min(best, (time.perf_counter() - t0) / calls)
        _PEAKS[key] = 2 * size ** 3 / best / 1e9
    return _PEAKS[key]
