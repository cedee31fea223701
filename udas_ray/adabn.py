"""AdaBN (Li et al., "Revisiting batch normalization for practical domain adaptation", 2016):
after training on the source, replace every BatchNorm layer's running mean and variance by
the statistics of the *target* images. No labels and no gradient steps: the features of a
target image are normalised as those of a source image were, which removes much of a global
appearance shift (colour, contrast, haze) at the cost of one pass over the unlabeled images.
"""

from __future__ import annotations

from typing import Iterable

import torch

from udas_ray.inference import to_input
from udas_ray.models.memory_format import is_channels_last


def batchnorms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(model: torch.nn.Module, batches: Iterable, device="cpu") -> int:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``batches``
    (uint8 (N, H, W, 3) arrays). Weights, biases and the model's train/eval mode are kept;
    returns the number of images seen (0 leaves the model untouched)."""
    layers = batchnorms(model)
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone()) for m in layers]
    modes = [(m, m.training) for m in model.modules()]  # restored exactly, frozen BNs included
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch
        m.train()
    seen, channels_last = 0, is_channels_last(model)
    for images in batches:
        if len(images):
            model(to_input(images, device, channels_last))
            seen += len(images)
    for m, (momentum, mean, var) in zip(layers, saved):
        m.momentum = momentum
        if not seen:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    for m, training in modes:
        m.training = training
    return seen
