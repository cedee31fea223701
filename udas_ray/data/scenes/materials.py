"""The ``material`` look: the camera's finishing over surfaces the source never shows.

Concrete pavers instead of asphalt and slate tiles on the sidewalks, both laid out on the
ground plane in perspective (stones shrink towards the horizon; where a stone would be
smaller than a few pixels only its mean tone is left, as a camera would blur it); facades
of glass and steel curtain walls with sky reflections, or dark brick with bright mortar;
graffiti on the walls; chain-link fences; speckled autumn leaves; straw-dry lawns with
mowing stripes; an overcast sky. An RGB modulation of the drawn image, per class; the
camera's light, grading, blur and noise follow (:mod:`.looks`).
"""

from __future__ import annotations

import numpy as np

from udas_ray.data.scenes.labels import BUILDING, FENCE, ROAD, SIDEWALK, SKY, TERRAIN, VEG, WALL

GRAFFITI = ((1.7, 0.7, 1.5), (0.7, 1.5, 1.6), (1.6, 1.5, 0.5), (0.6, 0.8, 1.8))


def _hash(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """A value in [-1, 1) per integer cell (i, j), fixed for a given ``salt``."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (salt * 83492791)
    return (h % 2048).astype(np.float32) / 1024.0 - 1.0


def _laid(scene, depth, ground_x, size: tuple[float, float], joint: float, stagger: bool, salt: int):
    """Cells of ``size`` metres (across, along) laid on the ground: (tone per cell in [-1, 1),
    joint mask, visibility in [0, 1]: 0 where a cell is under ~2 pixels)."""
    u, v = ground_x / size[0], depth / size[1]
    row = np.floor(v)
    if stagger:
        u = u + 0.5 * (row % 2)
    col = np.floor(u)
    joints = (u - col < joint) | (v - row < joint)
    pixels = size[1] * scene.cam.focal * scene.cam.height / np.maximum(depth, 0.2) ** 2  # a cell's rows on screen
    return _hash(col, row, salt), joints, np.clip((pixels - 1.5) / 3.0, 0.0, 1.0)


def textures(scene, lbl: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The (H, W, 3) RGB modulation of ``scene`` (a :class:`~.looks.Looks`) for the material look."""
    H, W = scene.h, scene.w
    mod = np.ones((H, W, 3), np.float32)
    fine = scene.rng.standard_normal((H, W)).astype(np.float32)
    salt = int(scene.rng.integers(1 << 20))
    depth = scene.cam.ground_depth(ys)
    gx = scene.cam.ground_x(xs, depth)

    def paint(lid, m):
        mask = lbl == lid
        mod[mask] = m[mask] if m.ndim == 3 else m[mask][:, None]

    # concrete pavers: per-stone tone and a reddish or grey tint, dark joints
    tone, joints, seen = _laid(scene, depth, gx, (1.0, 0.6), 0.1, True, salt)
    stone = 1 + seen * (0.16 * tone - 0.42 * joints) + 0.05 * fine
    tint = np.stack([1 + 0.07 * seen * tone, np.ones_like(tone), 1 - 0.07 * seen * tone], axis=-1)
    paint(ROAD, stone[..., None] * tint)
    # slate tiles on the sidewalks
    tone, joints, seen = _laid(scene, depth, gx, (1.0, 1.0), 0.07, False, salt + 1)
    paint(SIDEWALK, 1 + seen * (0.12 * tone - 0.35 * joints) + 0.06 * fine)
    # lawns: dry straw with mowing stripes along the street
    stripes = np.sign(np.sin(gx * np.pi / scene.uniform(0.8, 1.6)))
    paint(TERRAIN, 1 + 0.16 * fine + 0.08 * stripes * np.clip(200.0 / np.maximum(depth, 1.0) - 1, 0, 1))
    # facades: glass curtain walls (mullions, sky reflections) or dark brick with bright mortar
    if scene.chance(0.5):
        pitch = max(3, int(round(scene.uniform(3.0, 6.0) * H / 96)))
        mullion = ((xs % pitch) < 1) | ((ys % (pitch + 1)) < 1)
        reflect = scene.smooth_noise(14.0)
        glass = (1 + 0.22 * reflect - 0.3 * mullion)[..., None] * np.array((0.9, 1.0, 1.14), np.float32)
        paint(BUILDING, glass)
    else:
        brick = max(2, int(round(scene.uniform(2.0, 3.0) * H / 96)))
        mortar = ((ys % brick) == 0) | (((xs + (ys // brick % 2) * brick) % (2 * brick)) == 0)
        paint(BUILDING, 1 + 0.55 * mortar + 0.06 * fine)
    # graffiti on concrete walls: saturated blobs
    blobs = scene.smooth_noise(5.0) > 0.5
    spray = np.asarray(GRAFFITI[int(scene.rng.integers(len(GRAFFITI)))], np.float32)
    paint(WALL, np.where(blobs[..., None], spray, (1 + 0.08 * fine)[..., None]))
    # chain-link fences
    paint(FENCE, 1 - 0.4 * ((((xs + ys) % 3) == 0) | (((xs - ys) % 3) == 0)))
    # autumn leaves: speckled in tone and hue
    leaf = np.tanh(1.6 * scene.smooth_noise(1.4))
    hue = scene.rng.standard_normal((H, W, 3)).astype(np.float32)
    paint(VEG, (1 + 0.25 * leaf)[..., None] + 0.12 * hue)
    # an overcast sky
    paint(SKY, 1 + 0.06 * scene.smooth_noise(10.0))
    return mod
