"""The canvas a scene is drawn on: an RGB image, its label image and the scene's random draws.

Every drawing primitive puts the same geometry on both images: the label image gets the
labelId of what is drawn, or nothing for image-only details (windows, lane markings,
lamps), so labels are exact by construction.

All randomness of a scene comes from one ``numpy.random.Generator``, consumed in a fixed
order by layout planning, drawing and finishing. That order *is* the benchmark: a draw
added, removed or moved anywhere changes every later pixel of every scene. Keep
short-circuit conditions (``a and self.chance(p)``) and argument order as they are.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from udas_ray.data.scenes.domains import LAYOUTS, PALETTES, TARGET_JITTER, domain


def shade(colour, k: float) -> tuple[int, int, int]:
    """``colour`` scaled by ``k`` and clipped to 0..255."""
    return tuple(int(min(255, max(0, v * k))) for v in colour)


def line_width(pixels: float) -> int:
    """A stroke width in whole pixels, at least 1."""
    return max(1, int(round(pixels)))


class Canvas:
    """The state every part of a scene shares: domain (a :class:`~.domains.Domain`), random draws,
    tables and the two images.

    The scene fills in later: ``cam`` (:class:`~.layout.Camera`), ``street`` (the planned
    :class:`~.layout.Street`), ``sun`` (-1: sunlight from the left, +1: from the right) and
    ``sky`` (the sky colour, which far things fade to in the target).
    """

    def __init__(self, name: str, rng: np.random.Generator, h: int, w: int, knobs: dict):
        self.domain = domain(name)
        self.target = self.domain.camera  # what a real camera sees (haze, shadows, hood) and an engine leaves out
        self.rng = rng
        self.h, self.w = h, w
        self.knobs = knobs
        self.table = LAYOUTS[self.domain.layout]
        self.palette = PALETTES[self.domain.palette]
        self.jitter = TARGET_JITTER if self.target else knobs["jitter"]
        self.img = Image.new("RGB", (w, h))
        self.lbl = Image.new("L", (w, h))
        self.pen = ImageDraw.Draw(self.img)  # image only
        self.blend_pen = ImageDraw.Draw(self.img, "RGBA")  # image only, alpha-blended: shadows
        self.label_pen = ImageDraw.Draw(self.lbl)
        self.cam = self.street = self.sun = self.sky = None  # filled in by Scene.render

    # -- random draws and colours ------------------------------------------------------------------
    def uniform(self, lo: float, hi: float) -> float:
        """A uniform draw in [lo, hi) (also fine when hi < lo, as with odd aspect ratios)."""
        return lo + (hi - lo) * float(self.rng.random())

    def chance(self, prob: float) -> bool:
        """True with probability ``prob`` (always one draw)."""
        return bool(self.rng.random() < prob)

    def pick(self, seq):
        """One element of ``seq``, uniformly."""
        return seq[int(self.rng.integers(len(seq)))]

    def smooth_noise(self, cell: float) -> np.ndarray:
        """Gaussian noise on a grid of ``cell``-pixel cells, bilinearly upsampled to the image."""
        gh, gw = max(2, int(self.h / cell) + 2), max(2, int(self.w / cell) + 2)
        small = self.rng.standard_normal((gh, gw)).astype(np.float32)
        return np.asarray(Image.fromarray(small).resize((self.w, self.h), Image.BILINEAR))

    def colour(self, material: str, brightness: float = 1.0) -> tuple[int, int, int]:
        """A colour of ``material`` from the domain's palette, scaled by ``brightness`` and jittered."""
        c = np.asarray(self.pick(self.palette[material]), dtype=np.float64) * brightness
        if self.jitter > 0:
            c = c * self.uniform(1 - self.jitter, 1 + self.jitter) + self.rng.normal(0, 60 * self.jitter, 3)
        return tuple(int(v) for v in np.clip(c, 0, 255))

    def haze(self, c, z: float):
        """Aerial perspective (target only): things at depth ``z`` fade towards the sky colour."""
        if not self.target:
            return c
        a = min(0.45, z / 260.0)
        return tuple(int(v * (1 - a) + s * a) for v, s in zip(c, self.sky))

    # -- primitives: the same geometry on image and label (no label when ``lid`` is None) ----------
    def poly(self, pts, colour, lid=None):
        self.pen.polygon(pts, fill=colour)
        if lid is not None:
            self.label_pen.polygon(pts, fill=lid)

    def ellipse(self, cx, cy, rx, ry, colour, lid=None, width=0):
        """An ellipse centred at (cx, cy) with radii (rx, ry); a ring of ``width`` pixels if width > 0."""
        box = (cx - abs(rx), cy - abs(ry), cx + abs(rx), cy + abs(ry))
        if width:
            self.pen.ellipse(box, outline=colour, width=width)
            if lid is not None:
                self.label_pen.ellipse(box, outline=lid, width=width)
        else:
            self.pen.ellipse(box, fill=colour)
            if lid is not None:
                self.label_pen.ellipse(box, fill=lid)

    def line(self, pts, colour, width, lid=None):
        self.pen.line(pts, fill=colour, width=width)
        if lid is not None:
            self.label_pen.line(pts, fill=lid, width=width)

    def shadow(self, pts, alpha):
        """A soft shadow polygon (target only; the game engine has none). Image only."""
        if self.target:
            self.blend_pen.polygon(pts, fill=(0, 0, 0, alpha))
