"""Tests of udas_ray.data.readers / images / splits on tiny datasets in the real on-disk layouts."""

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from layouts import (cityscapes_paths, save, write_cityscapes, write_folder, write_gta5, write_png16_rgb,
                     write_synthia)
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


# -------------------------------------------------------------------------------- folder
def _folder_cfg(tmp_path, *extra, source_train_ids=False, target_train_ids=False):
    """A folder source (PNG + JPEG, all labeled) and a folder target (train half labeled, val labeled)."""
    src = write_folder(tmp_path / "src", "train", ["s1.png", "s2.jpg", "s3.jpeg"], ["s1", "s2", "s3"],
                       train_ids=source_train_ids)
    tgt = write_folder(tmp_path / "tgt", "train", ["t1.jpg", "t2.png", "t3.JPG", "t4.bmp"], ["t2", "t4"],
                       train_ids=target_train_ids, seed=1)
    write_folder(tgt, "val", ["v1.png", "v2.jpg"], ["v1", "v2"], train_ids=target_train_ids, seed=2)
    return load_config(None, [
        "data.source.format=folder", f"data.source.root={src}", "data.target.format=folder",
        f"data.target.root={tgt}", "data.image_size=[32,64]", *extra,
    ])


def test_folder_read_as_source_and_target(tmp_path):
    s = splits.load_splits(_folder_cfg(tmp_path, "data.target.labeled=2"))
    assert [x.name for x in s.source.samples] == ["s1.png", "s2.jpg", "s3.jpeg"] and s.source.has_labels
    assert s.source.format == "folder" and s.source.split == "train" and s.source.label_kind == "labelids"
    assert [x.name for x in s.target_train.samples] == ["t1.jpg", "t2.png", "t3.JPG", "t4.bmp"]
    assert [x.label is not None for x in s.target_train.samples] == [False, True, False, True]
    assert not s.target_train.has_labels  # partly labeled target-train is fine...
    assert [x.name for x in s.target_labeled.samples] == ["t2.png", "t4.bmp"]  # ...the pick is among labeled
    assert len(s.target_val) == 2 and s.target_val.has_labels
    for sample in (*s.source.samples, *s.target_val.samples):
        assert sample.label.endswith(f"/labels/{Path(sample.name).stem}.png")
        assert images.read_image(sample.image).shape == (24, 40, 3)
        _expected_band_train_ids(images.read_label(sample.label, "labelids"))


def test_folder_train_ids_labels(tmp_path):
    cfg = _folder_cfg(tmp_path, "data.source.label_ids=trainids", "data.target.label_ids=trainids",
                      source_train_ids=True, target_train_ids=True)
    s = splits.load_splits(cfg)
    assert s.source.label_kind == s.target_train.label_kind == s.target_val.label_kind == "trainids"
    for sample in s.source.samples:
        _expected_band_train_ids(images.read_label(sample.label, s.source.label_kind))
    # trainIds are kept, 255 stays ignore, anything else (here a labelId-looking 26, and 19) -> 255
    raw = np.array([[0, 13, 18, 255, 26, 19]], np.uint8)
    path = save(tmp_path / "raw.png", raw, "L")
    assert images.read_label(path, "trainids").tolist() == [[0, 13, 18, 255, 255, 255]]
    assert images.read_label(path, "labelids").tolist() == [[255, 4, 255, 255, 13, 6]]  # fence, car, light


def test_folder_formats_and_label_ids_in_config():
    cfg = load_config(None, ["data.source.format=folder", "data.target.format=folder", "data.target.label_ids=trainids"])
    assert cfg.data.source.format == cfg.data.target.format == "folder"
    assert cfg.data.source.label_ids == "labelids" and cfg.data.target.label_ids == "trainids"
    for bad in (["data.source.format=gta5", "data.source.label_ids=trainids"],
                ["data.target.format=cityscapes", "data.target.label_ids=trainids"]):
        with pytest.raises(UdasError) as info:
            load_config(None, bad)
        assert "label_ids" in _one_line(info) and "folder" in _one_line(info)
    with pytest.raises(UdasError, match="label_ids"):
        load_config(None, ["data.target.format=folder", "data.target.label_ids=colours"])


def test_folder_unlabeled_target_train_without_labels_folder(tmp_path):
    cfg = _folder_cfg(tmp_path)
    shutil.rmtree(tmp_path / "tgt" / "train" / "labels")
    s = splits.load_splits(cfg)
    assert len(s.target_train) == 4 and all(x.label is None for x in s.target_train.samples)
    with pytest.raises(UdasError, match="no labels"):
        splits.load_splits(cfg.override({"data.target.labeled": 1}))


