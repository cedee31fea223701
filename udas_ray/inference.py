"""Running a segmenter on images: normalisation, batched prediction, split evaluation."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from udas_ray.data.batches import Item, load_item
from udas_ray.data.images import read_label
from udas_ray.metrics import confusion_matrix
from udas_ray.models.memory_format import is_channels_last, to_memory_format

# ImageNet statistics: what torchvision-format pretrained backbones expect.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def to_input(images, device: torch.device | str = "cpu", channels_last: bool = True) -> torch.Tensor:
    """uint8 (N, H, W, 3) array or tensor -> normalised float (N, 3, H, W) on ``device``.

    The NHWC -> NCHW permute of a contiguous batch leaves channels-last strides, so
    ``channels_last=True`` costs no copy; ``False`` copies to contiguous NCHW. Give a model the
    layout of its own weights (:func:`~udas_ray.models.memory_format.is_channels_last`)."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    x = x.to(device).permute(0, 3, 1, 2).float()
    x = (x - MEAN.to(device)) / STD.to(device)
    return to_memory_format(x, channels_last)


@torch.no_grad()
def predict_probs(model, images, temperature: float = 1.0, device="cpu") -> torch.Tensor:
    """Softmax maps (N, C, H, W) of a batch of uint8 images."""
    logits = model(to_input(images, device, is_channels_last(model)))
    return torch.softmax(logits / temperature, dim=1)


@torch.no_grad()
def predict_labels(model, images, sizes: Sequence[tuple[int, int]], device="cpu") -> list[np.ndarray]:
    """trainId maps (uint8) of a batch of uint8 images, the i-th at ``sizes[i]`` (its full size).

    The logits are upsampled (bilinear) to each full size and the argmax taken there, one image
    at a time (a 19-class 1024x2048 map is 160 MB): class borders then fall between the model's
    pixels where the scores cross, not on the blocks of a nearest-upsampled small label map."""
    logits = model(to_input(images, device, is_channels_last(model)))
    labels = []
    for one, size in zip(logits, sizes):
        full = F.interpolate(one[None].float(), size=tuple(size), mode="bilinear", align_corners=False)
        labels.append(full[0].argmax(0).to(torch.uint8).cpu().numpy())
    return labels


def predict_images(model, images: Sequence[np.ndarray], size: tuple[int, int],
                   full_sizes: Sequence[tuple[int, int]] | None = None, device="cpu") -> list[np.ndarray]:
    """trainId maps (uint8) of uint8 (H, W, 3) images of any size: each is resized to ``size``
    (the model's ``data.image_size``) and its map returned at ``full_sizes[i]`` (default: the
    image's own size), as :func:`predict_labels`."""
    from udas_ray.data.images import resize_image

    full_sizes = full_sizes or [image.shape[:2] for image in images]
    batch = np.stack([resize_image(image, tuple(size)) for image in images])
    return predict_labels(model, batch, full_sizes, device=device)


def batched(seq: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


class SplitCache:
    """Decoded images (resized to ``size``) and labels of a small split, kept in memory between
    evaluations (up to ``max_bytes``; beyond that they are read from disk each time). Labels are
    resized to ``size`` too, or kept at their own resolution with ``full_labels``."""

    def __init__(self, items: list[Item], size: tuple[int, int], max_bytes: int = 512 << 20, full_labels: bool = False):
        self.items, self.size, self.full_labels = items, size, full_labels
        per_item = size[0] * size[1] * 4
        if full_labels and items and items[0][1]:
            per_item = size[0] * size[1] * 3 + read_label(items[0][1], items[0][2]).size
        self._cache = {} if per_item * len(items) <= max_bytes else None

    def _load(self, index: int):
        item = self.items[index]
        if not self.full_labels or item[1] is None:
            return load_item(item, self.size)
        return load_item((item[0], None, item[2]), self.size)[0], read_label(item[1], item[2])

    def get(self, index: int):
        if self._cache is None:
            return self._load(index)
        if index not in self._cache:
            self._cache[index] = self._load(index)
        return self._cache[index]


@torch.no_grad()
def split_confusion(model, cache: SplitCache, indices: Sequence[int], batch_size: int = 8, device="cpu") -> np.ndarray:
    """Confusion matrix of ``model`` over the given images of a split (no augmentation)."""
    was_training = model.training
    model.eval()
    cm = None
    for chunk in batched(list(indices), batch_size):
        pairs = [cache.get(i) for i in chunk]
        images, labels = np.stack([p[0] for p in pairs]), [p[1] for p in pairs]
        if all(label.shape == images.shape[1:3] for label in labels):
            preds = list(predict_probs(model, images, device=device).argmax(1).cpu().numpy())
        else:  # labels at their own resolution: logits upsampled to each
            preds = predict_labels(model, images, [label.shape for label in labels], device=device)
        for pred, label in zip(preds, labels):
            part = confusion_matrix(pred, label)
            cm = part if cm is None else cm + part
    model.train(was_training)
    return cm if cm is not None else confusion_matrix(np.zeros(0), np.zeros(0))
