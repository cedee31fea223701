"""Every kind of stage a run may hold, each declared once as one entry of :data:`KINDS`.

A :class:`StageKind` says

  when      whether a run's plan holds it (a function of the config), under which stage name,
            and whether it repeats once per self-training round (``per_round``)
  run       its runner: a function of a :class:`StageContext` that trains or labels and returns
            what the manifest records of the stage (its model, labels or restyled source, metrics)
  reads     the splits it reads (:meth:`StageKind.splits_read`) and, by *role*, the earlier stages
            whose outputs it reads: ``source`` (a restyled source), ``labels_from`` (pseudo-labels)
            and ``starts_from`` (the model it starts from, or labels with)
  provides  the roles it fills for later stages
  outputs   its folders in the run folder, deleted when it runs again

and, for the kinds that train a segmenter, what its supervised stream trains on, which loss terms
it sums (``udas_ray.stages.terms``), how its images are augmented and its end-of-stage hook
(AdaBN); :func:`build_spec` reads those. The driver (``udas_ray.driver``) reads only these
entries: its plan is the table in order, each stage's parents are the latest earlier stages that
provide the roles it reads (:class:`StagePlan`), and it runs a stage with its kind's runner.

  source_only        source labels only (the "no adaptation" row)
  source_randomized  the same with appearance randomization (and rare-class sampling)
  style              CycleGAN or SimGAN (``style.method``), then the whole source restyled with it
  source_restyled    source labels only, on the restyled source (the style_transfer or style_refined row)
  supervised         labeled target only (the SL baseline)
  teacher            source + the adversarial term; with labeled target images also CutMix of
                     source with them (both directions), the images whole, and ClassMix of them
                     onto unlabeled target images (intra-domain mixing)
  pseudo             the latest teacher or student labels the unlabeled target images
  student            pseudo-labeled target, a fixed share of labeled target (ground truth wins
                     over pseudo-labels), the noisy student's augmentation, source objects
                     pasted with their labels (self_training.source_classmix), masked image
                     consistency (MIC, loss.lambda_mic)
  ema                a mean teacher labels target images mixed with source ones (DACS / DAFormer),
                     and masked target images must match its labels (MIC, loss.lambda_mic);
                     with the teacher, the only kinds with the ImageNet feature distance
                     (loss.lambda_fd; udas_ray.stages.terms says why)
  oracle             every target-train label (the upper bound)
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal

from udas_ray import tracking
from udas_ray.config import Config
from udas_ray.data.batches import AugmentParams, Item, Streams, items
from udas_ray.data.readers import Split
from udas_ray.data.splits import Splits
from udas_ray.errors import UdasError
from udas_ray.stages import pseudo, segment, style, translate
from udas_ray.stages.segment import SegmentSpec
from udas_ray.stages.terms import TERMS

log = logging.getLogger("udas_ray")

# Roles: what a stage leaves for later ones. A stage that reads a role gets the latest earlier
# stage of the plan that provides it (none: it goes without).
LABELLER = "labeller"  # a model that labels target images: the teacher, then each student
TEACHER = "teacher"  # the first of them
SUPERVISED = "supervised"  # the model trained on the labeled target images alone
RESTYLED_SOURCE = "restyled source"
PSEUDO_LABELS = "pseudo-labels"

# Folders in the run folder, with the stage's ``{name}`` and ``{round}``: every stage's own and its
# Ray Train checkpoints', a round's published pseudo-labels, the restyled source.
STAGE_FOLDERS = ("stages/{name}", "ray/{name}")
PSEUDO_ROUND = "pseudo/round_{round}"
RESTYLED = "style/source"


# ------------------------------------------------------------------------ a run's stages
@dataclass(frozen=True)
class StagePlan:
    """One stage of a run's plan: a declared kind under its stage name, with the earlier stages
    whose outputs it reads (by name; None where it reads none)."""

    name: str
    kind: str
    row: bool  # a row of the summary table
    round: int = 0  # its self-training round (per-round kinds)
    restyled_by: str | None = None  # trains on the source that stage restyled
    labelled_by: str | None = None  # trains on the pseudo-labels of that stage
    model_from: str | None = None  # starts from that stage's model (a pseudo-label stage: labels with it)

    @property
    def restyled(self) -> bool:
        return self.restyled_by is not None

    @property
    def parents(self) -> list[str]:
        """The stages whose outputs it reads: a parent run again makes it run again."""
        return [p for p in dict.fromkeys((self.restyled_by, self.labelled_by, self.model_from)) if p]

    def place(self, run_dir: Path, template: str) -> Path:
        """``run_dir / template`` with this stage's name and round filled in (:data:`STAGE_FOLDERS`)."""
        return run_dir / template.format(name=self.name, round=self.round)


