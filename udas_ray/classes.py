"""The 19 Cityscapes evaluation classes (trainIds) and the label mappings into them.

Everything inside udas-ray speaks trainIds 0..18 with 255 as "ignore". Datasets
arrive in other id spaces and are mapped once, when read:

* Cityscapes and GTA5 label PNGs hold Cityscapes *labelIds* (0..33).
* SYNTHIA label PNGs hold SYNTHIA class ids in their first (16-bit) channel.
"""

import numpy as np

IGNORE = 255
NUM_CLASSES = 19

# trainId -> (name, labelId, RGB colour of the official palette)
_TRAIN_CLASSES = [
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
]

CLASS_NAMES: tuple[str, ...] = tuple(name for name, _, _ in _TRAIN_CLASSES)
TRAIN_TO_LABEL_ID: tuple[int, ...] = tuple(label_id for _, label_id, _ in _TRAIN_CLASSES)
PALETTE = np.array([colour for _, _, colour in _TRAIN_CLASSES], dtype=np.uint8)

# The 34 Cityscapes labelIds (0..33); those not listed above are void -> 255.
NUM_LABEL_IDS = 34
LABEL_TO_TRAIN = np.full(256, IGNORE, dtype=np.uint8)
for _train_id, _label_id in enumerate(TRAIN_TO_LABEL_ID):
    LABEL_TO_TRAIN[_label_id] = _train_id

# trainId -> labelId for exporting predictions (255 -> 0 "unlabeled").
TRAIN_TO_LABEL = np.zeros(256, dtype=np.uint8)
TRAIN_TO_LABEL[: len(TRAIN_TO_LABEL_ID)] = TRAIN_TO_LABEL_ID

# SYNTHIA-RAND-CITYSCAPES class ids -> trainIds (the mapping used by CBST, AdaptSegNet, DACS).
SYNTHIA_TO_TRAIN = np.full(65536, IGNORE, dtype=np.uint8)
for _synthia_id, _train_id in {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
    1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}.items():
    SYNTHIA_TO_TRAIN[_synthia_id] = _train_id

# Evaluation protocols: which trainIds enter the mean.
PROTOCOLS: dict[str, tuple[int, ...]] = {
    "cityscapes19": tuple(range(NUM_CLASSES)),
    # SYNTHIA has no terrain, truck or train.
    "synthia16": tuple(i for i, n in enumerate(CLASS_NAMES) if n not in ("terrain", "truck", "train")),
    # ...and the 13-class protocol also drops wall, fence and pole.
    "synthia13": tuple(
        i for i, n in enumerate(CLASS_NAMES)
        if n not in ("terrain", "truck", "train", "wall", "fence", "pole")
    ),
}


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes labelId map (any integer dtype) to trainIds; unknown ids -> 255."""
    return LABEL_TO_TRAIN[np.asarray(label_ids, dtype=np.int64).clip(0, 255)]


def synthia_ids_to_train_ids(synthia_ids: np.ndarray) -> np.ndarray:
    """Map a SYNTHIA class-id map (uint16) to trainIds; void and unknown ids -> 255."""
    return SYNTHIA_TO_TRAIN[np.asarray(synthia_ids, dtype=np.int64).clip(0, 65535)]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map trainIds back to Cityscapes labelIds (for the official evaluation); 255 -> 0."""
    return TRAIN_TO_LABEL[np.asarray(train_ids, dtype=np.int64).clip(0, 255)]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """An RGB picture of a trainId map in the Cityscapes palette (ignore -> black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut[np.asarray(train_ids, dtype=np.int64).clip(0, 255)]
