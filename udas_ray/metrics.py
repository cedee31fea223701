"""Segmentation metrics the way the Cityscapes benchmark computes them.

One confusion matrix is accumulated over a whole split (not a mean of per-image scores):
rows are ground truth, columns predictions, pixels whose ground truth is 255 are left out.
  IoU_c    = TP / (TP + FP + FN), NaN for a class absent from both ground truth and prediction
  mIoU     = mean of the non-NaN IoUs of the protocol's classes
  accuracy = correctly labelled pixels / labelled pixels
All scores leave this module as percentages.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from udas_ray import classes
from udas_ray.classes import IGNORE, NUM_CLASSES


def confusion_matrix(prediction, label, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(C, C) int64 counts of (ground truth, prediction) over the pixels with a label."""
    prediction = np.asarray(prediction).reshape(-1).astype(np.int64)
    label = np.asarray(label).reshape(-1).astype(np.int64)
    if prediction.shape != label.shape:
        raise ValueError(f"prediction has {prediction.size} pixels, label {label.size}")
    keep = (label != IGNORE) & (label < num_classes) & (label >= 0)
    index = label[keep] * num_classes + prediction[keep].clip(0, num_classes - 1)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU in [0, 1] per class; NaN where the class is in neither ground truth nor prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def scores(cm: np.ndarray, protocol: str = "cityscapes19") -> dict:
    """``{"miou", "pixel_accuracy", "per_class_iou": {name: % or None}}`` in percent."""
    ious = iou_per_class(cm)
    evaluated = classes.PROTOCOLS[protocol]
    present = [ious[c] for c in evaluated if not math.isnan(ious[c])]
    total = cm.sum()
    return {
        "miou": 100.0 * float(np.mean(present)) if present else float("nan"),
        "pixel_accuracy": 100.0 * float(np.trace(cm) / total) if total else float("nan"),
        "per_class_iou": {
            classes.CLASS_NAMES[c]: (None if math.isnan(ious[c]) else 100.0 * float(ious[c])) for c in evaluated
        },
    }


class Evaluator:
    """Accumulates a confusion matrix batch by batch; ``result()`` gives :func:`scores`."""

    def __init__(self, num_classes: int = NUM_CLASSES, protocol: str = "cityscapes19"):
        self.num_classes = num_classes
        self.protocol = protocol
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction, label) -> None:
        self.cm += confusion_matrix(prediction, label, self.num_classes)

    def result(self) -> dict:
        return scores(self.cm, self.protocol)


def flat_metrics(result: dict, prefix: str = "") -> dict[str, float]:
    """Scores as flat MLflow/Ray metric names: ``val_miou``, ``val_iou_road`` ..."""
    out = {f"{prefix}miou": result["miou"], f"{prefix}pixel_accuracy": result["pixel_accuracy"]}
    for name, iou in result["per_class_iou"].items():
        if iou is not None:
            out[f"{prefix}iou_{name.replace(' ', '_')}"] = iou
    return out


def export_cityscapes(prediction: np.ndarray, image_name: str, full_size: tuple[int, int], out_dir: str | Path) -> Path:
    """Write one prediction in the Cityscapes results format.

    A labelId PNG named after the input image (``CITY_SEQ_FRAME_leftImg8bit.png``), resized
    (nearest) to the ground truth's full resolution, so ``cityscapesscripts``'
    evalPixelLevelSemanticLabeling accepts the folder as it is.
    """
    from udas_ray.data.images import resize_label, write_png

    label_ids = classes.train_ids_to_label_ids(resize_label(prediction.astype(np.uint8), full_size))
    path = Path(out_dir) / image_name
    write_png(path, label_ids.astype(np.uint8))
    return path
