"""The two domains' tables: which streams exist, appearance (palettes) and layout distributions.

Everything that makes the ``source`` look like a game engine and the ``target`` like a
camera in a real city, as far as it is data: the colour families each material is drawn
from, the sign and lamp colours, the source's randomization knobs, and the layout
distributions (the target's is shifted: higher horizon, longer focal length, narrower
roads, more parked cars, pedestrians and trees). The per-pixel finishing of each domain
(shading, textures, noise, blur) is code, in :mod:`.looks`.
"""

from __future__ import annotations

from udas_ray.errors import UdasError

# The random stream of a scene is seeded with (seed, DOMAINS[domain], SPLITS[split], index).
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
SIGN_COLOURS = {
    "source": {"red": (236, 28, 36), "blue": (0, 100, 255), "yellow": (255, 220, 0)},
    "target": {"red": (172, 44, 42), "blue": (44, 82, 148), "yellow": (206, 174, 64)},
}
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


def check_knobs(domain: str, knobs: dict) -> dict:
    """The full knob dict of ``domain`` (source: :data:`SOURCE_KNOBS` overridden by ``knobs``; target: ``{}``)."""
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
