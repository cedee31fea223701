"""Drawing the smaller things on the road and the sidewalks, and the void overlays.

People and riders (on bicycles and motorcycles), parked two-wheelers, poles carrying
lamps, signs and traffic lights, trees and bushes; then the source's distractors and the
target's ego hood, both labelled void. Figures are drawn in image space around their
foot point ``(x, yg)`` (``yg``: the ground row) with ``s`` pixels per metre at their depth;
``d`` is a signed facing (left/right) that also foreshortens two-wheelers.
"""

from __future__ import annotations

import math

import numpy as np

from udas_ray.data.scenes.canvas import Canvas, line_width, shade
from udas_ray.data.scenes.domains import LAMP_COLOURS, SIGN_COLOURS
from udas_ray.data.scenes.labels import BIKE, LIGHT, MOTO, PERSON, POLE, RIDER, SIGN, VEG, VOID


class ObjectPainter(Canvas):
    # -- people and two-wheelers --------------------------------------------------------------------
    def _person(self, X, Z, height):
        """A pedestrian ``height`` metres tall: legs in stride, torso, swinging arms, head, maybe a bag."""
        s = self.cam.scale_at(Z)
        x, yg = self.cam.project(X, Z)
        hp = height * s
        lid = PERSON
        if self.target:
            self.blend_pen.ellipse((x - 0.4 * s + self.sun * 0.2 * s, yg - 0.12 * s,
                                    x + 0.4 * s + self.sun * 0.3 * s, yg + 0.12 * s), fill=(0, 0, 0, 60))
        shirt, pants = self.colour("cloth"), shade(self.colour("cloth"), 0.7)
        skin, hair = self.colour("skin"), self.colour("hair")
        sw = 0.46 * s  # shoulder width
        stride = self.uniform(-0.22, 0.22) * s
        legw = line_width(0.14 * s)
        hip = yg - 0.5 * hp
        self.line([(x - 0.07 * s, hip), (x - 0.07 * s - stride, yg - 0.5)], pants, legw, lid)
        self.line([(x + 0.07 * s, hip), (x + 0.07 * s + stride, yg - 0.5)], pants, legw, lid)
        sh = yg - 0.81 * hp  # shoulder row
        self.poly([(x - sw / 2, sh), (x + sw / 2, sh), (x + 0.4 * sw, hip + 0.03 * hp),
                   (x - 0.4 * sw, hip + 0.03 * hp)], shirt, lid)
        armw = line_width(0.1 * s)
        swing = self.uniform(-0.15, 0.15) * s
        self.line([(x - sw / 2, sh + 0.02 * hp), (x - sw / 2 - 0.04 * s + swing, yg - 0.45 * hp)], shirt, armw, lid)
        self.line([(x + sw / 2, sh + 0.02 * hp), (x + sw / 2 + 0.04 * s - swing, yg - 0.45 * hp)], shirt, armw, lid)
        hx, hy = x, yg - 0.9 * hp
        self.ellipse(hx, hy, 0.1 * s, 0.12 * s, skin, lid)
        self.pen.pieslice((hx - 0.1 * s, hy - 0.12 * s, hx + 0.1 * s, hy + 0.12 * s), 180, 360, fill=hair)
        if self.chance(0.2):  # a bag
            bx = x + self.pick((-1, 1)) * (sw / 2 + 0.06 * s)
            self.poly([(bx - 0.1 * s, yg - 0.55 * hp), (bx + 0.1 * s, yg - 0.55 * hp), (bx + 0.1 * s, yg - 0.4 * hp),
                       (bx - 0.1 * s, yg - 0.4 * hp)], self.colour("cloth"), lid)

    def _bicycle(self, x, yg, s, d, colour, lid):
        """A bicycle; returns its (seat, handlebar) points for a rider.

        As in Cityscapes' polygons, the label covers the whole wheels, not just the rims.
        """
        r = 0.34 * s
        wb = 0.52 * s * d  # half the wheelbase
        ring = line_width(0.07 * s)
        tyre = self.colour("tyre")
        spoke = shade(colour, 0.8)
        for cx in (x - wb, x + wb):
            self.pen.line([(cx - r * abs(d) * 0.7, yg - r), (cx + r * abs(d) * 0.7, yg - r)], fill=spoke, width=1)
            self.pen.line([(cx, yg - 1.7 * r), (cx, yg - 0.3 * r)], fill=spoke, width=1)
            self.ellipse(cx, yg - r, r * abs(d), r, tyre, width=ring)
            self.label_pen.ellipse((cx - r * abs(d), yg - 2 * r, cx + r * abs(d), yg), fill=lid)
        fw = line_width(0.055 * s)
        rear, front = (x - wb, yg - r), (x + wb, yg - r)
        bb = (x - 0.05 * s * d, yg - 0.3 * s)  # bottom bracket
        seat = (x - 0.2 * s * d, yg - 0.88 * s)
        head = (x + 0.36 * s * d, yg - 0.92 * s)
        self.line([rear, bb, seat, rear], colour, fw, lid)
        self.line([seat, head, bb], colour, fw, lid)
        self.line([head, front], colour, fw, lid)
        self.line([head, (head[0] - 0.05 * s * d, head[1] - 0.12 * s)], tyre, fw, lid)  # handlebar
        self.line([(seat[0] - 0.1 * s * d, seat[1]), (seat[0] + 0.08 * s * d, seat[1])], tyre, fw, lid)  # saddle
        return seat, head

    def _motorcycle(self, x, yg, s, d, colour, lid):
        """A motorcycle; returns its (seat, handlebar) points for a rider."""
        r = 0.31 * s
        wb = 0.7 * s * d
        tyre = self.colour("tyre")
        for cx in (x - wb, x + wb):
            self.ellipse(cx, yg - r, r * max(abs(d), 0.5), r, tyre, lid)
            self.pen.ellipse((cx - 0.1 * s * abs(d), yg - r - 0.1 * s, cx + 0.1 * s * abs(d), yg - r + 0.1 * s),
                             fill=(150, 150, 150))
        S = s * d
        self.poly([(x - 0.8 * S, yg - 0.68 * s), (x - 0.1 * S, yg - 0.86 * s), (x + 0.35 * S, yg - 0.98 * s),
                   (x + 0.55 * S, yg - 0.78 * s), (x + 0.3 * S, yg - 0.32 * s), (x - 0.35 * S, yg - 0.32 * s)],
                  colour, lid)
        self.poly([(x - 0.25 * S, yg - 0.55 * s), (x + 0.2 * S, yg - 0.55 * s), (x + 0.15 * S, yg - 0.3 * s),
                   (x - 0.2 * S, yg - 0.3 * s)], (60, 60, 64))  # engine
        fw = line_width(0.07 * s)
        bar = (x + 0.5 * S, yg - 1.08 * s)
        self.line([(x + wb, yg - r), bar], (90, 90, 95), fw, lid)
        self.ellipse(x + 0.62 * S, yg - 0.9 * s, 0.07 * s, 0.07 * s, self.colour("lamp_front"), lid)
        return (x - 0.15 * S, yg - 0.92 * s), bar

    def _rider(self, X, Z, moto, d):
        """A person riding a motorcycle (``moto``) or a bicycle: the vehicle, then legs, torso, arm, head."""
        s = self.cam.scale_at(Z)
        x, yg = self.cam.project(X, Z)
        if self.target:
            self.blend_pen.ellipse((x - 1.0 * s, yg - 0.12 * s, x + 1.0 * s, yg + 0.15 * s), fill=(0, 0, 0, 55))
        vehicle = self._motorcycle if moto else self._bicycle
        seat, bar = vehicle(x, yg, s, d, self.colour("moto" if moto else "bike"), MOTO if moto else BIKE)
        shirt, pants = self.colour("cloth"), shade(self.colour("cloth"), 0.7)
        S = s * d
        shoulder = (seat[0] + 0.22 * S, seat[1] - 0.58 * s)
        legw = line_width(0.14 * s)
        knee = (seat[0] + 0.35 * S, seat[1] + 0.25 * s)
        foot = (seat[0] + 0.2 * S, yg - 0.3 * s) if not moto else (seat[0] + 0.3 * S, yg - 0.38 * s)
        self.line([seat, knee, foot], pants, legw, RIDER)
        tw = 0.16 * s
        self.poly([(seat[0] - tw, seat[1]), (seat[0] + tw, seat[1]), (shoulder[0] + tw, shoulder[1]),
                   (shoulder[0] - tw, shoulder[1])], shirt, RIDER)
        self.line([shoulder, bar], shirt, line_width(0.1 * s), RIDER)
        hr = (0.15 if moto else 0.11) * s
        hx, hy = shoulder[0] + 0.06 * S, shoulder[1] - 0.18 * s
        self.ellipse(hx, hy, hr, hr * 1.1, self.colour("skin"), RIDER)
        helmet = self.colour("cloth") if (moto or self.chance(0.5)) else self.colour("hair")
        self.pen.pieslice((hx - hr, hy - hr * 1.1, hx + hr, hy + hr * 1.1), 180 if not moto else 150,
                          360 if not moto else 390, fill=helmet)

    def _parked_two_wheeler(self, kind, X, Z, d):
        s = self.cam.scale_at(Z)
        x, yg = self.cam.project(X, Z)
        if kind == "bike":
            self._bicycle(x, yg, s, d, self.colour("bike"), BIKE)
        else:
            self._motorcycle(x, yg, s, d, self.colour("moto"), MOTO)

    # -- poles, signs, traffic lights -----------------------------------------------------------------
    def _pole(self, X, Z, sgn, kind):
        """A pole on side ``sgn``: a street "lamp", a "sign", a traffic "light" or an "overhead" mast arm."""
        s = self.cam.scale_at(Z)
        x, yg = self.cam.project(X, Z)
        c = self.colour("pole")
        wpx = line_width(0.2 * s)
        hp = {"lamp": self.uniform(5.0, 8.0), "sign": self.uniform(2.6, 3.4), "light": self.uniform(3.2, 4.2),
              "overhead": self.uniform(5.5, 6.5)}[kind]  # (all four heights are drawn, in this order)
        top = yg - hp * s
        self.line([(x, yg), (x, top)], c, wpx, POLE)
        if kind == "lamp":
            reach = self.uniform(1.0, 2.2)
            end = self.cam.project(X - sgn * reach, Z, hp + 0.25)
            self.line([(x, top), end], c, line_width(0.1 * s), POLE)
            self.ellipse(end[0], end[1] + 0.08 * s, 0.3 * s, 0.1 * s, shade(c, 0.8), POLE)
            if self.chance(0.3):
                self._sign(x + sgn * 0.2 * s, yg - 2.4 * s, s)
        elif kind == "sign":
            self._sign(x, top + 0.35 * s, s)
            if self.chance(0.3):
                self._sign(x, top + 1.1 * s, s)
        elif kind == "light":
            self._light(x, top + 0.5 * s, s)
            if self.chance(0.3):
                self._sign(x, top + 1.7 * s, s)
        else:  # a mast arm over the road with hanging lights
            reach = self.uniform(3.0, 6.0)
            end = self.cam.project(X - sgn * reach, Z, hp)
            self.line([(x, top), end], c, line_width(0.12 * s), POLE)
            for t in ((0.55, 1.0) if self.chance(0.6) else (1.0,)):
                lx = x + (end[0] - x) * t
                self._light(lx, top + 0.55 * s, s)
            self._light(x - sgn * 0.25 * s, yg - 2.8 * s, s)

    def _sign(self, x, y, s):
        """A traffic sign centred at (x, y): round, triangular, square or a rectangular panel (or its back)."""
        cols = SIGN_COLOURS[self.domain.palette]
        r = 0.38 * s
        if self.target and self.chance(0.3):  # seen from behind
            self.ellipse(x, y, r, r, self.colour("sign_back"), SIGN)
            return
        shape = self.pick(("round", "round", "triangle", "square", "rect"))
        if shape == "round":
            outer = cols["red"] if self.chance(0.6) else cols["blue"]
            self.ellipse(x, y, r, r, outer, SIGN)
            if outer == cols["red"]:
                self.ellipse(x, y, r * 0.68, r * 0.68, self.colour("sign"))
        elif shape == "triangle":
            self.poly([(x, y - r * 1.1), (x + r * 1.1, y + r * 0.8), (x - r * 1.1, y + r * 0.8)], cols["red"], SIGN)
            self.poly([(x, y - r * 0.5), (x + r * 0.6, y + r * 0.5), (x - r * 0.6, y + r * 0.5)], self.colour("sign"))
        elif shape == "square":
            self.poly([(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)], cols["blue"], SIGN)
            self.poly([(x - r * 0.4, y - r * 0.5), (x + r * 0.4, y - r * 0.5), (x + r * 0.4, y + r * 0.5),
                       (x - r * 0.4, y + r * 0.5)], self.colour("sign"))
        else:
            fill = cols["yellow"] if self.chance(0.5) else self.colour("sign")
            self.poly([(x - 1.6 * r, y - 0.7 * r), (x + 1.6 * r, y - 0.7 * r), (x + 1.6 * r, y + 0.7 * r),
                       (x - 1.6 * r, y + 0.7 * r)], fill, SIGN)

    def _light(self, x, y, s):
        """A traffic light box centred at (x, y) with one of its three lamps on."""
        bw, bh = 0.19 * s, 0.5 * s
        self.poly([(x - bw, y - bh), (x + bw, y - bh), (x + bw, y + bh), (x - bw, y + bh)], self.colour("light_box"),
                  LIGHT)
        on = int(self.rng.integers(3))
        for i in range(3):
            cy = y - bh + (i + 0.5) * (2 * bh / 3)
            c = LAMP_COLOURS[i] if i == on else (40, 40, 40)
            self.pen.ellipse((x - 0.7 * bw, cy - 0.7 * bw, x + 0.7 * bw, cy + 0.7 * bw), fill=c)

    # -- vegetation ---------------------------------------------------------------------------------
    def _tree(self, X, Z):
        """A trunk and a crown of 3-5 overlapping blobs."""
        s = self.cam.scale_at(Z)
        x, yg = self.cam.project(X, Z)
        ht = self.uniform(5.0, 11.0)
        if self.target:
            self.blend_pen.ellipse((x - 1.5 * s + self.sun * s, yg - 0.3 * s, x + 1.5 * s + self.sun * s,
                                    yg + 0.4 * s), fill=(0, 0, 0, 45))
        self.line([(x, yg), (x, yg - 0.6 * ht * s)], self.colour("trunk"), line_width(0.3 * s), VEG)
        cw = self.uniform(0.3, 0.5) * ht
        for _ in range(int(self.rng.integers(3, 6))):
            r = cw * self.uniform(0.45, 0.75) * s
            self.ellipse(x + self.uniform(-0.5, 0.5) * cw * s, yg - self.uniform(0.6, 0.85) * ht * s, r,
                         r * self.uniform(0.8, 1.1), self.colour("vegetation", self.uniform(0.85, 1.1)), VEG)

    def _bush(self, X, Z):
        s = self.cam.scale_at(Z)
        x, yg = self.cam.project(X, Z)
        for _ in range(int(self.rng.integers(1, 4))):
            r = self.uniform(0.4, 1.1) * s
            self.ellipse(x + self.uniform(-1.0, 1.0) * s, yg - r * 0.7, r * 1.2, r, self.colour("vegetation", 0.95),
                         VEG)

    # -- void overlays --------------------------------------------------------------------------------
    def _distractors(self):
        """Source only: 1-4 flying shapes of random colour (random polygons or ellipses), labelled void."""
        for _ in range(int(self.rng.integers(1, 5))):
            cx, cy = self.uniform(0, self.w), self.uniform(0, self.h)
            r = self.uniform(0.03, 0.14) * self.w
            c = tuple(int(v) for v in self.rng.integers(0, 256, 3))
            if self.chance(0.5):
                n = int(self.rng.integers(3, 7))
                angles = np.sort(self.rng.uniform(0, 2 * math.pi, n))
                pts = [(cx + r * self.uniform(0.5, 1.0) * math.cos(a), cy + r * self.uniform(0.5, 1.0) * math.sin(a))
                       for a in angles]
                self.poly(pts, c, VOID)
            else:
                self.ellipse(cx, cy, r, r * self.uniform(0.4, 1.0), c, VOID)

    def _hood(self):
        """Target only: the ego vehicle's hood at the bottom of the image, labelled void."""
        H, W = self.h, self.w
        hh = self.uniform(0.04, 0.09) * H
        c = self.colour("hood")
        self.ellipse(W / 2, H + hh, W * 0.8, 2 * hh, c, VOID)
        self.pen.arc((W / 2 - W * 0.8, H - hh, W / 2 + W * 0.8, H + 3 * hh), 200, 340, fill=shade(c, 2.5))
