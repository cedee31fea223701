"""The ``weather`` look: the camera at dusk, at night, in fog or in rain.

Each image draws one condition (as ACDC's and Dark Zurich's images are each one): dusk (low
exposure, a warm cast, a darker gamma), night (a fraction of the light, the road ahead lit by the
headlights, a sodium or a cold cast, a dark sky, glowing traffic lights, more noise), fog (a veil
that thickens with depth) or rain (dim, desaturated light, streaks, a light haze, a soft lens).
Depth comes from the ground: every pixel takes the depth of the nearest ground pixel below it in
its column, where whatever stands there touches the ground. The sensor's blur and noise follow.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from udas_ray.data.scenes.labels import LIGHT, ROAD, SIDEWALK, SKY, TERRAIN

CONDITIONS = ("dusk", "night", "fog", "rain")


def depth_map(scene, lbl: np.ndarray) -> np.ndarray:
    """Metres from the camera per pixel: the ground's depth at the nearest ground row at or below
    each pixel (the bottom row where there is none); the sky at three times the skyline's depth."""
    H = scene.h
    rows = np.arange(H)[:, None] * np.ones((1, scene.w), np.int64)
    ground = np.isin(lbl, (ROAD, SIDEWALK, TERRAIN))
    contact = np.minimum.accumulate(np.where(ground, rows, H - 1)[::-1], axis=0)[::-1]
    depth = scene.cam.ground_depth(contact.astype(np.float32))
    return np.where(lbl == SKY, 3 * scene.cam.far, depth).astype(np.float32)


def _gamma(img: np.ndarray, g: float) -> np.ndarray:
    return 255.0 * (np.clip(img, 0, 255) / 255.0) ** g


def _veil(img, depth, visibility: float, colour) -> np.ndarray:
    t = np.exp(-depth / visibility)[..., None]
    return img * t + np.asarray(colour, np.float32) * (1 - t)


def _streaks(scene, img: np.ndarray) -> np.ndarray:
    """Rain streaks: short, thin, slanted bright lines over the image."""
    H, W = scene.h, scene.w
    layer = Image.new("L", (W, H))
    pen = ImageDraw.Draw(layer)
    slant = scene.uniform(-0.35, 0.35)
    for _ in range(int(scene.rng.poisson(0.006 * H * W))):
        x, y, ln = scene.uniform(0, W), scene.uniform(0, H), scene.uniform(0.05, 0.14) * H
        pen.line([(x, y), (x + slant * ln, y + ln)], fill=int(scene.uniform(60, 140)), width=1)
    alpha = np.asarray(layer, np.float32)[..., None] / 255.0
    return img * (1 - alpha) + 235.0 * alpha


def _glow(scene, img: np.ndarray, lbl: np.ndarray, colour) -> np.ndarray:
    """Traffic lights glowing at night: their pixels lit and a halo around them."""
    lit = Image.fromarray(((lbl == LIGHT) * 255).astype(np.uint8))
    halo = np.asarray(lit.filter(ImageFilter.GaussianBlur(max(1.0, scene.w / 96))), np.float32)[..., None] / 255.0
    return img + np.asarray(colour, np.float32) * np.clip(3.0 * halo, 0, 1)


def finish(scene, img: np.ndarray, lbl: np.ndarray) -> np.ndarray:
    """The uint8 image of ``scene`` (a :class:`~.looks.Looks`) under one drawn condition, from the
    camera-lit float image."""
    condition = scene.pick(CONDITIONS)
    depth = depth_map(scene, lbl)
    sky = (lbl == SKY)[..., None]
    if condition == "dusk":
        img = img * scene.uniform(0.5, 0.75) * np.array((1.15, 0.9, 0.68), np.float32)
        horizon_glow = np.clip(1 - np.abs(np.arange(scene.h) - scene.cam.horizon) / (0.5 * scene.h), 0, 1)
        img = np.where(sky, img + 70.0 * horizon_glow[:, None, None] * np.array((1.0, 0.45, 0.2), np.float32), img)
        img = _gamma(img, scene.uniform(1.15, 1.4))
        return scene.sensor(img, blur=scene.uniform(0.5, 0.8), noise=(4.0, 2.0))
    if condition == "night":
        cast = scene.pick(((1.25, 0.95, 0.55), (0.7, 0.85, 1.3)))
        ys, xs = np.mgrid[0:scene.h, 0:scene.w].astype(np.float32)
        beams = np.exp(-((xs - scene.cam.centre_x) / (0.3 * scene.w)) ** 2 - ((scene.h - ys) / (0.3 * scene.h)) ** 2)
        img = img * (scene.uniform(0.45, 0.6) * (1 + beams))[..., None] * np.array(cast, np.float32)
        img = np.where(sky, np.array((16, 18, 32), np.float32) * scene.uniform(0.7, 1.3), img)
        img = _gamma(img, scene.uniform(1.15, 1.4))
        img = _glow(scene, img, lbl, (230, 170, 90))
        return scene.sensor(img, blur=scene.uniform(0.5, 0.8), noise=(5.0, 2.5))
    if condition == "fog":
        grey = scene.uniform(180, 220)
        img = _veil(img, depth, scene.uniform(35.0, 90.0), (grey, grey + 2, grey + 5))
        return scene.sensor(img, blur=scene.uniform(0.5, 0.8), noise=(3.0, 1.5))
    gray = img.mean(axis=2, keepdims=True)
    img = (gray + 0.55 * (img - gray)) * scene.uniform(0.6, 0.8)
    img = _veil(img, depth, scene.uniform(60.0, 120.0), (150, 154, 160))
    img = _streaks(scene, img)
    return scene.sensor(img, blur=scene.uniform(0.7, 1.0), noise=(4.0, 2.0))
