"""The domains' tables: which looks exist, their appearance (palettes) and layout distributions,
and the sim->real pairs of the benchmark suite built from them.

Everything that makes a ``source`` look like a game engine and a ``target`` like a camera in
a real city, as far as it is data: the colour families each material is drawn from, the sign
and lamp colours, the source's randomization knobs, and the layout distributions. A
:class:`Domain` names one combination of palette, layout and finishing; the per-pixel
finishing itself (shading, textures, weather, noise, blur) is code, in :mod:`.looks`.

:data:`PAIRS` is the suite: today's pair (``street``) and pairs that differ from it the way
real pairs differ (surface materials, sensor and light, camera geometry and class
frequencies, another engine). Each pair is one source domain and one target domain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from udas_ray.errors import UdasError


@dataclass(frozen=True)
class Domain:
    """One look of the street grammar.

    ``stream`` seeds the scene's random draws with (seed, stream, split, index), so two
    domains never share images. ``camera`` switches on what a real camera sees and a game
    engine leaves out (aerial haze, soft shadows, signs seen from behind, shop fronts, the ego
    hood). ``palette`` and ``layout`` name entries of :data:`PALETTES` and :data:`LAYOUTS`;
    ``finish`` names the finishing of :class:`~.looks.Looks` (``game``, ``toon``, ``camera``,
    ``material``, ``weather``). ``knobs``: a rendered domain's randomization knobs by default
    (the keys of :data:`SOURCE_KNOBS`; a call may override them); a camera domain has none.
    """

    name: str
    stream: int
    camera: bool
    palette: str
    layout: str
    finish: str
    about: str
    knobs: Mapping[str, float] | None = None


# Source-domain randomization knobs, each in [0, 1] (0 switches it off): the game engine's
# defaults. The toon engine has none of them: its few palette colours are all it draws.
SOURCE_KNOBS = {
    "jitter": 0.12,  # per-object palette jitter (brightness +-jitter, per-channel noise)
    "textures": 0.3,  # probability per class and image of a simple procedural texture
    "distractors": 0.3,  # probability per image of 1-4 flying void shapes (labelId 0)
    "lighting": 0.25,  # amplitude of a random global brightness and linear gradient
}
NO_KNOBS = dict.fromkeys(SOURCE_KNOBS, 0.0)

DOMAINS = {d.name: d for d in (
    Domain("source", 1, False, "source", "source", "game",
           "a game engine: saturated colour families, cel shading, crisp edges, no noise", SOURCE_KNOBS),
    Domain("target", 2, True, "target", "target", "camera",
           "a real-like camera: muted colours, textures, sun, haze, blur, sensor noise, ego hood"),
    Domain("source_toon", 3, False, "source_toon", "source", "toon",
           "another engine with a small asset library: a few pastel colours per class, soft light from above, "
           "posterized colour, ink outlines, none of the game engine's randomization", NO_KNOBS),
    Domain("target_material", 4, True, "target_material", "target", "material",
           "the camera over other materials: cobblestones, slate tiles, glass facades, graffiti, autumn leaves"),
    Domain("target_weather", 5, True, "target", "target", "weather",
           "the camera at dusk, at night, in fog or rain: low light, colour casts, gamma, strong noise and blur"),
    Domain("target_geometry", 6, True, "target", "target_geometry", "camera",
           "the camera on a high, wide-angle mount over wide roads: few pedestrians, many riders, buses and trucks"),
)}

# The benchmark suite: pair -> (source domain, target domain).
PAIRS = {
    "street": ("source", "target"),
    "material": ("source", "target_material"),
    "sensor": ("source", "target_weather"),
    "geometry": ("source", "target_geometry"),
    "engine": ("source_toon", "target"),
}
# What each pair tests (the README's and bench/suite.py's words).
PAIR_GAPS = {
    "street": "appearance and layout together: a game engine against a real-like camera (the original benchmark)",
    "material": "surface materials the source never shows (pavers, slate, glass facades, graffiti, autumn foliage)",
    "sensor": "sensor and light: dusk, night, fog and rain, colour casts, gamma, heavy noise and blur",
    "geometry": "camera height and field of view, road widths and class frequencies",
    "engine": "the source from another engine (a few pastel colours per class, toon shading, ink outlines, no "
              "randomization); the same real-like target",
}


def domain(name: str) -> Domain:
    """The :class:`Domain` called ``name``; one line naming the known ones otherwise."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise UdasError(f"scene domain {name!r} must be one of {sorted(DOMAINS)}") from None


