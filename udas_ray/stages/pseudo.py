"""Pseudo-labels: the teacher labels the unlabeled target set, as Ray Data batch inference.

For every target-train image the teacher predicts K views (the image, its mirror image, then
colour-jittered copies; a mirrored prediction is mirrored back before merging), each at every
size of ``pseudo.scales`` (resized back before merging), softmax with
temperature, and keeps per pixel the class of the most confident view. Pixels whose merged
confidence is under the threshold become 255. Thresholds are either ``pseudo.threshold`` for
every class (``pseudo.selection=global``) or, per class, the confidence above which that
class keeps its most confident ``pseudo.class_fraction`` of pixels (``class_balanced``, CBST).

Two passes, so that class-balanced thresholds can see the whole set first:
  1. ``TeacherPredictor`` actors (the model loaded once per actor) write each image's merged
     class map and confidence into a staging folder and return per-batch confidence histograms;
  2. :func:`publish` applies the thresholds, writes the label PNGs (Cityscapes labelIds, 255 ->
     0) with the round's statistics, and renames the folder into place: a half-written round is
     never read.

Both passes log progress (images done, rate, ETA) from the driver as results come back; then
:func:`write_picture` draws the first few published labels into ``pseudo_labels.png``.
:func:`label_round` is all of it as a stage of the pipeline, logged to the stage's MLflow run.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from udas_ray.atomic import write_json
from udas_ray import classes, precision
from udas_ray.classes import IGNORE, NUM_CLASSES
from udas_ray.data import augment, images
from udas_ray.data.readers import Sample, Split
from udas_ray.errors import UdasError
from udas_ray.metrics import confusion_matrix, flat_metrics, scores
from udas_ray.progress import Ticker

log = logging.getLogger("udas_ray")
BINS = 1000  # confidence histogram resolution
STATS_FILE = "stats.json"
PICTURE_FILE = "pseudo_labels.png"  # a few published pseudo-labels next to their images


@dataclass(frozen=True, kw_only=True)
class ViewParams:
    k: int = 3
    flip: bool = True
    temperature: float = 1.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    scales: tuple[float, ...] = (1.0,)  # each of the K views is predicted at every one of these sizes


def make_views(image: np.ndarray, params: ViewParams, seed: int) -> list[tuple[np.ndarray, bool]]:
    """K views of an image as (view, mirrored); view 0 is the image itself."""
    rng = np.random.default_rng(seed)
    out = [(image, False)]
    for v in range(1, params.k):
        mirrored = params.flip and v % 2 == 1
        view = augment.hflip(image) if mirrored else image
        if v >= 2 or not params.flip:
            view = augment.color_jitter(view, rng, params.brightness, params.contrast, params.saturation, params.hue)
        out.append((view, mirrored))
    return out


@torch.no_grad()
def merge_views(model, views: list[tuple[np.ndarray, bool]], temperature: float, device="cpu",
                scales: tuple[float, ...] = (1.0,), out_size: tuple[int, int] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(class map uint8, confidence float32) of the per-pixel most confident view. With several
    ``scales`` every view is also predicted resized by each factor; its softmax is resized back
    (bilinear) before the views compete. ``out_size``: the (H, W) the softmax is resized to before
    the views compete, e.g. the image's full resolution (default: the views' own size)."""
    import torch.nn.functional as F

    from udas_ray.inference import predict_probs

    stack = np.stack([v for v, _ in views])
    size = stack.shape[1:3]
    target = tuple(out_size) if out_size else size
    per_scale = []
    for factor in scales:
        scaled = stack
        if factor != 1.0:
            shape = tuple(max(8, int(round(n * factor))) for n in size)
            scaled = np.stack([images.resize_image(v, shape) for v in stack])
        probs = predict_probs(model, scaled, temperature, device).float()
        if probs.shape[2:] != target:
            probs = F.interpolate(probs, size=target, mode="bilinear", align_corners=False)
        per_scale.append(torch.stack([p.flip(-1) if mirrored else p for p, (_, mirrored) in zip(probs.cpu(), views)]))
    probs = torch.cat(per_scale)
    conf, cls = probs.max(dim=1)  # (K * scales, H, W) each
    best = conf.argmax(dim=0, keepdim=True)
    return cls.gather(0, best)[0].numpy().astype(np.uint8), conf.gather(0, best)[0].numpy()


