"""Segmentation models: DeepLab-v2 (dilated ResNet + ASPP) and the AdaptSegNet discriminator."""

from udas_ray.models.deeplab import MODEL_NAMES, build_segmenter, param_groups
from udas_ray.models.discriminator import build_discriminator
from udas_ray.models.memory_format import to_memory_format

__all__ = ["MODEL_NAMES", "build_discriminator", "build_segmenter", "param_groups", "to_memory_format"]
