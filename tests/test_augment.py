"""Tests of udas_ray.data.augment and of how BatchBuilder treats labels."""

import inspect

import numpy as np
import pytest

from layouts import save, write_gta5
from udas_ray.data import augment
from udas_ray.data.batches import AugmentParams, BatchBuilder, Streams, items, load_item
from udas_ray.data.readers import read_gta5

RNG = np.random.default_rng(12345)
IMG_A = RNG.integers(0, 256, (16, 24, 3)).astype(np.uint8)
IMG_B = RNG.integers(0, 256, (16, 24, 3)).astype(np.uint8)


# ---------------------------------------------------------------------------- CutMix
@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("h, w", [(64, 128), (37, 53)])
def test_cutmix_box_area_follows_lambda(lam, h, w):
    for seed in range(5):
        y0, y1, x0, x1 = augment.cutmix_box(h, w, lam, np.random.default_rng(seed))
        assert 0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w
        area = (y1 - y0) * (x1 - x0)
        # 1% of the image plus rounding each side by at most half a pixel.
        assert abs(area - (1 - lam) * h * w) <= 0.01 * h * w + 0.5 * (h + w) + 0.25
    if lam == 0.0:
        assert (y0, y1, x0, x1) == (0, h, 0, w)
    if lam == 1.0:
        assert area == 0


def test_cutmix_box_rejects_bad_lambda():
    with pytest.raises(ValueError):
        augment.cutmix_box(10, 10, 1.5, np.random.default_rng(0))


def test_cutmix_box_moves_with_the_rng():
    boxes = {augment.cutmix_box(64, 128, 0.75, np.random.default_rng(s)) for s in range(10)}
    assert len(boxes) > 1


def test_cutmix_pastes_target_inside_box_only():
    label_a = np.zeros((16, 24), np.uint8)
    label_b = np.full((16, 24), 13, np.uint8)
    a_copy, la_copy = IMG_A.copy(), label_a.copy()
    box = (3, 9, 5, 17)
    image, label = augment.cutmix(IMG_A, label_a, IMG_B, label_b, box)
    inside = np.zeros((16, 24), bool)
    inside[3:9, 5:17] = True
    assert (label[inside] == 13).all() and (label[~inside] == 0).all()
    assert np.array_equal(image[inside], IMG_B[inside]) and np.array_equal(image[~inside], IMG_A[~inside])
    assert np.array_equal(IMG_A, a_copy) and np.array_equal(label_a, la_copy)  # inputs untouched


def test_cutmix_needs_equal_sizes():
    with pytest.raises(ValueError):
        augment.cutmix(IMG_A, np.zeros((16, 24)), IMG_B[:8], np.zeros((16, 24)), (0, 1, 0, 1))


def test_cutmix_lambda_in_unit_interval():
    rng = np.random.default_rng(0)
    lams = [augment.sample_cutmix_lambda(rng, 1.0) for _ in range(200)]
    assert all(0.0 <= x <= 1.0 for x in lams) and 0.35 < np.mean(lams) < 0.65  # Beta(1,1): mean 1/2


# ------------------------------------------------------------------------ photometric
def test_jitter_takes_no_label_and_changes_the_image():
    params = list(inspect.signature(augment.color_jitter).parameters)
    assert params == ["image", "rng", "brightness", "contrast", "saturation", "hue"]
    out = augment.color_jitter(IMG_A, np.random.default_rng(0), 0.4, 0.4, 0.4, 0.1)
    assert out.shape == IMG_A.shape and out.dtype == np.uint8
    assert not np.array_equal(out, IMG_A)
    again = augment.color_jitter(IMG_A, np.random.default_rng(0), 0.4, 0.4, 0.4, 0.1)
    assert np.array_equal(out, again)  # reproducible from the rng


def test_jitter_with_zero_strength_is_identity():
    assert np.array_equal(augment.color_jitter(IMG_A, np.random.default_rng(0)), IMG_A)


def test_hue_shift_zero_and_full_turn_are_identity():
    x = IMG_A.astype(np.float32)
    assert np.allclose(augment.shift_hue(x, 0.0), x, atol=1e-2)
    assert np.allclose(augment.shift_hue(x, 1.0), x, atol=1e-2)
    assert not np.allclose(augment.shift_hue(x, 0.25), x, atol=1.0)