def test_folder_target_val_without_labels(tmp_path):
    cfg = _folder_cfg(tmp_path)
    labels = tmp_path / "tgt" / "val" / "labels"
    (labels / "v2.png").unlink()
    with pytest.raises(UdasError) as info:
        splits.load_splits(cfg)
    msg = _one_line(info)
    assert msg.startswith(str(labels)) and "evaluation needs a labeled val split" in msg
    assert "1 of the 2 val images have no label" in msg and "v2.jpg" in msg
    shutil.rmtree(labels)
    with pytest.raises(UdasError) as info:
        splits.load_splits(cfg)
    msg = _one_line(info)
    assert msg.startswith(str(labels)) and "evaluation needs a labeled val split" in msg and "none of the 2" in msg


def test_folder_source_needs_every_label(tmp_path):
    cfg = _folder_cfg(tmp_path)
    (tmp_path / "src" / "train" / "labels" / "s2.png").unlink()
    with pytest.raises(UdasError) as info:
        splits.load_splits(cfg)
    msg = _one_line(info)
    assert msg.startswith(str(tmp_path / "src" / "train" / "labels")) and "s2.jpg" in msg


def test_folder_errors_name_the_file_or_folder(tmp_path):
    cfg = _folder_cfg(tmp_path)
    tgt = tmp_path / "tgt"

    def error() -> str:
        with pytest.raises(UdasError) as info:
            splits.load_splits(cfg)
        return _one_line(info)

    shutil.move(tgt / "val", tmp_path / "val_aside")  # a missing split folder
    assert str(tgt / "val" / "images") in error()
    (tgt / "val" / "images").mkdir(parents=True)  # an empty one
    (tgt / "val" / "images" / "notes.txt").write_text("not an image")
    msg = error()
    assert str(tgt / "val" / "images") in msg and "no images" in msg
    shutil.rmtree(tgt / "val")
    shutil.move(tmp_path / "val_aside", tgt / "val")
    orphan = save(tgt / "train" / "labels" / "t9.png", np.zeros((24, 40), np.uint8), "L")  # a label without image
    msg = error()
    assert str(orphan) in msg and "without an image" in msg
    orphan.unlink()
    jpeg_label = save(tgt / "train" / "labels" / "t1.jpg", np.zeros((24, 40), np.uint8), "L")
    assert str(jpeg_label) in error()
    jpeg_label.unlink()
    twin = save(tgt / "train" / "images" / "t2.jpg", np.zeros((24, 40, 3), np.uint8))  # t2.png has that stem
    msg = error()
    assert str(tgt / "train" / "images") in msg and "t2.jpg" in msg and "t2.png" in msg and "stem" in msg
    twin.unlink()
    small = save(tgt / "val" / "labels" / "v2.png", np.zeros((24, 41), np.uint8), "L")  # a label of another size
    for verify in ("header", "full"):
        with pytest.raises(UdasError) as info:
            splits.load_splits(cfg.override({"data.verify": verify}))
        msg = _one_line(info)
        assert str(small) in msg and "41x24" in msg and "40x24" in msg
    with pytest.raises(UdasError) as info:
        splits.load_splits(cfg.override({"data.target.root": str(tmp_path / "nowhere")}))
    assert str(tmp_path / "nowhere") in _one_line(info)


def test_folder_warns_when_labelids_look_like_trainids(tmp_path, caplog):
    cfg = _folder_cfg(tmp_path, source_train_ids=True)  # trainIds labels, config says labelIds
    with caplog.at_level(logging.WARNING, logger="udas_ray.data.splits"):
        splits.load_splits(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(tmp_path / "src" / "train" / "labels" / "s1.png") in warnings[0]
    assert "3 of the 3" in warnings[0] and "data.source.label_ids=trainids" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="udas_ray.data.splits"):
        splits.load_splits(cfg.override({"data.verify": "header"}))  # only a full check looks at values
        splits.load_splits(cfg.override({"data.source.label_ids": "trainids"}))
        splits.load_splits(_folder_cfg(tmp_path / "plain"))  # real labelIds
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_looks_like_train_ids():
    assert images.looks_like_train_ids([0, 2, 10, 13, 255])  # trainIds with ignore
    assert images.looks_like_train_ids([0, 1, 2])  # road (0) without labelId 7
    assert not images.looks_like_train_ids([0, 7, 11, 23, 26])  # Cityscapes labelIds
    assert not images.looks_like_train_ids([0, 7, 8, 11])  # labelIds without sky or cars: has road 7
    assert not images.looks_like_train_ids([255])  # nothing but ignore: no evidence
    assert not images.looks_like_train_ids([])


def test_choose_labeled_among_a_partly_labeled_split():
    split = _fake_split(10)
    split = replace(split, samples=tuple(s if i % 2 else replace(s, label=None) for i, s in enumerate(split.samples)))
    lab, rest = readers.choose_labeled(split, 3, seed=0)
    assert len(lab) == 3 and all(s.label is not None for s in lab.samples) and len(rest) == 7
    with pytest.raises(UdasError) as info:
        readers.choose_labeled(split, 6, seed=0)
    assert "only 5 of the 10" in _one_line(info)
