"""Tests of the pure parts of udas_ray.stages.pseudo: views, merging, thresholds, the teacher
actor's start (no Ray)."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from udas_ray.classes import IGNORE, NUM_CLASSES
from udas_ray.data import augment
from udas_ray.stages.pseudo import (BINS, TeacherPredictor, ViewParams, apply_thresholds, class_thresholds,
                                    confidence_histogram, make_views, merge_views)

IMAGE = np.random.default_rng(0).integers(0, 256, (6, 8, 3)).astype(np.uint8)
sig = lambda x: 1 / (1 + math.exp(-x))  # softmax of two logits (x, 0)


# ----------------------------------------------------------------------------- views
def test_make_views_with_flip():
    views = make_views(IMAGE, ViewParams(k=4, flip=True), seed=0)
    assert len(views) == 4
    assert views[0][1] is False and np.array_equal(views[0][0], IMAGE)
    assert views[1][1] is True and np.array_equal(views[1][0], augment.hflip(IMAGE))  # mirrored, not jittered
    assert views[2][1] is False and not np.array_equal(views[2][0], IMAGE)  # jittered copy
    assert views[3][1] is True and not np.array_equal(views[3][0], augment.hflip(IMAGE))  # mirrored + jittered
    assert all(v.shape == IMAGE.shape and v.dtype == np.uint8 for v, _ in views)
    again = make_views(IMAGE, ViewParams(k=4, flip=True), seed=0)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(views, again))


def test_make_views_without_flip():
    views = make_views(IMAGE, ViewParams(k=3, flip=False), seed=1)
    assert [m for _, m in views] == [False, False, False]
    assert np.array_equal(views[0][0], IMAGE)
    assert not np.array_equal(views[1][0], IMAGE) and not np.array_equal(views[1][0], views[2][0])
    assert len(make_views(IMAGE, ViewParams(k=1), seed=0)) == 1


# --------------------------------------------------------------------------- merging
class FixedLogits(nn.Module):
    """Returns the same logits whatever the input (checks only the batch size)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        assert x.shape[0] == self.logits.shape[0] and x.shape[1] == 3
        return self.logits


def _stub():
    # 2 views, 2 classes, a 1x3 image. View 0 (as is): class 0 with logits (3, 1, 1) vs 0.
    # View 1 (mirrored): in its own frame class 1 with logits (4, 2, -1) vs 0, i.e. (-1, 2, 4) once un-mirrored.
    logits = torch.zeros(2, 2, 1, 3)
    logits[0, 0, 0] = torch.tensor([3.0, 1.0, 1.0])
    logits[1, 1, 0] = torch.tensor([4.0, 2.0, -1.0])
    return FixedLogits(logits)


def test_merge_views_picks_most_confident_view_and_unmirrors():
    image = np.zeros((1, 3, 3), np.uint8)
    cls, conf = merge_views(_stub(), [(image, False), (image, True)], temperature=1.0)
    # pixel 0: view 0 class 0 @ sig(3)=.953 vs view 1 class 0 @ sig(1)=.731 -> 0, .953
    # pixel 1: view 0 class 0 @ sig(1)=.731 vs view 1 class 1 @ sig(2)=.881 -> 1, .881
    # pixel 2: view 0 class 0 @ sig(1)=.731 vs view 1 class 1 @ sig(4)=.982 -> 1, .982
    assert cls.dtype == np.uint8 and cls.shape == (1, 3)
    assert cls.tolist() == [[0, 1, 1]]  # without un-mirroring it would be [[1, 1, 0]]
    assert conf[0] == pytest.approx([sig(3), sig(2), sig(4)], abs=1e-6)


def test_merge_views_temperature():
    image = np.zeros((1, 3, 3), np.uint8)
    cls, conf = merge_views(_stub(), [(image, False), (image, True)], temperature=2.0)
    assert cls.tolist() == [[0, 1, 1]]
    assert conf[0] == pytest.approx([sig(1.5), sig(1.0), sig(2.0)], abs=1e-6)


def test_merge_views_without_mirroring_takes_views_as_they_are():
    image = np.zeros((1, 3, 3), np.uint8)
    cls, conf = merge_views(_stub(), [(image, False), (image, False)], temperature=1.0)
    # view 1 un-mirrored: class 1 @ (sig 4, sig 2) at pixels 0, 1; class 0 @ sig(1) at pixel 2.
    assert cls.tolist() == [[1, 1, 0]]
    assert conf[0] == pytest.approx([sig(4), sig(2), sig(1)], abs=1e-6)


# ------------------------------------------------------------------------ thresholds
def _hist():
    h = np.zeros((NUM_CLASSES, BINS), np.int64)
    h[0, 950] = 10  # road: 10 pixels at 0.95 ...
    h[0, 500] = 10  # ... and 10 at 0.50
    h[1, 800] = 2  # sidewalk: 2 at 0.80, 6 at 0.60, 2 at 0.30
    h[1, 600] = 6
    h[1, 300] = 2
    h[2, 100] = 4  # building: 4 at 0.10
    return h


def test_class_thresholds_global():
    t = class_thresholds(_hist(), "global", 0.9, 0.5)
    assert t.shape == (NUM_CLASSES,) and (t == 0.9).all()


def test_class_thresholds_class_balanced():
    t = class_thresholds(_hist(), "class_balanced", 0.9, 0.5)
    # road: its top half are the 10 pixels at 0.95 -> 0.95, capped at the global 0.9.
    # sidewalk: >= 5 of 10 pixels at or above 0.60 (2 + 6 = 8), not at 0.80 (2) -> 0.60.
    # building: every pixel is at 0.10 -> 0.10. Classes never predicted keep the global 0.9.
    assert t[0] == pytest.approx(0.9)
    assert t[1] == pytest.approx(0.6)
    assert t[2] == pytest.approx(0.1)
    assert (t[3:] == 0.9).all()
    assert (t <= 0.9).all()
    t2 = class_thresholds(_hist(), "class_balanced", 0.9, 0.2)  # top 20% of sidewalk: the 2 at 0.80
    assert t2[1] == pytest.approx(0.8)


