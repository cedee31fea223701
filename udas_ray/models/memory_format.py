"""Memory format (NCHW vs channels-last) of models and image batches.

Only 4-D tensors have a channels-last layout; ``Module.to(memory_format=...)`` converts
just the 4-D parameters and buffers (convolution weights), and anything else passes
through unchanged. Note that ``udas_ray.inference.to_input`` permutes uint8 NHWC arrays,
so its output already has channels-last strides unless asked otherwise, and a CPU
convolution keeps channels-last when either its input or its weight is channels-last:
the segmenter in the training loop runs channels-last activations with NCHW weights.

Not for the CycleGAN: its InstanceNorms return NCHW, so a channels-last model converts
around every one (measured slower), and torch 2.13's instance_norm gives a wrong input
gradient for a batch of one when the gradient arriving is channels-last.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["is_channels_last", "memory_format", "to_memory_format"]


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def to_memory_format(obj, channels_last: bool):
    """A module (converted in place and returned) or a 4-D tensor (a copy if its layout
    differs) in channels-last or in the default contiguous NCHW layout."""
    fmt = memory_format(channels_last)
    if isinstance(obj, nn.Module):
        return obj.to(memory_format=fmt)
    if torch.is_tensor(obj):
        return obj.contiguous(memory_format=fmt) if obj.dim() == 4 else obj
    raise TypeError(f"to_memory_format: expected an nn.Module or a tensor, got {type(obj).__name__}")


def is_channels_last(model: nn.Module) -> bool:
    """Whether ``model``'s convolutions are channels-last: the layout of its first weight with a
    spatial kernel (a 1x1 kernel's strides fit both layouts). Inputs are made to match it."""
    for p in model.parameters():
        if p.dim() == 4 and p.shape[2] * p.shape[3] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False