@dataclass(frozen=True)
class StageContext:
    """What the driver hands a stage's runner: the run, the stage, and the manifest entries of the
    stages it reads (``parents``, by name: their ``model``, ``labels`` or ``restyled``)."""

    cfg: Config
    splits: Splits
    stage: StagePlan
    run_dir: Path
    parents: dict[str, dict]
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    callbacks: Callable[[], list] | None = None  # Ray Train callbacks for each fit (a sweep's reports)

    @property
    def out_dir(self) -> Path:
        return self.stage.place(self.run_dir, STAGE_FOLDERS[0])

    @property
    def storage(self) -> Path:
        """Where Ray Train keeps its checkpoints, under the stage's name (``STAGE_FOLDERS[1]``)."""
        return self.run_dir / "ray"

    def output_of(self, parent: str, field: str) -> str:
        return self.parents[parent][field]

    def tracker(self):
        return tracking.logger_for(self.tracking_uri, self.mlflow_run_id)


# ------------------------------------------------------------------------------ runners
def train_segmenter(ctx: StageContext) -> dict:
    """The runner of every segmentation kind: its spec from the declaration and the parents'
    outputs, fitted with Ray Train; returns the model file and the final target-val scores."""
    cfg, stage, kind = ctx.cfg, ctx.stage, KINDS[ctx.stage.kind]
    splits, labels = ctx.splits, None
    if stage.labelled_by:
        labels = pseudo.pseudo_split(ctx.output_of(stage.labelled_by, "labels"), splits.target_train)
    if stage.restyled_by:
        restyled = translate.read_translated(ctx.output_of(stage.restyled_by, "restyled"))
        if kind.source == "style.train_on":
            restyled = translate.teacher_source(splits.source, restyled, cfg.style.train_on)
        splits = replace(splits, source=restyled)
    init = ctx.output_of(stage.model_from, "model") if stage.model_from else None
    spec = build_spec(cfg, splits, kind.name, stage.name, ctx.out_dir, pseudo=labels, init=init,
                      steps=cfg.get(kind.steps))
    spec = replace(spec, tracking_uri=ctx.tracking_uri, mlflow_run_id=ctx.mlflow_run_id)
    metrics = segment.run_on_ray(cfg, spec, ctx.storage, ctx.callbacks() if ctx.callbacks else None)
    log.info("[%s] target-val mIoU %.2f  pixel accuracy %.2f", stage.name, metrics["miou"], metrics["pixel_accuracy"])
    metrics.pop("confusion", None)
    return {"model": str(ctx.out_dir / segment.MODEL_FILE), "metrics": metrics}


def label_target(ctx: StageContext) -> dict:
    """The runner of a pseudo-label round: the model it starts from labels target-train."""
    final = ctx.stage.place(ctx.run_dir, PSEUDO_ROUND)
    return pseudo.label_round(ctx.cfg, ctx.splits.target_train, ctx.output_of(ctx.stage.model_from, "model"), final,
                              ctx.tracker(), name=ctx.stage.name, round=ctx.stage.round)


def restyle_source(ctx: StageContext) -> dict:
    """The runner of the style stage: train the style method, then restyle the whole source set
    with it (a restyled set already written by the same generator is reused)."""
    spec = style.StyleSpec.from_splits(ctx.splits.source, ctx.splits.target_train, ctx.out_dir,
                                       tracking_uri=ctx.tracking_uri, mlflow_run_id=ctx.mlflow_run_id)
    metrics = style.run_on_ray(ctx.cfg, spec, ctx.storage)
    restyled = ctx.run_dir / RESTYLED
    stale = translate.restyled_changes(restyled, metrics["generator"], ctx.cfg.style.translate_at)
    if stale:  # made by another generator or at another size: not this stage's output
        log.info("[style] %s was restyled otherwise (%s): restyling again", restyled, "; ".join(stale))
        shutil.rmtree(restyled)
    translated = translate.translate_source(metrics["generator"], ctx.splits.source, restyled, ctx.cfg)
    log.info("[style] restyled %d source images into %s", len(translated), translated.root)
    return {"model": metrics["generator"], "restyled": translated.root,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}


