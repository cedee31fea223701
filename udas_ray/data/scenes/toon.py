"""The ``toon`` look: the source as another engine would render it.

Where the ``game`` engine shades with two flat tones and grades colours vividly, this one
lights every surface softly from above, fades its sky to a pale horizon, posterizes colour
to a few levels and inks an outline around every object (as toon shaders draw silhouettes
from object ids). It is an engine with a small asset library: by default none of the game
engine's randomization knobs (no palette jitter, distractors or random lighting), so each
object is one of its palette's few colours; the ``lighting`` knob, turned on, applies as in the
game engine (it draws no textures).
"""

from __future__ import annotations

import numpy as np

from udas_ray.data.scenes.labels import SKY

INK = np.array((46, 36, 70), np.float32)
LEVEL = 24.0  # posterization step of each channel


def finish(scene, img: np.ndarray, lbl: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The finished uint8 image of ``scene`` (a :class:`~.looks.Looks`) from its flat float image."""
    t = np.clip(ys / max(scene.cam.horizon, 1.0), 0, 1)[..., None]
    img = np.where((lbl == SKY)[..., None], img * (1 - 0.45 * t) + 250.0 * 0.45 * t, img)
    img = img * (1.1 - 0.22 * ys / scene.h)[..., None]  # soft light from above
    img = scene.knob_lighting(img, ys, xs)
    img = np.floor(np.clip(img, 0, 255) / LEVEL) * LEVEL + LEVEL / 2
    edge = np.zeros(lbl.shape, bool)
    edge[1:, :] |= lbl[1:, :] != lbl[:-1, :]
    edge[:, 1:] |= lbl[:, 1:] != lbl[:, :-1]
    if scene.w > 256:  # about one ink pixel per 192 columns, so the outline keeps its weight when larger
        edge[:-1, :] |= edge[1:, :]
        edge[:, :-1] |= edge[:, 1:]
    img[edge] = INK
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
