"""Tests of udas_ray.classes against the official Cityscapes label table and the SYNTHIA mapping."""

import numpy as np
import pytest

from udas_ray import classes

# labelId -> trainId, from cityscapesscripts/helpers/labels.py (official).
OFFICIAL_LABEL_TO_TRAIN = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255,  # unlabeled .. ground
    7: 0, 8: 1, 9: 255, 10: 255,  # road, sidewalk, parking, rail track
    11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255,  # building, wall, fence, guard rail, bridge, tunnel
    17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,  # pole, polegroup, light, sign, vegetation, terrain, sky
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255,  # person, rider, car, truck, bus, caravan, trailer
    31: 16, 32: 17, 33: 18,  # train, motorcycle, bicycle
}

# SYNTHIA-RAND-CITYSCAPES class id -> trainId (AdaptSegNet / CBST / DACS).
SYNTHIA = {1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11, 11: 18, 12: 17, 15: 6, 16: 9,
           17: 12, 18: 14, 19: 15, 20: 16, 21: 3}


def test_all_34_label_ids():
    assert len(OFFICIAL_LABEL_TO_TRAIN) == 34 == classes.NUM_LABEL_IDS
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17)  # any shape, any integer dtype
    got = classes.label_ids_to_train_ids(ids)
    assert got.shape == (2, 17) and got.dtype == np.uint8
    assert {i: int(t) for i, t in enumerate(got.ravel())} == OFFICIAL_LABEL_TO_TRAIN


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint16, np.int64])
def test_ids_beyond_33_are_ignored(dtype):
    ids = np.array([34, 35, 100, 254, 255], dtype=dtype)
    assert classes.label_ids_to_train_ids(ids).tolist() == [255] * 5
    if np.dtype(dtype).itemsize > 1:
        assert classes.label_ids_to_train_ids(np.array([256, 263, 1000], dtype)).tolist() == [255] * 3
    if np.issubdtype(dtype, np.signedinteger):
        assert classes.label_ids_to_train_ids(np.array([-1], dtype)).tolist() == [255]  # license plate


def test_round_trip_train_to_label_to_train():
    train = np.array(list(range(19)) + [255], dtype=np.uint8)
    label = classes.train_ids_to_label_ids(train)
    assert label.tolist()[:3] == [7, 8, 11] and label.tolist()[-2:] == [33, 0]  # ignore exports as 0
    assert classes.label_ids_to_train_ids(label).tolist() == train.tolist()


def test_names_and_palette():
    assert len(classes.CLASS_NAMES) == 19
    assert classes.CLASS_NAMES[0] == "road" and classes.CLASS_NAMES[13] == "car" and classes.CLASS_NAMES[18] == "bicycle"
    assert tuple(classes.PALETTE[0]) == (128, 64, 128)  # road
    assert tuple(classes.PALETTE[13]) == (0, 0, 142)  # car
    assert tuple(classes.PALETTE[10]) == (70, 130, 180)  # sky
    assert tuple(classes.PALETTE[11]) == (220, 20, 60)  # person


def test_colorize_uses_palette_and_black_for_ignore():
    rgb = classes.colorize(np.array([[0, 13, 255]], np.uint8))
    assert rgb.shape == (1, 3, 3)
    assert rgb[0].tolist() == [[128, 64, 128], [0, 0, 142], [0, 0, 0]]


def test_synthia_mapping():
    ids = np.arange(0, 24, dtype=np.uint16)
    got = classes.synthia_ids_to_train_ids(ids)
    expected = [SYNTHIA.get(i, 255) for i in range(24)]  # 0 void, 13 parking, 14 road-work, 22 lanemarking
    assert got.tolist() == expected
    assert classes.synthia_ids_to_train_ids(np.array([300, 1000, 65535], np.uint16)).tolist() == [255] * 3


def test_protocols():
    names = lambda p: {classes.CLASS_NAMES[i] for i in classes.PROTOCOLS[p]}
    assert len(classes.PROTOCOLS["cityscapes19"]) == 19
    assert len(classes.PROTOCOLS["synthia16"]) == 16
    assert len(classes.PROTOCOLS["synthia13"]) == 13
    assert names("synthia16").isdisjoint({"terrain", "truck", "train"})
    assert names("synthia13").isdisjoint({"terrain", "truck", "train", "wall", "fence", "pole"})
    assert {"road", "bus", "bicycle", "wall", "pole"} <= names("synthia16")
    assert names("synthia13") < names("synthia16") < names("cityscapes19")
