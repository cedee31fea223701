"""The embedded sim->real benchmark: procedural 2-D street scenes in two domains.

One scene grammar (a pinhole camera over a ground plane: horizon, a road in
perspective with lanes, sidewalks, terrain strips, building facades with windows,
walls, fences, hedges, poles carrying signs and traffic lights, trees, bushes,
persons, riders on bicycles and motorcycles, parked and moving cars, trucks,
buses, an occasional tram) is rendered in two domains:

* ``source`` -- "synthetic", a game engine: plausible per-class colour families
  (dark blue-grey asphalt, beige/brick/grey/cream facades, bright green foliage, a
  blue skybox with clear, hazy and overcast weather, cars in saturated and neutral
  paints), flat cel shading (two tones per facade), crisp edges, vivid colour
  grading, no blur and no noise; plus domain-randomization knobs (``jitter``,
  ``textures``, ``distractors``, ``lighting``; see :data:`SOURCE_KNOBS`).
* ``target`` -- "real-like": a fixed, different appearance (muted real-world
  colours: grey/white/black cars, warm light asphalt, olive vegetation, hazy sky,
  concrete walls, buses and trams in muted liveries), textures, sun gradient, aerial
  haze, soft shadows under objects, slight blur, sensor noise, an ego-vehicle hood,
  and a shifted layout distribution (higher horizon, longer focal length, narrower
  roads, many more parked cars and pedestrians, more trees).

As in Cityscapes' polygons, a bicycle's label covers its whole wheels, not just the rims.

Every pixel's label is the Cityscapes labelId of what is drawn there (the same
geometry is drawn on the RGB image and on an 'L' label image); distractors and the
ego hood are labelId 0 ("unlabeled"). Image ``i`` of a split is a pure function of
``(seed, domain, split, i)``.

Sizes are ``(height, width)``. Files are written in the real dataset layouts:
GTA5 (``images/00001.png`` + ``labels/00001.png``) for the source and Cityscapes
(``leftImg8bit/{split}/{city}/..._leftImg8bit.png`` + ``gtFine/.../..._gtFine_labelIds.png``)
for the target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from udas_ray.classes import CLASS_NAMES, NUM_CLASSES, TRAIN_TO_LABEL_ID, colorize, label_ids_to_train_ids
from udas_ray.errors import UdasError

FORMAT_VERSION = 2
DOMAINS = {"source": 1, "target": 2}
SPLITS = {"train": 1, "val": 2}
TARGET_CITIES = {
    "train": ("alderon", "brindle", "castmoor", "dunwick", "elmhurst"),
    "val": ("corvia", "fennick"),
}
# Source-domain randomization knobs, each in [0, 1] (0 switches it off).
SOURCE_KNOBS = {
    "jitter": 0.12,  # per-object palette jitter (brightness +-jitter, per-channel noise)
    "textures": 0.3,  # probability per class and image of a simple procedural texture
    "distractors": 0.3,  # probability per image of 1-4 flying void shapes (labelId 0)
    "lighting": 0.25,  # amplitude of a random global brightness and linear gradient
}
DEFAULT_SOURCE_SIZE = (108, 192)
DEFAULT_TARGET_SIZE = (96, 192)
DEFAULT_NUM_SOURCE = 1500
DEFAULT_NUM_TRAIN = 600
DEFAULT_NUM_VAL = 200

_ID = dict(zip(CLASS_NAMES, TRAIN_TO_LABEL_ID))
VOID = 0
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = (
    _ID[n] for n in ("pole", "traffic light", "traffic sign", "vegetation", "terrain", "sky")
)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE = (
    _ID[n] for n in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
)
_VEHICLE_IDS = {"car": CAR, "truck": TRUCK, "bus": BUS, "train": TRAIN}

# ---------------------------------------------------------------------------------------------
# Appearance: material -> candidate colours.
_PALETTES = {
    "source": {  # a game engine: plausible colour families, cleaner, brighter and more saturated
        "sky": [(64, 150, 236), (84, 168, 246), (120, 186, 248), (150, 196, 240), (176, 196, 222),
                (196, 208, 222)],  # clear, hazy and overcast weather
        "cloud": [(250, 252, 255)],
        "road": [(72, 76, 90), (84, 88, 102), (62, 66, 80), (96, 98, 110)],
        "marking": [(252, 252, 252), (255, 206, 0)],
        "curb": [(214, 214, 220)],
        "sidewalk": [(196, 194, 204), (176, 180, 196), (214, 204, 184), (168, 160, 176)],
        "terrain": [(148, 186, 62), (170, 190, 82), (126, 168, 70), (182, 164, 96)],
        "building": [(226, 208, 168), (192, 92, 60), (166, 168, 178), (238, 228, 206), (118, 132, 160),
                     (232, 176, 108), (164, 64, 52), (206, 196, 186)],
        "window": [(52, 96, 160), (136, 196, 238), (40, 60, 96)],
        "wall": [(208, 200, 180), (190, 186, 188), (196, 150, 108)],
        "fence": [(152, 104, 56), (236, 236, 230), (120, 124, 136), (150, 60, 48)],
        "pole": [(120, 124, 134), (92, 96, 108), (60, 110, 72)],
        "light_box": [(250, 200, 20), (48, 50, 56)],
        "sign": [(255, 255, 255)],
        "sign_back": [(190, 190, 196)],
        "vegetation": [(48, 156, 40), (30, 128, 52), (88, 176, 44), (40, 112, 36), (62, 110, 34)],
        "trunk": [(122, 78, 40)],
        "skin": [(250, 204, 168), (206, 150, 110), (150, 100, 70)],
        "hair": [(60, 40, 20), (230, 190, 80), (30, 30, 30)],
        "cloth": [(226, 42, 42), (40, 86, 220), (250, 214, 40), (44, 178, 80), (246, 132, 30), (160, 60, 200),
                  (246, 246, 246), (34, 34, 40), (40, 190, 210)],
        "car": [(214, 30, 30), (30, 84, 214), (246, 246, 246), (30, 30, 36), (172, 176, 186), (250, 200, 20),
                (30, 150, 70), (240, 120, 20), (120, 40, 170), (236, 236, 240), (40, 40, 48), (150, 20, 30)],
        "glass": [(110, 176, 226), (60, 120, 176), (40, 58, 84)],
        "big_glass": [(150, 206, 240)],  # bus and tram windows
        "tyre": [(22, 22, 26)],
        "lamp_rear": [(255, 30, 30)],
        "lamp_front": [(255, 255, 200)],
        "truck": [(242, 242, 242), (244, 150, 20), (150, 152, 160), (40, 92, 200)],
        "truck_cab": [(216, 40, 40), (40, 92, 222), (250, 250, 250)],
        "bus": [(252, 184, 0), (220, 44, 44), (44, 122, 224), (246, 246, 246)],
        "train": [(252, 210, 20), (226, 52, 52), (240, 240, 240)],
        "moto": [(222, 24, 24), (26, 26, 30), (252, 142, 0), (40, 90, 220)],
        "bike": [(0, 150, 250), (255, 106, 0), (40, 190, 40), (30, 30, 34)],
        "hood": [(0, 0, 0)],
    },
    "target": {
        "sky": [(186, 204, 226), (172, 196, 224), (200, 210, 222)],
        "cloud": [(234, 236, 238)],
        "road": [(128, 120, 112), (120, 114, 108), (136, 128, 118)],
        "marking": [(208, 206, 198)],
        "curb": [(150, 146, 140)],
        "sidewalk": [(182, 172, 162), (170, 164, 158), (192, 180, 166)],
        "terrain": [(130, 134, 74), (142, 132, 84), (120, 128, 68)],
        "building": [(194, 174, 138), (150, 92, 72), (210, 198, 176), (176, 146, 104), (160, 140, 122),
                     (126, 98, 84)],
        "window": [(58, 66, 76), (74, 82, 90), (96, 104, 112)],
        "wall": [(150, 156, 158), (126, 132, 136), (168, 172, 170)],
        "fence": [(58, 80, 64), (118, 90, 60), (70, 74, 78)],
        "pole": [(72, 78, 78), (92, 96, 96)],
        "light_box": [(40, 42, 40)],
        "sign": [(232, 232, 228)],
        "sign_back": [(146, 148, 150)],
        "vegetation": [(66, 86, 42), (58, 80, 44), (80, 94, 48)],
        "trunk": [(76, 64, 52)],
        "skin": [(206, 166, 140), (152, 112, 92)],
        "hair": [(42, 34, 30), (92, 72, 52)],
        "cloth": [(40, 40, 46), (32, 42, 70), (150, 142, 132), (142, 44, 42), (92, 104, 66), (204, 200, 192),
                  (62, 82, 128), (182, 160, 124), (120, 122, 130), (176, 110, 60)],
        "car": [(44, 44, 46), (200, 200, 202), (152, 154, 158), (228, 228, 226), (40, 50, 74), (96, 26, 28),
                (112, 106, 98)],
        "glass": [(46, 54, 62)],
        "big_glass": [(96, 112, 126)],  # bus and tram windows: reflections
        "tyre": [(30, 30, 32)],
        "lamp_rear": [(150, 30, 30)],
        "lamp_front": [(230, 226, 206)],
        "truck": [(150, 154, 158), (92, 106, 126), (118, 124, 92), (168, 84, 52)],
        "truck_cab": [(206, 206, 202), (54, 62, 82), (148, 44, 38)],
        "bus": [(184, 62, 50), (66, 102, 146), (70, 128, 116)],
        "train": [(218, 184, 56), (90, 128, 102), (200, 70, 60)],
        "moto": [(36, 36, 38), (150, 150, 156), (130, 34, 30), (44, 70, 120)],
        "bike": [(30, 30, 32), (94, 94, 98), (62, 72, 92)],
        "hood": [(34, 36, 40)],
    },
}
_SIGN_COLOURS = {
    "source": {"red": (236, 28, 36), "blue": (0, 100, 255), "yellow": (255, 220, 0)},
    "target": {"red": (172, 44, 42), "blue": (44, 82, 148), "yellow": (206, 174, 64)},
}
_LAMP_COLOURS = [(255, 40, 30), (255, 180, 0), (40, 240, 90)]

# Layout distributions (the target's is shifted).
_LAYOUTS = {
    "source": dict(
        horizon=(0.32, 0.47), focal=(0.52, 0.70), cam_h=(1.6, 2.3), lanes=(2, 2, 3, 4), lane_w=(3.3, 3.9),
        sidewalk=(2.6, 5.5), terrain_p=0.35, terrain_w=(1.5, 5.0), setback=(0.0, 1.5), bld_h=(6.0, 28.0),
        bld_len=(8.0, 30.0), gap_p=0.2, cross_p=0.35, far=(110.0, 200.0), moving=0.9, parked_p=0.3,
        parked_fill=0.45, persons=2.6, riders=1.2, parked_bikes=1.0, parked_motos=0.7, truck_p=0.2,
        bus_p=0.16, train_p=0.14, tree_p=0.4, tree_step=(9.0, 18.0), bushes=1.2, walls=1.2, fences=1.3,
        hedges=0.3, pole_step=(12.0, 28.0), signs=0.8, lights=0.5, ego_p=0.0, clouds=0.3,
    ),
    "target": dict(
        horizon=(0.40, 0.52), focal=(0.64, 0.84), cam_h=(1.15, 1.45), lanes=(1, 2, 2, 3), lane_w=(2.8, 3.3),
        sidewalk=(2.4, 5.0), terrain_p=0.6, terrain_w=(2.0, 5.0), setback=(0.0, 0.8), bld_h=(11.0, 22.0),
        bld_len=(10.0, 26.0), gap_p=0.07, cross_p=0.3, far=(80.0, 150.0), moving=0.7, parked_p=0.85,
        parked_fill=0.55, persons=6.5, riders=1.6, parked_bikes=1.6, parked_motos=0.7, truck_p=0.1,
        bus_p=0.08, train_p=0.16, tree_p=0.65, tree_step=(6.0, 12.0), bushes=1.5, walls=1.4, fences=1.6,
        hedges=0.5, pole_step=(9.0, 20.0), signs=1.2, lights=0.6, ego_p=0.75, clouds=0.8,
    ),
}


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UdasError(f"scene size {size!r} must be (height, width); e.g. (96, 192)") from None
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise UdasError(f"scene size {size!r} must be (height, width) with 8 <= each <= 4096")
    return h, w


def _check_knobs(domain: str, knobs: dict) -> dict:
    if domain == "target":
        if knobs:
            raise UdasError(f"the target domain has a fixed appearance; unknown knob(s) {sorted(knobs)}")
        return {}
    unknown = sorted(set(knobs) - set(SOURCE_KNOBS))
    if unknown:
        raise UdasError(f"unknown source scene knob(s) {unknown}; known: {sorted(SOURCE_KNOBS)}")
    out = {}
    for key, default in SOURCE_KNOBS.items():
        value = knobs.get(key, default)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UdasError(f"scene knob {key}={value!r} must be a number in [0, 1]") from None
        if not 0.0 <= value <= 1.0:
            raise UdasError(f"scene knob {key}={value!r} must be a number in [0, 1]")
        out[key] = value
    return out


def render_scene(domain: str, seed: int, index: int, size: tuple[int, int], split: str = "train",
                 **knobs) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: (image uint8 HxWx3, label uint8 HxW in Cityscapes labelIds).

    ``size`` is (height, width). ``knobs`` (source only) override :data:`SOURCE_KNOBS`.
    """
    if domain not in DOMAINS:
        raise UdasError(f"scene domain {domain!r} must be one of {sorted(DOMAINS)}")
    if split not in SPLITS:
        raise UdasError(f"scene split {split!r} must be one of {sorted(SPLITS)}")
    if int(seed) < 0 or int(index) < 0:
        raise UdasError(f"scene seed {seed} and index {index} must be >= 0")
    h, w = _check_size(size)
    knobs = _check_knobs(domain, knobs)
    rng = np.random.default_rng([int(seed), DOMAINS[domain], SPLITS[split], int(index)])
    return _Scene(domain, rng, h, w, knobs).render()