def test_hue_shift_keeps_grey_and_luma():
    grey = np.full((2, 2, 3), 100, np.float32)
    assert np.allclose(augment.shift_hue(grey, 0.3), grey, atol=1e-2)
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    x = IMG_A.astype(np.float32)
    assert np.allclose(augment.shift_hue(x, 0.3) @ luma, x @ luma, atol=1e-2)


# -------------------------------------------------------------------------- geometric
def test_hflip_twice_is_identity_and_moves_label_with_image():
    label = np.arange(16 * 24, dtype=np.int64).reshape(16, 24) % 19
    img, lbl = augment.hflip(IMG_A, label)
    assert np.array_equal(img[:, 0], IMG_A[:, -1]) and np.array_equal(lbl[:, 0], label[:, -1])
    img2, lbl2 = augment.hflip(img, lbl)
    assert np.array_equal(img2, IMG_A) and np.array_equal(lbl2, label)
    assert np.array_equal(augment.hflip(augment.hflip(IMG_A)), IMG_A)
    assert augment.hflip(IMG_A).flags["C_CONTIGUOUS"]  # a copy, not a strided view


# ------------------------------------------------------------------------ BatchBuilder
@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    sup = items(read_gta5(write_gta5(root / "gta", n=3, size=(24, 40))))
    rng = np.random.default_rng(0)
    mix_source, mix_target = [], []
    for i in range(2):  # source labels all road (labelId 7), target labels all car (26)
        img = save(root / "src" / f"{i}.png", rng.integers(0, 256, (24, 40, 3)).astype(np.uint8))
        lbl = save(root / "src" / f"{i}_l.png", np.full((24, 40), 7, np.uint8), "L")
        mix_source.append((str(img), str(lbl), "labelids"))
        img = save(root / "tgt" / f"{i}.png", rng.integers(0, 256, (24, 40, 3)).astype(np.uint8))
        lbl = save(root / "tgt" / f"{i}_l.png", np.full((24, 40), 26, np.uint8), "L")
        mix_target.append((str(img), str(lbl), "labelids"))
    return Streams(sup=sup, sup_size=(24, 40), target_size=(24, 40), mix_source=mix_source, mix_target=mix_target,
                   target=[(i[0], None, "labelids") for i in sup])


def _match(label, loaded):
    """(index, flipped) of the loaded example whose label equals ``label``."""
    for k, (img, lbl) in enumerate(loaded):
        for flipped, cand in ((False, lbl), (True, lbl[:, ::-1])):
            if np.array_equal(label, cand):
                return k, flipped
    raise AssertionError("label is not one of the inputs (flipped or not)")


def test_batch_builder_labels_only_flipped_or_mixed(streams):
    loaded = [load_item(it, (24, 40)) for it in streams.sup]
    params = AugmentParams(flip=True, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.1, jitter_sup=True)
    batch = BatchBuilder(streams, params, seed=0)({"id": np.arange(12)})
    assert batch["sup_image"].shape == (12, 24, 40, 3) and batch["sup_label"].shape == (12, 24, 40)
    assert batch["target_image"].shape == (12, 24, 40, 3)
    flips = set()
    for image, label in zip(batch["sup_image"], batch["sup_label"]):
        k, flipped = _match(label, loaded)
        flips.add(flipped)
        src = loaded[k][0][:, ::-1] if flipped else loaded[k][0]
        assert not np.array_equal(image, src)  # the image was jittered, its label was not
    assert flips == {True, False}
    for label in batch["mix_label"]:
        assert set(np.unique(label).tolist()) <= {0, 13}  # road from the source, car from the target
        ys, xs = np.nonzero(label == 13)
        if len(ys):  # the pasted part is one axis-aligned box
            assert (label[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] == 13).all()


def test_batch_builder_without_augmentation_passes_examples_through(streams):
    loaded = [load_item(it, (24, 40)) for it in streams.sup]
    builder = BatchBuilder(streams, AugmentParams(flip=False), seed=0)
    for slot in range(4):
        ex = builder.example(slot)
        k, flipped = _match(ex["sup_label"], loaded)
        assert not flipped and np.array_equal(ex["sup_image"], loaded[k][0])
    again = BatchBuilder(streams, AugmentParams(flip=False), seed=0)
    assert np.array_equal(builder.example(3)["mix_label"], again.example(3)["mix_label"])  # slot -> same example


