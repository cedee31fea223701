"""Tests of udas_ray.metrics on hand-built predictions (numbers worked out in the comments)."""

import math

import numpy as np
import pytest
from PIL import Image

from udas_ray.metrics import Evaluator, confusion_matrix, export_cityscapes, flat_metrics, iou_per_class, scores


def test_confusion_iou_miou_accuracy_by_hand():
    label = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    # Pixel 6 is ignored (its prediction 2 counts nowhere). (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,0)
    cm = confusion_matrix(pred, label)
    assert cm.shape == (19, 19) and cm.sum() == 5
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 2 and cm[2, 0] == 1
    ious = iou_per_class(cm)
    # road(0): TP 1, FP 1 (gt 2), FN 1 (pred 1) -> 1/3; sidewalk(1): TP 2, FP 1, FN 0 -> 2/3;
    # building(2): TP 0, FP 0, FN 1 -> 0; every other class is absent -> NaN.
    assert ious[:3] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert all(math.isnan(v) for v in ious[3:])
    s = scores(cm)
    assert s["miou"] == pytest.approx(100 / 3)  # (1/3 + 2/3 + 0) / 3
    assert s["pixel_accuracy"] == pytest.approx(60.0)  # 3 of 5 labelled pixels
    per = s["per_class_iou"]
    assert per["road"] == pytest.approx(100 / 3) and per["sidewalk"] == pytest.approx(200 / 3)
    assert per["building"] == 0.0
    assert per["car"] is None and per["sky"] is None
    assert len(per) == 19


def test_ignore_pixels_are_excluded():
    label = np.full((4, 4), 255)
    label[0, 0] = 13
    pred = np.zeros((4, 4), int)  # everything predicted road, but only one pixel is labelled
    cm = confusion_matrix(pred, label)
    assert cm.sum() == 1 and cm[13, 0] == 1
    s = scores(cm)
    assert s["pixel_accuracy"] == 0.0
    # car: TP 0, FN 1 -> 0; road: FP 1 -> 0 (road was predicted, so it counts); mean 0.
    assert s["miou"] == 0.0 and s["per_class_iou"]["road"] == 0.0 and s["per_class_iou"]["car"] == 0.0


def test_class_only_in_prediction_counts_as_zero():
    label = np.array([0, 0])
    pred = np.array([0, 3])
    s = scores(confusion_matrix(pred, label))
    # road: TP 1, FN 1 -> 1/2; wall: TP 0, FP 1 -> 0 and it enters the mean: (0.5 + 0) / 2.
    assert s["per_class_iou"]["road"] == pytest.approx(50.0)
    assert s["per_class_iou"]["wall"] == 0.0
    assert s["miou"] == pytest.approx(25.0)
    assert s["pixel_accuracy"] == pytest.approx(50.0)


def test_whole_split_not_mean_of_images():
    a_label, a_pred = np.zeros((2, 2), int), np.zeros((2, 2), int)  # per-image mIoU 100
    b_label, b_pred = np.ones((2, 2), int), np.array([[0, 0], [1, 1]])  # road 0, sidewalk 1/2 -> 25
    ev = Evaluator()
    ev.update(a_pred, a_label)
    ev.update(b_pred, b_label)
    # Split: cm[0,0]=4, cm[1,0]=2, cm[1,1]=2 -> road 4/6, sidewalk 2/4 -> 7/12 (not (100+25)/2 = 62.5).
    assert ev.result()["miou"] == pytest.approx(700 / 12)
    big = confusion_matrix(np.concatenate([a_pred, b_pred]), np.concatenate([a_label, b_label]))
    assert np.array_equal(ev.cm, big)
    assert ev.result() == scores(big)
    assert ev.result()["pixel_accuracy"] == pytest.approx(75.0)  # 6 of 8


def test_synthia16_protocol_averages_16_classes():
    label = np.array([0, 0, 9, 9])  # two road, two terrain
    pred = np.zeros(4, int)  # all road
    cm = confusion_matrix(pred, label)
    # road: TP 2, FP 2 -> 1/2; terrain: FN 2 -> 0.
    assert scores(cm, "cityscapes19")["miou"] == pytest.approx(25.0)
    s16 = scores(cm, "synthia16")
    assert s16["miou"] == pytest.approx(50.0)  # terrain is not a SYNTHIA class
    assert len(s16["per_class_iou"]) == 16 and "terrain" not in s16["per_class_iou"]
    assert len(scores(cm, "synthia13")["per_class_iou"]) == 13
    ev = Evaluator(protocol="synthia16")
    ev.update(pred, label)
    assert ev.result()["miou"] == pytest.approx(50.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros(3), np.zeros(4))


def test_flat_metrics_names():
    s = scores(confusion_matrix(np.array([0, 6]), np.array([0, 6])))
    flat = flat_metrics(s, "val_")
    assert flat == {"val_miou": 100.0, "val_pixel_accuracy": 100.0, "val_iou_road": 100.0,
                    "val_iou_traffic_light": 100.0}


def test_export_cityscapes_writes_full_size_label_ids(tmp_path):
    pred = np.array([[0, 13, 255], [10, 2, 18]], np.uint8)  # trainIds (255 = ignore)
    name = "aachen_000000_000019_leftImg8bit.png"
    path = export_cityscapes(pred, name, (4, 6), tmp_path / "out")
    assert path == tmp_path / "out" / name and path.is_file()
    img = Image.open(path)
    assert img.mode == "L" and img.size == (6, 4)
    # labelIds: road 7, car 26, ignore 0, sky 23, building 11, bicycle 33; nearest x2 upsampling.
    expected = np.kron(np.array([[7, 26, 0], [23, 11, 33]]), np.ones((2, 2), int))
    assert np.array_equal(np.asarray(img), expected)
    assert not list((tmp_path / "out").glob(".*"))  # no temp file left behind
