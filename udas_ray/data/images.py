"""Reading, checking and resizing the PNG files of every dataset.

Images are RGB uint8 (H, W, 3); labels are trainId uint8 (H, W) with 255 = ignore. Each
failure is a one-line :class:`UdasError` naming the file. Label files come in two kinds:

* ``labelids``: 8-bit single-channel (mode L or P) Cityscapes labelIds (Cityscapes, GTA5).
* ``synthia``: 16-bit PNGs with the SYNTHIA class id in the first channel (read with OpenCV,
  because Pillow truncates 16-bit colour PNGs to their high byte).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from udas_ray import classes
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


def read_label(path: str | Path, kind: str = "labelids") -> np.ndarray:
    """A trainId uint8 map from a label file of the given kind."""
    if kind == "synthia":
        return classes.synthia_ids_to_train_ids(_read_synthia_ids(path))
    with _open(path) as img:
        _check_label_mode(img.mode, path)
        ids = np.asarray(_decode(img, path))
    return classes.label_ids_to_train_ids(ids)


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


def check_pair(image_path: str | Path, label_path: str | Path | None, kind: str, full: bool) -> None:
    """Raise UdasError if the pair is unreadable, the label holds colours or sizes differ."""
    size, _ = probe(image_path, full)
    if label_path is None:
        return
    if kind == "synthia":
        if full:
            lsize = _read_synthia_ids(label_path).shape[:2]
        else:
            lsize, _ = probe(label_path)
    else:
        lsize, mode = probe(label_path, full)
        _check_label_mode(mode, label_path)
    if tuple(lsize) != tuple(size):
        raise UdasError(
            f"{label_path}: label is {lsize[1]}x{lsize[0]} but its image {image_path} is {size[1]}x{size[0]}; "
            "labels must match their images pixel for pixel"
        )


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)
