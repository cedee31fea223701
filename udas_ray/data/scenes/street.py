"""Drawing the street itself: sky, far skyline, the ground (road, sidewalks, markings) and the backdrop.

The backdrop is what lines the street: building facades with windows, walls, fences and
hedges, all faces in planes X = const along the street (plus a building's front face
towards the camera), shaded by which side the sun is on.
"""

from __future__ import annotations

import numpy as np

from udas_ray.data.scenes.canvas import Canvas, line_width
from udas_ray.data.scenes.labels import BUILDING, FENCE, ROAD, SIDEWALK, SKY, TERRAIN, VEG, WALL


class StreetPainter(Canvas):
    # -- background ----------------------------------------------------------------------------------
    def _clouds(self):
        n = int(self.rng.poisson(2.5)) if self.chance(self.table["clouds"]) else 0
        for _ in range(n):
            cx, cy = self.uniform(0, self.w), self.uniform(0, self.cam.horizon * 0.8)
            rx = self.uniform(0.05, 0.2) * self.w
            c = self.colour("cloud")
            for _ in range(3):
                self.ellipse(cx + self.uniform(-rx, rx), cy + self.uniform(-0.2, 0.2) * rx, rx * self.uniform(0.5, 0.9),
                             rx * self.uniform(0.2, 0.35), c, SKY)

    def _far_band(self):
        """A skyline at depth ``cam.far``: blocks of buildings and clumps of trees."""
        far = self.cam.far
        s = self.cam.scale_at(far)
        yb = self.cam.project(0, far)[1] + 0.5
        x = -self.uniform(0, 10) * s
        while x < self.w:
            bw = max(2.0, s * self.uniform(8.0, 30.0))
            r = self.rng.random()
            if r < 0.7:
                hh = s * self.uniform(6.0, 35.0)
                self.poly([(x, yb), (x + bw, yb), (x + bw, yb - hh), (x, yb - hh)],
                          self.haze(self.colour("building", 0.9), far), BUILDING)
            elif r < 0.92:
                c = self.haze(self.colour("vegetation"), far)
                for _ in range(3):
                    rr = s * self.uniform(3.0, 7.0)
                    self.ellipse(x + self.uniform(0, bw), yb - rr * self.uniform(0.6, 1.4), rr, rr, c, VEG)
            x += bw

    def _ground(self):
        """Terrain strips, sidewalks, tree pits, the crossing street, the road and curbs, then markings."""
        zn, zf = 0.4, self.cam.far
        quad = self.cam.ground_quad
        st = self.street
        rl, rr = st.road
        for sgn, side in st.sides.items():
            if side.terrain > 0:
                self.poly(quad(side.sidewalk_end, side.terrain_end, zn, zf), self.colour("terrain"), TERRAIN)
            self.poly(quad(side.curb, side.sidewalk_end, zn, zf), self.colour("sidewalk"), SIDEWALK)
        for x, z in st.tree_pits:
            self.poly(quad(x - 0.6, x + 0.6, z - 0.6, z + 0.6), self.colour("terrain"), TERRAIN)
        if st.crossing is not None:
            zc0, zc1 = st.crossing
            c = self.colour("sidewalk")
            self.poly(quad(-400, 400, zc0 - 2.5, zc0), c, SIDEWALK)
            self.poly(quad(-400, 400, zc1, zc1 + 2.5), c, SIDEWALK)
            self.poly(quad(-400, 400, zc0, zc1), self.colour("road"), ROAD)
        road = self.colour("road")
        self.poly(quad(rl, rr, zn, zf), road, ROAD)
        curb = self.colour("curb")
        for sgn, side in st.sides.items():
            self.poly(quad(side.curb, side.curb + sgn * 0.25, zn, zf), curb, SIDEWALK)
        self._markings(road, zn, min(zf, 120.0))

    def _markings(self, road, zn, zmax):
        """Lane lines, a zebra crossing and tram rails, drawn on the image only (they are road)."""
        quad = self.cam.ground_quad
        st = self.street
        rl, rr = st.road
        mark = self.colour("marking")
        k = len(st.lanes)
        for i, x in enumerate(st.lane_lines):
            # solid: the centre line, and the outer lines where there is a parking strip; no other outer line
            solid = (i in (0, k) and (st.parking[-1] if i == 0 else st.parking[1])) or (k > 1 and i == k // 2)
            if i in (0, k) and not solid:
                continue
            if solid:
                spans = [(zn, zmax)]
            else:
                z0 = self.cam.near * 0.5 + self.uniform(0, 9.0)
                spans = [(z, z + 3.0) for z in np.arange(z0, zmax, 9.0)]
            for z0, z1 in spans:
                if st.in_crossing(z0, z1):
                    z1 = min(z1, st.crossing[0] - 2.5)
                    if z1 <= z0:
                        continue
                self.poly(quad(x - 0.08, x + 0.08, z0, z1), mark)
        if st.crossing is not None:
            z0, z1 = st.crossing[0] - 2.3, st.crossing[0] - 0.3
            x = rl + 0.3
            while x < rr - 0.5:
                self.poly(quad(x, x + 0.5, z0, z1), mark)
                x += 1.0
        if st.tram is not None:
            rail = tuple(int(v * 0.75) for v in road)
            for dx in (-0.75, -0.68, 0.68, 0.75):
                self.poly(quad(st.tram + dx - 0.03, st.tram + dx + 0.03, zn, zmax), rail)

    # -- backdrop: facades, walls, fences, hedges ------------------------------------------------------
    def _face_shade(self, sgn):
        """Brightness of a face along the street on side ``sgn`` (lit when the sun is on that side)."""
        if not self.target:  # cel shading: two flat tones
            return 1.0 if sgn == self.sun else 0.84
        return 1.08 if sgn == self.sun else 0.78

    def _building(self, sgn, X, z0, z1, h):
        """A facade from depth z0 to z1, ``h`` metres high: front face, side face, cornice, windows."""
        side_quad = self.cam.side_quad
        base = self.colour("building")
        shade = self._face_shade(sgn)
        depth = sgn * 14.0
        c = self.haze(tuple(int(min(255, v * shade)) for v in base), z0)
        front = self.haze(tuple(int(v * (0.92 if self.target else 1.0)) for v in base), z0)
        self.poly(self.cam.front_quad(X, X + depth, z0, 0.0, h), front, BUILDING)
        self.poly(side_quad(X, z0, z1, 0.0, h), c, BUILDING)
        # cornice
        dark = tuple(int(v * 0.7) for v in c)
        if self.target or self.chance(0.5):
            self.poly(side_quad(X - sgn * 0.01, z0, z1, h - 0.5, h), dark)
        # windows
        if not self.target and not self.chance(0.6):
            return
        floor_h = self.uniform(2.8, 3.6)
        col_w = self.uniform(2.0, 3.4)
        win_w = col_w * self.uniform(0.4, 0.6)
        win_h = floor_h * self.uniform(0.45, 0.6)
        y0 = self.uniform(0.8, 1.6)
        flat = None if self.target else self.colour("window")
        z = z0 + self.uniform(0.3, 1.0)
        while z + win_w < z1:
            if self.cam.scale_at(z) * win_w < 1.3:
                break
            y = y0
            while y + win_h < h - 0.6:
                wc = flat if flat is not None else self.haze(self.colour("window"), z)
                self.poly(side_quad(X - sgn * 0.01, z, z + win_w, y, y + win_h), wc)
                y += floor_h
            z += col_w
        if self.target and self.chance(0.6):  # shop fronts: a darker ground floor
            self.poly(side_quad(X - sgn * 0.02, z0, z1, 0.0, y0 + win_h * 0.8), tuple(int(v * 0.55) for v in c))

    def _wall(self, sgn, X, z0, z1):
        """A concrete wall with a coping and panel joints."""
        side_quad, P = self.cam.side_quad, self.cam.project
        h = self.uniform(1.0, 2.8)
        c = self.colour("wall", self._face_shade(sgn))
        self.poly(side_quad(X, z0, z1, 0.0, h), c, WALL)
        self.poly(self.cam.front_quad(X, X + sgn * 0.3, z0, 0.0, h), tuple(int(v * 0.9) for v in c), WALL)
        self.poly(side_quad(X - sgn * 0.01, z0, z1, h - 0.15, h), tuple(int(v * 0.8) for v in c))
        joint = tuple(int(v * 0.72) for v in c)  # concrete panel joints
        z = z0 + 2.0
        while z < z1 and self.cam.scale_at(z) * 2.0 >= 3.0:
            self.line([P(X, z, 0.0), P(X, z, h - 0.15)], joint, 1)
            z += 2.0

    def _fence(self, sgn, X, z0, z1):
        """A fence: a filled panel with posts (or dense pickets) and two light rails."""
        P, s = self.cam.project, self.cam.scale_at
        h = self.uniform(1.0, 2.2)
        c = self.colour("fence", self._face_shade(sgn))
        dark = tuple(int(v * 0.6) for v in c)
        light = tuple(int(min(255, v * 1.25)) for v in c)
        self.poly(self.cam.side_quad(X, z0, z1, 0.0, h), c, FENCE)
        step = self.uniform(0.15, 0.4) if self.chance(0.5) else self.uniform(1.5, 2.5)
        z = z0
        while z < z1:
            if s(z) * step < 1.5:
                break
            self.line([P(X, z, 0.0), P(X, z, h)], dark, line_width(s(z) * 0.06))
            z += step
        for y in (h * 0.9, h * 0.45):
            self.line([P(X, z0, y), P(X, z1, y)], light, 1)

    def _hedge(self, sgn, X, z0, z1):
        """A hedge with an irregular top."""
        P = self.cam.project
        h = self.uniform(0.8, 2.2)
        pts = [P(X, z0, 0.0)]
        n = 8
        for i in range(n + 1):
            z = z0 + (z1 - z0) * i / n
            pts.append(P(X, z, h * self.uniform(0.85, 1.1)))
        pts.append(P(X, z1, 0.0))
        self.poly(pts, self.colour("vegetation", 0.9), VEG)
