"""Where things are: the camera, the street's cross-section and the plan of what stands where.

World coordinates are metres: X to the right, Y up from the ground, Z forward (depth).
The camera stands in one of the driving lanes at X = 0. A street is, from the middle out
on each side (sgn -1 left, +1 right): driving lanes (the left half oncoming), an optional
parking strip, the curb, a sidewalk, an optional terrain strip (lawn), then facades,
walls, fences and hedges. A crossing street may cut across at some depth.

Planning only decides and records; drawing happens later, far to near (see
:mod:`.scene`). Each planned thing is a :class:`Placed`: which drawing method of the scene
draws it and with which arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from udas_ray.data.scenes.canvas import Canvas

PARKING_WIDTH = 2.2  # metres of a parking strip along a curb


class Camera:
    """A pinhole camera ``height`` metres over the ground plane, looking along +Z.

    ``horizon`` is the image row of the horizon, ``focal`` the focal length and
    ``centre_x`` the principal point's column, in pixels. ``near`` is the depth of the
    ground at the bottom image row, ``far`` the depth of the far skyline band.
    """

    def __init__(self, image_height: int, horizon: float, focal: float, centre_x: float, height: float,
                 far: float):
        self.horizon, self.focal, self.centre_x, self.height = horizon, focal, centre_x, height
        self.near = focal * height / (image_height - horizon)
        self.far = far

    @classmethod
    def sample(cls, scene: Canvas) -> Camera:
        """A camera from the domain's layout distribution (draws: horizon, focal, centre, height, far)."""
        table, h, w = scene.table, scene.h, scene.w
        horizon = h * scene.uniform(*table["horizon"])
        focal = w * scene.uniform(*table["focal"])
        centre_x = w * scene.uniform(0.38, 0.62)
        height = scene.uniform(*table["cam_h"])
        return cls(h, horizon, focal, centre_x, height, scene.uniform(*table["far"]))

    def project(self, X: float, Z: float, Y: float = 0.0) -> tuple[float, float]:
        """The image point (x, y) of the world point (X, Y, Z); depths are clamped to >= 0.2 m."""
        Z = max(Z, 0.2)
        return (self.centre_x + self.focal * X / Z, self.horizon + self.focal * (self.height - Y) / Z)

    def ground_depth(self, rows: np.ndarray) -> np.ndarray:
        """The depth in metres of the ground seen in image row(s) ``rows``; ``far`` at and above the horizon."""
        below = rows + 0.5 - self.horizon
        with np.errstate(divide="ignore"):
            return np.where(below > 0, np.minimum(self.far, self.focal * self.height / np.maximum(below, 1e-6)),
                            self.far)

    def ground_x(self, xs: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """The lateral position in metres of image column(s) ``xs`` at depth(s) ``depth``."""
        return (xs - self.centre_x) * depth / self.focal

    def scale_at(self, Z: float) -> float:
        """Pixels per metre at depth ``Z``."""
        return self.focal / max(Z, 0.2)

    def ground_quad(self, x0, x1, z0, z1):
        """The rectangle [x0, x1] x [z0, z1] on the ground."""
        P = self.project
        return [P(x0, z0), P(x1, z0), P(x1, z1), P(x0, z1)]

    def side_quad(self, X, z0, z1, y0, y1):
        """The rectangle [z0, z1] x [y0, y1] in the plane X (a face along the street)."""
        P = self.project
        return [P(X, z0, y0), P(X, z0, y1), P(X, z1, y1), P(X, z1, y0)]

    def front_quad(self, x0, x1, Z, y0, y1):
        """The rectangle [x0, x1] x [y0, y1] in the plane Z (a face towards the camera)."""
        P = self.project
        return [P(x0, Z, y0), P(x1, Z, y0), P(x1, Z, y1), P(x0, Z, y1)]


@dataclass
class Side:
    """One side of the street, at X values growing away from the road by ``sgn``."""

    curb: float  # X of the road's edge
    sidewalk: float  # sidewalk width
    terrain: float  # width of the terrain strip behind the sidewalk (0: none)
    sidewalk_end: float  # X of the sidewalk's outer edge
    terrain_end: float  # X of the terrain strip's outer edge: where the facades start


class Placed(NamedTuple):
    """One planned thing: the scene's drawing method ``draw`` (e.g. "vehicle") is called with ``args``."""

    z: float  # depth (drawing order)
    draw: str
    args: tuple
    x: float = 0.0  # lateral position (drawing order of the backdrop)


@dataclass
class Street:
    """The planned street: its cross-section, an optional crossing, and everything placed on it."""

    road: tuple[float, float]  # X of the left and right curbs
    lanes: list[float]  # X of the driving lanes' centres, left to right
    oncoming: list[bool]  # per lane
    lane_lines: list[float]  # X of the lane boundaries, left to right
    parking: dict[int, bool]  # per side: a parking strip along the curb
    sides: dict[int, Side]  # -1: left, +1: right
    crossing: tuple[float, float] | None  # depth range of a crossing street's roadway
    tram: float | None = None  # X of the lane with tram rails
    tree_pits: list[tuple[float, float]] = field(default_factory=list)  # (X, Z): terrain squares in sidewalks
    backdrop: list[Placed] = field(default_factory=list)  # facades, walls, fences, hedges
    objects: list[Placed] = field(default_factory=list)  # everything on the road and the sidewalks

    def in_crossing(self, z0, z1, margin=2.5) -> bool:
        """Whether the depth range [z0, z1] comes within ``margin`` of the crossing street."""
        if self.crossing is None:
            return False
        return z1 > self.crossing[0] - margin and z0 < self.crossing[1] + margin


class StreetPlanner(Canvas):
    """Samples a :class:`Street` (``self.street``) for the scene's camera ``self.cam``."""

    def plan_street(self) -> Street:
        self.street = self._cross_section()
        self._plan_backdrop()
        self._plan_objects()
        return self.street

    def _cross_section(self) -> Street:
        """Lanes (the camera in one going its way), parking strips, sidewalks, terrain strips, maybe a crossing."""
        L = self.table
        n_lanes = int(self.pick(L["lanes"]))
        lane_w = self.uniform(*L["lane_w"])
        park = {s: self.chance(L["parked_p"]) for s in (-1, 1)}
        cam_lane = int(self.rng.integers(n_lanes // 2, n_lanes))
        strip = {s: PARKING_WIDTH if park[s] else 0.0 for s in (-1, 1)}
        left = -(strip[-1] + (cam_lane + 0.5) * lane_w)  # the camera is at X = 0
        lanes_left = left + strip[-1]
        right = lanes_left + n_lanes * lane_w + strip[1]
        sides = {}
        for sgn in (-1, 1):
            curb = left if sgn < 0 else right
            sidewalk = self.uniform(*L["sidewalk"])
            terrain = self.uniform(*L["terrain_w"]) if self.chance(L["terrain_p"]) else 0.0
            sidewalk_end = curb + sgn * sidewalk
            sides[sgn] = Side(curb, sidewalk, terrain, sidewalk_end, sidewalk_end + sgn * terrain)
        crossing = None
        if self.chance(L["cross_p"]):
            zc = self.uniform(max(self.cam.near + 6.0, 12.0), 45.0)
            crossing = (zc, zc + self.uniform(7.0, 14.0))
        return Street(road=(left, right), lanes=[lanes_left + (i + 0.5) * lane_w for i in range(n_lanes)],
                      oncoming=[i < n_lanes // 2 for i in range(n_lanes)],
                      lane_lines=[lanes_left + i * lane_w for i in range(n_lanes + 1)],
                      parking=park, sides=sides, crossing=crossing)

    # -- backdrop --------------------------------------------------------------------------------------
    def _plan_backdrop(self):
        for sgn, side in self.street.sides.items():
            self._plan_facades(sgn, side)
            self._plan_walls_fences_hedges(sgn, side)

    def _plan_facades(self, sgn, side):
        """A row of buildings from near to ``cam.far``, with gaps, leaving the crossing street free."""
        L, st = self.table, self.street
        z = self.uniform(0.5, 3.0)
        while z < self.cam.far:
            ln = self.uniform(*L["bld_len"])
            if st.in_crossing(z, z + ln):
                if z < st.crossing[0] - 2.5 - 2.0:
                    ln = st.crossing[0] - 2.5 - z
                else:
                    z = st.crossing[1] + 2.5 + self.uniform(0.0, 3.0)
                    continue
            if self.chance(L["gap_p"]):
                z += self.uniform(4.0, 14.0)
                continue
            X = side.terrain_end + sgn * self.uniform(*L["setback"])
            z1 = min(z + ln, self.cam.far)
            st.backdrop.append(Placed(z, "building", (sgn, X, z, z1, self.uniform(*L["bld_h"])), X))
            z = z1

    def _plan_walls_fences_hedges(self, sgn, side):
        for kind, draw in (("walls", "wall"), ("fences", "fence"), ("hedges", "hedge")):
            for _ in range(int(self.rng.poisson(self.table[kind]))):
                z0 = self.uniform(self.cam.near * 0.6, 55.0)
                z1 = z0 + self.uniform(4.0, 25.0)
                if self.street.in_crossing(z0, z1):
                    continue
                if side.terrain > 0 and self.chance(0.5):  # along the sidewalk, in front of the lawn
                    X = side.sidewalk_end + sgn * 0.15
                else:
                    X = side.terrain_end - sgn * self.uniform(0.1, 0.5)
                self.street.backdrop.append(Placed(z0, draw, (sgn, X, z0, z1), X))

    # -- objects ----------------------------------------------------------------------------------------
    def _place(self, z, draw, *args):
        self.street.objects.append(Placed(z, draw, args))

    def _z_near(self, lo_extra=0.0, scale=15.0, cap=70.0):
        """A depth skewed towards the camera (more near objects than far ones)."""
        return min(cap, self.cam.near * 0.9 + lo_extra + float(self.rng.exponential(scale)))

    def _random_side(self):
        sgn = self.pick((-1, 1))
        return sgn, self.street.sides[sgn]

    def _random_vehicle(self, parked=False):
        """A vehicle kind and its (width, length, height) in metres; vans count as cars."""
        L = self.table
        r = self.rng.random()
        if r < L["bus_p"] * (0.3 if parked else 1.0):
            return "bus", (2.55, self.uniform(10.5, 13.0), self.uniform(3.0, 3.3))
        if r < (L["bus_p"] + L["truck_p"]) * (0.4 if parked else 1.0):
            return "truck", (self.uniform(2.3, 2.55), self.uniform(6.5, 10.0), self.uniform(2.9, 3.8))
        if self.chance(0.1):  # a van
            return "car", (self.uniform(1.9, 2.05), self.uniform(4.8, 5.3), self.uniform(1.9, 2.2))
        return "car", (self.uniform(1.7, 1.9), self.uniform(4.0, 4.8), self.uniform(1.38, 1.6))

    def _plan_objects(self):
        self._plan_tram()
        self._plan_moving_traffic()
        self._plan_parked_vehicles()
        self._plan_cross_traffic()
        self._plan_pedestrians()
        self._plan_riders()
        self._plan_parked_two_wheelers()
        self._plan_poles()
        self._plan_trees()
        self._plan_bushes()

    def _plan_tram(self):
        """Sometimes a tram: along the road (on rails in one lane), or across it at the crossing."""
        st = self.street
        if not self.chance(self.table["train_p"]):
            return
        if st.crossing is not None and self.chance(0.5):
            zc = (st.crossing[0] + st.crossing[1]) / 2
            x0 = self.uniform(-25.0, 5.0)
            self._place(zc, "cross_vehicle", "train", x0, zc, self.uniform(22.0, 30.0), 3.4, self.pick((-1, 1)))
        else:
            i = int(self.rng.integers(len(st.lanes)))
            st.tram = st.lanes[i]
            z = self.uniform(max(self.cam.near, 10.0), 40.0)
            self._place(z, "vehicle", "train", st.lanes[i], z, 2.4, self.uniform(22.0, 30.0), 3.4, st.oncoming[i])

    def _plan_moving_traffic(self):
        """Vehicles in each lane (but the tram's), at least 3 m apart, none right in front of the camera."""
        st = self.street
        for i, x in enumerate(st.lanes):
            if st.tram is not None and x == st.tram:
                continue
            zs = sorted(self.uniform(self.cam.near * 0.9, 90.0)
                        for _ in range(int(self.rng.poisson(self.table["moving"] + 0.3))))
            last = -1e9
            for z in zs:
                if x == 0 and z < max(6.0, self.cam.near * 1.2):
                    continue
                kind, (w, ln, h) = self._random_vehicle()
                if z < last + 3.0:
                    continue
                last = z + ln
                self._place(z, "vehicle", kind, x + self.uniform(-0.3, 0.3), z, w, ln, h, st.oncoming[i])

    def _plan_parked_vehicles(self):
        """Rows of parked vehicles on each parking strip, with gaps, none in the crossing."""
        st = self.street
        rl, rr = st.road
        for sgn in (-1, 1):
            if not st.parking[sgn]:
                continue
            x = (rl + 1.1) if sgn < 0 else (rr - 1.1)
            z = self.uniform(self.cam.near * 0.8, 10.0)
            while z < 70.0:
                kind, (w, ln, h) = self._random_vehicle(parked=True)
                if self.chance(self.table["parked_fill"]) and not st.in_crossing(z, z + ln, 4.0):
                    self._place(z, "vehicle", kind, x + self.uniform(-0.15, 0.15), z, w, ln, h, self.chance(0.3))
                    z += ln + self.uniform(0.4, 2.5)
                else:
                    z += self.uniform(2.0, 6.0)

    def _plan_cross_traffic(self):
        if self.street.crossing is None:
            return
        zc0, zc1 = self.street.crossing
        for _ in range(int(self.rng.poisson(0.7))):
            z = self.uniform(zc0 + 1.5, zc1 - 1.5)
            kind, (w, ln, h) = self._random_vehicle()
            self._place(z, "cross_vehicle", kind, self.uniform(-30.0, 20.0), z, ln, h, self.pick((-1, 1)))

    def _plan_pedestrians(self):
        """People alone or in groups of 2-3, on the sidewalks or crossing the road."""
        st = self.street
        rl, rr = st.road
        for _ in range(int(self.rng.poisson(self.table["persons"]))):
            group = 1 if self.chance(0.7) else int(self.rng.integers(2, 4))
            if self.chance(0.12):  # crossing the road
                z = st.crossing[0] - 1.2 if st.crossing is not None else self._z_near(4.0)
                x = self.uniform(rl, rr)
            else:
                sgn, side = self._random_side()
                z = self._z_near()
                x = side.curb + sgn * self.uniform(0.4, max(0.5, side.sidewalk - 0.3))
            for g in range(group):
                zz = z + g * self.uniform(0.3, 1.0)
                self._place(zz, "person", x + self.uniform(-0.7, 0.7) * g, zz, self.uniform(1.55, 1.95))

    def _plan_riders(self):
        """Motorcyclists in the lanes, cyclists along the right curb."""
        st = self.street
        for _ in range(int(self.rng.poisson(self.table["riders"]))):
            moto = self.chance(0.4)
            z = self._z_near(4.0, 12.0, 50.0)
            if moto:
                x = self.pick(st.lanes) + self.uniform(-0.8, 0.8)
                if abs(x) < 1.5:  # not right in front of the camera
                    z += 8.0
            else:
                x = st.road[1] - (PARKING_WIDTH if st.parking[1] else 0.0) - self.uniform(0.6, 1.2)
            self._place(z, "rider", x, z, moto, self.pick((-1, 1)) * self.uniform(0.6, 1.0))

    def _plan_parked_two_wheelers(self):
        """Groups of 1-3 bicycles or motorcycles standing on the sidewalks."""
        for kind, rate in (("bike", self.table["parked_bikes"]), ("moto", self.table["parked_motos"])):
            for _ in range(int(self.rng.poisson(rate))):
                sgn, side = self._random_side()
                z = self._z_near(0.5, 12.0, 45.0)
                x = side.curb + sgn * self.uniform(0.5, max(0.6, side.sidewalk - 0.5))
                for g in range(int(self.rng.integers(1, 4))):
                    zz = z + g * 0.8
                    self._place(zz, "parked_two_wheeler", kind, x, zz, self.pick((-1, 1)) * self.uniform(0.45, 1.0))

    def _plan_poles(self):
        """Lamps, signs and traffic lights along the curbs; extra signs; traffic lights at the crossing."""
        L, st = self.table, self.street
        for sgn, side in st.sides.items():
            z = self.uniform(self.cam.near, 14.0)
            while z < 80.0:
                x = side.curb + sgn * 0.45
                kind = self.pick(("lamp", "lamp", "sign", "sign", "light"))
                self._place(z, "pole", x, z, sgn, kind)
                z += self.uniform(*L["pole_step"])
        for _ in range(int(self.rng.poisson(L["signs"]))):
            sgn, side = self._random_side()
            z = self._z_near(1.0, 15.0, 60.0)
            self._place(z, "pole", side.curb + sgn * self.uniform(0.3, 1.0), z, sgn, "sign")
        if st.crossing is not None or self.chance(L["lights"]):
            z = st.crossing[0] - 2.0 if st.crossing is not None else self._z_near(5.0, 15.0, 50.0)
            for sgn in (-1, 1):
                if self.chance(0.75):
                    self._place(z, "pole", st.sides[sgn].curb + sgn * 0.5, z, sgn,
                                "overhead" if self.chance(0.5) else "light")

    def _plan_trees(self):
        """Per side, maybe a row of trees: in the lawn, or in tree pits in the sidewalk."""
        L, st = self.table, self.street
        for sgn, side in st.sides.items():
            if not self.chance(L["tree_p"]):
                continue
            in_lawn = side.terrain > 1.2 and self.chance(0.5)
            if in_lawn:
                x = (side.sidewalk_end + side.terrain_end) / 2
            else:
                x = side.curb + sgn * min(1.0, side.sidewalk * 0.5)
            z = self.uniform(self.cam.near * 0.8, 12.0)
            while z < 70.0:
                if not st.in_crossing(z - 1, z + 1) and self.chance(0.85):
                    self._place(z, "tree", x + self.uniform(-0.2, 0.2), z)
                    if not in_lawn:
                        st.tree_pits.append((x, z))
                z += self.uniform(*L["tree_step"])

    def _plan_bushes(self):
        for _ in range(int(self.rng.poisson(self.table["bushes"]))):
            sgn, side = self._random_side()
            z = self._z_near(0.0, 15.0, 60.0)
            if side.terrain > 0:
                x = (side.sidewalk_end + side.terrain_end) / 2
            else:
                x = side.terrain_end - sgn * 0.6
            self._place(z, "bush", x, z)
