"""Tests of udas_ray.data.readers / images / splits on tiny datasets in the real on-disk layouts."""

import numpy as np
import pytest
from PIL import Image

from layouts import cityscapes_paths, save, write_cityscapes, write_gta5, write_png16_rgb, write_synthia
import udas_ray.models  # noqa: F401  (torch: imported at collection, not inside a test)
from udas_ray.config import load_config
from udas_ray.data import images, readers, splits
from udas_ray.data.readers import Sample, Split
from udas_ray.errors import UdasError


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def _expected_band_train_ids(label: np.ndarray) -> None:
    """The layouts' labels: sky top third, building to mid height, road (+ a car box) below, (0,0) void."""
    h = label.shape[0]
    assert label[0, 0] == 255
    assert (label[1 : h // 3] == 10).all()  # labelId 23 sky -> 10
    assert (label[h // 3 : h // 2] == 2).all()  # labelId 11 building -> 2
    assert set(np.unique(label[h // 2 :]).tolist()) == {0, 13}  # road 7 -> 0, car 26 -> 13


# ---------------------------------------------------------------------------------- GTA5
def test_gta5_pairs_sorted_and_mapped(tmp_path):
    root = write_gta5(tmp_path / "gta", n=4, unpaired=2)
    save(root / "labels" / "00099.png", np.zeros((24, 40), np.uint8), "L")  # a label without image
    split = readers.read_gta5(root)
    assert [s.name for s in split.samples] == ["00001.png", "00002.png", "00003.png", "00004.png"]
    assert split.skipped == 3 and "skipped 3" in split.describe()
    assert split.has_labels and split.label_kind == "labelids"
    for s in split.samples:
        assert s.image.endswith(f"images/{s.name}") and s.label.endswith(f"labels/{s.name}")
    label = images.read_label(split.samples[0].label, split.label_kind)  # a palette ('P') PNG
    assert label.shape == (24, 40) and label.dtype == np.uint8
    _expected_band_train_ids(label)


def test_gta5_missing_root_and_empty(tmp_path):
    with pytest.raises(UdasError) as info:
        readers.read_gta5(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in _one_line(info)
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    with pytest.raises(UdasError, match="no images"):
        readers.read_gta5(tmp_path / "empty")


def test_read_split_unknown_format(tmp_path):
    with pytest.raises(UdasError, match="'kitti'"):
        readers.read_split("kitti", tmp_path, "train")


# ---------------------------------------------------------------------------- Cityscapes
def test_cityscapes_pairs_sorted_and_mapped(tmp_path):
    root = write_cityscapes(tmp_path / "cs", n_train=4, n_val=3)
    train = readers.read_cityscapes(root, "train")
    assert [s.name for s in train.samples] == [
        "aachen_000000_000019_leftImg8bit.png", "aachen_000002_000019_leftImg8bit.png",
        "bremen_000001_000019_leftImg8bit.png", "bremen_000003_000019_leftImg8bit.png",
    ]
    for s in train.samples:
        assert s.label.endswith(s.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
        assert "/gtFine/train/" in s.label
    _expected_band_train_ids(images.read_label(train.samples[0].label))
    assert len(readers.read_cityscapes(root, "val")) == 3


def test_cityscapes_image_without_label_is_an_error(tmp_path):
    root = write_cityscapes(tmp_path / "cs", n_train=3, n_val=1)
    img, lbl = cityscapes_paths(root, "train", "bremen", 1)
    lbl.unlink()
    with pytest.raises(UdasError) as info:
        readers.read_cityscapes(root, "train")
    assert str(img) in _one_line(info)


def test_cityscapes_split_without_gtfine_is_unlabeled(tmp_path):
    root = tmp_path / "cs"
    img, _ = cityscapes_paths(root, "test", "berlin", 0)
    save(img, np.zeros((24, 48, 3), np.uint8))
    split = readers.read_cityscapes(root, "test")
    assert len(split) == 1 and split.samples[0].label is None and not split.has_labels


def test_cityscapes_missing_root_and_empty_split(tmp_path):
    with pytest.raises(UdasError) as info:
        readers.read_cityscapes(tmp_path / "nope", "train")
    assert str(tmp_path / "nope") in _one_line(info)
    (tmp_path / "cs" / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    with pytest.raises(UdasError, match="val split holds no images"):
        readers.read_cityscapes(tmp_path / "cs", "val")


# ------------------------------------------------------------------------------- SYNTHIA
def test_synthia_16bit_labels(tmp_path):
    root = write_synthia(tmp_path / "sy", n=3, size=(20, 32))
    split = readers.read_synthia(root)
    assert [s.name for s in split.samples] == ["0000000.png", "0000001.png", "0000002.png"]
    assert split.label_kind == "synthia"
    # First channel: 1 sky, 2 building, 3 road, 8 car -> trainIds 10, 2, 0, 13. The second
    # channel holds instance ids up to 999 (> 255) which must not leak into the classes.
    expected = np.zeros((20, 32), np.uint8)
    expected[:6] = 10
    expected[6:10] = 2
    expected[-4:-1, 2:8] = 13
    for s in split.samples:
        assert np.array_equal(images.read_label(s.label, "synthia"), expected)
        images.check_pair(s.image, s.label, "synthia", full=True)


def test_synthia_high_ids_in_first_channel(tmp_path):
    lab = np.zeros((4, 4, 3), np.uint16)
    lab[..., 0] = [[1, 2, 3, 8]] * 4
    lab[0, 0, 0] = 259  # 0x0103: not road, even though its low byte is 3
    lab[..., 1] = 65535
    path = write_png16_rgb(tmp_path / "l.png", lab)
    assert images.read_label(path, "synthia").tolist() == [[255, 2, 0, 13]] + [[10, 2, 0, 13]] * 3


def test_synthia_missing_root(tmp_path):
    with pytest.raises(UdasError) as info:
        readers.read_synthia(tmp_path / "gone")
    assert str(tmp_path / "gone") in _one_line(info)


# ------------------------------------------------------------------------- file checks
def _png(path, shape=(24, 40, 3), seed=0):
    return save(path, np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8))


def test_label_size_must_match_image(tmp_path):
    img = _png(tmp_path / "img.png", (24, 40, 3))
    lbl = save(tmp_path / "lbl.png", np.zeros((24, 41), np.uint8), "L")
    for full in (False, True):
        with pytest.raises(UdasError) as info:
            images.check_pair(img, lbl, "labelids", full)
        msg = _one_line(info)
        assert str(lbl) in msg and "41x24" in msg and "40x24" in msg
    images.check_pair(img, save(tmp_path / "ok.png", np.zeros((24, 40), np.uint8), "L"), "labelids", True)


def test_rgb_label_is_rejected(tmp_path):
    img = _png(tmp_path / "img.png")
    colour = _png(tmp_path / "colour.png", seed=1)
    for call in (lambda: images.read_label(colour), lambda: images.check_pair(img, colour, "labelids", False)):
        with pytest.raises(UdasError) as info:
            call()
        msg = _one_line(info)
        assert str(colour) in msg and "colour" in msg


def test_truncated_png(tmp_path):
    path = _png(tmp_path / "cut.png", (48, 64, 3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert images.probe(path) == ((48, 64), "RGB")  # the header alone still reads
    for call in (lambda: images.probe(path, full=True), lambda: images.read_image(path),
                 lambda: images.check_pair(path, None, "labelids", True)):
        with pytest.raises(UdasError) as info:
            call()
        msg = _one_line(info)
        assert str(path) in msg and "truncated" in msg
    with pytest.raises(UdasError, match="cut.png"):
        images.read_label(path, "synthia")


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a PNG at all" * 20)
    for call in (lambda: images.probe(junk), lambda: images.read_image(junk), lambda: images.read_label(junk),
                 lambda: images.read_label(junk, "synthia")):
        with pytest.raises(UdasError) as info:
            call()
        assert str(junk) in _one_line(info)
    for kind in ("labelids", "synthia"):
        with pytest.raises(UdasError, match="not found"):
            images.read_label(tmp_path / "missing.png", kind)


def test_read_image_converts_grey_to_rgb(tmp_path):
    path = save(tmp_path / "g.png", np.full((5, 7), 9, np.uint8), "L")
    rgb = images.read_image(path)
    assert rgb.shape == (5, 7, 3) and (rgb == 9).all()


# ------------------------------------------------------------------------ choose_labeled
def _fake_split(n):
    samples = tuple(Sample(f"/d/{i:03d}.png", f"/l/{i:03d}.png", f"{i:03d}.png") for i in range(n))
    return Split("cityscapes", "/d", "train", samples)


def test_choose_labeled_reproducible_and_partitions():
    split = _fake_split(50)
    lab, rest = readers.choose_labeled(split, 10, seed=0)
    lab2, _ = readers.choose_labeled(split, 10, seed=0)
    other, _ = readers.choose_labeled(split, 10, seed=1)
    assert lab.samples == lab2.samples
    assert lab.samples != other.samples
    assert len(lab) == 10 and len(rest) == 40
    names = [s.name for s in lab.samples]
    assert names == sorted(names) and lab.split == "train-labeled"
    assert {s.name for s in lab.samples} | {s.name for s in rest.samples} == {s.name for s in split.samples}
    assert not {s.name for s in lab.samples} & {s.name for s in rest.samples}
    none, everything = readers.choose_labeled(split, 0, seed=0)
    assert len(none) == 0 and len(everything) == 50


def test_choose_labeled_errors():
    with pytest.raises(UdasError) as info:
        readers.choose_labeled(_fake_split(5), 6, seed=0)
    msg = _one_line(info)
    assert "data.target.labeled=6" in msg and "only 5" in msg
    with pytest.raises(UdasError, match="no labels"):
        readers.choose_labeled(_fake_split(5).without_labels(), 2, seed=0)


# ----------------------------------------------------------------------------------- resize
def test_resize_image_bilinear_keeps_shape():
    img = np.zeros((6, 8, 3), np.uint8)
    img[:, 4:] = 200
    out = images.resize_image(img, (12, 16))
    assert out.shape == (12, 16, 3) and out.dtype == np.uint8
    assert len(np.unique(out)) > 2  # bilinear blends at the edge
    assert images.resize_image(np.full((6, 8, 3), 77, np.uint8), (3, 5)).tolist() == np.full((3, 5, 3), 77).tolist()


def test_resize_label_nearest_invents_no_class():
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 5, 13, 255], np.uint8), size=(7, 11))
    for size in ((32, 64), (3, 5), (7, 12)):
        out = images.resize_label(label, size)
        assert out.shape == size and out.dtype == np.uint8
        assert set(np.unique(out).tolist()) <= {0, 5, 13, 255}
    assert np.array_equal(images.resize_label(label, (14, 22))[::2, ::2], label)  # exact x2 upsampling


# ------------------------------------------------------------------------------- splits
def _cfg(tmp_path, *extra):
    gta = write_gta5(tmp_path / "gta", n=4)
    cs = write_cityscapes(tmp_path / "cs", n_train=6, n_val=3)
    return load_config(None, [
        "data.source.format=gta5", f"data.source.root={gta}", "data.target.format=cityscapes",
        f"data.target.root={cs}", "data.image_size=[32,64]", *extra,
    ])


def test_load_splits(tmp_path):
    cfg = _cfg(tmp_path, "data.target.labeled=2", "run.seed=3", "data.val_limit=2")
    s = splits.load_splits(cfg)
    assert (len(s.source), len(s.target_train), len(s.target_labeled), len(s.target_val)) == (4, 6, 2, 2)
    assert s.source.format == "gta5" and s.target_val.split == "val"
    assert set(s.target_labeled.samples) <= set(s.target_train.samples)
    again = splits.load_splits(cfg)
    assert again.target_labeled.samples == s.target_labeled.samples


def test_load_splits_labeled_too_large_fails_before_file_checks(tmp_path):
    cfg = _cfg(tmp_path, "data.target.labeled=7")
    bad = tmp_path / "gta" / "images" / "00002.png"
    bad.write_bytes(bad.read_bytes()[:100])  # a broken file that verification would report
    with pytest.raises(UdasError) as info:
        splits.load_splits(cfg)
    msg = _one_line(info)
    assert "data.target.labeled=7" in msg and "only 6" in msg
    with pytest.raises(UdasError, match="00002.png"):  # with a sane count, the file check reports it
        splits.load_splits(cfg.override({"data.target.labeled": 1}))
    splits.load_splits(cfg.override({"data.target.labeled": 1}), check_files=False)


def test_load_splits_reports_mismatched_label(tmp_path):
    cfg = _cfg(tmp_path)
    _, lbl = cityscapes_paths(tmp_path / "cs", "val", "bremen", 1)
    save(lbl, np.zeros((10, 10), np.uint8), "L")
    with pytest.raises(UdasError, match=lbl.name):
        splits.load_splits(cfg)
