"""Dataset readers: a folder in a known layout -> a :class:`Split` (a list of file pairs).

Readers only list and pair files; they never decode pixels (see ``images.py``) and never touch
Ray, so a bad folder fails at once, before any cluster work. A new dataset is one function
registered in ``READERS`` under its ``data.*.format`` name (the config's allowed formats come
from here); a format with train/val splits can also be a target.

Layouts:
  gta5        ROOT/images/NNNNN.png + ROOT/labels/NNNNN.png            (labelIds; one split)
  cityscapes  ROOT/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png
              + ROOT/gtFine/SPLIT/CITY/*_gtFine_labelIds.png            (labelIds)
  synthia     ROOT/RGB/*.png + ROOT/GT/LABELS/*.png                    (16-bit SYNTHIA ids; one split)
  folder      your own images: ROOT/SPLIT/images/*.{png,jpg,jpeg,bmp,webp,tif,tiff}
              + optional ROOT/SPLIT/labels/STEM.png                    (labelIds, or trainIds: data.*.label_ids)
  scenes      the embedded generator: source in the gta5 layout, target in the cityscapes one
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from udas_ray.errors import UdasError

CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelIds.png"


@dataclass(frozen=True)
class Sample:
    image: str  # absolute path
    label: Optional[str]  # absolute path, or None for an unlabeled image
    name: str  # file name of the image, used when exporting predictions


@dataclass(frozen=True)
class Split:
    """The files of one split of one dataset, in a fixed (sorted) order."""

    format: str
    root: str
    split: str
    samples: tuple[Sample, ...]
    label_kind: str = "labelids"
    skipped: int = 0  # files left out because their partner is missing
    notes: tuple[str, ...] = field(default=())
    label_dir: str = ""  # where this split's labels are (or would be), for error messages

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_labels(self) -> bool:
        return bool(self.samples) and all(s.label is not None for s in self.samples)

    def subset(self, indices, split: str | None = None) -> "Split":
        return replace(self, samples=tuple(self.samples[i] for i in indices), split=split or self.split)

    def without_labels(self) -> "Split":
        return replace(self, samples=tuple(replace(s, label=None) for s in self.samples))

    def describe(self) -> str:
        extra = f", skipped {self.skipped} unpaired files" if self.skipped else ""
        return f"{self.format} {self.split} at {self.root}: {len(self)} images{extra}"


def _require_dir(path: Path, what: str, hint: str) -> None:
    if not path.is_dir():
        raise UdasError(f"{path}: {what} not found; {hint}")


def _nonempty(split: Split) -> Split:
    if not split.samples:
        raise UdasError(f"{split.root}: the {split.format} {split.split} split holds no images")
    return split


def read_gta5(root: str | Path, split: str = "all") -> Split:
    root = Path(root).resolve()
    _require_dir(root, "GTA5 root", "expected ROOT/images/*.png and ROOT/labels/*.png")
    _require_dir(root / "images", "GTA5 images folder", "expected ROOT/images/*.png")
    _require_dir(root / "labels", "GTA5 labels folder", "expected ROOT/labels/*.png")
    images = {p.name: p for p in (root / "images").glob("*.png")}
    labels = {p.name: p for p in (root / "labels").glob("*.png")}
    paired = sorted(set(images) & set(labels))
    skipped = len(images) + len(labels) - 2 * len(paired)
    samples = tuple(Sample(str(images[n]), str(labels[n]), n) for n in paired)
    return _nonempty(Split("gta5", str(root), split, samples, "labelids", skipped))


def read_synthia(root: str | Path, split: str = "all") -> Split:
    root = Path(root).resolve()
    _require_dir(root / "RGB", "SYNTHIA RGB folder", "expected ROOT/RGB/*.png and ROOT/GT/LABELS/*.png")
    _require_dir(root / "GT" / "LABELS", "SYNTHIA label folder", "expected ROOT/GT/LABELS/*.png")
    images = {p.name: p for p in (root / "RGB").glob("*.png")}
    labels = {p.name: p for p in (root / "GT" / "LABELS").glob("*.png")}
    paired = sorted(set(images) & set(labels))
    skipped = len(images) + len(labels) - 2 * len(paired)
    samples = tuple(Sample(str(images[n]), str(labels[n]), n) for n in paired)
    return _nonempty(Split("synthia", str(root), split, samples, "synthia", skipped))


def read_cityscapes(root: str | Path, split: str = "train") -> Split:
    """Pairs every leftImg8bit image with its gtFine labelIds file.

    A split with no gtFine folder at all is read as unlabeled; a split whose gtFine folder
    exists but lacks one image's label is an error (a broken download, not a choice).
    """
    root = Path(root).resolve()
    image_dir = root / "leftImg8bit" / split
    _require_dir(image_dir, f"Cityscapes {split} images", f"expected ROOT/leftImg8bit/{split}/CITY/*{CITYSCAPES_IMAGE_SUFFIX}")
    label_dir = root / "gtFine" / split
    labeled = label_dir.is_dir()
    samples = []
    for image in sorted(image_dir.glob(f"*/*{CITYSCAPES_IMAGE_SUFFIX}")):
        label = None
        if labeled:
            stem = image.name[: -len(CITYSCAPES_IMAGE_SUFFIX)]
            label_path = label_dir / image.parent.name / f"{stem}{CITYSCAPES_LABEL_SUFFIX}"
            if not label_path.is_file():
                raise UdasError(
                    f"{image}: no label at {label_path}; restore the gtFine file or remove the image"
                )
            label = str(label_path)
        samples.append(Sample(str(image), label, image.name))
    return _nonempty(Split("cityscapes", str(root), split, tuple(samples), "labelids", label_dir=str(label_dir)))


FOLDER_IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_folder(root: str | Path, split: str = "train", label_kind: str = "labelids") -> Split:
    """Your own images as they are: ROOT/SPLIT/images/* with optional same-stem PNG labels.

    An image is labeled when ROOT/SPLIT/labels/<its stem>.png exists; images without one are
    unlabeled (the normal case for target-train; load_splits decides where labels are required).
    A label with no image, a non-PNG label, or two images sharing a stem is an error: each would
    silently drop or mismatch training data. Files of other types in images/ and hidden files
    (.DS_Store) are ignored. ``label_kind`` is the config's ``data.*.label_ids``.
    """
    root = Path(root).resolve()
    types = ",".join(t[1:] for t in FOLDER_IMAGE_TYPES)
    image_dir, label_dir = root / split / "images", root / split / "labels"
    _require_dir(image_dir, f"{split} images folder", f"expected ROOT/{split}/images/*.{{{types}}}")
    images: dict[str, Path] = {}
    for path in _visible_files(image_dir):
        if path.suffix.lower() not in FOLDER_IMAGE_TYPES:
            continue
        if path.stem in images:
            raise UdasError(f"{path}: same stem as {images[path.stem].name} beside it; "
                            "image stems must be unique (their labels are STEM.png); rename one")
        images[path.stem] = path
    if not images:
        raise UdasError(f"{image_dir}: no images (expected *.{{{types}}}); add images or fix data.*.root")
    labels: dict[str, Path] = {}
    if label_dir.is_dir():
        for path in _visible_files(label_dir):
            if path.suffix.lower() != ".png":
                raise UdasError(f"{path}: labels must be PNG files (lossless), named after their image: STEM.png")
            if path.stem not in images:
                raise UdasError(f"{path}: label without an image; expected {image_dir}/{path.stem}.<image type>")
            labels[path.stem] = path
    samples = tuple(
        Sample(str(image), str(labels[stem]) if stem in labels else None, image.name)
        for image, stem in sorted((image, stem) for stem, image in images.items())
    )
    return Split("folder", str(root), split, samples, label_kind, label_dir=str(label_dir))


@dataclass(frozen=True)
class Reader:
    read: Callable[..., Split]  # (root, split), or (root, split, label_kind) when label_ids
    has_splits: bool  # train/val folders (a target needs them); False: one split, read as "all"
    label_ids: bool = False  # True: read(root, split, label_kind) takes the config's data.*.label_ids


READERS: dict[str, Reader] = {
    "gta5": Reader(read_gta5, has_splits=False),
    "synthia": Reader(read_synthia, has_splits=False),
    "cityscapes": Reader(read_cityscapes, has_splits=True),
    "folder": Reader(read_folder, has_splits=True, label_ids=True),
}
# The embedded benchmark, generated on first use: its source in the gta5 layout, its target in cityscapes'.
GENERATED = {"scenes": {"source": "gta5", "target": "cityscapes"}}
SOURCE_FORMATS = (*READERS, *GENERATED)
TARGET_FORMATS = (*(name for name, r in READERS.items() if r.has_splits), *GENERATED)


def read_split(fmt: str, root: str | Path, split: str, label_ids: str = "labelids") -> Split:
    """The ``split`` of the dataset at ``root``; ``split`` is ignored by single-split formats,
    ``label_ids`` (labelids / trainids) by formats whose labels have fixed ids."""
    if fmt not in READERS:
        raise UdasError(f"unknown dataset format {fmt!r}; choose one of {', '.join(sorted(READERS))}")
    reader = READERS[fmt]
    if reader.label_ids:
        return reader.read(root, split if reader.has_splits else "all", label_ids)
    return reader.read(root, split if reader.has_splits else "all")


def choose_labeled(split: Split, count: int, seed: int, key: str = "data.target.labeled") -> tuple[Split, Split]:
    """Pick ``count`` labeled images reproducibly from ``seed``; returns (labeled, the rest)."""
    if count > len(split):
        raise UdasError(f"{key}={count} but {split.root} {split.split} holds only {len(split)} images; lower it")
    labeled = [i for i, s in enumerate(split.samples) if s.label is not None]
    if count and not labeled:
        raise UdasError(f"{key}={count} but {split.root} has no labels for {split.split}; set it to 0")
    if count > len(labeled):
        raise UdasError(f"{key}={count} but only {len(labeled)} of the {len(split)} {split.split} images "
                        f"at {split.root} have labels; lower it")
    # Drawn among the labeled images: a fully labeled split gives the same pick as ever.
    order = np.random.default_rng(seed).permutation(len(labeled))
    chosen = sorted(labeled[i] for i in order[:count].tolist())
    rest = sorted(set(range(len(split))) - set(chosen))
    return split.subset(chosen, split.split + "-labeled"), split.subset(rest)