# ------------------------------------------------------------------ random scale and crop
def test_scale_crop_is_identity_at_scale_one_and_full_crop():
    label = np.arange(16 * 24).reshape(16, 24) % 19
    image, out = augment.random_scale_crop(IMG_A, label, np.random.default_rng(0), (1.0, 1.0), (16, 24))
    assert np.array_equal(image, IMG_A) and np.array_equal(out, label)


def test_scale_crop_pads_with_ignore_and_never_invents_classes():
    label = np.zeros((16, 24), np.uint8)
    label[:, 12:] = 13
    rng = np.random.default_rng(1)
    image, out = augment.random_scale_crop(IMG_A, label, rng, (0.5, 0.5), (16, 24))  # 8x12 into 16x24
    assert image.shape == (16, 24, 3) and out.shape == (16, 24)
    assert (out[8:] == 255).all() and (out[:, 12:] == 255).all() and (image[8:] == 0).all()
    assert set(np.unique(out[:8, :12]).tolist()) == {0, 13}  # nearest: only the label's own classes
    for _ in range(5):  # zoomed in: a window of the label scaled x2, still only its classes
        image, out = augment.random_scale_crop(IMG_A, label, rng, (2.0, 2.0), (10, 10))
        assert image.shape == (10, 10, 3) and set(np.unique(out).tolist()) <= {0, 13}
    image, none = augment.random_scale_crop(IMG_A, None, rng, (0.5, 2.0), (12, 12))
    assert image.shape == (12, 12, 3) and none is None


def test_batch_builder_crops_every_stream_to_the_crop_size(streams):
    params = AugmentParams(flip=True, scale=(0.5, 2.0), crop=(16, 32))
    batch = BatchBuilder(streams, params, seed=0)({"id": np.arange(6)})
    assert batch["sup_image"].shape == (6, 16, 32, 3) and batch["sup_label"].shape == (6, 16, 32)
    assert batch["mix_image"].shape == (6, 16, 32, 3) and batch["target_image"].shape == (6, 16, 32, 3)
    for label in batch["mix_label"]:  # road, car, or padding: nothing else appears
        assert set(np.unique(label).tolist()) <= {0, 13, 255}
    plain = BatchBuilder(streams, AugmentParams(flip=True), seed=0)({"id": np.arange(6)})
    assert plain["sup_image"].shape == (6, 24, 40, 3)  # off by default


def test_a_student_pastes_half_the_classes_of_a_source_image_with_their_labels(tmp_path):
    """Source: left half road (labelId 7), right half sidewalk (8); the pseudo-labeled target:
    all car (26). Pasting takes one of the two source classes whole, image and label together."""
    rng = np.random.default_rng(3)
    src_img = rng.integers(0, 256, (8, 12, 3)).astype(np.uint8)
    src_lbl = np.full((8, 12), 7, np.uint8)
    src_lbl[:, 6:] = 8
    tgt_img = rng.integers(0, 256, (8, 12, 3)).astype(np.uint8)
    source = [(str(save(tmp_path / "s.png", src_img)), str(save(tmp_path / "s_l.png", src_lbl, "L")), "labelids")]
    target = [(str(save(tmp_path / "t.png", tgt_img)), str(save(tmp_path / "t_l.png", np.full((8, 12), 26, np.uint8), "L")),
               "labelids")]
    streams = Streams(sup=target, sup_size=(8, 12), target_size=(8, 12), paste=source)
    builder = BatchBuilder(streams, AugmentParams(flip=False, paste_share=1.0), seed=0)
    halves = set()
    for slot in range(8):
        ex = builder.example(slot)
        pasted = ex["sup_label"] != 13  # car stays where nothing was pasted
        assert set(np.unique(ex["sup_label"][pasted]).tolist()) in ({0}, {1})  # one source class, whole
        cols = np.nonzero(pasted.all(axis=0))[0]
        assert list(cols) in (list(range(6)), list(range(6, 12)))
        assert np.array_equal(ex["sup_image"][pasted], src_img[pasted])
        assert np.array_equal(ex["sup_image"][~pasted], tgt_img[~pasted])
        halves.add(cols[0])
    assert halves == {0, 6}  # both classes get picked over a few slots
    off = BatchBuilder(streams, AugmentParams(flip=False), seed=0).example(0)
    assert (off["sup_label"] == 13).all()
