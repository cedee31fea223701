"""Training examples, built on the fly from file lists: the one place images meet augmentation.

A segmentation stage draws, for every slot of a batch, from up to four streams (the loss terms
of ``udas_ray.stages.terms`` say which they read; the others stay empty):

  sup      a supervised image and its label (source for the teacher and source-only model,
           labeled target for the SL baseline, every target-train label for the oracle,
           pseudo-labeled target for a student)
  mix      CutMix of a source image with a *labeled* target image (box from the target pasted into
           the source, labels mixed with the same mask), then colour jitter
  target   an unlabeled target image (the adversarial and entropy terms, the mean teacher's mix)
  labeled  a whole labeled target image, colour-jittered (the teacher's ``labeled`` term and its
           intra-domain mix)

The supervised stream may draw some examples from other lists (``sup_alternates``): a student
takes a share of its examples from the labeled target images (their ground truth) and,
optionally, from the source. A student may also paste half the classes of a source image, with
their true labels, onto a share of its pseudo-labeled images (``paste``, cross-domain ClassMix
as in DACS).

Samples are drawn uniformly with replacement, as in iteration-based UDA training. The same
:class:`BatchBuilder` runs in Ray Data (``map_batches``) and in a plain in-process loop, and is
pure numpy: it gets slot ids and returns uint8 arrays.

Seeding: slot ``i`` of a stage is drawn from ``default_rng([seed, i])`` with ``seed =``
:func:`stage_seed` ``(run.seed, stage name)``, in whichever process builds it. Every Ray Data actor
gets the same seed, and every slot id is built once, so examples stay distinct across actors
while a run with the same seed sees the same example in every slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from udas_ray.data import augment, images
from udas_ray.data.readers import Split

# (image path, label path or None, label kind)
Item = tuple[str, "str | None", str]


def items(split: Split) -> list[Item]:
    return [(s.image, s.label, split.label_kind) for s in split.samples]


@dataclass(frozen=True, kw_only=True)
class Streams:
    sup: list[Item]
    sup_size: tuple[int, int]
    target_size: tuple[int, int]
    mix_source: list[Item] = field(default_factory=list)
    mix_target: list[Item] = field(default_factory=list)
    target: list[Item] = field(default_factory=list)  # unlabeled target images
    labeled: list[Item] = field(default_factory=list)  # labeled target images, whole
    sup_weights: list[float] | None = None  # sampling probabilities of ``sup`` (rare-class sampling)
    # (items, share): with probability ``share`` a supervised example is drawn from ``items`` instead
    sup_alternates: tuple[tuple[list[Item], float], ...] = ()
    paste: list[Item] = field(default_factory=list)  # labeled source images whose classes a student pastes
    paste_weights: list[float] | None = None  # their sampling probabilities (rare-class sampling)

    @property
    def has_mix(self) -> bool:
        return bool(self.mix_source) and bool(self.mix_target)

    @property
    def has_target(self) -> bool:
        return bool(self.target)


@dataclass(frozen=True, kw_only=True)
class AugmentParams:
    flip: bool = True
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    cutmix_alpha: float = 1.0
    cutmix_both_directions: bool = False  # half the mixes paste a source box into the target image
    jitter_sup: bool = False  # jitter the supervised stream too (the mix stream always is)
    randomize: dict | None = None  # appearance randomization of the supervised stream (replaces jitter)
    classmix_sup: bool = False  # ClassMix two supervised examples (a noisy student's target images)
    paste_share: float = 0.0  # share of supervised examples that get half the classes of a ``paste`` image
    scale: tuple[float, float] | None = None  # random rescale factor range, then a random crop
    crop: tuple[int, int] | None = None  # (H, W) of that crop; None = each stream's own size

    @classmethod
    def from_config(cls, augment, *, jitter_sup: bool = False, randomize: bool = False,
                    classmix_sup: bool = False, paste_share: float = 0.0) -> "AugmentParams":
        """From the ``augment`` config section; the flags are the stage kind's."""
        strengths = augment.randomize.model_dump(exclude={"enabled"}) if randomize else None
        return cls(flip=augment.flip, **augment.jitter.model_dump(), cutmix_alpha=augment.cutmix.alpha,
                   cutmix_both_directions=augment.cutmix.both_directions, jitter_sup=jitter_sup,
                   randomize=strengths, classmix_sup=classmix_sup, paste_share=paste_share,
                   scale=tuple(augment.scale) if augment.scale else None,
                   crop=tuple(augment.crop) if augment.crop else None)


