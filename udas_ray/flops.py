"""FLOPs of a training step, and what a measured step rate makes of them.

Counting is torch's own ``FlopCounterMode``: it counts matrix multiplications and
convolutions (forward and, when autograd runs inside the counted call, backward), one
multiply-add = 2 FLOPs. BatchNorm, activations, pooling, interpolation, losses and the
optimizer update are not counted, so the figure is the dense-math work of a step, a
lower bound of all arithmetic. Model FLOP utilisation (MFU) is the achieved rate of that
work over a peak measured on the same machine (bench/peak.py), not a datasheet number.
"""

from __future__ import annotations

from typing import Callable

from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_step_flops", "gflops_per_s", "mfu"]


def count_step_flops(step_fn: Callable[[], object]) -> int:
    """Run ``step_fn()`` once under a FLOP counter; the total counted FLOPs.

    The call really runs (an optimizer step inside it does update the weights)."""
    counter = FlopCounterMode(display=False)
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
