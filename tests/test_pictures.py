"""Pictures where people look: a stage folder's predictions.png and confusion_matrix.png, the
class legend, the pseudo-label picture of a round and the run's mIoU-per-stage plot."""

import numpy as np
from PIL import Image

from udas_ray import classes, visualize
from udas_ray.data.splits import load_splits
from udas_ray.stages import kinds, pseudo, segment


def open_png(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("RGB"))


def swatches(picture: np.ndarray) -> list[str]:
    """The classes whose colour fills at least one legend square in ``picture``."""
    found = []
    for name, colour in zip(classes.CLASS_NAMES, classes.PALETTE):
        if (picture == colour).all(axis=-1).sum() >= visualize.SWATCH * visualize.SWATCH:
            found.append(name)
    return found


def test_a_stage_leaves_its_pictures_in_its_folder_without_mlflow(tiny_cfg, tmp_path):
    spec = kinds.build_spec(tiny_cfg, load_splits(tiny_cfg), "source_only", "source_only", tmp_path / "stage")
    assert spec.tracking_uri is None  # no MLflow: the pictures are written all the same
    segment.run_plain(tiny_cfg, spec)
    grid = open_png(tmp_path / "stage" / visualize.PREDICTIONS_FILE)
    cm = open_png(tmp_path / "stage" / visualize.CONFUSION_FILE)
    assert grid.shape[0] > 4 * 32 and grid.shape[1] >= 3 * 64  # 4 val images, 3 columns (enlarged)
    assert cm.shape[0] > 100 and cm.shape[1] > 100


def test_the_legend_names_the_19_classes_in_their_colours():
    strip = visualize.legend(600)
    assert strip.dtype == np.uint8 and strip.shape[1] == 600
    assert swatches(strip) == list(classes.CLASS_NAMES)
    narrow = visualize.legend(50)  # wider than asked when one entry does not fit: never clipped
    assert narrow.shape[1] > 50 and swatches(narrow) == list(classes.CLASS_NAMES)


def test_prediction_grid_has_a_legend_under_the_tiles():
    images = np.zeros((2, 8, 16, 3), np.uint8)
    preds = np.zeros((2, 8, 16), np.uint8)
    plain = visualize.prediction_grid(images, preds, preds, with_legend=False)
    full = visualize.prediction_grid(images, preds, preds)
    assert full.shape[0] > plain.shape[0] and full.shape[1] == plain.shape[1]
    assert len(swatches(full[plain.shape[0]:])) == 19


def test_pseudo_label_picture_of_tiny_arrays():
    images = np.full((2, 4, 6, 3), 90, np.uint8)
    labels = np.zeros((2, 4, 6), np.uint8)
    labels[:, :, :2] = 255  # ignored
    truth = np.zeros((2, 4, 6), np.uint8)
    truth[:, 0, 2:] = 13  # kept as road where it is a car: wrong
    mask = visualize.kept_mask(labels, truth)
    assert (mask[:, :, :2] == 0).all()
    assert (mask[:, 0, 2:] == visualize.RED).all() and (mask[:, 1:, 2:] == 255).all()
    with_truth = visualize.pseudo_label_grid(images, labels, truth)
    without = visualize.pseudo_label_grid(images, labels)
    assert with_truth.dtype == np.uint8 and with_truth.shape[1] > without.shape[1]  # one more column
    assert len(swatches(with_truth)) == 19


def test_a_published_round_gets_its_picture(tiny_cfg, tmp_path):
    """Publish hand-made staged predictions (every pixel road, half of them confident), then draw."""
    split = load_splits(tiny_cfg).target_train
    size = tuple(tiny_cfg.data.image_size)
    staging, final = tmp_path / ".round_1.staging", tmp_path / "round_1"
    from udas_ray.data import images

    for sample in split.samples:
        stem = sample.name.rsplit(".", 1)[0]
        images.write_png(staging / "pred" / f"{stem}.png", np.zeros(size, np.uint8))
        conf = np.zeros(size, np.uint16)
        conf[:, : size[1] // 2] = 65535
        images.write_png(staging / "pred" / f"{stem}.conf.png", conf)
    pseudo.publish(staging, final, split, np.full(classes.NUM_CLASSES, 0.5))
    path = pseudo.write_picture(final, split, size)
    assert path == final / pseudo.PICTURE_FILE
    picture = open_png(path)
    assert picture.shape[1] >= 4 * 64  # image | pseudo-label | ground truth | kept


def test_miou_per_stage_plot_from_a_hand_built_summary(tmp_path):
    names = list(classes.CLASS_NAMES)
    rows = [{"name": n, "miou": m, "pixel_accuracy": 80.0,
             "per_class_iou": {c: (None if c == "train" else m + i) for i, c in enumerate(names)}}
            for n, m in [("source_only", 20.0), ("teacher", 31.5), ("round_1", 35.0), ("oracle", 60.0)]]
    picture = visualize.stage_miou_figure({"stages": rows})
    path = tmp_path / visualize.STAGE_MIOU_FILE
    Image.fromarray(picture).save(path)
    assert open_png(path).shape[0] > 300
    seeded = visualize.stage_miou_figure({"stages": [{**rows[0], "miou_std": 1.5}]})  # one stage, ± std
    assert seeded.ndim == 3
