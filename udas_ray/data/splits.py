"""From the config to the four file lists every stage works on, checked before any Ray work.

    splits = load_splits(cfg)
    splits.source          labeled synthetic images (GTA5 / SYNTHIA / scenes source)
    splits.target_train    every target-train image (the unlabeled set; labels kept only for diagnostics)
    splits.target_labeled  ``data.target.labeled`` of them, picked reproducibly from ``run.seed``
    splits.target_val      the evaluation split
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from udas_ray.config import Config
from udas_ray.data import images, readers
from udas_ray.data.readers import Split
from udas_ray.errors import UdasError


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
    """Write the embedded benchmark's source or target domain if it is not there yet."""
    from udas_ray.data import scenes

    sc = cfg.data.scenes
    if which == "source":
        root = _root(cfg.data.source.root, "data.source.root")
        return scenes.write_source(root, num_images=sc.num_source, size=tuple(sc.source_size), seed=sc.seed)
    root = _root(cfg.data.target.root, "data.target.root")
    return scenes.write_target(
        root, num_train=sc.num_target_train, num_val=sc.num_target_val, size=tuple(sc.target_size), seed=sc.seed
    )


def _read(cfg: Config, which: str, split: str) -> Split:
    """``data.<which>`` (source or target) through the readers' registry."""
    fmt = getattr(cfg.data, which).format
    if fmt in readers.GENERATED:
        return readers.read_split(readers.GENERATED[fmt][which], generate_scenes(cfg, which), split)
    return readers.read_split(fmt, _root(getattr(cfg.data, which).root, f"data.{which}.root"), split)


def read_source(cfg: Config) -> Split:
    return _read(cfg, "source", "train")


def read_target(cfg: Config, split: str) -> Split:
    return _read(cfg, "target", split)


def verify(split: Split, full: bool) -> None:
    """Open every file of a split (decode it too when ``full``): fail on the first bad one."""
    for sample in split.samples:
        images.check_pair(sample.image, sample.label, split.label_kind, full)


def load_splits(cfg: Config, check_files: bool = True) -> Splits:
    source = read_source(cfg)
    target_train = read_target(cfg, "train")
    target_val = read_target(cfg, "val")
    if not target_val.has_labels:
        raise UdasError(f"{target_val.root}: target val has no gtFine labels; evaluation needs them")
    labeled, _ = readers.choose_labeled(target_train, cfg.data.target.labeled, cfg.run.seed)
    if cfg.data.val_limit:
        target_val = target_val.subset(range(min(cfg.data.val_limit, len(target_val))))
    if check_files:
        full = cfg.data.verify == "full"
        for split in (source, target_train, target_val):
            verify(split, full)
    return Splits(source, target_train, labeled, target_val)