def test_class_balanced_keeps_at_least_the_fraction():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, (40, 50)).astype(np.uint8)
    conf = rng.uniform(0.3, 1.0, (40, 50)).astype(np.float32)
    t = class_thresholds(confidence_histogram(pred, conf), "class_balanced", 0.95, 0.3)
    label = apply_thresholds(pred, conf, t)
    for c in range(3):
        kept = (label == c).sum() / (pred == c).sum()
        assert 0.3 <= kept < 0.33  # its top 30% (+ at most one histogram bin)


def test_confidence_histogram_bins():
    hist = confidence_histogram(np.array([[0, 0, 13]]), np.array([[0.0, 1.0, 0.5]]))
    assert hist.shape == (NUM_CLASSES, BINS) and hist.sum() == 3
    assert hist[0, 0] == 1 and hist[0, BINS - 1] == 1 and hist[13, 500] == 1


def test_apply_thresholds_ignores_exactly_the_unconfident_pixels():
    pred = np.array([[0, 0, 1], [1, 2, 2]], np.uint8)
    conf = np.array([[0.95, 0.85, 0.61], [0.59, 0.10, 0.09]], np.float32)
    t = np.full(NUM_CLASSES, 0.9)
    t[1], t[2] = 0.6, 0.1
    label = apply_thresholds(pred, conf, t)
    assert label.tolist() == [[0, IGNORE, 1], [IGNORE, 2, IGNORE]]
    assert pred.tolist() == [[0, 0, 1], [1, 2, 2]]  # input untouched


def test_merge_views_at_several_scales_resizes_back_and_takes_the_most_confident():
    class SizeAware(nn.Module):  # class 1's logit grows with the input's height; class 0's is 1
        def forward(self, x):
            n, _, h, w = x.shape
            logits = torch.zeros(n, 2, h, w)
            logits[:, 0] = 1.0
            logits[:, 1] = h / 4
            return logits

    image = np.zeros((4, 6, 3), np.uint8)
    cls, conf = merge_views(SizeAware(), [(image, False)], temperature=1.0)
    assert cls.shape == (4, 6) and conf == pytest.approx(np.full((4, 6), 0.5))  # a tie at the image's own size
    cls, conf = merge_views(SizeAware(), [(image, False), (image, True)], temperature=1.0, scales=(1.0, 2.0))
    # at twice the size class 1 wins with logits (1, 2): confidence sig(1), at the original 4x6 pixels
    assert cls.shape == (4, 6) and (cls == 1).all() and conf == pytest.approx(np.full((4, 6), sig(1)), abs=1e-6)


def test_merge_views_at_full_resolution_upsamples_the_softmax_before_the_views_compete():
    image = np.zeros((1, 3, 3), np.uint8)
    cls, conf = merge_views(_stub(), [(image, False), (image, True)], temperature=1.0, out_size=(2, 6))
    assert cls.shape == conf.shape == (2, 6)
    # the outermost columns keep each view's own pixels: view 0's class 0 at sig(3), view 1's class 1 at sig(4)
    assert cls[:, 0].tolist() == [0, 0] and cls[:, -1].tolist() == [1, 1]
    assert conf[0, 0] == pytest.approx(sig(3), abs=1e-6) and conf[0, -1] == pytest.approx(sig(4), abs=1e-6)


# ------------------------------------------------------------------------ the actor
def test_a_teacher_actor_writes_labels_at_the_images_own_size_with_full_resolution(tmp_path):
    from PIL import Image

    from udas_ray.checkpoints import save_model
    from udas_ray.models import build_segmenter

    model = save_model(tmp_path / "teacher.pt", build_segmenter("deeplabv2_tiny", NUM_CLASSES, None),
                       model_name="deeplabv2_tiny", num_classes=NUM_CLASSES, model_options={}, stage="teacher",
                       step=0, config={})
    image = tmp_path / "a_leftImg8bit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 96, 3), dtype=np.uint8)).save(image)
    for full, shape in ((False, (32, 64)), (True, (48, 96))):
        staging = tmp_path / f"staging_{full}"
        (staging / "pred").mkdir(parents=True)
        actor = TeacherPredictor(str(model), (32, 64), ViewParams(k=2), str(staging), full_resolution=full)
        out = actor({"image": [str(image)], "name": ["a_leftImg8bit.png"], "seed": [0]})
        assert np.asarray(Image.open(staging / "pred" / "a_leftImg8bit.png")).shape == shape
        assert out["hist"].sum() == shape[0] * shape[1]


def test_a_teacher_actor_that_starts_after_its_round_was_published_leaves_no_folder(tmp_path):
    # Ray Data does not stop an actor still starting when its round ends: it comes up once the
    # staging folder was renamed into the published round, and must not make it again.
    from udas_ray.checkpoints import save_model
    from udas_ray.models import build_segmenter

    model = save_model(tmp_path / "teacher.pt", build_segmenter("deeplabv2_tiny", NUM_CLASSES, None),
                       model_name="deeplabv2_tiny", num_classes=NUM_CLASSES, model_options={}, stage="teacher",
                       step=0, config={})
    published = tmp_path / "pseudo" / ".round_1.staging"
    TeacherPredictor(str(model), (32, 64), ViewParams(k=1), str(published))
    assert not published.exists()
