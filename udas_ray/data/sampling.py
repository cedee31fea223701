"""Rare-class sampling (DAFormer, Hoyer et al. 2022): draw source images containing rare classes
more often, so the model does not forget the classes that make up a sliver of the pixels.

    P(class c) = softmax_c((1 - f_c) / T)      f_c: the share of labelled pixels of class c
    an image is drawn by drawing a class, then an image containing it uniformly

which gives each image the probability  w_i = sum_c P(c) [c in image i] / n_c.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from udas_ray.classes import IGNORE, NUM_CLASSES
from udas_ray.data import images
from udas_ray.data.batches import Item


def class_pixel_counts(items: list[Item], size: tuple[int, int]) -> np.ndarray:
    """(N, C) pixel counts of every class in every label, at the training size."""
    counts = np.zeros((len(items), NUM_CLASSES), np.int64)
    for i, (_, label_path, kind) in enumerate(items):
        label = images.resize_label(images.read_label(label_path, kind), size)
        counts[i] = np.bincount(label[label != IGNORE].ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts


def cached_class_pixel_counts(items: list[Item], size: tuple[int, int], cache_dir: str | Path) -> np.ndarray:
    """:func:`class_pixel_counts`, kept in ``cache_dir`` under a hash of the file list and size."""
    key = hashlib.sha256(json.dumps([items, list(size)]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"class_counts_{key}.npy"
    if path.is_file():
        return np.load(path)
    counts = class_pixel_counts(items, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, counts)
    tmp.replace(path)
    return counts


def class_probabilities(counts: np.ndarray, temperature: float) -> np.ndarray:
    """P(c) over the classes present in the set; absent classes get 0."""
    totals = counts.sum(0).astype(np.float64)
    present = totals > 0
    freq = totals / max(totals.sum(), 1)
    logits = np.where(present, (1 - freq) / temperature, -np.inf)
    logits -= logits[present].max()
    p = np.exp(logits)
    return p / p.sum()


def rare_class_weights(counts: np.ndarray, temperature: float) -> np.ndarray:
    """Per-image sampling probabilities (summing to 1)."""
    p_class = class_probabilities(counts, temperature)
    has = counts > 0
    n_with = np.maximum(has.sum(0), 1)
    weights = (has * (p_class / n_with)).sum(1)
    return weights / weights.sum()
