"""The kinds of segmentation stage, declared as data, and :func:`build_spec`, which reads them.

A kind says what its supervised stream trains on, which loss terms it sums (see
``udas_ray.stages.terms``), how its images are augmented, and its end-of-stage hook (AdaBN).
The driver runs two more kinds of stage that train no segmenter: ``pseudo`` (labelling) and
``style`` (CycleGAN or SimGAN); they have their own modules.

  source_only        source labels only (the "no adaptation" row)
  source_randomized  the same with appearance randomization (and rare-class sampling)
  teacher            source + the adversarial term; with labeled target images also CutMix of
                     source with them (both directions), the images whole, and ClassMix of them
                     onto unlabeled target images (intra-domain mixing)
  ema                a mean teacher labels target images mixed with source ones (DACS / DAFormer),
                     and masked target images must match its labels (MIC, loss.lambda_mic)
  supervised         labeled target only (the SL baseline)
  oracle             every target-train label (the upper bound)
  student            pseudo-labeled target, a fixed share of labeled target (ground truth wins
                     over pseudo-labels), the noisy student's augmentation, source objects
                     pasted with their labels (self_training.source_classmix), masked image
                     consistency (MIC, loss.lambda_mic)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from udas_ray.config import Config
from udas_ray.data.batches import AugmentParams, Item, Streams, items
from udas_ray.data.readers import Split
from udas_ray.data.splits import Splits
from udas_ray.errors import UdasError
from udas_ray.stages.segment import SegmentSpec
from udas_ray.stages.terms import TERMS


@dataclass(frozen=True)
class StageKind:
    name: str
    trains_on: Literal["source", "labeled_target", "target_train", "pseudo"]
    terms: tuple[str, ...] = ("seg",)
    randomize: bool = False  # augment.randomize applies to the supervised stream
    rare_class_sampling: bool = False  # data.rare_class_sampling applies to the source
    noisy: bool = False  # a student: jitter, and the self_training.noisy/randomize/source_share options
    mixes_domains: bool = False  # source pixels meet target pixels: the source is read at target size
    adabn: bool = False  # train.adabn applies: BatchNorm statistics from target-train at the end
    labels_target: bool = False  # its model labels the next round's pseudo-labels
    starts_from: Literal["scratch", "previous", "teacher"] = "scratch"  # with self_training.init=teacher


KINDS: dict[str, StageKind] = {k.name: k for k in (
    StageKind("source_only", "source"),
    StageKind("source_randomized", "source", randomize=True, rare_class_sampling=True),
    StageKind("teacher", "source", ("seg", "cm", "target", "intra", "adv", "entropy"), randomize=True,
              rare_class_sampling=True, adabn=True, labels_target=True),
    StageKind("ema", "source", ("seg", "mix", "mic"), randomize=True, rare_class_sampling=True, mixes_domains=True,
              adabn=True, starts_from="teacher"),
    StageKind("supervised", "labeled_target"),
    StageKind("oracle", "target_train"),
    StageKind("student", "pseudo", ("seg", "mic"), noisy=True, labels_target=True, starts_from="previous"),
)}


def _source_weights(cfg: Config, source: list[Item]) -> list[float] | None:
    rcs = cfg.data.rare_class_sampling
    if not rcs.enabled:
        return None
    from udas_ray.data.sampling import cached_class_pixel_counts, rare_class_weights

    counts = cached_class_pixel_counts(source, cfg.source_size, Path(cfg.run.dir) / "cache")
    return rare_class_weights(counts, rcs.temperature).tolist()


def _pseudo_weights(cfg: Config, pseudo: list[Item]) -> list[float] | None:
    """Rare-class sampling weights of a round's pseudo-labeled images (self_training.rare_class_sampling),
    or None (uniform) when every pseudo-label pixel is ignored. Counted afresh each time: a round
    run again rewrites its labels under the same paths."""
    from udas_ray.data.sampling import class_pixel_counts, rare_class_weights

    counts = class_pixel_counts(pseudo, tuple(cfg.data.image_size))
    if not counts.any():
        return None
    return rare_class_weights(counts, cfg.data.rare_class_sampling.temperature).tolist()


def _sup_weights(kind: StageKind, cfg: Config, sup: list[Item]) -> list[float] | None:
    """Rare-class sampling of the supervised stream: the source's (data.rare_class_sampling) for
    the kinds that take it, a round's pseudo-labels' (self_training.rare_class_sampling) for
    students; None draws uniformly."""
    if kind.rare_class_sampling:
        return _source_weights(cfg, sup)
    if kind.trains_on == "pseudo" and cfg.self_training.rare_class_sampling:
        return _pseudo_weights(cfg, sup)
    return None


def _supervised(kind: StageKind, cfg: Config, splits: Splits, name: str, pseudo: Split | None) -> list[Item]:
    """The items of the supervised stream, or a one-line error saying what is missing."""
    if kind.trains_on == "source":
        return items(splits.source)
    if kind.trains_on == "labeled_target":
        if not splits.target_labeled:
            raise UdasError(f"stage {name}: the supervised baseline needs labeled target images; "
                            "set data.target.labeled > 0")
        return items(splits.target_labeled)
    if kind.trains_on == "target_train":
        if not splits.target_train.has_labels:
            raise UdasError(f"{splits.target_train.root}: the oracle needs target-train labels; set run.baselines=false")
        return items(splits.target_train)
    if pseudo is None or not len(pseudo):
        raise UdasError(f"stage {name}: no pseudo-labeled target images to train the student on")
    known = {s.image for s in splits.target_labeled.samples}  # their ground truth wins
    return [item for item in items(pseudo) if item[0] not in known]


def starts_from(cfg: Config, kind: str) -> str | None:
    """The stage whose model a stage of ``kind`` starts from ("previous", "teacher" or
    "supervised"), or None for a stage trained from scratch."""
    if kind == "teacher":
        warm = cfg.self_training.teacher_init == "supervised" and cfg.data.target.labeled > 0
        return "supervised" if warm else None
    declared = KINDS[kind].starts_from
    return declared if declared != "scratch" and cfg.self_training.init == "teacher" else None


def starting_points() -> dict:
    """What later stages of a plan may start from (:func:`starts_from`'s answers), none yet."""
    return {"previous": None, "teacher": None, "supervised": None}


def note_finished(points: dict, kind: str, value) -> None:
    """Record in ``points`` that a stage of ``kind`` finished; ``value`` is what stands for it
    (its model's path for the driver, its name for the fingerprints)."""
    if kind == "supervised":
        points["supervised"] = value
    if kind in KINDS and KINDS[kind].labels_target:
        points["previous"] = value
        points["teacher"] = points["teacher"] or value


def build_spec(cfg: Config, splits: Splits, kind: str, name: str, out_dir: str | Path, *,
               pseudo: Split | None = None, init: str | None = None, steps: int | None = None) -> SegmentSpec:
    """A stage's streams, augmentation and loss terms, from its kind's declaration and the data."""
    if kind not in KINDS:
        raise ValueError(f"unknown stage kind {kind!r}")
    k = KINDS[kind]
    sup = _supervised(k, cfg, splits, name, pseudo)
    labeled, unlabeled = items(splits.target_labeled), items(splits.target_train.without_labels())
    available = {"sup": True, "mix": bool(labeled), "labeled": bool(labeled), "target": bool(unlabeled)}
    terms = {t: TERMS[t].weight(cfg) for t in k.terms
             if TERMS[t].weight(cfg) > 0 and all(available[s] for s in TERMS[t].reads)}
    reads = {s for t in terms for s in TERMS[t].reads}
    st = cfg.self_training
    alternates = []  # a student's other supervised examples: labeled target, some source
    if k.trains_on == "pseudo" and labeled:
        if st.labeled_share > 0 and sup:
            alternates.append((labeled, st.labeled_share))
        else:  # the labeled images are part of the pool (all of it when every image is labeled)
            sup = sup + labeled
    if k.noisy and st.source_share > 0:
        alternates.append((items(splits.source), st.source_share))
    paste = items(splits.source) if k.noisy and st.source_classmix > 0 else []
    on_source = k.trains_on == "source" and not k.mixes_domains
    streams = Streams(
        sup=sup,
        sup_size=tuple(cfg.source_size if on_source else cfg.data.image_size),
        target_size=tuple(cfg.data.image_size),
        mix_source=items(splits.source) if "mix" in reads else [],
        mix_target=labeled if "mix" in reads else [],
        target=unlabeled if "target" in reads else [],
        labeled=labeled if "labeled" in reads else [],
        sup_weights=_sup_weights(k, cfg, sup),
        sup_alternates=tuple(alternates),
        paste=paste,
        paste_weights=_source_weights(cfg, paste) if paste else None,
    )
    randomize = (k.randomize and cfg.augment.randomize.enabled) or (k.noisy and st.randomize)
    augment = AugmentParams.from_config(cfg.augment, jitter_sup=k.noisy, randomize=randomize,
                                        classmix_sup=k.noisy and st.noisy,
                                        paste_share=st.source_classmix if k.noisy else 0.0)
    return SegmentSpec(
        name=name,
        kind=kind,
        streams=streams,
        augment=augment,
        terms=terms,
        val=items(splits.target_val),
        steps=steps or cfg.train.steps,
        out_dir=str(out_dir),
        init=init,
        adabn=unlabeled if k.adabn and cfg.adabn else [],
    )
