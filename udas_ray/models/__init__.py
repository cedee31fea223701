"""Segmentation models and the one builder every caller uses: DeepLab-v2 (dilated ResNet + ASPP,
deeplab.py), EfficientNet-Lite0 + a DeepLab-v3+ style decoder (efficientnet.py); and the
AdaptSegNet discriminator."""

from __future__ import annotations

import torch.nn as nn

from udas_ray.errors import UdasError
from udas_ray.models import deeplab, efficientnet
from udas_ray.models.deeplab import param_groups
from udas_ray.models.discriminator import build_discriminator
from udas_ray.models.memory_format import to_memory_format

__all__ = ["MODEL_NAMES", "SCRATCH", "build_discriminator", "build_segmenter", "load_pretrained", "param_groups",
           "to_memory_format"]

MODEL_NAMES: tuple[str, ...] = (*deeplab.NAMES, *efficientnet.NAMES)
SCRATCH = "scratch"  # model.pretrained: random weights, also for a model whose default is pretrained


def build_segmenter(name: str, num_classes: int, pretrained: str | None = None, **options) -> nn.Module:
    """The segmenter ``name`` with the architecture ``options`` of its family, its backbone
    loaded by :func:`load_pretrained`. Errors are one-line :class:`UdasError`s."""
    if name not in MODEL_NAMES:
        raise UdasError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if name in efficientnet.NAMES:
        model = efficientnet.build_efficientnet(name, num_classes, **options)
    else:
        model = deeplab.build_deeplabv2(name, num_classes, **options)
    load_pretrained(model, name, pretrained)
    return model


def load_pretrained(model: nn.Module, name: str, pretrained: str | None) -> None:
    """Load ``model.backbone``'s weights as ``model.pretrained`` says: a local state dict file;
    ``scratch``: none (random weights); None: the model's default, which is none for the
    DeepLab-v2 ResNets and the installed package's ImageNet weights for EfficientNet-Lite0."""
    if pretrained == SCRATCH:
        return
    if name in efficientnet.NAMES:
        efficientnet.load_encoder_weights(model.backbone, pretrained)
    elif pretrained is not None:
        deeplab.load_backbone_weights(model.backbone, pretrained)