def confidence_histogram(pred: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """(C, BINS) pixel counts of confidence per predicted class."""
    bins = np.minimum((conf * BINS).astype(np.int64), BINS - 1)
    flat = pred.astype(np.int64) * BINS + bins
    return np.bincount(flat.ravel(), minlength=NUM_CLASSES * BINS).reshape(NUM_CLASSES, BINS)


class TeacherPredictor:
    """Ray Data callable class: one teacher per actor, K views per image, staging files out.

    Touches no file before it labels (the driver makes the staging folder): Ray Data does not
    stop an actor still starting when its round ends, so such an actor comes up after the round
    was published, and must not bring the staging folder back."""

    def __init__(self, model_path: str, size: tuple[int, int], params: ViewParams, staging: str, threads: int = 1,
                 precision: str = "fp32", channels_last: bool = True, device: str | None = None,
                 full_resolution: bool = False):
        """``device``: where the teacher runs; None: on a GPU where torch sees one, else on the CPU.
        ``full_resolution``: labels at each image's own size (its softmax upsampled), else at ``size``."""
        from udas_ray.checkpoints import load_model
        from udas_ray.models import to_memory_format

        torch.set_num_threads(max(1, threads))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = to_memory_format(load_model(model_path)[0].to(self.device), channels_last)
        self.size, self.params, self.staging, self.precision = tuple(size), params, Path(staging), precision
        self.full_resolution = full_resolution

    def __call__(self, batch: dict) -> dict:
        hist = np.zeros((NUM_CLASSES, BINS), np.int64)
        for image_path, name, seed in zip(batch["image"], batch["name"], batch["seed"]):
            original = images.read_image(image_path)
            image = images.resize_image(original, self.size)
            out_size = original.shape[:2] if self.full_resolution else None
            with precision.autocast(self.precision, self.device):  # train.precision
                pred, conf = merge_views(self.model, make_views(image, self.params, int(seed)),
                                         self.params.temperature, self.device, self.params.scales, out_size)
            stem = Path(str(name)).stem
            images.write_png(self.staging / "pred" / f"{stem}.png", pred)
            images.write_png(self.staging / "pred" / f"{stem}.conf.png", np.round(conf * 65535).astype(np.uint16))
            hist += confidence_histogram(pred, conf)
        return {"images": np.array([len(batch["name"])]), "hist": hist[None]}


def class_thresholds(hist: np.ndarray, selection: str, threshold: float, fraction: float) -> np.ndarray:
    """Per-class confidence thresholds from the summed (C, BINS) histogram.

    ``global``: ``threshold`` for every class. ``class_balanced``: for class c, the confidence
    above which c keeps its top ``fraction`` of predicted pixels, capped at ``threshold`` (a
    class the teacher is sure about is never held to a stricter bar than the global one).
    """
    if selection == "global":
        return np.full(NUM_CLASSES, threshold, np.float64)
    out = np.full(NUM_CLASSES, threshold, np.float64)
    for c in range(NUM_CLASSES):
        counts = hist[c]
        total = counts.sum()
        if total == 0:
            continue
        above = np.cumsum(counts[::-1])[::-1]  # pixels with confidence >= bin b
        ok = np.nonzero(above >= fraction * total)[0]
        b = ok.max() if len(ok) else 0
        out[c] = min(threshold, b / BINS)
    return out


def apply_thresholds(pred: np.ndarray, conf: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """trainIds where the merged confidence reaches its class's threshold, 255 elsewhere."""
    label = pred.copy()
    label[conf < thresholds[pred.astype(np.int64)]] = IGNORE
    return label


def publish(staging: str | Path, final: str | Path, split: Split, thresholds: np.ndarray) -> dict:
    """Threshold every staged prediction, write label PNGs and ``stats.json``, then rename
    ``staging`` to ``final`` in one step. Returns the round's statistics."""
    staging, final = Path(staging), Path(final)
    ticker = Ticker(len(split), f"pseudo {final.name} pass 2/2: publish")
    kept = total = 0
    class_pixels = np.zeros(NUM_CLASSES, np.int64)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    has_truth = split.has_labels
    for sample in split.samples:
        stem = Path(sample.name).stem
        pred = np.asarray(Image.open(staging / "pred" / f"{stem}.png"))
        conf = np.asarray(Image.open(staging / "pred" / f"{stem}.conf.png")).astype(np.float32) / 65535
        label = apply_thresholds(pred, conf, thresholds)
        images.write_png(staging / "labels" / f"{stem}.png", classes.train_ids_to_label_ids(label))
        kept += int((label != IGNORE).sum())
        total += label.size
        class_pixels += np.bincount(label[label != IGNORE].ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
        if has_truth:
            truth = images.resize_label(images.read_label(sample.label, split.label_kind), label.shape[:2])
            cm += confusion_matrix(label[label != IGNORE], truth[label != IGNORE])
        ticker.update()
    ticker.finish()
    stats = {
        "images": len(split),
        "kept_share": kept / max(total, 1),
        "thresholds": {classes.CLASS_NAMES[c]: float(t) for c, t in enumerate(thresholds)},
        "class_pixels": {classes.CLASS_NAMES[c]: int(n) for c, n in enumerate(class_pixels)},
    }
    if has_truth:
        quality = scores(cm)
        stats.update(miou=quality["miou"], accuracy=quality["pixel_accuracy"], per_class_iou=quality["per_class_iou"])
    write_json(staging / STATS_FILE, stats)
    shutil.rmtree(staging / "pred")
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return stats


def pseudo_split(final: str | Path, split: Split) -> Split:
    """The target-train split with each image paired with its published pseudo-label."""
    final = Path(final)
    if not (final / STATS_FILE).is_file():
        raise UdasError(f"{final}: pseudo-labels were not published completely; delete the folder and resume")
    samples = tuple(Sample(s.image, str(final / "labels" / f"{Path(s.name).stem}.png"), s.name) for s in split.samples)
    return Split("pseudo", str(final), split.split, samples, "labelids")


def actor_resources(cfg) -> dict[str, float]:
    """What each pseudo-label actor reserves: ``pseudo.cpus_per_actor`` CPUs and, with
    ``scaling.use_gpu``, ``pseudo.gpus_per_actor`` GPUs."""
    return {"CPU": cfg.pseudo.cpus_per_actor, "GPU": cfg.pseudo.gpus_per_actor if cfg.scaling.use_gpu else 0}


def predict_to_staging(cfg, split: Split, model_path: str | Path, staging: str | Path,
                       what: str = "pseudo pass 1/2") -> np.ndarray:
    """Pass 1 on an actor pool: every image's merged prediction into ``staging``; returns the
    summed confidence histogram. ``what`` tags the progress lines."""
    import ray.data

    from udas_ray import lost_nodes

    p = cfg.pseudo
    log.info("[%s] the teacher predicts %d views of %d images on %d actor(s); the first results come once "
             "the actors have loaded it", what, p.k, len(split), p.actors)
    params = ViewParams(k=p.k, flip=p.flip, temperature=p.temperature, scales=tuple(p.scales),
                        **cfg.augment.jitter.model_dump())
    rows = [{"image": s.image, "name": s.name, "seed": cfg.run.seed * 1_000_003 + i} for i, s in enumerate(split.samples)]
    (Path(staging) / "pred").mkdir(parents=True, exist_ok=True)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // p.batch_size, 64)))
    per_actor = actor_resources(cfg)
    # pseudo.gpus_per_actor=0 with GPUs: Ray hides no GPU from an actor that asked for none
    device = "cpu" if cfg.scaling.use_gpu and not per_actor["GPU"] else None
    out = ds.map_batches(
        TeacherPredictor,
        fn_constructor_kwargs={"model_path": str(model_path), "size": tuple(cfg.data.image_size), "params": params,
                               "staging": str(staging), "threads": max(1, int(p.cpus_per_actor)),
                               "precision": cfg.train.precision, "channels_last": cfg.train.channels_last,
                               "device": device, "full_resolution": p.resolution == "full"},
        batch_size=p.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=p.actors),
        num_cpus=per_actor["CPU"],
        num_gpus=per_actor["GPU"],
    )
    hist = np.zeros((NUM_CLASSES, BINS), np.int64)
    ticker = Ticker(len(split), what)
    results = out.iter_batches(batch_size=None, batch_format="numpy")
    setting = "pseudo.cpus_per_actor" + (" or pseudo.gpus_per_actor" if per_actor["GPU"] else "")
    for batch in lost_nodes.watch_nodes(results, what, per_actor, setting):
        hist += batch["hist"].sum(axis=0)
        ticker.update(int(batch["images"].sum()))
    ticker.finish()
    done = ticker.count
    if done != len(split):
        raise RuntimeError(f"pseudo-labelling saw {done} of {len(split)} images")
    return hist


def run_pseudo_labels(cfg, split: Split, model_path: str, final: str | Path) -> dict:
    """Label ``split`` with the teacher in ``model_path`` on a Ray Data actor pool; publish to ``final``."""
    p = cfg.pseudo
    final = Path(final)
    staging = final.with_name(f".{final.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)  # left over from a killed run
    staging.mkdir(parents=True)
    hist = predict_to_staging(cfg, split, model_path, staging, what=f"pseudo {final.name} pass 1/2: teacher")
    thresholds = class_thresholds(hist, p.selection, p.threshold, p.class_fraction)
    stats = publish(staging, final, split, thresholds)
    write_picture(final, split, cfg.data.image_size)
    if stats["kept_share"] < 0.01:
        log.warning("pseudo-labels keep only %.2f%% of pixels at pseudo.threshold=%s; the student will learn little: "
                    "lower the threshold", 100 * stats["kept_share"], p.threshold)
    return stats


def label_round(cfg, split: Split, model_path: str, final: Path, tracker, *, name: str, round: int) -> dict:
    """A pseudo-label stage: :func:`run_pseudo_labels`, logged (and to ``tracker``, the stage's
    MLflow run: the settings, how many pixels of each class were kept, their quality when
    ``split`` has labels, ``stats.json`` and ``pseudo_labels.png``). Returns its manifest fields."""
    stats = run_pseudo_labels(cfg, split, model_path, final)
    quality = f", their mIoU {stats['miou']:.2f} accuracy {stats['accuracy']:.2f}" if "miou" in stats else ""
    log.info("[%s] kept %.1f%% of pixels%s", name, 100 * stats["kept_share"], quality)
    tracker.params({"pseudo." + k: v for k, v in cfg.pseudo.model_dump().items()} | {"teacher": model_path})
    values = {"kept_share": 100 * stats["kept_share"]}
    if "miou" in stats:
        values.update(flat_metrics({"miou": stats["miou"], "pixel_accuracy": stats["accuracy"],
                                    "per_class_iou": stats["per_class_iou"]}, "pseudo_"))
    total = max(sum(stats["class_pixels"].values()), 1)
    values.update({f"kept_{k.replace(' ', '_')}": 100 * v / total for k, v in stats["class_pixels"].items()})
    tracker.metrics(values, step=round)
    tracker.artifact(final / STATS_FILE)
    if (final / PICTURE_FILE).is_file():
        tracker.artifact(final / PICTURE_FILE)
    return {"labels": str(final), "metrics": stats}


def write_picture(final: str | Path, split: Split, size, count: int = 4) -> Path | None:
    """``final/pseudo_labels.png``: the first ``count`` images of ``split`` with their published
    pseudo-labels (read back from the label PNGs, so it shows what the student will see), the
    ground truth when they have it, and which pixels were kept."""
    from udas_ray import visualize

    final, size = Path(final), tuple(size)
    samples = split.samples[:count]
    if not samples:
        return None
    labelled = pseudo_split(final, split).samples[:count]
    pictures = np.stack([images.resize_image(images.read_image(s.image), size) for s in samples])
    labels = np.stack([images.resize_label(images.read_label(s.label, "labelids"), size) for s in labelled])
    truth = None
    if all(s.label for s in samples):
        truth = np.stack([images.resize_label(images.read_label(s.label, split.label_kind), size) for s in samples])
    path = final / PICTURE_FILE
    images.write_png(path, visualize.pseudo_label_grid(pictures, labels, truth))
    return path
