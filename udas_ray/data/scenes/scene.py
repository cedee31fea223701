"""One scene, start to finish, and :func:`render_scene`, the pure function of (domain, seed, split, index)."""

from __future__ import annotations

import numpy as np

from udas_ray.data.scenes.domains import SPLITS, check_knobs
from udas_ray.data.scenes.domains import domain as domain_spec
from udas_ray.data.scenes.labels import SKY, TERRAIN
from udas_ray.data.scenes.layout import Camera, StreetPlanner
from udas_ray.data.scenes.looks import Looks
from udas_ray.data.scenes.objects import ObjectPainter
from udas_ray.data.scenes.street import StreetPainter
from udas_ray.data.scenes.vehicles import VehiclePainter
from udas_ray.errors import UdasError


def check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UdasError(f"scene size {size!r} must be (height, width); e.g. (96, 192)") from None
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise UdasError(f"scene size {size!r} must be (height, width) with 8 <= each <= 4096")
    return h, w


def render_scene(domain: str, seed: int, index: int, size: tuple[int, int], split: str = "train",
                 **knobs) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: (image uint8 HxWx3, label uint8 HxW in Cityscapes labelIds).

    ``domain`` names a :class:`~.domains.Domain` (``source``, ``target``, or another of the
    suite's); ``size`` is (height, width). ``knobs`` (rendered domains only) override
    :data:`SOURCE_KNOBS`.
    """
    spec = domain_spec(domain)
    if split not in SPLITS:
        raise UdasError(f"scene split {split!r} must be one of {sorted(SPLITS)}")
    if int(seed) < 0 or int(index) < 0:
        raise UdasError(f"scene seed {seed} and index {index} must be >= 0")
    h, w = check_size(size)
    knobs = check_knobs(domain, knobs)
    rng = np.random.default_rng([int(seed), spec.stream, SPLITS[split], int(index)])
    return Scene(domain, rng, h, w, knobs).render()


class Scene(StreetPlanner, StreetPainter, VehiclePainter, ObjectPainter, Looks):
    """One scene being drawn; ``Scene(domain, rng, h, w, knobs).render()`` draws it once.

    The parts are mixins over one shared :class:`~.canvas.Canvas` (draws, images, tables):
    :class:`~.layout.StreetPlanner` plans, the painters draw (:mod:`.street`,
    :mod:`.vehicles`, :mod:`.objects`) and :class:`~.looks.Looks` finishes.
    """

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """Camera, sun and street plan, then painting back to front, then the domain's finishing."""
        H, W = self.h, self.w
        self.cam = Camera.sample(self)
        self.sun = self.pick((-1, 1))
        street = self.plan_street()
        self.sky = self.colour("sky")
        self.pen.rectangle((0, 0, W, H), fill=self.sky)
        self.label_pen.rectangle((0, 0, W, H), fill=SKY)
        self._clouds()
        horizon = self.cam.horizon
        self.poly([(-1, horizon), (W + 1, horizon), (W + 1, H + 1), (-1, H + 1)], self.colour("terrain"), TERRAIN)
        self._far_band()
        self._ground()
        drawers = self._drawers()
        for item in sorted(street.backdrop, key=lambda p: (-abs(p.x), -p.z)):  # outermost first, then far to near
            drawers[item.draw](*item.args)
        for item in sorted(street.objects, key=lambda p: -p.z):  # far to near
            drawers[item.draw](*item.args)
        if not self.target and self.chance(self.knobs["distractors"]):
            self._distractors()
        if self.target and self.chance(self.table["ego_p"]):
            self._hood()
        return self.finish()

    def _drawers(self) -> dict:
        """The drawing method for each kind of :class:`~.layout.Placed` thing."""
        return {
            "building": self._building, "wall": self._wall, "fence": self._fence, "hedge": self._hedge,
            "vehicle": self._vehicle, "cross_vehicle": self._cross_vehicle, "person": self._person,
            "rider": self._rider, "parked_two_wheeler": self._parked_two_wheeler, "pole": self._pole,
            "tree": self._tree, "bush": self._bush,
        }