# -------------------------------------------------------------------------- declarations
def _always(cfg: Config) -> bool:
    return True


@dataclass(frozen=True)
class Start:
    """The model a stage starts from: that of the latest earlier stage providing ``role``, when
    ``when(cfg)``; otherwise it starts from scratch."""

    role: str
    when: Callable[[Config], bool] = _always


@dataclass(frozen=True)
class StageKind:
    name: str
    run: Callable[[StageContext], dict]
    # ---- the plan
    when: Callable[[Config], bool] = _always  # the run's plan holds it
    stage_name: str | Callable[[Config], str] = ""  # "" = the kind's name; "{round}" = the round
    per_round: bool = False  # one stage per self-training round, beside the kinds next to it that are too
    row: bool = True  # a row of the summary table
    again: str = "training it again"  # what the log says when it runs again
    # ---- what it reads and leaves
    reads: tuple[str, ...] = ()  # the splits of a kind that trains no segmenter (see splits_read)
    source: Literal["original", "restyled", "style.train_on"] = "original"  # when the plan restyles it
    labels_from: str | None = None  # the role whose pseudo-labels it trains on
    starts_from: Start | None = None  # None: from scratch
    provides: tuple[str, ...] = ()  # roles
    outputs: tuple[str, ...] = STAGE_FOLDERS
    # ---- a segmentation kind (build_spec); None: a kind that trains no segmenter
    trains_on: Literal["source", "labeled_target", "target_train", "pseudo"] | None = None
    terms: tuple[str, ...] = ("seg",)
    randomize: bool = False  # augment.randomize applies to the supervised stream
    rare_class_sampling: bool = False  # data.rare_class_sampling applies to the source
    noisy: bool = False  # a student: jitter, and the self_training.noisy/randomize/source_share options
    mixes_domains: bool = False  # source pixels meet target pixels: the source is read at target size
    adabn: bool = False  # train.adabn applies: BatchNorm statistics from target-train at the end
    steps: str = "train.steps"  # the key of its number of steps (null there: train.steps)

    @property
    def source_role(self) -> str | None:
        """The role whose restyled source it trains on, if it may."""
        return None if self.source == "original" else RESTYLED_SOURCE

    def named(self, cfg: Config, round: int = 0) -> str:
        name = self.stage_name(cfg) if callable(self.stage_name) else self.stage_name or self.name
        return name.format(round=round)

    def output_paths(self, run_dir: Path, stage: StagePlan) -> list[Path]:
        return [stage.place(run_dir, template) for template in self.outputs]

    def splits_read(self, cfg: Config, restyled: bool) -> tuple[str, ...]:
        """The splits a stage of this kind reads, for its recorded inputs: those declared, or for
        a segmentation kind every split :func:`build_spec` may draw from (a restyled source is a
        parent's output, not a split). Errs on the side of more: a stage is run again when one
        of them changes."""
        if self.trains_on is None:
            return self.reads
        reads = ["target_val"]  # every segmentation stage is evaluated on it
        if (self.trains_on == "source" or _source_alternate(self, cfg) or _source_paste(self, cfg)) and not restyled:
            reads.append("source")
        if self.trains_on != "source" or self.adabn or any(s != "sup" for t in self.terms for s in TERMS[t].reads):
            reads.append("target_train")
        return tuple(reads)


def _baselines(cfg: Config) -> bool:
    return cfg.run.baselines


def _restyles(cfg: Config) -> bool:
    return cfg.style.enabled


def _offline(cfg: Config) -> bool:
    return cfg.self_training.mode in ("offline", "both")


def _from_teacher(cfg: Config) -> bool:
    return cfg.self_training.init == "teacher"


def _warm_teacher(cfg: Config) -> bool:
    return cfg.self_training.teacher_init == "supervised"


def _style_row(cfg: Config) -> str:
    """style_transfer (CycleGAN) or style_refined (SimGAN): the summary row of the restyled source."""
    return style.METHODS[cfg.style.method].row