def stage_seed(seed: int, *names: str) -> int:
    """A seed in [0, 2**63) from ``run.seed`` and names (the stage's, and what it seeds): stages
    draw different examples, and the same stage of two runs with the same ``run.seed`` the same."""
    text = ":".join([str(int(seed)), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def load_item(item: Item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    image_path, label_path, kind = item
    image = images.resize_image(images.read_image(image_path), size)
    if label_path is None:
        return image, None
    return image, images.resize_label(images.read_label(label_path, kind), size)


class BatchBuilder:
    """Slot ids in, a training batch out: ``{"sup_image", "sup_label"[, "mix_image",
    "mix_label"][, "target_image"][, "labeled_image", "labeled_label"]}`` as uint8 arrays of
    shape (N, H, W, 3) / (N, H, W).

    Slot ``i`` always gives the same example for the same ``seed`` (see the module docstring)."""

    def __init__(self, streams: Streams, params: AugmentParams, *, seed: int):
        self.streams = streams
        self.params = params
        self.seed = int(seed)

    def _rng(self, slot: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(slot)])

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        return augment.color_jitter(image, rng, p.brightness, p.contrast, p.saturation, p.hue)

    def _geometric(self, rng, image, label=None):
        """Random rescale and crop (when ``scale`` or ``crop`` is set), then a random mirror."""
        p = self.params
        if p.scale or p.crop:
            image, label = augment.random_scale_crop(image, label, rng, p.scale or (1.0, 1.0),
                                                     p.crop or image.shape[:2])
        if p.flip and rng.random() < 0.5:
            return augment.hflip(image, label) if label is not None else (augment.hflip(image), None)
        return image, label

    def _draw_sup(self, rng: np.random.Generator) -> Item:
        s = self.streams
        if s.sup_alternates:
            u = rng.random()
            for pool, share in s.sup_alternates:
                if u < share:
                    return pool[rng.integers(len(pool))]
                u -= share
        if s.sup_weights is not None:
            return s.sup[rng.choice(len(s.sup), p=s.sup_weights)]
        return s.sup[rng.integers(len(s.sup))]

    def example(self, slot: int) -> dict[str, np.ndarray]:
        s, p, rng = self.streams, self.params, self._rng(slot)
        out = {}
        image, label = load_item(self._draw_sup(rng), s.sup_size)
        if p.classmix_sup:  # half the classes of this example pasted onto another one
            other_image, other_label = load_item(self._draw_sup(rng), s.sup_size)
            mask = augment.classmix_mask(label, rng)
            image, label = augment.mix_with_mask(image, label, other_image, other_label, mask)
        if p.paste_share and s.paste and rng.random() < p.paste_share:  # source objects, true labels (DACS)
            weights = s.paste_weights
            pick = rng.choice(len(s.paste), p=weights) if weights is not None else rng.integers(len(s.paste))
            src_image, src_label = load_item(s.paste[pick], s.sup_size)
            mask = augment.classmix_mask(src_label, rng)
            image, label = augment.mix_with_mask(src_image, src_label, image, label, mask)
        image, label = self._geometric(rng, image, label)
        if p.randomize:
            image = augment.randomize_appearance(image, rng, **p.randomize)
        elif p.jitter_sup:
            image = self._jitter(image, rng)
        out["sup_image"], out["sup_label"] = image, label
        if s.has_mix:
            src_image, src_label = load_item(s.mix_source[rng.integers(len(s.mix_source))], s.target_size)
            tgt_image, tgt_label = load_item(s.mix_target[rng.integers(len(s.mix_target))], s.target_size)
            lam = augment.sample_cutmix_lambda(rng, self.params.cutmix_alpha)
            box = augment.cutmix_box(*s.target_size, lam, rng)
            if p.cutmix_both_directions and rng.random() < 0.5:  # a source box in the target image
                image, label = augment.cutmix(tgt_image, tgt_label, src_image, src_label, box)
            else:  # a target box in the source image
                image, label = augment.cutmix(src_image, src_label, tgt_image, tgt_label, box)
            image, label = self._geometric(rng, image, label)
            out["mix_image"], out["mix_label"] = self._jitter(image, rng), label
        if s.has_target:
            image, _ = load_item(s.target[rng.integers(len(s.target))], s.target_size)
            out["target_image"], _ = self._geometric(rng, image)
        if s.labeled:
            image, label = load_item(s.labeled[rng.integers(len(s.labeled))], s.target_size)
            image, label = self._geometric(rng, image, label)
            out["labeled_image"], out["labeled_label"] = self._jitter(image, rng), label
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        examples = [self.example(slot) for slot in batch["id"]]
        return {key: np.stack([e[key] for e in examples]) for key in examples[0]}
