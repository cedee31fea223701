"""The Cityscapes labelIds the scenes are labelled with (what is drawn where, in both domains)."""

from __future__ import annotations

from udas_ray.classes import CLASS_NAMES, TRAIN_TO_LABEL_ID

_ID = dict(zip(CLASS_NAMES, TRAIN_TO_LABEL_ID))
VOID = 0  # distractors and the ego hood: "unlabeled"
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = (
    _ID[n] for n in ("pole", "traffic light", "traffic sign", "vegetation", "terrain", "sky")
)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE = (
    _ID[n] for n in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
)
VEHICLE_IDS = {"car": CAR, "truck": TRUCK, "bus": BUS, "train": TRAIN}