# The table, in plan order.
KINDS: dict[str, StageKind] = {k.name: k for k in (
    StageKind("source_only", train_segmenter, when=_baselines, trains_on="source"),
    StageKind("source_randomized", train_segmenter, trains_on="source", randomize=True, rare_class_sampling=True,
              when=lambda cfg: cfg.run.baselines and (cfg.augment.randomize.enabled
                                                      or cfg.data.rare_class_sampling.enabled)),
    StageKind("style", restyle_source, when=_restyles, row=False, reads=("source", "target_train"),
              provides=(RESTYLED_SOURCE,), outputs=(*STAGE_FOLDERS, "style")),
    StageKind("source_restyled", train_segmenter, when=_restyles, stage_name=_style_row, trains_on="source",
              source="restyled"),
    StageKind("supervised", train_segmenter, trains_on="labeled_target", provides=(SUPERVISED,),
              when=lambda cfg: cfg.data.target.labeled > 0 and (cfg.run.supervised or cfg.run.baselines
                                                                 or _warm_teacher(cfg))),
    StageKind("teacher", train_segmenter, trains_on="source",
              terms=("seg", "cm", "labeled", "intra", "adv", "entropy", "fd"), randomize=True, rare_class_sampling=True, adabn=True, source="style.train_on",
              starts_from=Start(SUPERVISED, when=_warm_teacher), provides=(LABELLER, TEACHER)),
    StageKind("pseudo", label_target, when=_offline, per_round=True, stage_name="pseudo_{round}", row=False,
              again="labelling the target images again", reads=("target_train",), starts_from=Start(LABELLER),
              provides=(PSEUDO_LABELS,), outputs=(*STAGE_FOLDERS, PSEUDO_ROUND, "pseudo/.round_{round}.staging")),
    StageKind("student", train_segmenter, when=_offline, per_round=True, stage_name="round_{round}", trains_on="pseudo",
              terms=("seg", "mic"), noisy=True, labels_from=PSEUDO_LABELS, provides=(LABELLER,),
              starts_from=Start(LABELLER, when=_from_teacher), steps="self_training.steps"),
    StageKind("ema", train_segmenter, when=lambda cfg: cfg.self_training.mode in ("ema", "both"), trains_on="source",
              terms=("seg", "mix", "mic", "fd"), randomize=True, rare_class_sampling=True, mixes_domains=True,
              adabn=True, starts_from=Start(TEACHER, when=_from_teacher), steps="self_training.steps"),
    StageKind("oracle", train_segmenter, when=_baselines, trains_on="target_train"),
)}


# ------------------------------------------------------------- a segmentation stage's spec
def _source_alternate(kind: StageKind, cfg: Config) -> bool:
    """A student draws a share of its examples from the source (self_training.source_share)."""
    return kind.noisy and cfg.self_training.source_share > 0


def _source_paste(kind: StageKind, cfg: Config) -> bool:
    """A student pastes source objects onto its examples (self_training.source_classmix)."""
    return kind.noisy and cfg.self_training.source_classmix > 0


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


def build_spec(cfg: Config, splits: Splits, kind: str, name: str, out_dir: str | Path, *,
               pseudo: Split | None = None, init: str | None = None, steps: int | None = None) -> SegmentSpec:
    """A segmentation stage's streams, augmentation and loss terms, from its kind's declaration and
    the data. A term is left out when its weight is 0 or the data cannot fill its streams."""
    if kind not in KINDS or KINDS[kind].trains_on is None:
        raise ValueError(f"not a segmentation stage kind: {kind!r}")
    k = KINDS[kind]
    sup = _supervised(k, cfg, splits, name, pseudo)
    labeled, unlabeled = items(splits.target_labeled), items(splits.target_train.without_labels())
    available = {"sup": True, "mix": bool(labeled), "labeled": bool(labeled), "target": bool(unlabeled)}
    terms = tuple(t for t in k.terms if TERMS[t].weight(cfg) > 0 and all(available[s] for s in TERMS[t].reads))
    reads = {s for t in terms for s in TERMS[t].reads}
    st = cfg.self_training
    alternates = []  # a student's other supervised examples: labeled target, some source
    if k.trains_on == "pseudo" and labeled:
        if st.labeled_share > 0 and sup:
            alternates.append((labeled, st.labeled_share))
        else:  # the labeled images are part of the pool (all of it when every image is labeled)
            sup = sup + labeled
    if _source_alternate(k, cfg):
        alternates.append((items(splits.source), st.source_share))
    paste = items(splits.source) if _source_paste(k, cfg) else []
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
