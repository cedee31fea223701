"""Reading, checking and resizing the PNG files of every dataset.

Images are RGB uint8 (H, W, 3); labels are trainId uint8 (H, W) with 255 = ignore. Each
failure is a one-line :class:`UdasError` naming the file. Label files come in two kinds:

* ``labelids``: 8-bit single-channel (mode L or P) Cityscapes labelIds (Cityscapes, GTA5).
* ``trainids``: the same files holding trainIds already (format ``folder`` with
  ``data.*.label_ids=trainids``): 0..18 kept, 255 and every other value read as ignore.
* ``synthia``: 16-bit PNGs with the SYNTHIA class id in the first channel (read with OpenCV,
  because Pillow truncates 16-bit colour PNGs to their high byte).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from udas_ray import atomic, classes
from udas_ray.errors import UdasError


def _open(path: str | Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise UdasError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UdasError(f"{path}: not a readable image ({exc.__class__.__name__}); re-export or remove it") from None


def _decode(img: Image.Image, path: str | Path) -> Image.Image:
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise UdasError(f"{path}: corrupt or truncated image ({exc}); re-export or remove it") from None
    return img


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 array; grey and palette images are converted, alpha dropped."""
    with _open(path) as img:
        return np.asarray(_decode(img, path).convert("RGB"))


def _check_label_mode(mode: str, path: str | Path) -> None:
    if mode not in ("L", "P", "I;16", "I"):
        raise UdasError(
            f"{path}: label PNG has mode {mode} (colours), not class ids; "
            "use the *_labelIds.png / id-valued label files, not the colour visualisations"
        )


# trainId labels as they are, anything but a class 0..18 -> ignore.
_TRAIN_IDS_KEPT = np.full(256, classes.IGNORE, dtype=np.uint8)
_TRAIN_IDS_KEPT[: classes.NUM_CLASSES] = np.arange(classes.NUM_CLASSES)


def read_label(path: str | Path, kind: str = "labelids") -> np.ndarray:
    """A trainId uint8 map from a label file of the given kind."""
    if kind == "synthia":
        return classes.synthia_ids_to_train_ids(_read_synthia_ids(path))
    with _open(path) as img:
        _check_label_mode(img.mode, path)
        ids = np.asarray(_decode(img, path))
    if kind == "trainids":
        return _TRAIN_IDS_KEPT[np.asarray(ids, dtype=np.int64).clip(0, 255)]
    if kind != "labelids":
        raise ValueError(f"unknown label kind {kind!r}")
    return classes.label_ids_to_train_ids(ids)


def looks_like_train_ids(values) -> bool:
    """Whether the distinct values of a label said to hold labelIds rather look like trainIds.

    A heuristic for a warning, never an error: no value outside 0..18 and 255, at least one
    class value, and either 255 (unused by labelIds) or 0 without 7 (trainId 0 is road, the most
    common class; as a labelId 0 is "unlabeled", and a street scene in labelIds rarely has it
    without road 7). Real labelIds almost always hold sky 23, vegetation 21 or car 26 too.
    """
    values = {int(v) for v in values}
    if not values or not values <= set(range(classes.NUM_CLASSES)) | {classes.IGNORE}:
        return False
    if not values - {classes.IGNORE}:
        return False
    return classes.IGNORE in values or (0 in values and 7 not in values)


def _read_synthia_ids(path: str | Path) -> np.ndarray:
    import cv2  # only SYNTHIA needs it

    if not os.path.isfile(path):
        raise UdasError(f"{path}: file not found")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise UdasError(f"{path}: not a readable PNG (corrupt or truncated); re-export or remove it")
    if raw.ndim == 2:
        return raw
    # OpenCV returns BGR(A); the class id is the file's first channel (R): index 2 of BGR.
    return raw[..., 2] if raw.shape[2] >= 3 else raw[..., 0]


def probe(path: str | Path, full: bool = False) -> tuple[tuple[int, int], str]:
    """((H, W), mode) of an image file; ``full`` also decodes it to catch truncation."""
    with _open(path) as img:
        if full:
            _decode(img, path)
        return (img.height, img.width), img.mode


def _label_values(ids: np.ndarray) -> np.ndarray:
    if ids.dtype == np.uint8:
        return np.flatnonzero(np.bincount(ids.ravel(), minlength=256))
    return np.unique(ids)


def check_pair(image_path: str | Path, label_path: str | Path | None, kind: str, full: bool):
    """Raise UdasError if the pair is unreadable, the label holds colours or sizes differ.

    Returns the label's distinct raw values when the check decoded an 8-bit-style label
    (``full``, kinds labelids / trainids), for :func:`looks_like_train_ids`; otherwise None.
    """
    size, _ = probe(image_path, full)
    if label_path is None:
        return None
    values = None
    if kind == "synthia":
        if full:
            lsize = _read_synthia_ids(label_path).shape[:2]
        else:
            lsize, _ = probe(label_path)
    else:
        with _open(label_path) as img:
            _check_label_mode(img.mode, label_path)
            lsize = (img.height, img.width)
            if full:
                values = _label_values(np.asarray(_decode(img, label_path)))
    if tuple(lsize) != tuple(size):
        raise UdasError(
            f"{label_path}: label is {lsize[1]}x{lsize[0]} but its image {image_path} is {size[1]}x{size[0]}; "
            "labels must match their images pixel for pixel"
        )
    return values


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an RGB uint8 image to (H, W)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to (H, W): no invented classes at edges."""
    h, w = size
    if label.shape[:2] == (h, w):
        return label
    return np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a PNG atomically (temp file + rename): a killed run never leaves half a file."""
    with atomic.writing(path, fsync=False) as f:  # a full disk: one line naming the file, no temp file left
        Image.fromarray(array).save(f, format="PNG")
