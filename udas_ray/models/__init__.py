"""Segmentation models: DeepLab-v2 (dilated ResNet + ASPP) and the AdaptSegNet discriminator."""

from udas_ray.models.deeplab import MODEL_NAMES, build_segmenter, param_groups
from udas_ray.models.discriminator import build_discriminator

__all__ = ["MODEL_NAMES", "build_discriminator", "build_segmenter", "param_groups"]
