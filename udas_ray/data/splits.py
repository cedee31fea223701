"""From the config to the four file lists every stage works on, checked before any Ray work.

    splits = load_splits(cfg)
    splits.source          labeled synthetic images (GTA5 / SYNTHIA / scenes source)
    splits.target_train    every target-train image (the unlabeled set; labels kept only for diagnostics)
    splits.target_labeled  ``data.target.labeled`` of them, picked reproducibly from ``run.seed``
    splits.target_val      the evaluation split
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from udas_ray.config import Config
from udas_ray.data import images, readers
from udas_ray.data.readers import Split
from udas_ray.errors import UdasError
from udas_ray.progress import Ticker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    source: Split
    target_train: Split
    target_labeled: Split
    target_val: Split

    def describe(self) -> list[str]:
        return [
            "source: " + self.source.describe(),
            "target train (unlabeled): " + self.target_train.describe(),
            f"target labeled: {len(self.target_labeled)} images",
            "target val: " + self.target_val.describe(),
        ]


def _root(cfg_root: str, key: str) -> Path:
    if not cfg_root:
        raise UdasError(f"{key} is empty; set it to the dataset folder")
    return Path(cfg_root).expanduser().resolve()


def generate_scenes(cfg: Config, which: str) -> Path:
    """Write the source or the target domain of the embedded benchmark's pair if it is not there yet."""
    from udas_ray.data import scenes

    sc = cfg.data.scenes
    source, target = scenes.PAIRS[sc.pair]
    if which == "source":
        root = _root(cfg.data.source.root, "data.source.root")
        return scenes.write_source(root, num_images=sc.num_source, size=tuple(sc.source_size), seed=sc.seed,
                                   domain=source)
    root = _root(cfg.data.target.root, "data.target.root")
    return scenes.write_target(root, num_train=sc.num_target_train, num_val=sc.num_target_val,
                               size=tuple(sc.target_size), seed=sc.seed, domain=target)


def _read(cfg: Config, which: str, split: str) -> Split:
    """``data.<which>`` (source or target) through the readers' registry."""
    data = getattr(cfg.data, which)
    if data.format in readers.GENERATED:
        return readers.read_split(readers.GENERATED[data.format][which], generate_scenes(cfg, which), split)
    return readers.read_split(data.format, _root(data.root, f"data.{which}.root"), split, data.label_ids)


def read_source(cfg: Config) -> Split:
    return _read(cfg, "source", "train")


def read_target(cfg: Config, split: str) -> Split:
    return _read(cfg, "target", split)


def verify(split: Split, full: bool, key: str = "data.*.label_ids") -> None:
    """Open every file of a split (decode it too when ``full``): fail on the first bad one.
    Thousands of files take minutes: a progress line every 10 s (udas_ray.progress).

    A full check also looks at the values of labelIds labels and warns, once per split naming
    the first file, when they look like trainIds (images.looks_like_train_ids): read as
    labelIds, trainIds would turn road into "unlabeled" and train on garbage without an error.
    """
    suspects = []
    # an image and its label each; silent when quick (a config error after it stays one line)
    ticker = Ticker(len(split), f"verify {split.format} {split.split}", quiet_under_s=5)
    for sample in split.samples:
        values = images.check_pair(sample.image, sample.label, split.label_kind, full)
        if values is not None and split.label_kind == "labelids" and images.looks_like_train_ids(values):
            suspects.append(sample.label)
        ticker.update()
    ticker.finish()
    if suspects:
        fix = f"set {key}=trainids" if split.format == "folder" else f"use format folder with {key}=trainids"
        log.warning("%s: looks like a trainIds label, not labelIds (values only 0..18 and 255, or 0 without "
                    "road's labelId 7); %d of the %d labels of the %s %s split look so; if they are trainIds, %s",
                    suspects[0], len(suspects), len(split), split.format, split.split, fix)


def _require_labels(split: Split, why: str) -> None:
    """A one-line error naming the label folder when some image of ``split`` has no label."""
    missing = [s for s in split.samples if s.label is None]
    if not missing:
        return
    if len(missing) == len(split):
        lack = f"none of the {len(split)} {split.split} images has a label there"
    else:
        lack = f"{len(missing)} of the {len(split)} {split.split} images have no label there"
    raise UdasError(f"{split.label_dir or split.root}: {why}, but {lack} (first unlabeled: {missing[0].name})")


def load_splits(cfg: Config, check_files: bool = True) -> Splits:
    source = read_source(cfg)
    _require_labels(source, "the source trains on labels of every image")
    target_train = read_target(cfg, "train")
    target_val = read_target(cfg, "val")
    _require_labels(target_val, "evaluation needs a labeled val split")
    labeled, _ = readers.choose_labeled(target_train, cfg.data.target.labeled, cfg.run.seed)
    if cfg.data.val_limit:
        target_val = target_val.subset(range(min(cfg.data.val_limit, len(target_val))))
    if check_files:
        full = cfg.data.verify == "full"
        verify(source, full, "data.source.label_ids")
        verify(target_train, full, "data.target.label_ids")
        verify(target_val, full, "data.target.label_ids")
    return Splits(source, target_train, labeled, target_val)
