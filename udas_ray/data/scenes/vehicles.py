"""Drawing vehicles: cars (and vans), trucks, buses and trams.

A vehicle in the street is a box from depth Z to Z + length, centred at X: we see its
face towards the camera (its rear, or its front when ``front``: oncoming) and, when it
is not straight ahead, the side facing the camera's lane. A vehicle on the crossing
street is seen purely from the side. Bodies, tyres and wheels carry the vehicle's
labelId; glass, lamps and trim are image-only details on top.
"""

from __future__ import annotations

from udas_ray.data.scenes.canvas import Canvas, line_width, shade
from udas_ray.data.scenes.labels import VEHICLE_IDS


class VehiclePainter(Canvas):
    def _vehicle(self, kind, X, Z, w, ln, h, front):
        """A vehicle of ``kind`` in the street: width ``w``, length ``ln``, height ``h`` (metres)."""
        quad = self.cam.ground_quad
        lid = VEHICLE_IDS[kind]
        body = self.colour(kind)
        cab = self.colour("truck_cab") if kind == "truck" else body
        off = 0.5 * self.sun
        self.shadow(quad(X - w / 2 - 0.3 + off, X + w / 2 + 0.3 + off, Z - 0.4, Z + ln + 0.5), 45)
        self.shadow(quad(X - w / 2 + off * 0.5, X + w / 2 + off * 0.5, Z - 0.1, Z + ln), 70)
        left, right = X - w / 2, X + w / 2
        xf = left if left > 0.05 else (right if right < -0.05 else None)  # the side we see, if any
        if xf is not None:
            side_shade = 0.8 if self.target else 0.88
            self._vehicle_side(kind, xf, Z, ln, h, shade(body, side_shade), shade(cab, side_shade), lid, front)
        self._vehicle_face(kind, X, Z, w, ln, h, body, cab, lid, front)

    def _wheel(self, xf, zc, r, lid):
        """A wheel on a side face (plane X = xf), as a foreshortened ellipse."""
        P = self.cam.project
        xa, _ = P(xf, zc - r)
        xb, _ = P(xf, zc + r)
        _, yt = P(xf, zc, 2 * r)
        _, yb = P(xf, zc, 0.0)
        self.ellipse((xa + xb) / 2, (yt + yb) / 2, max(0.5, abs(xb - xa) / 2), (yb - yt) / 2, self.colour("tyre"),
                     lid)

    def _vehicle_side(self, kind, xf, Z, ln, h, body, cab, lid, front):
        """The side face of a vehicle, in the plane X = xf."""
        vq, P = self.cam.side_quad, self.cam.project
        glass = shade(self.colour("glass"), 0.85)
        if kind == "car":
            hb = 0.55 * h  # belt line
            self.poly(vq(xf, Z, Z + ln, 0.28, hb), body, lid)
            a, b, c, d = (0.12, 0.22, 0.62, 0.74) if not front else (0.26, 0.38, 0.78, 0.88)
            self.poly([P(xf, Z + a * ln, hb), P(xf, Z + b * ln, h), P(xf, Z + c * ln, h), P(xf, Z + d * ln, hb)],
                      body, lid)
            self.poly([P(xf, Z + (a + 0.03) * ln, hb + 0.05), P(xf, Z + (b + 0.02) * ln, h - 0.08),
                       P(xf, Z + (c - 0.02) * ln, h - 0.08), P(xf, Z + (d - 0.03) * ln, hb + 0.05)], glass)
            for zc in (0.18, 0.82):
                self._wheel(xf, Z + zc * ln, 0.32, lid)
        elif kind == "truck":
            cab_z = (Z + 0.74 * ln, Z + ln) if not front else (Z, Z + 0.26 * ln)
            box_z = (Z, Z + 0.72 * ln) if not front else (Z + 0.28 * ln, Z + ln)
            self.poly(vq(xf, Z, Z + ln, 0.35, 0.9), shade(body, 0.4), lid)
            self.poly(vq(xf, box_z[0], box_z[1], 0.8, h), body, lid)
            self.poly(vq(xf, cab_z[0], cab_z[1], 0.5, min(h, 2.9) * 0.95), cab, lid)
            wz = (cab_z[0] + 0.25 * (cab_z[1] - cab_z[0]), cab_z[1] - 0.2 * (cab_z[1] - cab_z[0]))
            self.poly(vq(xf, wz[0], wz[1], 1.7, min(h, 2.9) * 0.85), glass)
            for zc in (0.12, 0.3, 0.86):
                self._wheel(xf, Z + (zc if not front else 1 - zc) * ln, 0.5, lid)
        elif kind in ("bus", "train"):
            y0 = 0.3 if kind == "bus" else 0.45
            self.poly(vq(xf, Z, Z + ln, y0, h), body, lid)
            self.poly(vq(xf, Z + 0.04 * ln, Z + 0.97 * ln, 1.45, h - 0.6), shade(self.colour("big_glass"), 0.9))
            pillar = shade(body, 0.9)
            step = 2.2 if kind == "bus" else 1.8
            z = Z + 0.04 * ln + step
            while z < Z + 0.96 * ln and self.cam.scale_at(z) * step > 2:
                self.line([P(xf, z, 1.25), P(xf, z, h - 0.5)], pillar, line_width(self.cam.scale_at(z) * 0.15))
                z += step
            accent = self.colour("truck_cab") if kind == "bus" else shade(body, 0.6)
            self.poly(vq(xf, Z, Z + ln, y0 + 0.1, y0 + 0.4), accent)
            if kind == "bus":
                for zc in (0.18, 0.8):
                    self._wheel(xf, Z + zc * ln, 0.5, lid)
            else:
                for zc in (0.15, 0.5, 0.85):
                    self.poly(vq(xf, Z + (zc - 0.04) * ln, Z + (zc + 0.04) * ln, 0.0, 0.5), self.colour("tyre"), lid)

    def _vehicle_face(self, kind, X, Z, w, ln, h, body, cab, lid, front):
        """The face towards the camera (rear, or front when ``front``), in the plane Z."""
        fq, P = self.cam.front_quad, self.cam.project
        x0, x1 = X - w / 2, X + w / 2
        glass = self.colour("glass")
        tyre = self.colour("tyre")
        lamp = self.colour("lamp_front" if front else "lamp_rear")
        if kind == "car":
            hb = 0.55 * h
            for a, b in ((x0 + 0.05, x0 + 0.32), (x1 - 0.32, x1 - 0.05)):
                self.poly(fq(a, b, Z + 0.3, 0.0, 0.35), tyre, lid)
            self.poly(fq(x0, x1, Z, 0.25, hb), body, lid)
            self.poly([P(x0 + 0.04 * w, Z + 0.25, hb), P(x1 - 0.04 * w, Z + 0.25, hb),
                       P(x1 - 0.16 * w, Z + 0.25, h), P(x0 + 0.16 * w, Z + 0.25, h)], body, lid)
            self.poly([P(x0 + 0.1 * w, Z + 0.25, hb + 0.06), P(x1 - 0.1 * w, Z + 0.25, hb + 0.06),
                       P(x1 - 0.2 * w, Z + 0.25, h - 0.07), P(x0 + 0.2 * w, Z + 0.25, h - 0.07)], glass)
            self.poly(fq(x0, x1, Z, 0.25, 0.38), shade(body, 0.45))  # bumper
            for a, b in ((x0 + 0.05, x0 + 0.35), (x1 - 0.35, x1 - 0.05)):
                self.poly(fq(a, b, Z, hb - 0.22, hb - 0.08), lamp)
            self.poly(fq(X - 0.26, X + 0.26, Z, 0.42, 0.55), (230, 230, 230))  # number plate
        elif kind == "truck":
            if front:
                self.poly(fq(x0, x1, Z + 0.28 * ln, 0.8, h), body, lid)
                ch = min(h, 2.9) * 0.95
                self.poly(fq(x0, x1, Z, 0.35, ch), cab, lid)
                self.poly(fq(x0 + 0.12, x1 - 0.12, Z, ch * 0.62, ch - 0.15), glass)
                self.poly(fq(x0 + 0.3, x1 - 0.3, Z, 0.5, 1.0), shade(cab, 0.5))
            else:
                self.poly(fq(x0, x1, Z, 0.8, h), body, lid)
                self.poly(fq(x0 + 0.1, x1 - 0.1, Z, 0.35, 0.8), shade(body, 0.35), lid)
                self.line([P(X, Z, 0.9), P(X, Z, h - 0.1)], shade(body, 0.7), line_width(self.cam.scale_at(Z) * 0.05))
            for a, b in ((x0 + 0.05, x0 + 0.45), (x1 - 0.45, x1 - 0.05)):
                self.poly(fq(a, b, Z + 0.3, 0.0, 0.9), tyre, lid)
                self.poly(fq(a, b, Z, 0.85, 1.05), lamp)
        else:  # bus, train
            y0 = 0.3 if kind == "bus" else 0.45
            if kind == "bus":
                for a, b in ((x0 + 0.1, x0 + 0.5), (x1 - 0.5, x1 - 0.1)):
                    self.poly(fq(a, b, Z + 0.4, 0.0, 0.6), tyre, lid)
            else:
                self.poly(fq(x0 + 0.2, x1 - 0.2, Z + 0.5, 0.0, 0.6), tyre, lid)
            self.poly(fq(x0, x1, Z, y0, h), body, lid)
            wy0 = 1.1 if (front or kind == "train") else 1.7
            self.poly(fq(x0 + 0.15, x1 - 0.15, Z, wy0, h - 0.45), self.colour("big_glass"))
            if kind == "bus" and front:
                self.poly(fq(x0 + 0.4, x1 - 0.4, Z, h - 0.4, h - 0.12), (255, 150, 30))  # destination display
            for a, b in ((x0 + 0.1, x0 + 0.45), (x1 - 0.45, x1 - 0.1)):
                self.poly(fq(a, b, Z, y0 + 0.2, y0 + 0.45), lamp)
            if kind == "train":  # pantograph
                top = P(X, Z + 4.0, h)
                mid = P(X + 0.6, Z + 4.0, h + 0.8)
                tip = P(X - 0.6, Z + 4.0, h + 1.4)
                self.line([top, mid, tip], shade(body, 0.4), line_width(self.cam.scale_at(Z) * 0.05), lid)

    def _cross_vehicle(self, kind, x0, Z, ln, h, d):
        """A vehicle seen from the side, driving across the view at depth Z (the crossing street).

        It spans X from ``x0`` to ``x0 + ln``; ``d`` > 0: driving to the right.
        """
        lid = VEHICLE_IDS[kind]
        body = self.colour(kind)
        P, fq, s = self.cam.project, self.cam.front_quad, self.cam.scale_at
        x1 = x0 + ln
        glass = self.colour("glass")
        self.shadow(self.cam.ground_quad(x0 - 0.3, x1 + 0.3, Z - 0.4, Z + 1.2), 60)

        def at(t, y):  # t in 0..1 from the vehicle's rear to its front
            return P(x0 + (t if d > 0 else 1 - t) * ln, Z, y)

        def wheel(t, r):
            x, y = at(t, r)
            rr = s(Z) * r
            self.ellipse(x, y, rr, rr, self.colour("tyre"), lid)

        if kind == "car":
            hb = 0.55 * h
            self.poly(fq(x0, x1, Z, 0.28, hb), body, lid)
            self.poly([at(0.08, hb), at(0.2, h), at(0.62, h), at(0.76, hb)], body, lid)
            self.poly([at(0.12, hb + 0.05), at(0.22, h - 0.08), at(0.6, h - 0.08), at(0.72, hb + 0.05)], glass)
            for t in (0.18, 0.82):
                wheel(t, 0.32)
        elif kind == "truck":
            self.poly(fq(x0, x1, Z, 0.35, 0.9), shade(body, 0.4), lid)
            self.poly([at(0.0, 0.8), at(0.0, h), at(0.72, h), at(0.72, 0.8)], body, lid)
            cab = self.colour("truck_cab")
            ch = min(h, 2.9) * 0.95
            self.poly([at(0.74, 0.5), at(0.74, ch), at(0.95, ch), at(1.0, ch * 0.6), at(1.0, 0.5)], cab, lid)
            self.poly([at(0.84, ch * 0.6), at(0.84, ch - 0.15), at(0.94, ch - 0.15), at(0.98, ch * 0.6)], glass)
            for t in (0.12, 0.3, 0.86):
                wheel(t, 0.5)
        else:
            y0 = 0.3 if kind == "bus" else 0.45
            self.poly(fq(x0, x1, Z, y0, h), body, lid)
            self.poly(fq(x0 + 0.04 * ln, x1 - 0.04 * ln, Z, 1.45, h - 0.6), self.colour("big_glass"))
            step = 2.2 if kind == "bus" else 1.8
            pillar = shade(body, 0.9)
            x = x0 + 0.04 * ln + step
            while x < x1 - 0.04 * ln:
                self.line([P(x, Z, 1.25), P(x, Z, h - 0.5)], pillar, line_width(s(Z) * 0.15))
                x += step
            self.poly(fq(x0, x1, Z, y0 + 0.1, y0 + 0.4), shade(body, 0.6))
            if kind == "bus":
                for t in (0.18, 0.8):
                    wheel(t, 0.5)
            else:
                for t in (0.15, 0.5, 0.85):
                    self.poly([at(t - 0.04, 0.0), at(t + 0.04, 0.0), at(t + 0.04, 0.5), at(t - 0.04, 0.5)],
                              self.colour("tyre"), lid)
                self.line([at(0.3, h), at(0.35, h + 0.8), at(0.25, h + 1.4)], shade(body, 0.4),
                          line_width(s(Z) * 0.05), lid)
