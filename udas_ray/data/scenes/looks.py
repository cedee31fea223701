"""The per-domain finishing of a drawn scene: what turns flat polygons into a "game" or a "camera" image.

* ``game`` (source): a skybox gradient, the ``textures`` and ``lighting`` knobs, vivid colour
  grading; no blur, no noise (edges stay crisp).
* ``camera`` (target): per-class fine noise, blotches and leafy texture, brick courses and
  paving joints, a brighter sky towards the horizon, a sun gradient, exposure, vignette, muted
  and slightly warm colour grading, blur and sensor noise.
* the suite's other looks, each in a module of its own: ``toon`` (:mod:`.toon`, another
  engine), ``material`` (:mod:`.materials`: the camera over other surfaces) and ``weather``
  (:mod:`.weather`: the camera at dusk, at night, in fog or rain).

Labels are never touched here.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from PIL import Image, ImageFilter

from udas_ray.data.scenes import materials, toon, weather
from udas_ray.data.scenes.canvas import Canvas
from udas_ray.data.scenes.labels import (BUILDING, BUS, CAR, FENCE, POLE, ROAD, SIDEWALK, SKY, TERRAIN, TRUCK, VEG,
                                         WALL)

# Classes the source's ``textures`` knob may texture, in the order they are tried.
_SOURCE_TEXTURED = (ROAD, SIDEWALK, BUILDING, WALL, FENCE, VEG, TERRAIN, SKY, CAR, TRUCK, BUS)
# Target texture amplitudes per class: (fine noise, blotches, leaves).
_TARGET_TEXTURE = ((ROAD, 0.07, 0.06, 0.0), (SIDEWALK, 0.05, 0.05, 0.0), (BUILDING, 0.04, 0.06, 0.0),
                   (WALL, 0.07, 0.08, 0.0), (FENCE, 0.04, 0.04, 0.0), (VEG, 0.06, 0.1, 0.3),
                   (TERRAIN, 0.1, 0.12, 0.12), (SKY, 0.01, 0.03, 0.0), (POLE, 0.03, 0.0, 0.0))


class Looks(Canvas):
    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The finished (image uint8 HxWx3, label uint8 HxW)."""
        lbl = np.asarray(self.lbl, dtype=np.uint8).copy()
        img = np.asarray(self.img, dtype=np.float32)
        H, W = self.h, self.w
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
        look = self.domain.finish
        if look == "game":
            img = self._source_look(img, lbl, ys, xs)
        elif look == "toon":
            img = toon.finish(self, img, lbl, ys, xs)
        elif look == "weather":
            img = weather.finish(self, self._camera_light(img, lbl, ys, xs, self._target_textures), lbl)
        else:
            textures = self._target_textures if look == "camera" else partial(materials.textures, self)
            img = self.sensor(self._camera_light(img, lbl, ys, xs, textures), blur=self.uniform(0.45, 0.75),
                               noise=(3.0, 1.5))
        return img, lbl

    def _source_look(self, img, lbl, ys, xs):
        # a skybox: deep blue overhead, lighter towards the horizon
        t = np.clip(ys / max(self.cam.horizon, 1.0), 0, 1)[..., None]
        sky = (lbl == SKY)[..., None]
        img = np.where(sky, img * (0.86 + 0.14 * t) + 70.0 * t * t, img)
        tex = self.knobs["textures"]
        if tex > 0:
            img = img * self._source_textures(tex, lbl, ys, xs)[..., None]
        img = self.knob_lighting(img, ys, xs)
        gray = img.mean(axis=2, keepdims=True)  # vivid, game-like colour grading
        img = gray + 1.2 * (img - gray)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)

    def knob_lighting(self, img, ys, xs):
        """The ``lighting`` knob: a random global brightness and a linear gradient in a random direction."""
        amp = self.knobs["lighting"]
        if amp > 0:
            a = self.uniform(0, 2 * math.pi)
            grad = (xs / self.w - 0.5) * math.cos(a) + (ys / self.h - 0.5) * math.sin(a)
            factor = (1 + amp * self.uniform(-0.8, 0.8)) * (1 + amp * self.uniform(0.0, 1.2) * grad)
            img = img * factor[..., None]
        return img

    def _source_textures(self, prob, lbl, ys, xs) -> np.ndarray:
        """A brightness modulation: each class present gets, with probability ``prob``, one simple pattern."""
        H, W = self.h, self.w
        mod = np.ones((H, W), dtype=np.float32)
        for lid in _SOURCE_TEXTURED:
            if not self.chance(prob):
                continue
            mask = lbl == lid
            if not mask.any():
                continue
            kind = self.pick(("stripes", "checker", "noise", "blobs"))
            period = self.uniform(3.0, 9.0)
            if kind == "stripes":
                a = self.uniform(0, math.pi)
                pat = np.sign(np.sin((xs * math.cos(a) + ys * math.sin(a)) * 2 * math.pi / period))
            elif kind == "checker":
                pat = ((xs // period + ys // period) % 2) * 2 - 1
            elif kind == "noise":
                pat = self.rng.standard_normal((H, W)).astype(np.float32)
            else:
                pat = self.smooth_noise(period)
            mod[mask] += self.uniform(0.08, 0.22) * pat[mask]
        return mod

    def _camera_light(self, img, lbl, ys, xs, textures):
        """Surface textures (``textures(lbl, ys, xs)``: a brightness or an RGB modulation), then
        the sun gradient, exposure, vignette and muted, slightly warm colour grading (float image)."""
        H, W = self.h, self.w
        mod = textures(lbl, ys, xs)
        img = img * (mod if mod.ndim == 3 else mod[..., None])
        a = self.uniform(-0.5, 0.5) + (0.0 if self.sun > 0 else math.pi)
        grad = (xs / W - 0.5) * math.cos(a) + (ys / H - 0.5) * math.sin(a) * 0.5
        vignette = 1 - 0.35 * ((xs / W - 0.5) ** 2 + (ys / H - 0.5) ** 2)
        factor = self.uniform(0.88, 1.06) * (1 + self.uniform(0.15, 0.3) * grad) * vignette
        img = img * factor[..., None]
        gray = img.mean(axis=2, keepdims=True)
        img = gray + 0.85 * (img - gray)
        return img * np.array([self.uniform(1.0, 1.05), 1.0, self.uniform(0.92, 0.98)], dtype=np.float32)

    def sensor(self, img, blur: float, noise: tuple[float, float]):
        """Optics and sensor: a Gaussian blur of ``blur`` pixels (at 192 wide; scaled with the width),
        then noise of (luminance, per-channel) sigmas ``noise``; the uint8 image."""
        H, W = self.h, self.w
        out = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
        out = out.filter(ImageFilter.GaussianBlur(blur * max(1.0, W / 192)))
        img = np.asarray(out, dtype=np.float32)
        img = img + self.rng.normal(0, noise[0], (H, W, 1)) + self.rng.normal(0, noise[1], (H, W, 3))
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)

    def _target_textures(self, lbl, ys, xs) -> np.ndarray:
        """A brightness modulation: per-class noise, blotches and leaves, brick courses, paving, sky."""
        H = self.h
        fine = self.rng.standard_normal((H, self.w)).astype(np.float32)
        blotch = self.smooth_noise(8.0)
        leaf = np.tanh(1.6 * self.smooth_noise(1.6))
        a_fine, a_blotch, a_leaf = (np.zeros(256, np.float32) for _ in range(3))
        for lid, f, b, lf in _TARGET_TEXTURE:
            a_fine[lid], a_blotch[lid], a_leaf[lid] = f, b, lf
        mod = 1 + a_fine[lbl] * fine + a_blotch[lbl] * blotch + a_leaf[lbl] * leaf
        # brick courses on buildings, paving joints on sidewalks
        brick = max(2, int(round(self.uniform(2.0, 4.0) * H / 96)))
        courses = ((ys % brick) == 0) | (((xs + (ys // brick % 2) * brick) % (2 * brick)) == 0)
        mod -= np.where(lbl == BUILDING, 0.06, 0.0) * courses
        mod -= np.where(lbl == SIDEWALK, 0.05, 0.0) * (((ys % (brick + 1)) == 0) & ((xs % 3) == 0))
        # sky: brighter towards the horizon
        mod *= np.where(lbl == SKY, 0.9 + 0.15 * np.clip(ys / max(self.cam.horizon, 1.0), 0, 1), 1.0)
        return mod