def _iround(v: float) -> int:
    return max(1, int(round(v)))


class _Scene:
    """One scene being drawn: a pinhole camera at height ``ch`` over the ground plane.

    World coordinates: X to the right, Y up from the ground, Z forward (depth).
    """

    def __init__(self, domain: str, rng: np.random.Generator, h: int, w: int, knobs: dict):
        self.domain = domain
        self.target = domain == "target"
        self.rng = rng
        self.h, self.w = h, w
        self.knobs = knobs
        self.lay = _LAYOUTS[domain]
        self.pal = _PALETTES[domain]
        self.jitter = 0.05 if self.target else knobs["jitter"]
        self.img = Image.new("RGB", (w, h))
        self.lbl = Image.new("L", (w, h))
        self.di = ImageDraw.Draw(self.img)
        self.da = ImageDraw.Draw(self.img, "RGBA")  # blending, for shadows
        self.dl = ImageDraw.Draw(self.lbl)

    # -- randomness and colour -----------------------------------------------------------------
    def u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(self.rng.random())  # also fine when hi < lo (odd aspect ratios)

    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def col(self, material: str, shade: float = 1.0) -> tuple[int, int, int]:
        c = np.asarray(self.pick(self.pal[material]), dtype=np.float64) * shade
        if self.jitter > 0:
            c = c * self.u(1 - self.jitter, 1 + self.jitter) + self.rng.normal(0, 60 * self.jitter, 3)
        return tuple(int(v) for v in np.clip(c, 0, 255))

    def haze(self, c, z: float):
        """Aerial perspective (target only): far things fade towards the sky colour."""
        if not self.target:
            return c
        a = min(0.45, z / 260.0)
        return tuple(int(v * (1 - a) + s * a) for v, s in zip(c, self.sky))

    # -- camera ------------------------------------------------------------------------------------
    def P(self, X: float, Z: float, Y: float = 0.0) -> tuple[float, float]:
        Z = max(Z, 0.2)
        return (self.cx + self.f * X / Z, self.yh + self.f * (self.ch - Y) / Z)

    def s(self, Z: float) -> float:
        return self.f / max(Z, 0.2)

    def gquad(self, x0, x1, z0, z1):
        P = self.P
        return [P(x0, z0), P(x1, z0), P(x1, z1), P(x0, z1)]

    def vquad(self, X, z0, z1, y0, y1):
        P = self.P
        return [P(X, z0, y0), P(X, z0, y1), P(X, z1, y1), P(X, z1, y0)]

    def fquad(self, x0, x1, Z, y0, y1):
        P = self.P
        return [P(x0, Z, y0), P(x1, Z, y0), P(x1, Z, y1), P(x0, Z, y1)]

    # -- primitives (same geometry on image and label) ---------------------------------------------
    def poly(self, pts, colour, lid=None):
        self.di.polygon(pts, fill=colour)
        if lid is not None:
            self.dl.polygon(pts, fill=lid)

    def ellipse(self, cx, cy, rx, ry, colour, lid=None, width=0):
        box = (cx - abs(rx), cy - abs(ry), cx + abs(rx), cy + abs(ry))
        if width:
            self.di.ellipse(box, outline=colour, width=width)
            if lid is not None:
                self.dl.ellipse(box, outline=lid, width=width)
        else:
            self.di.ellipse(box, fill=colour)
            if lid is not None:
                self.dl.ellipse(box, fill=lid)

    def line(self, pts, colour, width, lid=None):
        self.di.line(pts, fill=colour, width=width)
        if lid is not None:
            self.dl.line(pts, fill=lid, width=width)

    def shadow(self, pts, alpha):
        if self.target:
            self.da.polygon(pts, fill=(0, 0, 0, alpha))

    # -- the scene -----------------------------------------------------------------------------------
    def render(self) -> tuple[np.ndarray, np.ndarray]:
        L, H, W = self.lay, self.h, self.w
        self.yh = H * self.u(*L["horizon"])
        self.f = W * self.u(*L["focal"])
        self.cx = W * self.u(0.38, 0.62)
        self.ch = self.u(*L["cam_h"])
        self.zmin = self.f * self.ch / (H - self.yh)  # depth of the ground at the bottom row
        self.zfar = self.u(*L["far"])
        self.sun = self.pick((-1, 1))
        self._layout()
        self.sky = self.col("sky")
        self.di.rectangle((0, 0, W, H), fill=self.sky)
        self.dl.rectangle((0, 0, W, H), fill=SKY)
        self._sky()
        self.poly([(-1, self.yh), (W + 1, self.yh), (W + 1, H + 1), (-1, H + 1)], self.col("terrain"), TERRAIN)
        self._far_band()
        self._ground()
        for item in sorted(self.backdrop, key=lambda t: (-abs(t[0]), -t[1])):
            item[2](*item[3:])
        for item in sorted(self.objects, key=lambda t: -t[0]):
            item[1](*item[2:])
        if not self.target and self.p(self.knobs["distractors"]):
            self._distractors()
        if self.target and self.p(L["ego_p"]):
            self._hood()
        return self._finish()

    # -- layout sampling -------------------------------------------------------------------------------
    def _layout(self):
        L = self.lay
        k = int(self.pick(L["lanes"]))
        lw = self.u(*L["lane_w"])
        pw = 2.2
        park = {s: self.p(L["parked_p"]) for s in (-1, 1)}
        cam_lane = int(self.rng.integers(k // 2, k))
        rl = -((pw if park[-1] else 0.0) + (cam_lane + 0.5) * lw)
        lanes_left = rl + (pw if park[-1] else 0.0)
        rr = lanes_left + k * lw + (pw if park[1] else 0.0)
        self.road = (rl, rr)
        self.lanes = [lanes_left + (i + 0.5) * lw for i in range(k)]
        self.oncoming = [i < k // 2 for i in range(k)]
        self.lane_lines = [lanes_left + i * lw for i in range(k + 1)]
        self.park = park
        self.sides = {}
        for sgn in (-1, 1):
            edge = rl if sgn < 0 else rr
            sw = self.u(*L["sidewalk"])
            terr = self.u(*L["terrain_w"]) if self.p(L["terrain_p"]) else 0.0
            xs = edge + sgn * sw
            xt = xs + sgn * terr
            self.sides[sgn] = dict(edge=edge, sw=sw, terr=terr, xs=xs, xt=xt)
        self.cross = None
        if self.p(L["cross_p"]):
            zc = self.u(max(self.zmin + 6.0, 12.0), 45.0)
            self.cross = (zc, zc + self.u(7.0, 14.0))
        self.tram = None
        self.backdrop = []  # (X, Z, fn, *args): facades, walls, fences, hedges; drawn by |X| then Z
        self.objects = []  # (Z, fn, *args): everything on the road and the sidewalks; far to near
        self.pits = []  # tree pits (terrain squares in the sidewalk)
        self._plan_backdrop()
        self._plan_objects()

    def _in_cross(self, z0, z1, margin=2.5):
        if self.cross is None:
            return False
        return z1 > self.cross[0] - margin and z0 < self.cross[1] + margin

    def _plan_backdrop(self):
        L = self.lay
        for sgn, side in self.sides.items():
            z = self.u(0.5, 3.0)
            while z < self.zfar:
                ln = self.u(*L["bld_len"])
                if self.cross is not None and z < self.cross[1] + 2.5 and z + ln > self.cross[0] - 2.5:
                    if z < self.cross[0] - 2.5 - 2.0:
                        ln = self.cross[0] - 2.5 - z
                    else:
                        z = self.cross[1] + 2.5 + self.u(0.0, 3.0)
                        continue
                if self.p(L["gap_p"]):
                    z += self.u(4.0, 14.0)
                    continue
                X = side["xt"] + sgn * self.u(*L["setback"])
                z1 = min(z + ln, self.zfar)
                self.backdrop.append((X, z, self._building, sgn, X, z, z1, self.u(*L["bld_h"])))
                z = z1
            for kind in ("walls", "fences", "hedges"):
                for _ in range(int(self.rng.poisson(L[kind]))):
                    z0 = self.u(self.zmin * 0.6, 55.0)
                    z1 = z0 + self.u(4.0, 25.0)
                    if self._in_cross(z0, z1):
                        continue
                    if side["terr"] > 0 and self.p(0.5):  # along the sidewalk, in front of the lawn
                        X = side["xs"] + sgn * 0.15
                    else:
                        X = side["xt"] - sgn * self.u(0.1, 0.5)
                    fn = {"walls": self._wall, "fences": self._fence, "hedges": self._hedge}[kind]
                    self.backdrop.append((X, z0, fn, sgn, X, z0, z1))

    def _z_near(self, lo_extra=0.0, scale=15.0, cap=70.0):
        """A depth skewed towards the camera (more near objects than far ones)."""
        return min(cap, self.zmin * 0.9 + lo_extra + float(self.rng.exponential(scale)))

    def _plan_objects(self):
        L, add = self.lay, self.objects.append
        rl, rr = self.road
        # tram: along the road, or across it at the crossing
        if self.p(L["train_p"]):
            if self.cross is not None and self.p(0.5):
                zc = (self.cross[0] + self.cross[1]) / 2
                x0 = self.u(-25.0, 5.0)
                add((zc, self._cross_vehicle, "train", x0, zc, self.u(22.0, 30.0), 3.4, self.pick((-1, 1))))
            else:
                i = int(self.rng.integers(len(self.lanes)))
                self.tram = self.lanes[i]
                z = self.u(max(self.zmin, 10.0), 40.0)
                add((z, self._vehicle, "train", self.lanes[i], z, 2.4, self.u(22.0, 30.0), 3.4, self.oncoming[i]))
        # moving traffic
        for i, x in enumerate(self.lanes):
            if self.tram is not None and x == self.tram:
                continue
            zs = sorted(self.u(self.zmin * 0.9, 90.0) for _ in range(int(self.rng.poisson(L["moving"] + 0.3))))
            last = -1e9
            for z in zs:
                if x == 0 and z < max(6.0, self.zmin * 1.2):
                    continue
                kind, (w, ln, h) = self._vehicle_kind()
                if z < last + 3.0:
                    continue
                last = z + ln
                add((z, self._vehicle, kind, x + self.u(-0.3, 0.3), z, w, ln, h, self.oncoming[i]))
        # parked vehicles
        for sgn in (-1, 1):
            if not self.park[sgn]:
                continue
            x = (rl + 1.1) if sgn < 0 else (rr - 1.1)
            z = self.u(self.zmin * 0.8, 10.0)
            while z < 70.0:
                kind, (w, ln, h) = self._vehicle_kind(parked=True)
                if self.p(L["parked_fill"]) and not self._in_cross(z, z + ln, 4.0):
                    add((z, self._vehicle, kind, x + self.u(-0.15, 0.15), z, w, ln, h, self.p(0.3)))
                    z += ln + self.u(0.4, 2.5)
                else:
                    z += self.u(2.0, 6.0)
        # cross traffic
        if self.cross is not None:
            zc0, zc1 = self.cross
            for _ in range(int(self.rng.poisson(0.7))):
                z = self.u(zc0 + 1.5, zc1 - 1.5)
                kind, (w, ln, h) = self._vehicle_kind()
                add((z, self._cross_vehicle, kind, self.u(-30.0, 20.0), z, ln, h, self.pick((-1, 1))))
        # pedestrians
        for _ in range(int(self.rng.poisson(L["persons"]))):
            group = 1 if self.p(0.7) else int(self.rng.integers(2, 4))
            if self.p(0.12):  # crossing the road
                z = self.cross[0] - 1.2 if self.cross is not None else self._z_near(4.0)
                x = self.u(rl, rr)
            else:
                sgn = self.pick((-1, 1))
                side = self.sides[sgn]
                z = self._z_near()
                x = side["edge"] + sgn * self.u(0.4, max(0.5, side["sw"] - 0.3))
            for g in range(group):
                zz = z + g * self.u(0.3, 1.0)
                add((zz, self._person, x + self.u(-0.7, 0.7) * g, zz, PERSON, self.u(1.55, 1.95)))
        # riders
        for _ in range(int(self.rng.poisson(L["riders"]))):
            moto = self.p(0.4)
            z = self._z_near(4.0, 12.0, 50.0)
            if moto:
                x = self.pick(self.lanes) + self.u(-0.8, 0.8)
                if abs(x) < 1.5:  # not right in front of the camera
                    z += 8.0
            else:
                x = rr - (2.2 if self.park[1] else 0.0) - self.u(0.6, 1.2)
            add((z, self._rider, x, z, moto, self.pick((-1, 1)) * self.u(0.6, 1.0)))
        # parked two-wheelers
        for kind, rate in (("bike", L["parked_bikes"]), ("moto", L["parked_motos"])):
            for _ in range(int(self.rng.poisson(rate))):
                sgn = self.pick((-1, 1))
                side = self.sides[sgn]
                z = self._z_near(0.5, 12.0, 45.0)
                x = side["edge"] + sgn * self.u(0.5, max(0.6, side["sw"] - 0.5))
                for g in range(int(self.rng.integers(1, 4))):
                    zz = z + g * 0.8
                    add((zz, self._parked_two_wheeler, kind, x, zz, self.pick((-1, 1)) * self.u(0.45, 1.0)))
        # poles: lamps, signs, traffic lights along the curbs
        for sgn, side in self.sides.items():
            z = self.u(self.zmin, 14.0)
            while z < 80.0:
                x = side["edge"] + sgn * 0.45
                kind = self.pick(("lamp", "lamp", "sign", "sign", "light"))
                add((z, self._pole, x, z, sgn, kind))
                z += self.u(*self.lay["pole_step"])
        for _ in range(int(self.rng.poisson(L["signs"]))):
            sgn = self.pick((-1, 1))
            side = self.sides[sgn]
            z = self._z_near(1.0, 15.0, 60.0)
            add((z, self._pole, side["edge"] + sgn * self.u(0.3, 1.0), z, sgn, "sign"))
        if self.cross is not None or self.p(L["lights"]):
            z = self.cross[0] - 2.0 if self.cross is not None else self._z_near(5.0, 15.0, 50.0)
            for sgn in (-1, 1):
                if self.p(0.75):
                    add((z, self._pole, self.sides[sgn]["edge"] + sgn * 0.5, z, sgn,
                         "overhead" if self.p(0.5) else "light"))
        # trees and bushes
        for sgn, side in self.sides.items():
            if not self.p(L["tree_p"]):
                continue
            in_lawn = side["terr"] > 1.2 and self.p(0.5)
            x = (side["xs"] + side["xt"]) / 2 if in_lawn else side["edge"] + sgn * min(1.0, side["sw"] * 0.5)
            z = self.u(self.zmin * 0.8, 12.0)
            while z < 70.0:
                if not self._in_cross(z - 1, z + 1) and self.p(0.85):
                    add((z, self._tree, x + self.u(-0.2, 0.2), z))
                    if not in_lawn:
                        self.pits.append((x, z))
                z += self.u(*L["tree_step"])
        for _ in range(int(self.rng.poisson(L["bushes"]))):
            sgn = self.pick((-1, 1))
            side = self.sides[sgn]
            z = self._z_near(0.0, 15.0, 60.0)
            x = (side["xs"] + side["xt"]) / 2 if side["terr"] > 0 else side["xt"] - sgn * 0.6
            add((z, self._bush, x, z))

    def _vehicle_kind(self, parked=False):
        L = self.lay
        r = self.rng.random()
        if r < L["bus_p"] * (0.3 if parked else 1.0):
            return "bus", (2.55, self.u(10.5, 13.0), self.u(3.0, 3.3))
        if r < (L["bus_p"] + L["truck_p"]) * (0.4 if parked else 1.0):
            return "truck", (self.u(2.3, 2.55), self.u(6.5, 10.0), self.u(2.9, 3.8))
        if self.p(0.1):  # vans count as cars
            return "car", (self.u(1.9, 2.05), self.u(4.8, 5.3), self.u(1.9, 2.2))
        return "car", (self.u(1.7, 1.9), self.u(4.0, 4.8), self.u(1.38, 1.6))

    # -- background ----------------------------------------------------------------------------------
    def _sky(self):
        n = int(self.rng.poisson(2.5)) if self.p(self.lay["clouds"]) else 0
        for _ in range(n):
            cx, cy = self.u(0, self.w), self.u(0, self.yh * 0.8)
            rx = self.u(0.05, 0.2) * self.w
            c = self.col("cloud")
            for _ in range(3):
                self.ellipse(cx + self.u(-rx, rx), cy + self.u(-0.2, 0.2) * rx, rx * self.u(0.5, 0.9),
                             rx * self.u(0.2, 0.35), c, SKY)

    def _far_band(self):
        s = self.s(self.zfar)
        yb = self.P(0, self.zfar)[1] + 0.5
        x = -self.u(0, 10) * s
        while x < self.w:
            bw = max(2.0, s * self.u(8.0, 30.0))
            r = self.rng.random()
            if r < 0.7:
                hh = s * self.u(6.0, 35.0)
                self.poly([(x, yb), (x + bw, yb), (x + bw, yb - hh), (x, yb - hh)],
                          self.haze(self.col("building", 0.9), self.zfar), BUILDING)
            elif r < 0.92:
                c = self.haze(self.col("vegetation"), self.zfar)
                for _ in range(3):
                    rr = s * self.u(3.0, 7.0)
                    self.ellipse(x + self.u(0, bw), yb - rr * self.u(0.6, 1.4), rr, rr, c, VEG)
            x += bw

    def _ground(self):
        zn, zf = 0.4, self.zfar
        rl, rr = self.road
        for sgn, side in self.sides.items():
            if side["terr"] > 0:
                self.poly(self.gquad(side["xs"], side["xt"], zn, zf), self.col("terrain"), TERRAIN)
            self.poly(self.gquad(side["edge"], side["xs"], zn, zf), self.col("sidewalk"), SIDEWALK)
        for x, z in self.pits:
            self.poly(self.gquad(x - 0.6, x + 0.6, z - 0.6, z + 0.6), self.col("terrain"), TERRAIN)
        if self.cross is not None:
            zc0, zc1 = self.cross
            c = self.col("sidewalk")
            self.poly(self.gquad(-400, 400, zc0 - 2.5, zc0), c, SIDEWALK)
            self.poly(self.gquad(-400, 400, zc1, zc1 + 2.5), c, SIDEWALK)
            self.poly(self.gquad(-400, 400, zc0, zc1), self.col("road"), ROAD)
        road = self.col("road")
        self.poly(self.gquad(rl, rr, zn, zf), road, ROAD)
        curb = self.col("curb")
        for sgn, side in self.sides.items():
            self.poly(self.gquad(side["edge"], side["edge"] + sgn * 0.25, zn, zf), curb, SIDEWALK)
        # lane markings (drawn on the image only: they are road)
        mark = self.col("marking")
        k = len(self.lanes)
        zmax = min(zf, 120.0)
        for i, x in enumerate(self.lane_lines):
            solid = (i in (0, k) and (self.park[-1] if i == 0 else self.park[1])) or (k > 1 and i == k // 2)
            if i in (0, k) and not solid:
                continue
            if solid:
                spans = [(zn, zmax)]
            else:
                z0 = self.zmin * 0.5 + self.u(0, 9.0)
                spans = [(z, z + 3.0) for z in np.arange(z0, zmax, 9.0)]
            for z0, z1 in spans:
                if self.cross is not None and z1 > self.cross[0] - 2.5 and z0 < self.cross[1] + 2.5:
                    z1 = min(z1, self.cross[0] - 2.5)
                    if z1 <= z0:
                        continue
                self.di.polygon(self.gquad(x - 0.08, x + 0.08, z0, z1), fill=mark)
        if self.cross is not None:
            z0, z1 = self.cross[0] - 2.3, self.cross[0] - 0.3
            x = rl + 0.3
            while x < rr - 0.5:
                self.di.polygon(self.gquad(x, x + 0.5, z0, z1), fill=mark)
                x += 1.0
        if self.tram is not None:
            rail = tuple(int(v * 0.75) for v in road)
            for dx in (-0.75, -0.68, 0.68, 0.75):
                self.di.polygon(self.gquad(self.tram + dx - 0.03, self.tram + dx + 0.03, zn, zmax), fill=rail)

    # -- backdrop: facades, walls, fences, hedges ------------------------------------------------------
    def _face_shade(self, sgn):
        if not self.target:  # cel shading: two flat tones
            return 1.0 if sgn == self.sun else 0.84
        return 1.08 if sgn == self.sun else 0.78

    def _building(self, sgn, X, z0, z1, h):
        base = self.col("building")
        shade = self._face_shade(sgn)
        depth = sgn * 14.0
        c = self.haze(tuple(int(min(255, v * shade)) for v in base), z0)
        front = self.haze(tuple(int(v * (0.92 if self.target else 1.0)) for v in base), z0)
        self.poly(self.fquad(X, X + depth, z0, 0.0, h), front, BUILDING)
        self.poly(self.vquad(X, z0, z1, 0.0, h), c, BUILDING)
        # cornice
        dark = tuple(int(v * 0.7) for v in c)
        if self.target or self.p(0.5):
            self.di.polygon(self.vquad(X - sgn * 0.01, z0, z1, h - 0.5, h), fill=dark)
        # windows
        if not self.target and not self.p(0.6):
            return
        floor_h = self.u(2.8, 3.6)
        col_w = self.u(2.0, 3.4)
        win_w = col_w * self.u(0.4, 0.6)
        win_h = floor_h * self.u(0.45, 0.6)
        y0 = self.u(0.8, 1.6)
        flat = None if self.target else self.col("window")
        z = z0 + self.u(0.3, 1.0)
        while z + win_w < z1:
            if self.s(z) * win_w < 1.3:
                break
            y = y0
            while y + win_h < h - 0.6:
                wc = flat if flat is not None else self.haze(self.col("window"), z)
                self.di.polygon(self.vquad(X - sgn * 0.01, z, z + win_w, y, y + win_h), fill=wc)
                y += floor_h
            z += col_w
        if self.target and self.p(0.6):  # shop fronts: a darker ground floor
            self.di.polygon(self.vquad(X - sgn * 0.02, z0, z1, 0.0, y0 + win_h * 0.8),
                            fill=tuple(int(v * 0.55) for v in c))

    def _wall(self, sgn, X, z0, z1):
        h = self.u(1.0, 2.8)
        c = self.col("wall", self._face_shade(sgn))
        self.poly(self.vquad(X, z0, z1, 0.0, h), c, WALL)
        self.poly(self.fquad(X, X + sgn * 0.3, z0, 0.0, h), tuple(int(v * 0.9) for v in c), WALL)
        self.di.polygon(self.vquad(X - sgn * 0.01, z0, z1, h - 0.15, h), fill=tuple(int(v * 0.8) for v in c))
        joint = tuple(int(v * 0.72) for v in c)  # concrete panel joints
        z = z0 + 2.0
        while z < z1 and self.s(z) * 2.0 >= 3.0:
            self.di.line([self.P(X, z, 0.0), self.P(X, z, h - 0.15)], fill=joint, width=1)
            z += 2.0

    def _fence(self, sgn, X, z0, z1):
        h = self.u(1.0, 2.2)
        c = self.col("fence", self._face_shade(sgn))
        dark = tuple(int(v * 0.6) for v in c)
        light = tuple(int(min(255, v * 1.25)) for v in c)
        self.poly(self.vquad(X, z0, z1, 0.0, h), c, FENCE)
        step = self.u(0.15, 0.4) if self.p(0.5) else self.u(1.5, 2.5)
        z = z0
        while z < z1:
            if self.s(z) * step < 1.5:
                break
            self.di.line([self.P(X, z, 0.0), self.P(X, z, h)], fill=dark, width=_iround(self.s(z) * 0.06))
            z += step
        for y in (h * 0.9, h * 0.45):
            self.di.line([self.P(X, z0, y), self.P(X, z1, y)], fill=light, width=1)

    def _hedge(self, sgn, X, z0, z1):
        h = self.u(0.8, 2.2)
        pts = [self.P(X, z0, 0.0)]
        n = 8
        for i in range(n + 1):
            z = z0 + (z1 - z0) * i / n
            pts.append(self.P(X, z, h * self.u(0.85, 1.1)))
        pts.append(self.P(X, z1, 0.0))
        self.poly(pts, self.col("vegetation", 0.9), VEG)

    # -- objects ---------------------------------------------------------------------------------------
    def _vehicle(self, kind, X, Z, w, ln, h, front):
        lid = _VEHICLE_IDS[kind]
        body = self.col(kind)
        cab = self.col("truck_cab") if kind == "truck" else body
        off = 0.5 * self.sun
        self.shadow(self.gquad(X - w / 2 - 0.3 + off, X + w / 2 + 0.3 + off, Z - 0.4, Z + ln + 0.5), 45)
        self.shadow(self.gquad(X - w / 2 + off * 0.5, X + w / 2 + off * 0.5, Z - 0.1, Z + ln), 70)
        left, right = X - w / 2, X + w / 2
        xf = left if left > 0.05 else (right if right < -0.05 else None)
        if xf is not None:
            side_shade = 0.8 if self.target else 0.88
            self._vehicle_side(kind, xf, Z, ln, h, _shade(body, side_shade), _shade(cab, side_shade), lid, front)
        self._vehicle_face(kind, X, Z, w, ln, h, body, cab, lid, front)

    def _wheel(self, xf, zc, r, lid):
        """A wheel on a side face (plane X = xf), as a foreshortened ellipse."""
        xa, _ = self.P(xf, zc - r)
        xb, _ = self.P(xf, zc + r)
        _, yt = self.P(xf, zc, 2 * r)
        _, yb = self.P(xf, zc, 0.0)
        self.ellipse((xa + xb) / 2, (yt + yb) / 2, max(0.5, abs(xb - xa) / 2), (yb - yt) / 2, self.col("tyre"), lid)

    def _vehicle_side(self, kind, xf, Z, ln, h, body, cab, lid, front):
        vq, P = self.vquad, self.P
        glass = _shade(self.col("glass"), 0.85)
        if kind == "car":
            hb = 0.55 * h
            self.poly(vq(xf, Z, Z + ln, 0.28, hb), body, lid)
            a, b, c, d = (0.12, 0.22, 0.62, 0.74) if not front else (0.26, 0.38, 0.78, 0.88)
            self.poly([P(xf, Z + a * ln, hb), P(xf, Z + b * ln, h), P(xf, Z + c * ln, h), P(xf, Z + d * ln, hb)],
                      body, lid)
            self.di.polygon([P(xf, Z + (a + 0.03) * ln, hb + 0.05), P(xf, Z + (b + 0.02) * ln, h - 0.08),
                             P(xf, Z + (c - 0.02) * ln, h - 0.08), P(xf, Z + (d - 0.03) * ln, hb + 0.05)], fill=glass)
            for zc in (0.18, 0.82):
                self._wheel(xf, Z + zc * ln, 0.32, lid)
        elif kind == "truck":
            cab_z = (Z + 0.74 * ln, Z + ln) if not front else (Z, Z + 0.26 * ln)
            box_z = (Z, Z + 0.72 * ln) if not front else (Z + 0.28 * ln, Z + ln)
            self.poly(vq(xf, Z, Z + ln, 0.35, 0.9), _shade(body, 0.4), lid)
            self.poly(vq(xf, box_z[0], box_z[1], 0.8, h), body, lid)
            self.poly(vq(xf, cab_z[0], cab_z[1], 0.5, min(h, 2.9) * 0.95), cab, lid)
            wz = (cab_z[0] + 0.25 * (cab_z[1] - cab_z[0]), cab_z[1] - 0.2 * (cab_z[1] - cab_z[0]))
            self.di.polygon(vq(xf, wz[0], wz[1], 1.7, min(h, 2.9) * 0.85), fill=glass)
            for zc in (0.12, 0.3, 0.86):
                self._wheel(xf, Z + (zc if not front else 1 - zc) * ln, 0.5, lid)
        elif kind in ("bus", "train"):
            y0 = 0.3 if kind == "bus" else 0.45
            self.poly(vq(xf, Z, Z + ln, y0, h), body, lid)
            self.di.polygon(vq(xf, Z + 0.04 * ln, Z + 0.97 * ln, 1.45, h - 0.6), fill=_shade(self.col("big_glass"), 0.9))
            pillar = _shade(body, 0.9)
            step = 2.2 if kind == "bus" else 1.8
            z = Z + 0.04 * ln + step
            while z < Z + 0.96 * ln and self.s(z) * step > 2:
                self.di.line([P(xf, z, 1.25), P(xf, z, h - 0.5)], fill=pillar, width=_iround(self.s(z) * 0.15))
                z += step
            accent = self.col("truck_cab") if kind == "bus" else _shade(body, 0.6)
            self.di.polygon(vq(xf, Z, Z + ln, y0 + 0.1, y0 + 0.4), fill=accent)
            if kind == "bus":
                for zc in (0.18, 0.8):
                    self._wheel(xf, Z + zc * ln, 0.5, lid)
            else:
                for zc in (0.15, 0.5, 0.85):
                    self.poly(vq(xf, Z + (zc - 0.04) * ln, Z + (zc + 0.04) * ln, 0.0, 0.5), self.col("tyre"), lid)

    def _vehicle_face(self, kind, X, Z, w, ln, h, body, cab, lid, front):
        fq = self.fquad
        x0, x1 = X - w / 2, X + w / 2
        glass = self.col("glass")
        tyre = self.col("tyre")
        lamp = self.col("lamp_front" if front else "lamp_rear")
        if kind == "car":
            hb = 0.55 * h
            for a, b in ((x0 + 0.05, x0 + 0.32), (x1 - 0.32, x1 - 0.05)):
                self.poly(fq(a, b, Z + 0.3, 0.0, 0.35), tyre, lid)
            self.poly(fq(x0, x1, Z, 0.25, hb), body, lid)
            self.poly([self.P(x0 + 0.04 * w, Z + 0.25, hb), self.P(x1 - 0.04 * w, Z + 0.25, hb),
                       self.P(x1 - 0.16 * w, Z + 0.25, h), self.P(x0 + 0.16 * w, Z + 0.25, h)], body, lid)
            self.di.polygon([self.P(x0 + 0.1 * w, Z + 0.25, hb + 0.06), self.P(x1 - 0.1 * w, Z + 0.25, hb + 0.06),
                             self.P(x1 - 0.2 * w, Z + 0.25, h - 0.07), self.P(x0 + 0.2 * w, Z + 0.25, h - 0.07)],
                            fill=glass)
            self.di.polygon(fq(x0, x1, Z, 0.25, 0.38), fill=_shade(body, 0.45))
            for a, b in ((x0 + 0.05, x0 + 0.35), (x1 - 0.35, x1 - 0.05)):
                self.di.polygon(fq(a, b, Z, hb - 0.22, hb - 0.08), fill=lamp)
            self.di.polygon(fq(X - 0.26, X + 0.26, Z, 0.42, 0.55), fill=(230, 230, 230))
        elif kind == "truck":
            if front:
                self.poly(fq(x0, x1, Z + 0.28 * ln, 0.8, h), body, lid)
                ch = min(h, 2.9) * 0.95
                self.poly(fq(x0, x1, Z, 0.35, ch), cab, lid)
                self.di.polygon(fq(x0 + 0.12, x1 - 0.12, Z, ch * 0.62, ch - 0.15), fill=glass)
                self.di.polygon(fq(x0 + 0.3, x1 - 0.3, Z, 0.5, 1.0), fill=_shade(cab, 0.5))
            else:
                self.poly(fq(x0, x1, Z, 0.8, h), body, lid)
                self.poly(fq(x0 + 0.1, x1 - 0.1, Z, 0.35, 0.8), _shade(body, 0.35), lid)
                self.di.line([self.P(X, Z, 0.9), self.P(X, Z, h - 0.1)], fill=_shade(body, 0.7),
                             width=_iround(self.s(Z) * 0.05))
            for a, b in ((x0 + 0.05, x0 + 0.45), (x1 - 0.45, x1 - 0.05)):
                self.poly(fq(a, b, Z + 0.3, 0.0, 0.9), tyre, lid)
                self.di.polygon(fq(a, b, Z, 0.85, 1.05), fill=lamp)
        else:  # bus, train
            y0 = 0.3 if kind == "bus" else 0.45
            if kind == "bus":
                for a, b in ((x0 + 0.1, x0 + 0.5), (x1 - 0.5, x1 - 0.1)):
                    self.poly(fq(a, b, Z + 0.4, 0.0, 0.6), tyre, lid)
            else:
                self.poly(fq(x0 + 0.2, x1 - 0.2, Z + 0.5, 0.0, 0.6), tyre, lid)
            self.poly(fq(x0, x1, Z, y0, h), body, lid)
            wy0 = 1.1 if (front or kind == "train") else 1.7
            self.di.polygon(fq(x0 + 0.15, x1 - 0.15, Z, wy0, h - 0.45), fill=self.col("big_glass"))
            if kind == "bus" and front:
                self.di.polygon(fq(x0 + 0.4, x1 - 0.4, Z, h - 0.4, h - 0.12), fill=(255, 150, 30))
            for a, b in ((x0 + 0.1, x0 + 0.45), (x1 - 0.45, x1 - 0.1)):
                self.di.polygon(fq(a, b, Z, y0 + 0.2, y0 + 0.45), fill=lamp)
            if kind == "train":
                top = self.P(X, Z + 4.0, h)
                mid = self.P(X + 0.6, Z + 4.0, h + 0.8)
                tip = self.P(X - 0.6, Z + 4.0, h + 1.4)
                self.line([top, mid, tip], _shade(body, 0.4), _iround(self.s(Z) * 0.05), lid)

    def _cross_vehicle(self, kind, x0, Z, ln, h, d):
        """A vehicle seen from the side, driving across the view at depth Z (the crossing street)."""
        lid = _VEHICLE_IDS[kind]
        body = self.col(kind)
        P, fq = self.P, self.fquad
        x1 = x0 + ln
        glass = self.col("glass")
        self.shadow(self.gquad(x0 - 0.3, x1 + 0.3, Z - 0.4, Z + 1.2), 60)

        def at(t, y):  # t in 0..1 from the vehicle's rear to its front
            return P(x0 + (t if d > 0 else 1 - t) * ln, Z, y)

        def wheel(t, r):
            x, y = at(t, r)
            rr = self.s(Z) * r
            self.ellipse(x, y, rr, rr, self.col("tyre"), lid)

        if kind == "car":
            hb = 0.55 * h
            self.poly(fq(x0, x1, Z, 0.28, hb), body, lid)
            self.poly([at(0.08, hb), at(0.2, h), at(0.62, h), at(0.76, hb)], body, lid)
            self.di.polygon([at(0.12, hb + 0.05), at(0.22, h - 0.08), at(0.6, h - 0.08), at(0.72, hb + 0.05)],
                            fill=glass)
            for t in (0.18, 0.82):
                wheel(t, 0.32)
        elif kind == "truck":
            self.poly(fq(x0, x1, Z, 0.35, 0.9), _shade(body, 0.4), lid)
            self.poly([at(0.0, 0.8), at(0.0, h), at(0.72, h), at(0.72, 0.8)], body, lid)
            cab = self.col("truck_cab")
            ch = min(h, 2.9) * 0.95
            self.poly([at(0.74, 0.5), at(0.74, ch), at(0.95, ch), at(1.0, ch * 0.6), at(1.0, 0.5)], cab, lid)
            self.di.polygon([at(0.84, ch * 0.6), at(0.84, ch - 0.15), at(0.94, ch - 0.15), at(0.98, ch * 0.6)],
                            fill=glass)
            for t in (0.12, 0.3, 0.86):
                wheel(t, 0.5)
        else:
            y0 = 0.3 if kind == "bus" else 0.45
            self.poly(fq(x0, x1, Z, y0, h), body, lid)
            self.di.polygon(fq(x0 + 0.04 * ln, x1 - 0.04 * ln, Z, 1.45, h - 0.6), fill=self.col("big_glass"))
            step = 2.2 if kind == "bus" else 1.8
            pillar = _shade(body, 0.9)
            x = x0 + 0.04 * ln + step
            while x < x1 - 0.04 * ln:
                self.di.line([P(x, Z, 1.25), P(x, Z, h - 0.5)], fill=pillar, width=_iround(self.s(Z) * 0.15))
                x += step
            self.di.polygon(fq(x0, x1, Z, y0 + 0.1, y0 + 0.4), fill=_shade(body, 0.6))
            if kind == "bus":
                for t in (0.18, 0.8):
                    wheel(t, 0.5)
            else:
                for t in (0.15, 0.5, 0.85):
                    self.poly([at(t - 0.04, 0.0), at(t + 0.04, 0.0), at(t + 0.04, 0.5), at(t - 0.04, 0.5)],
                              self.col("tyre"), lid)
                self.line([at(0.3, h), at(0.35, h + 0.8), at(0.25, h + 1.4)], _shade(body, 0.4),
                          _iround(self.s(Z) * 0.05), lid)

    def _person(self, X, Z, lid, height):
        s = self.s(Z)
        x, yg = self.P(X, Z)
        hp = height * s
        if self.target:
            self.da.ellipse((x - 0.4 * s + self.sun * 0.2 * s, yg - 0.12 * s, x + 0.4 * s + self.sun * 0.3 * s,
                             yg + 0.12 * s), fill=(0, 0, 0, 60))
        shirt, pants = self.col("cloth"), _shade(self.col("cloth"), 0.7)
        skin, hair = self.col("skin"), self.col("hair")
        sw = 0.46 * s
        stride = self.u(-0.22, 0.22) * s
        legw = _iround(0.14 * s)
        hip = yg - 0.5 * hp
        self.line([(x - 0.07 * s, hip), (x - 0.07 * s - stride, yg - 0.5)], pants, legw, lid)
        self.line([(x + 0.07 * s, hip), (x + 0.07 * s + stride, yg - 0.5)], pants, legw, lid)
        sh = yg - 0.81 * hp
        self.poly([(x - sw / 2, sh), (x + sw / 2, sh), (x + 0.4 * sw, hip + 0.03 * hp), (x - 0.4 * sw, hip + 0.03 * hp)],
                  shirt, lid)
        armw = _iround(0.1 * s)
        swing = self.u(-0.15, 0.15) * s
        self.line([(x - sw / 2, sh + 0.02 * hp), (x - sw / 2 - 0.04 * s + swing, yg - 0.45 * hp)], shirt, armw, lid)
        self.line([(x + sw / 2, sh + 0.02 * hp), (x + sw / 2 + 0.04 * s - swing, yg - 0.45 * hp)], shirt, armw, lid)
        hx, hy = x, yg - 0.9 * hp
        self.ellipse(hx, hy, 0.1 * s, 0.12 * s, skin, lid)
        self.di.pieslice((hx - 0.1 * s, hy - 0.12 * s, hx + 0.1 * s, hy + 0.12 * s), 180, 360, fill=hair)
        if self.p(0.2):  # a bag
            bx = x + self.pick((-1, 1)) * (sw / 2 + 0.06 * s)
            self.poly([(bx - 0.1 * s, yg - 0.55 * hp), (bx + 0.1 * s, yg - 0.55 * hp), (bx + 0.1 * s, yg - 0.4 * hp),
                       (bx - 0.1 * s, yg - 0.4 * hp)], self.col("cloth"), lid)

    def _bicycle(self, x, yg, s, d, colour, lid):
        r = 0.34 * s
        wb = 0.52 * s * d
        ring = _iround(0.07 * s)
        tyre = self.col("tyre")
        spoke = _shade(colour, 0.8)
        for cx in (x - wb, x + wb):  # the label covers the whole wheel, as in Cityscapes' polygons
            self.di.line([(cx - r * abs(d) * 0.7, yg - r), (cx + r * abs(d) * 0.7, yg - r)], fill=spoke, width=1)
            self.di.line([(cx, yg - 1.7 * r), (cx, yg - 0.3 * r)], fill=spoke, width=1)
            self.ellipse(cx, yg - r, r * abs(d), r, tyre, width=ring)
            self.dl.ellipse((cx - r * abs(d), yg - 2 * r, cx + r * abs(d), yg), fill=lid)
        fw = _iround(0.055 * s)
        rear, front = (x - wb, yg - r), (x + wb, yg - r)
        bb = (x - 0.05 * s * d, yg - 0.3 * s)
        seat = (x - 0.2 * s * d, yg - 0.88 * s)
        head = (x + 0.36 * s * d, yg - 0.92 * s)
        self.line([rear, bb, seat, rear], colour, fw, lid)
        self.line([seat, head, bb], colour, fw, lid)
        self.line([head, front], colour, fw, lid)
        self.line([head, (head[0] - 0.05 * s * d, head[1] - 0.12 * s)], tyre, fw, lid)
        self.line([(seat[0] - 0.1 * s * d, seat[1]), (seat[0] + 0.08 * s * d, seat[1])], tyre, fw, lid)
        return seat, head

    def _motorcycle(self, x, yg, s, d, colour, lid):
        r = 0.31 * s
        wb = 0.7 * s * d
        tyre = self.col("tyre")
        for cx in (x - wb, x + wb):
            self.ellipse(cx, yg - r, r * max(abs(d), 0.5), r, tyre, lid)
            self.di.ellipse((cx - 0.1 * s * abs(d), yg - r - 0.1 * s, cx + 0.1 * s * abs(d), yg - r + 0.1 * s),
                            fill=(150, 150, 150))
        S = s * d
        self.poly([(x - 0.8 * S, yg - 0.68 * s), (x - 0.1 * S, yg - 0.86 * s), (x + 0.35 * S, yg - 0.98 * s),
                   (x + 0.55 * S, yg - 0.78 * s), (x + 0.3 * S, yg - 0.32 * s), (x - 0.35 * S, yg - 0.32 * s)],
                  colour, lid)
        self.di.polygon([(x - 0.25 * S, yg - 0.55 * s), (x + 0.2 * S, yg - 0.55 * s), (x + 0.15 * S, yg - 0.3 * s),
                         (x - 0.2 * S, yg - 0.3 * s)], fill=(60, 60, 64))
        fw = _iround(0.07 * s)
        bar = (x + 0.5 * S, yg - 1.08 * s)
        self.line([(x + wb, yg - r), bar], (90, 90, 95), fw, lid)
        self.ellipse(x + 0.62 * S, yg - 0.9 * s, 0.07 * s, 0.07 * s, self.col("lamp_front"), lid)
        return (x - 0.15 * S, yg - 0.92 * s), bar

    def _rider(self, X, Z, moto, d):
        s = self.s(Z)
        x, yg = self.P(X, Z)
        if self.target:
            self.da.ellipse((x - 1.0 * s, yg - 0.12 * s, x + 1.0 * s, yg + 0.15 * s), fill=(0, 0, 0, 55))
        vehicle = self._motorcycle if moto else self._bicycle
        seat, bar = vehicle(x, yg, s, d, self.col("moto" if moto else "bike"), MOTO if moto else BIKE)
        shirt, pants = self.col("cloth"), _shade(self.col("cloth"), 0.7)
        S = s * d
        shoulder = (seat[0] + 0.22 * S, seat[1] - 0.58 * s)
        legw = _iround(0.14 * s)
        knee = (seat[0] + 0.35 * S, seat[1] + 0.25 * s)
        foot = (seat[0] + 0.2 * S, yg - 0.3 * s) if not moto else (seat[0] + 0.3 * S, yg - 0.38 * s)
        self.line([seat, knee, foot], pants, legw, RIDER)
        tw = 0.16 * s
        self.poly([(seat[0] - tw, seat[1]), (seat[0] + tw, seat[1]), (shoulder[0] + tw, shoulder[1]),
                   (shoulder[0] - tw, shoulder[1])], shirt, RIDER)
        self.line([shoulder, bar], shirt, _iround(0.1 * s), RIDER)
        hr = (0.15 if moto else 0.11) * s
        hx, hy = shoulder[0] + 0.06 * S, shoulder[1] - 0.18 * s
        self.ellipse(hx, hy, hr, hr * 1.1, self.col("skin"), RIDER)
        helmet = self.col("cloth") if (moto or self.p(0.5)) else self.col("hair")
        self.di.pieslice((hx - hr, hy - hr * 1.1, hx + hr, hy + hr * 1.1), 180 if not moto else 150,
                         360 if not moto else 390, fill=helmet)

    def _parked_two_wheeler(self, kind, X, Z, d):
        s = self.s(Z)
        x, yg = self.P(X, Z)
        if kind == "bike":
            self._bicycle(x, yg, s, d, self.col("bike"), BIKE)
        else:
            self._motorcycle(x, yg, s, d, self.col("moto"), MOTO)

    def _pole(self, X, Z, sgn, kind):
        s = self.s(Z)
        x, yg = self.P(X, Z)
        c = self.col("pole")
        wpx = _iround(0.2 * s)
        hp = {"lamp": self.u(5.0, 8.0), "sign": self.u(2.6, 3.4), "light": self.u(3.2, 4.2),
              "overhead": self.u(5.5, 6.5)}[kind]
        top = yg - hp * s
        self.line([(x, yg), (x, top)], c, wpx, POLE)
        if kind == "lamp":
            reach = self.u(1.0, 2.2)
            end = self.P(X - sgn * reach, Z, hp + 0.25)
            self.line([(x, top), end], c, _iround(0.1 * s), POLE)
            self.ellipse(end[0], end[1] + 0.08 * s, 0.3 * s, 0.1 * s, _shade(c, 0.8), POLE)
            if self.p(0.3):
                self._sign(x + sgn * 0.2 * s, yg - 2.4 * s, s)
        elif kind == "sign":
            self._sign(x, top + 0.35 * s, s)
            if self.p(0.3):
                self._sign(x, top + 1.1 * s, s)
        elif kind == "light":
            self._light(x, top + 0.5 * s, s)
            if self.p(0.3):
                self._sign(x, top + 1.7 * s, s)
        else:  # a mast arm over the road with hanging lights
            reach = self.u(3.0, 6.0)
            end = self.P(X - sgn * reach, Z, hp)
            self.line([(x, top), end], c, _iround(0.12 * s), POLE)
            for t in ((0.55, 1.0) if self.p(0.6) else (1.0,)):
                lx = x + (end[0] - x) * t
                self._light(lx, top + 0.55 * s, s)
            self._light(x - sgn * 0.25 * s, yg - 2.8 * s, s)

    def _sign(self, x, y, s):
        cols = _SIGN_COLOURS[self.domain]
        r = 0.38 * s
        if self.target and self.p(0.3):  # seen from behind
            self.ellipse(x, y, r, r, self.col("sign_back"), SIGN)
            return
        shape = self.pick(("round", "round", "triangle", "square", "rect"))
        if shape == "round":
            outer = cols["red"] if self.p(0.6) else cols["blue"]
            self.ellipse(x, y, r, r, outer, SIGN)
            if outer == cols["red"]:
                self.ellipse(x, y, r * 0.68, r * 0.68, self.col("sign"))
        elif shape == "triangle":
            self.poly([(x, y - r * 1.1), (x + r * 1.1, y + r * 0.8), (x - r * 1.1, y + r * 0.8)], cols["red"], SIGN)
            self.poly([(x, y - r * 0.5), (x + r * 0.6, y + r * 0.5), (x - r * 0.6, y + r * 0.5)], self.col("sign"))
        elif shape == "square":
            self.poly([(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)], cols["blue"], SIGN)
            self.di.polygon([(x - r * 0.4, y - r * 0.5), (x + r * 0.4, y - r * 0.5), (x + r * 0.4, y + r * 0.5),
                             (x - r * 0.4, y + r * 0.5)], fill=self.col("sign"))
        else:
            fill = cols["yellow"] if self.p(0.5) else self.col("sign")
            self.poly([(x - 1.6 * r, y - 0.7 * r), (x + 1.6 * r, y - 0.7 * r), (x + 1.6 * r, y + 0.7 * r),
                       (x - 1.6 * r, y + 0.7 * r)], fill, SIGN)

    def _light(self, x, y, s):
        bw, bh = 0.19 * s, 0.5 * s
        self.poly([(x - bw, y - bh), (x + bw, y - bh), (x + bw, y + bh), (x - bw, y + bh)], self.col("light_box"),
                  LIGHT)
        on = int(self.rng.integers(3))
        for i in range(3):
            cy = y - bh + (i + 0.5) * (2 * bh / 3)
            c = _LAMP_COLOURS[i] if i == on else (40, 40, 40)
            self.di.ellipse((x - 0.7 * bw, cy - 0.7 * bw, x + 0.7 * bw, cy + 0.7 * bw), fill=c)

    def _tree(self, X, Z):
        s = self.s(Z)
        x, yg = self.P(X, Z)
        ht = self.u(5.0, 11.0)
        if self.target:
            self.da.ellipse((x - 1.5 * s + self.sun * s, yg - 0.3 * s, x + 1.5 * s + self.sun * s, yg + 0.4 * s),
                            fill=(0, 0, 0, 45))
        self.line([(x, yg), (x, yg - 0.6 * ht * s)], self.col("trunk"), _iround(0.3 * s), VEG)
        cw = self.u(0.3, 0.5) * ht
        for _ in range(int(self.rng.integers(3, 6))):
            r = cw * self.u(0.45, 0.75) * s
            self.ellipse(x + self.u(-0.5, 0.5) * cw * s, yg - self.u(0.6, 0.85) * ht * s, r, r * self.u(0.8, 1.1),
                         self.col("vegetation", self.u(0.85, 1.1)), VEG)

    def _bush(self, X, Z):
        s = self.s(Z)
        x, yg = self.P(X, Z)
        for _ in range(int(self.rng.integers(1, 4))):
            r = self.u(0.4, 1.1) * s
            self.ellipse(x + self.u(-1.0, 1.0) * s, yg - r * 0.7, r * 1.2, r, self.col("vegetation", 0.95), VEG)

    def _distractors(self):
        for _ in range(int(self.rng.integers(1, 5))):
            cx, cy = self.u(0, self.w), self.u(0, self.h)
            r = self.u(0.03, 0.14) * self.w
            c = tuple(int(v) for v in self.rng.integers(0, 256, 3))
            if self.p(0.5):
                n = int(self.rng.integers(3, 7))
                angles = np.sort(self.rng.uniform(0, 2 * math.pi, n))
                pts = [(cx + r * self.u(0.5, 1.0) * math.cos(a), cy + r * self.u(0.5, 1.0) * math.sin(a))
                       for a in angles]
                self.poly(pts, c, VOID)
            else:
                self.ellipse(cx, cy, r, r * self.u(0.4, 1.0), c, VOID)

    def _hood(self):
        H, W = self.h, self.w
        hh = self.u(0.04, 0.09) * H
        c = self.col("hood")
        self.ellipse(W / 2, H + hh, W * 0.8, 2 * hh, c, VOID)
        self.di.arc((W / 2 - W * 0.8, H - hh, W / 2 + W * 0.8, H + 3 * hh), 200, 340, fill=_shade(c, 2.5))

    # -- post-processing -----------------------------------------------------------------------------
    def _finish(self) -> tuple[np.ndarray, np.ndarray]:
        lbl = np.asarray(self.lbl, dtype=np.uint8).copy()
        img = np.asarray(self.img, dtype=np.float32)
        H, W = self.h, self.w
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
        if self.target:
            img = self._target_look(img, lbl, ys, xs)
        else:
            img = self._source_look(img, lbl, ys, xs)
        return img, lbl

    def _smooth_noise(self, cell: float) -> np.ndarray:
        gh, gw = max(2, int(self.h / cell) + 2), max(2, int(self.w / cell) + 2)
        small = self.rng.standard_normal((gh, gw)).astype(np.float32)
        return np.asarray(Image.fromarray(small).resize((self.w, self.h), Image.BILINEAR))

    def _source_look(self, img, lbl, ys, xs):
        H, W = self.h, self.w
        # a skybox: deep blue overhead, lighter towards the horizon
        t = np.clip(ys / max(self.yh, 1.0), 0, 1)[..., None]
        sky = (lbl == SKY)[..., None]
        img = np.where(sky, img * (0.86 + 0.14 * t) + 70.0 * t * t, img)
        tex = self.knobs["textures"]
        if tex > 0:
            mod = np.ones((H, W), dtype=np.float32)
            for lid in (ROAD, SIDEWALK, BUILDING, WALL, FENCE, VEG, TERRAIN, SKY, CAR, TRUCK, BUS):
                if not self.p(tex):
                    continue
                mask = lbl == lid
                if not mask.any():
                    continue
                kind = self.pick(("stripes", "checker", "noise", "blobs"))
                period = self.u(3.0, 9.0)
                if kind == "stripes":
                    a = self.u(0, math.pi)
                    pat = np.sign(np.sin((xs * math.cos(a) + ys * math.sin(a)) * 2 * math.pi / period))
                elif kind == "checker":
                    pat = ((xs // period + ys // period) % 2) * 2 - 1
                elif kind == "noise":
                    pat = self.rng.standard_normal((H, W)).astype(np.float32)
                else:
                    pat = self._smooth_noise(period)
                mod[mask] += self.u(0.08, 0.22) * pat[mask]
            img = img * mod[..., None]
        amp = self.knobs["lighting"]
        if amp > 0:
            a = self.u(0, 2 * math.pi)
            grad = (xs / W - 0.5) * math.cos(a) + (ys / H - 0.5) * math.sin(a)
            factor = (1 + amp * self.u(-0.8, 0.8)) * (1 + amp * self.u(0.0, 1.2) * grad)
            img = img * factor[..., None]
        gray = img.mean(axis=2, keepdims=True)  # vivid, game-like colour grading
        img = gray + 1.2 * (img - gray)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)

    def _target_look(self, img, lbl, ys, xs):
        H, W = self.h, self.w
        fine = self.rng.standard_normal((H, W)).astype(np.float32)
        blotch = self._smooth_noise(8.0)
        leaf = np.tanh(1.6 * self._smooth_noise(1.6))
        a_fine, a_blotch, a_leaf = (np.zeros(256, np.float32) for _ in range(3))
        for lid, f, b, lf in ((ROAD, 0.07, 0.06, 0.0), (SIDEWALK, 0.05, 0.05, 0.0), (BUILDING, 0.04, 0.06, 0.0),
                              (WALL, 0.07, 0.08, 0.0), (FENCE, 0.04, 0.04, 0.0), (VEG, 0.06, 0.1, 0.3),
                              (TERRAIN, 0.1, 0.12, 0.12), (SKY, 0.01, 0.03, 0.0), (POLE, 0.03, 0.0, 0.0)):
            a_fine[lid], a_blotch[lid], a_leaf[lid] = f, b, lf
        mod = 1 + a_fine[lbl] * fine + a_blotch[lbl] * blotch + a_leaf[lbl] * leaf
        # brick courses on buildings, paving joints on sidewalks
        brick = max(2, int(round(self.u(2.0, 4.0) * H / 96)))
        courses = ((ys % brick) == 0) | (((xs + (ys // brick % 2) * brick) % (2 * brick)) == 0)
        mod -= np.where(lbl == BUILDING, 0.06, 0.0) * courses
        mod -= np.where(lbl == SIDEWALK, 0.05, 0.0) * (((ys % (brick + 1)) == 0) & ((xs % 3) == 0))
        # sky: brighter towards the horizon
        mod *= np.where(lbl == SKY, 0.9 + 0.15 * np.clip(ys / max(self.yh, 1.0), 0, 1), 1.0)
        img = img * mod[..., None]
        # sun gradient, exposure, vignette, colour grading
        a = self.u(-0.5, 0.5) + (0.0 if self.sun > 0 else math.pi)
        grad = (xs / W - 0.5) * math.cos(a) + (ys / H - 0.5) * math.sin(a) * 0.5
        vignette = 1 - 0.35 * ((xs / W - 0.5) ** 2 + (ys / H - 0.5) ** 2)
        factor = self.u(0.88, 1.06) * (1 + self.u(0.15, 0.3) * grad) * vignette
        img = img * factor[..., None]
        gray = img.mean(axis=2, keepdims=True)
        img = gray + 0.85 * (img - gray)
        img = img * np.array([self.u(1.0, 1.05), 1.0, self.u(0.92, 0.98)], dtype=np.float32)
        out = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
        out = out.filter(ImageFilter.GaussianBlur(self.u(0.45, 0.75) * max(1.0, W / 192)))
        img = np.asarray(out, dtype=np.float32)
        img = img + self.rng.normal(0, 3.0, (H, W, 1)) + self.rng.normal(0, 1.5, (H, W, 3))
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _shade(c, k: float):
    return tuple(int(min(255, max(0, v * k))) for v in c)


# ---------------------------------------------------------------------------------------------
# Writing datasets to disk.

def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, compress_level=1)


def target_name(split: str, index: int) -> tuple[str, str]:
    """(city, stem) of target image ``index`` of ``split``: stem = ``{city}_{seq:06d}_{frame:06d}``."""
    cities = TARGET_CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{19:06d}"


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UdasError(f"{name}={value!r} must be a non-negative integer")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UdasError(f"scene seed={seed!r} must be a non-negative integer")
    return int(seed)


def write_source(root, *, num_images: int = DEFAULT_NUM_SOURCE, size: tuple[int, int] = DEFAULT_SOURCE_SIZE,
                 seed: int = 0, **knobs) -> Path:
    """Write ``num_images`` source scenes in the GTA5 layout under ``root`` (atomic, idempotent)."""
    num_images = _check_count("num_images", num_images)
    h, w = _check_size(size)
    seed = _check_seed(seed)
    knobs = _check_knobs("source", knobs)
    params = {"format": "udas_ray.scenes", "version": FORMAT_VERSION, "domain": "source", "layout": "gta5",
              "num_images": num_images, "size": [h, w], "seed": seed, "knobs": knobs}

    def fill(tmp: Path) -> None:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for i in range(num_images):
            img, lbl = render_scene("source", seed, i, (h, w), "train", **knobs)
            name = f"{i + 1:05d}.png"
            _save_png(img, tmp / "images" / name)
            _save_png(lbl, tmp / "labels" / name)

    return _write_atomic(root, params, fill)


def write_target(root, *, num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
                 size: tuple[int, int] = DEFAULT_TARGET_SIZE, seed: int = 0) -> Path:
    """Write target scenes in the Cityscapes layout (train and val) under ``root`` (atomic, idempotent)."""
    counts = {"train": _check_count("num_train", num_train), "val": _check_count("num_val", num_val)}
    h, w = _check_size(size)
    seed = _check_seed(seed)
    params = {"format": "udas_ray.scenes", "version": FORMAT_VERSION, "domain": "target", "layout": "cityscapes",
              "num_train": counts["train"], "num_val": counts["val"], "size": [h, w], "seed": seed,
              "cities": {k: list(v) for k, v in TARGET_CITIES.items()}}

    def fill(tmp: Path) -> None:
        for split, n in counts.items():
            for city in TARGET_CITIES[split][: max(0, min(n, len(TARGET_CITIES[split])))]:
                (tmp / "leftImg8bit" / split / city).mkdir(parents=True)
                (tmp / "gtFine" / split / city).mkdir(parents=True)
            for i in range(n):
                img, lbl = render_scene("target", seed, i, (h, w), split)
                city, stem = target_name(split, i)
                _save_png(img, tmp / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
                _save_png(lbl, tmp / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")

    return _write_atomic(root, params, fill)


def _read_params(meta: Path):
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return None


def _differences(old, new) -> str:
    if not isinstance(old, dict):
        return "unreadable scenes.json"
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)!r} != {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _write_atomic(root, params: dict, fill) -> Path:
    root = Path(root).expanduser().absolute()
    params = json.loads(json.dumps(params))  # exactly what a reader gets back from scenes.json
    meta = root / "scenes.json"
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise UdasError(f"{root} exists and is not a directory; choose another root or delete it")
        if meta.is_file():
            old = _read_params(meta)
            if old == params:
                return root
            raise UdasError(f"{root} holds scenes generated with other parameters ({_differences(old, params)}); "
                            f"choose another root or delete it")
        if any(root.iterdir()):
            raise UdasError(f"{root} exists but holds no scenes.json (not written by udas_ray.data.scenes); "
                            f"choose another root or delete it")
        root.rmdir()  # an empty directory: take it over
    root.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{root.name}.partial-"
    for stale in root.parent.glob(prefix + "*"):  # left over by a killed run
        pid = stale.name[len(prefix):]
        if stale.is_dir() and (not pid.isdigit() or not _pid_alive(int(pid)) or int(pid) == os.getpid()):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = root.parent / f"{prefix}{os.getpid()}"
    tmp.mkdir()
    try:
        fill(tmp)
        (tmp / "scenes.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, root)
        except OSError:
            if meta.is_file() and _read_params(meta) == params:  # a concurrent run finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            raise UdasError(f"{root} appeared while scenes were being generated; choose another root or "
                            f"delete it") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


# ---------------------------------------------------------------------------------------------
# Inspection helpers (used by main).

def class_frequencies(domain: str, num: int, size: tuple[int, int], seed: int = 0, split: str = "train",
                      **knobs) -> tuple[np.ndarray, np.ndarray]:
    """(pixel fraction per trainId, fraction of images containing it) over ``num`` scenes."""
    pixels = np.zeros(NUM_CLASSES + 1, np.float64)
    images = np.zeros(NUM_CLASSES + 1, np.float64)
    for i in range(num):
        _, lbl = render_scene(domain, seed, i, size, split, **knobs)
        tid = label_ids_to_train_ids(lbl)
        counts = np.bincount(np.minimum(tid, NUM_CLASSES).ravel(), minlength=NUM_CLASSES + 1)
        pixels += counts
        images += counts > 0
    return pixels[:NUM_CLASSES] / max(1.0, pixels.sum()), images[:NUM_CLASSES] / max(1, num)


def contact_sheet(path, *, num: int = 6, seed: int = 0, source_size=DEFAULT_SOURCE_SIZE,
                  target_size=DEFAULT_TARGET_SIZE, scale: int = 2) -> Path:
    """A PNG of ``num`` source and target scenes with their colourised labels (rows: src img, src lbl, tgt...)."""
    rows = []
    for domain, size in (("source", source_size), ("target", target_size)):
        imgs, lbls = [], []
        for i in range(num):
            img, lbl = render_scene(domain, seed, i, size)
            imgs.append(img)
            lbls.append(colorize(label_ids_to_train_ids(lbl)))
        gap = np.full((size[0], 2, 3), 255, np.uint8)
        for group in (imgs, lbls):
            rows.append(np.concatenate([x for a in group for x in (a, gap)], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
    path = Path(path)
    sheet.save(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m udas_ray.data.scenes",
                                 description="Generate the embedded sim->real street-scene benchmark.")
    ap.add_argument("--root", help="output directory (created atomically; must not hold other data)")
    ap.add_argument("--domain", choices=("source", "target"), default="source")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="default: 108 192 / 96 192")
    ap.add_argument("--num-images", type=int, default=DEFAULT_NUM_SOURCE, help="source images")
    ap.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN, help="target train images")
    ap.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL, help="target val images")
    for key, default in SOURCE_KNOBS.items():
        ap.add_argument(f"--{key}", type=float, default=default, help=f"source knob (default {default})")
    ap.add_argument("--sheet", metavar="PNG", help="also write a contact sheet of both domains")
    ap.add_argument("--stats", type=int, metavar="N", help="print class frequencies over N scenes of --domain")
    args = ap.parse_args(argv)
    try:
        knobs = {key: getattr(args, key) for key in SOURCE_KNOBS}
        default_size = DEFAULT_SOURCE_SIZE if args.domain == "source" else DEFAULT_TARGET_SIZE
        size = tuple(args.size) if args.size else default_size
        if args.root:
            t0 = time.perf_counter()
            if args.domain == "source":
                out = write_source(args.root, num_images=args.num_images, size=size, seed=args.seed, **knobs)
            else:
                out = write_target(args.root, num_train=args.num_train, num_val=args.num_val, size=size,
                                   seed=args.seed)
            print(f"{args.domain} scenes in {out} ({time.perf_counter() - t0:.1f} s)")
        if args.sheet:
            print(f"contact sheet: {contact_sheet(args.sheet, seed=args.seed)}")
        if args.stats:
            pix, img = class_frequencies(args.domain, args.stats, size, args.seed,
                                         **(knobs if args.domain == "source" else {}))
            print(f"{'class':<14}{'pixels %':>9}{'images %':>9}")
            for name, p, q in zip(CLASS_NAMES, pix, img):
                print(f"{name:<14}{100 * p:9.2f}{100 * q:9.1f}")
        if not (args.root or args.sheet or args.stats):
            ap.error("nothing to do: give --root, --sheet or --stats")
    except UdasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
