"""Augmentations: pure numpy functions on uint8 images (H, W, 3) and trainId labels (H, W).

Nothing here knows about Ray or torch, so the same code runs inside Ray Data tasks, in the
plain-PyTorch benchmark loop and in tests. Photometric operations take only images: labels
cannot be touched by them by construction. Geometric ones take both.
"""

from __future__ import annotations

import numpy as np

# RGB -> YIQ, the colour space in which a hue shift is a rotation of the (I, Q) plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ------------------------------------------------------------------------------ CutMix
def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box (y0, y1, x0, x1) covering a share ``1 - lam`` of the image, entirely inside it.

    The box keeps the image's aspect ratio: sides ``H * sqrt(1 - lam)`` and ``W * sqrt(1 - lam)``.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    ratio = np.sqrt(1.0 - lam)
    box_h, box_w = int(round(height * ratio)), int(round(width * ratio))
    y0 = int(rng.integers(0, height - box_h + 1))
    x0 = int(rng.integers(0, width - box_w + 1))
    return y0, y0 + box_h, x0, x0 + box_w


def cutmix(
    image_a: np.ndarray,
    label_a: np.ndarray,
    image_b: np.ndarray,
    label_b: np.ndarray,
    box: tuple[int, int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Paste the box of (image_b, label_b) into (image_a, label_a), with one and the same mask."""
    if image_a.shape != image_b.shape or label_a.shape != label_b.shape:
        raise ValueError(f"CutMix needs equal sizes, got {image_a.shape} and {image_b.shape}")
    y0, y1, x0, x1 = box
    image, label = image_a.copy(), label_a.copy()
    image[y0:y1, x0:x1] = image_b[y0:y1, x0:x1]
    label[y0:y1, x0:x1] = label_b[y0:y1, x0:x1]
    return image, label


def sample_cutmix_lambda(rng: np.random.Generator, alpha: float) -> float:
    """lambda ~ Beta(alpha, alpha), the share of image A that stays (CutMix, Yun et al. 2019)."""
    return float(rng.beta(alpha, alpha))


# ------------------------------------------------------------------------- photometric
def color_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
) -> np.ndarray:
    """Random brightness, contrast, saturation (factors in [1 - s, 1 + s]) and hue shift
    (a fraction of a full turn in [-hue, hue]), applied in a random order like torchvision's."""
    x = image.astype(np.float32)
    ops = rng.permutation(4)
    for op in ops:
        if op == 0 and brightness > 0:
            x = x * rng.uniform(1 - brightness, 1 + brightness)
        elif op == 1 and contrast > 0:
            mean = float((x @ _LUMA).mean())
            x = (x - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
        elif op == 2 and saturation > 0:
            grey = (x @ _LUMA)[..., None]
            x = (x - grey) * rng.uniform(1 - saturation, 1 + saturation) + grey
        elif op == 3 and hue > 0:
            x = shift_hue(x, rng.uniform(-hue, hue))
    return np.clip(x, 0, 255).round().astype(np.uint8)


def shift_hue(image: np.ndarray, turns: float) -> np.ndarray:
    """Rotate hue by ``turns`` of a full circle (float in, float out), keeping luma."""
    angle = 2 * np.pi * turns
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)
    return image.astype(np.float32) @ (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).T


# ---------------------------------------------------------------------------- geometric
def hflip(image: np.ndarray, label: np.ndarray | None = None):
    """Mirror left-right; the label (if given) with the image."""
    if label is None:
        return image[:, ::-1].copy()
    return image[:, ::-1].copy(), label[:, ::-1].copy()


def random_scale_crop(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator,
                      scale: tuple[float, float], crop: tuple[int, int], ignore: int = 255):
    """Resize by a factor drawn uniformly from ``scale`` (bilinear; the label nearest), then cut a
    ``crop`` = (H, W) window at a random place. Where the resized image is smaller than the crop
    it is padded: black pixels, ``ignore`` labels. Returns (image, label or None)."""
    from udas_ray.data.images import resize_image, resize_label

    factor = rng.uniform(*scale)
    h, w = (max(1, int(round(n * factor))) for n in image.shape[:2])
    image = resize_image(image, (h, w))
    label = resize_label(label, (h, w)) if label is not None else None
    ch, cw = crop
    y0, x0 = int(rng.integers(0, max(h - ch, 0) + 1)), int(rng.integers(0, max(w - cw, 0) + 1))
    out_image = np.zeros((ch, cw, 3), np.uint8)
    window = image[y0 : y0 + ch, x0 : x0 + cw]
    out_image[: window.shape[0], : window.shape[1]] = window
    if label is None:
        return out_image, None
    out_label = np.full((ch, cw), ignore, label.dtype)
    out_label[: window.shape[0], : window.shape[1]] = label[y0 : y0 + ch, x0 : x0 + cw]
    return out_image, out_label


# ------------------------------------------------------------- appearance randomization
def randomize_appearance(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    channel_shuffle: float = 0.0,
    grayscale: float = 0.0,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
    noise: float = 0.0,
    blur: float = 0.0,
) -> np.ndarray:
    """Domain randomization as augmentation: make colour a useless cue so the model learns shape.

    ``channel_shuffle`` and ``grayscale`` are probabilities; the jitter strengths are as in
    :func:`color_jitter`; ``noise`` is the largest Gaussian noise sigma as a fraction of 255;
    ``blur`` the largest Gaussian blur sigma in pixels (both drawn uniformly per image).
    """
    out = image
    if channel_shuffle > 0 and rng.random() < channel_shuffle:
        out = out[..., rng.permutation(3)]
    out = color_jitter(out, rng, brightness, contrast, saturation, hue)
    if grayscale > 0 and rng.random() < grayscale:
        grey = (out.astype(np.float32) @ _LUMA).round().clip(0, 255).astype(np.uint8)
        out = np.repeat(grey[..., None], 3, axis=-1)
    if blur > 0:
        sigma = rng.uniform(0, blur)
        if sigma > 0.3:
            from PIL import Image, ImageFilter

            out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(sigma)))
    if noise > 0:
        sigma = rng.uniform(0, noise) * 255
        out = (out.astype(np.float32) + rng.normal(0, sigma, out.shape)).clip(0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------------------ ClassMix
def classmix_mask(label: np.ndarray, rng: np.random.Generator, ignore: int = 255) -> np.ndarray:
    """ClassMix (Olsson et al. 2021): a boolean mask of the pixels of half of the classes
    present in ``label`` (chosen at random, at least one when any class is present)."""
    present = np.unique(label)
    present = present[present != ignore]
    if len(present) == 0:
        return np.zeros(label.shape, bool)
    chosen = rng.choice(present, size=max(1, (len(present) + 1) // 2), replace=False)
    return np.isin(label, chosen)


def mix_with_mask(image_a, label_a, image_b, label_b, mask: np.ndarray):
    """Pixels under ``mask`` from A, the rest from B (images and labels alike)."""
    image = np.where(mask[..., None], image_a, image_b)
    label = np.where(mask, label_a, label_b)
    return image, label