SPLITS = {"train": 1, "val": 2}
TARGET_CITIES = {
    "train": ("alderon", "brindle", "castmoor", "dunwick", "elmhurst"),
    "val": ("corvia", "fennick"),
}
# Palette jitter of the target (fixed; the source's is the "jitter" knob).
TARGET_JITTER = 0.05

# ---------------------------------------------------------------------------------------------
# Appearance: material -> candidate colours.
PALETTES = {
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
# Another engine's art direction: pastel and candy colour families, each material still its own hue.
PALETTES["source_toon"] = {
    "sky": [(150, 210, 250), (170, 220, 240), (250, 200, 190), (200, 190, 240)],
    "cloud": [(255, 255, 255)],
    "road": [(150, 150, 170), (170, 160, 180), (130, 140, 160)],
    "marking": [(255, 255, 255), (255, 240, 120)],
    "curb": [(240, 230, 240)],
    "sidewalk": [(250, 210, 200), (230, 220, 250), (250, 236, 190)],
    "terrain": [(200, 230, 120), (180, 220, 150), (220, 210, 130)],
    "building": [(250, 170, 180), (170, 200, 250), (250, 220, 150), (200, 170, 240), (160, 230, 210),
                 (250, 190, 140)],
    "window": [(90, 110, 200), (250, 250, 255), (110, 90, 160)],
    "wall": [(240, 200, 230), (200, 240, 240), (240, 230, 200)],
    "fence": [(250, 130, 150), (130, 200, 250), (250, 250, 250)],
    "pole": [(250, 120, 100), (120, 130, 250), (90, 200, 160)],
    "light_box": [(90, 90, 120), (250, 160, 60)],
    "sign": [(255, 250, 240)],
    "sign_back": [(220, 210, 230)],
    "vegetation": [(90, 210, 130), (130, 230, 90), (70, 190, 170), (170, 230, 110)],
    "trunk": [(200, 130, 100)],
    "skin": [(255, 220, 200), (230, 170, 140), (190, 130, 110)],
    "hair": [(250, 110, 160), (120, 90, 230), (60, 50, 80), (250, 210, 90)],
    "cloth": [(250, 110, 130), (110, 170, 250), (250, 230, 110), (120, 230, 170), (250, 170, 90), (190, 130, 250),
              (255, 255, 255), (80, 80, 110)],
    "car": [(250, 120, 120), (120, 160, 250), (255, 255, 255), (250, 220, 120), (140, 230, 180), (220, 150, 250),
            (90, 90, 120), (250, 170, 110)],
    "glass": [(200, 240, 255), (150, 200, 250)],
    "big_glass": [(210, 240, 255)],
    "tyre": [(70, 60, 90)],
    "lamp_rear": [(255, 90, 120)],
    "lamp_front": [(255, 255, 220)],
    "truck": [(255, 255, 255), (250, 190, 110), (160, 200, 250), (200, 160, 250)],
    "truck_cab": [(250, 110, 120), (110, 150, 250), (120, 220, 160)],
    "bus": [(250, 210, 90), (250, 130, 150), (120, 190, 250)],
    "train": [(250, 230, 120), (250, 150, 170), (170, 240, 230)],
    "moto": [(250, 90, 110), (90, 90, 130), (250, 170, 70), (110, 140, 250)],
    "bike": [(90, 200, 250), (250, 150, 90), (150, 230, 110), (230, 110, 210)],
    "hood": [(0, 0, 0)],
}
# The camera over other materials: paving stones instead of asphalt, slate sidewalks, glass and
# steel or dark brick facades, graffitied concrete, straw-dry lawns and autumn foliage.
PALETTES["target_material"] = {
    **PALETTES["target"],
    "sky": [(204, 206, 210), (190, 194, 200), (214, 212, 206)],
    "road": [(118, 100, 88), (104, 98, 94), (132, 112, 92)],
    "marking": [(226, 226, 222)],
    "sidewalk": [(86, 88, 94), (72, 76, 84), (100, 98, 102)],
    "terrain": [(178, 158, 98), (162, 146, 94), (190, 172, 112)],
    "building": [(96, 124, 142), (74, 100, 114), (152, 162, 170), (120, 62, 50), (86, 58, 52)],
    "window": [(170, 190, 204), (130, 150, 166)],
    "wall": [(138, 138, 134), (118, 120, 122)],
    "fence": [(122, 128, 132), (46, 50, 54)],
    "vegetation": [(172, 98, 38), (188, 134, 42), (142, 62, 36), (124, 112, 42)],
    "trunk": [(58, 50, 46)],
}
SIGN_COLOURS = {
    "source": {"red": (236, 28, 36), "blue": (0, 100, 255), "yellow": (255, 220, 0)},
    "target": {"red": (172, 44, 42), "blue": (44, 82, 148), "yellow": (206, 174, 64)},
}
SIGN_COLOURS["source_toon"] = {"red": (250, 110, 130), "blue": (110, 150, 250), "yellow": (250, 230, 110)}
SIGN_COLOURS["target_material"] = SIGN_COLOURS["target"]
LAMP_COLOURS = [(255, 40, 30), (255, 180, 0), (40, 240, 90)]

# Layout distributions (the target's is shifted). (lo, hi) pairs are sampled uniformly, ``lanes`` is a
# tuple of choices, ``*_p`` are probabilities, the other plain numbers are Poisson means (counts).
# Lengths are metres; ``horizon`` is a fraction of the image height, ``focal`` of its width.
#   camera: horizon, focal, cam_h (height above the ground); far: depth of the far skyline band
#   road and roadside: lanes, lane_w, sidewalk, terrain_p / terrain_w (a lawn strip behind the sidewalk),
#     cross_p (a crossing street)
#   facades: setback, bld_h, bld_len, gap_p (a gap instead of a building); walls, fences, hedges per side
#   traffic: moving (per lane), parked_p (a parking strip per side), parked_fill, truck_p, bus_p, train_p
#   people: persons, riders, parked_bikes, parked_motos
#   street furniture: pole_step, signs, lights, tree_p / tree_step (a row of trees per side), bushes
#   ego_p: the ego vehicle's hood at the bottom; clouds: probability of clouds in the sky
LAYOUTS = {
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
# A high, wide-angle mount (a bus or a truck's dash camera) over wide multi-lane roads: smaller
# things, fewer pedestrians and trees, many more riders, motorcycles, buses and trucks, no hood.
LAYOUTS["target_geometry"] = {
    **LAYOUTS["target"],
    "horizon": (0.28, 0.40), "focal": (0.36, 0.50), "cam_h": (2.4, 3.2), "lanes": (3, 4, 4, 5), "lane_w": (3.5, 4.1),
    "sidewalk": (1.8, 3.5), "terrain_p": 0.3, "parked_p": 0.4, "parked_fill": 0.4, "moving": 1.3, "persons": 2.0,
    "riders": 4.5, "parked_bikes": 0.6, "parked_motos": 2.2, "truck_p": 0.28, "bus_p": 0.24, "train_p": 0.04,
    "tree_p": 0.25, "bushes": 0.8, "signs": 2.0, "lights": 0.9, "ego_p": 0.0,
}


def check_knobs(name: str, knobs: dict) -> dict:
    """The full knob dict of domain ``name``: a rendered (non-camera) domain takes its own
    defaults (:attr:`Domain.knobs`) overridden by ``knobs``; a camera domain has none (``{}``)."""
    spec = domain(name)
    if spec.knobs is None:
        if knobs:
            raise UdasError(f"the {name} domain has a fixed appearance; unknown knob(s) {sorted(knobs)}")
        return {}
    unknown = sorted(set(knobs) - set(SOURCE_KNOBS))
    if unknown:
        raise UdasError(f"unknown source scene knob(s) {unknown}; known: {sorted(SOURCE_KNOBS)}")
    out = {}
    for key, default in spec.knobs.items():
        value = knobs.get(key, default)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UdasError(f"scene knob {key}={value!r} must be a number in [0, 1]") from None
        if not 0.0 <= value <= 1.0:
            raise UdasError(f"scene knob {key}={value!r} must be a number in [0, 1]")
        out[key] = value
    return out
