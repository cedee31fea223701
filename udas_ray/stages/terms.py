"""The loss terms a segmentation stage sums, each declared once with its weight key and inputs.

    L = sum_i w_i * CE_i / sum_i w_i  +  sum_j w_j * R_j

The cross-entropy terms CE_i (source, CutMix, labeled target, the ClassMix and masked-image
terms) are averaged with their weights, so a stage that learns from more streams does not take
larger steps (summed, the four terms of a teacher with labeled target images diverged at
train.lr 1e-2); the regularizers R_j (adversarial, entropy, feature distance) are added with
their weights.

A term is a function of one :class:`Step` (the batch on the device and the segmenter's logits
on each stream, computed at most once, with its encoder's features where a term asks for them),
registered with :func:`term`: its name (logged as ``loss_<name>``), the dotted config key of its
weight (``None``: always 1) and the batch streams it reads. A term whose weight is 0, or whose
streams the data cannot fill (CutMix needs labeled target images), is left out of the stage. A
term may own a *companion*: a second network with its own update (the discriminator of the
adversarial term, the mean teacher of the ``ema`` stage) or with none (the frozen encoder of the
feature distance).

Every loss setting reaches a term one way: from the config the stage trains with, ``step.cfg``
(its weight too, read through :meth:`Term.weight` by the stage's task); the stage's spec only
names the terms it sums.

Adding a term is one function here and one config key in ``config.Loss``; a stage kind lists it
in ``udas_ray.stages.kinds`` (docs/EXTENDING.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from udas_ray import losses
from udas_ray.checkpoints import unwrap
from udas_ray.classes import IGNORE, NUM_CLASSES
from udas_ray.config import Config
from udas_ray.inference import to_input
from udas_ray.models import build_discriminator, to_memory_format


class Step:
    """One training batch on the device, and the segmenter's logits on each stream, computed once.

    The logits come back in float32 whatever the autocast dtype: the losses are computed in
    float32 anyway, and a companion's network, run outside autocast after the step, gets inputs
    of its own dtype (a no-op at fp32).

    The segmenter's encoder features on a stream (:meth:`features`) come from the same forward
    pass as its logits when asked for before the logits are (:meth:`keep_features`, from a
    companion's ``before_step``); a step that asks for none runs the model as it always did."""

    def __init__(self, model: torch.nn.Module, batch: dict, device, cfg: Config, companions: dict):
        self.model, self.batch, self.device, self.cfg, self.companions = model, batch, device, cfg, companions
        self.notes: dict[str, float] = {}  # values a term wants logged beside its loss
        self._logits: dict[str, torch.Tensor] = {}
        self._features: dict[str, torch.Tensor] = {}
        self._keep: set[str] = set()  # streams whose logits' forward pass also keeps the features

    def image(self, stream: str) -> torch.Tensor:
        return to_input(self.batch[f"{stream}_image"], self.device, self.cfg.train.channels_last)

    def label(self, stream: str) -> torch.Tensor:
        return self.batch[f"{stream}_label"].to(self.device).long()

    def logits(self, stream: str) -> torch.Tensor:
        if stream not in self._logits:
            if stream in self._keep:
                logits, self._features[stream] = self.model(self.image(stream), features=True)
            else:
                logits = self.model(self.image(stream))
            self._logits[stream] = logits.float()  # once a step, not at every term's call
        return self._logits[stream]

    def keep_features(self, stream: str) -> None:
        """Have the forward pass that computes the logits on ``stream`` keep the encoder's features."""
        self._keep.add(stream)

    def features(self, stream: str) -> torch.Tensor:
        """The segmenter's encoder features on a stream (its backbone's last output, in the
        autocast dtype), with their gradient path; from the logits' pass when kept
        (:meth:`keep_features`), else from one more forward pass."""
        if stream not in self._features:
            if stream in self._logits:
                self._features[stream] = self.model(self.image(stream), features=True)[1]
            else:
                self.keep_features(stream)
                self.logits(stream)
        return self._features[stream]

    def teacher_probs(self, stream: str) -> torch.Tensor:
        """The mean teacher's softmax on a stream (the ema stage's companion), computed once a step."""
        key = f"teacher:{stream}"
        if key not in self._logits:
            with torch.no_grad():
                self._logits[key] = torch.softmax(self.companions["mix"].net(self.image(stream)), dim=1)
        return self._logits[key]

    def predictions(self, stream: str) -> torch.Tensor:
        """The segmenter's softmax on a stream as a fixed target (no gradient); reuses its logits."""
        if stream in self._logits:
            return torch.softmax(self._logits[stream].detach(), dim=1)
        with torch.no_grad():
            return torch.softmax(self.model(self.image(stream)), dim=1)


@dataclass(frozen=True)
class Term:
    name: str
    loss: Callable[[Step], torch.Tensor]
    weight_key: str | None  # dotted config key of the weight; None = 1
    reads: tuple[str, ...]  # batch streams: "sup", "mix", "target", "labeled"
    companion: type | None = None
    regularizer: bool = False  # added with its weight, outside the weighted mean of the CE terms

    def weight(self, cfg: Config) -> float:
        return 1.0 if self.weight_key is None else float(cfg.get(self.weight_key))


TERMS: dict[str, Term] = {}


def term(name: str, *, weight: str | None = None, reads: tuple[str, ...], companion: type | None = None,
         regularizer: bool = False):
    """Register a loss term (see the module docstring)."""

    def register(fn: Callable[[Step], torch.Tensor]):
        TERMS[name] = Term(name, fn, weight, tuple(reads), companion, regularizer)
        return fn

    return register


def classmix_masks(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, H, W) float masks covering, per image, a random half of the classes in its label."""
    masks = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    for i, label in enumerate(labels):
        present = label.unique()
        present = present[present != IGNORE]
        if len(present) == 0:
            continue
        order = torch.randperm(len(present), generator=generator)[: (len(present) + 1) // 2]
        masks[i] = torch.isin(label, present[order.to(present.device)]).float()
    return masks


def classmix_loss(step: Step, pasted: str, base: str, base_probs: torch.Tensor, threshold: float,
                  note: str) -> torch.Tensor:
    """Half the classes of each ``pasted`` image (with their labels) pasted onto a ``base`` image
    whose other pixels take the argmax of ``base_probs``, weighted by the share of that image's
    pixels more confident than ``threshold`` (DACS); cross-entropy of the segmenter on the mix.
    The mean quality is logged as ``note``."""
    image, label, under = step.image(pasted), step.label(pasted), step.image(base)
    with torch.no_grad():
        confidence, pseudo = base_probs.max(dim=1)
        quality = (confidence > threshold).float().mean(dim=(1, 2))
        mask = classmix_masks(label)
        mixed = mask[:, None] * image + (1 - mask[:, None]) * under
        mixed_label = torch.where(mask.bool(), label, pseudo)
        weight = torch.where(mask.bool(), torch.ones_like(mask), quality[:, None, None].expand_as(mask))
    per_pixel = F.cross_entropy(step.model(mixed), mixed_label, ignore_index=IGNORE, reduction="none")
    valid = (mixed_label != IGNORE).float()
    step.notes[note] = quality.mean().item()
    return (per_pixel * weight * valid).sum() / valid.sum().clamp_min(1.0)


def patch_keep_mask(n: int, height: int, width: int, patch: int, ratio: float, device,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 1, H, W) float mask for masked image consistency: the image is cut into ``patch`` x
    ``patch`` squares (the last row and column may be smaller) and each is dropped (0) with
    probability ``ratio``, kept (1) otherwise."""
    rows, cols = -(-height // patch), -(-width // patch)
    keep = (torch.rand(n, 1, rows, cols, generator=generator) >= ratio).float()
    full = keep.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return full[:, :, :height, :width].to(device)


def masked_loss(step: Step, image: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the segmenter on ``image`` with random patches blanked out (set to the
    normalised mean colour, 0), against ``label`` of the whole image: what is hidden must be
    inferred from its context. ``weight`` (N,) scales each image's pixels (the quality weight)."""
    c = step.cfg.loss
    keep = patch_keep_mask(image.shape[0], image.shape[2], image.shape[3], c.mic_patch, c.mic_ratio, image.device)
    per_pixel = F.cross_entropy(step.model(image * keep), label, ignore_index=IGNORE, reduction="none")
    valid = (label != IGNORE).float()
    if weight is not None:
        per_pixel = per_pixel * weight[:, None, None]
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


def total_loss(weighted: list[tuple["Term", float, torch.Tensor]]) -> torch.Tensor:
    """The weighted mean of the cross-entropy terms plus the weighted regularizers."""
    ce = [(w, loss) for t, w, loss in weighted if not t.regularizer]
    total = sum(w * loss for w, loss in ce) / sum(w for w, _ in ce) if ce else 0.0
    return total + sum(w * loss for t, w, loss in weighted if t.regularizer)


# ------------------------------------------------------------------------------ companions
class Adversary:
    """The output-level discriminator (AdaptSegNet): trained after each segmenter step to call
    source softmax maps 0 and target maps 1; frozen while the segmenter's loss is computed."""

    state_keys = ("disc", "opt_d")

    def __init__(self, cfg: Config, model: torch.nn.Module):
        self.cfg = cfg
        self.net = to_memory_format(build_discriminator(NUM_CLASSES, ndf=cfg.model.discriminator_ndf),
                                    cfg.train.channels_last)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.train.lr_discriminator, betas=(0.9, 0.99))

    def prepare(self, session) -> None:
        self.session = session
        self.net.to(session.device)
        session.broadcast_from_rank0([self.net])

    def before_step(self, step: Step) -> None:
        self.net.requires_grad_(False)  # the segmenter's step must not move the discriminator

    def after_step(self, step: Step, index: int) -> dict:
        self.net.requires_grad_(True)
        loss_d = losses.discriminator_loss(self.net, step.logits("sup"), step.logits("target"),
                                           self.cfg.loss.temperature)
        self.opt.zero_grad(set_to_none=True)
        loss_d.backward()
        self.session.average_gradients(self.net)
        self.opt.step()
        return {"loss_d": loss_d.item()}

    def set_lr(self, lr_of) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr_of(self.cfg.train.lr_discriminator)

    def state_dict(self) -> dict:
        return {"disc": self.net.state_dict(), "opt_d": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt_d"])


class FrozenEncoder:
    """The companion of the feature distance: a copy of the segmenter's encoder (its backbone)
    as the stage starts, made once per stage before any step or resumed checkpoint (so a resumed
    stage copies the same starting weights again: the ``init`` model, the pretrained encoder, or
    the seeded random one). In eval mode (BatchNorm on its running statistics), no gradient, the
    model's memory format, on the training device; outside the optimizer (built before it
    exists) and the checkpoints (its state is empty)."""

    def __init__(self, cfg: Config, model: torch.nn.Module):
        self.net = copy.deepcopy(unwrap(model).backbone).eval().requires_grad_(False)

    def prepare(self, session) -> None:
        self.net.to(session.device)
        session.broadcast_from_rank0([self.net])  # what DDP does to the model: rank 0's start on every rank

    def before_step(self, step: Step) -> None:
        step.keep_features("sup")  # the segmenter's pass on the source keeps its encoder's features

    def after_step(self, step: Step, index: int) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def thing_cells(label: torch.Tensor, classes, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) bool: the cells of an (h, w) feature map over an (N, H, W) label that hold at
    least one pixel of ``classes`` (a max-pool of the class mask). DAFormer counts a cell only
    where one class covers 75 % of it; at the small images' coarse cells (16 x 16 pixels for
    EfficientNet-Lite0 at output stride 16) that would drop nearly every thin or distant object."""
    mask = torch.isin(label, torch.as_tensor(list(classes), device=label.device))
    return F.adaptive_max_pool2d(mask[:, None].float(), tuple(size))[:, 0] > 0


def feature_distance(features: torch.Tensor, frozen: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Mean over the ``cells`` (N, h, w) of the L2 distance between two (N, C, h, w) feature maps,
    in float32; 0 where no cell counts."""
    if not cells.any():
        return torch.zeros((), device=features.device)
    distance = torch.linalg.vector_norm(features.float() - frozen.float(), dim=1)
    return distance[cells].mean()


# ---------------------------------------------------------------------------------- terms
@term("seg", reads=("sup",))
def supervised_cross_entropy(step: Step) -> torch.Tensor:
    """Pixel cross-entropy on the supervised stream (source, labeled or pseudo-labeled target)."""
    return losses.segmentation_loss(step.logits("sup"), step.label("sup"))


@term("cm", weight="loss.lambda_cm", reads=("mix",))
def cutmix_cross_entropy(step: Step) -> torch.Tensor:
    """Cross-entropy on CutMix of source with labeled target images (colour-jittered)."""
    return losses.segmentation_loss(step.logits("mix"), step.label("mix"))


@term("labeled", weight="loss.lambda_target", reads=("labeled",))
def labeled_target_cross_entropy(step: Step) -> torch.Tensor:
    """Cross-entropy on whole labeled target images (colour-jittered), beside the source batch."""
    return losses.segmentation_loss(step.logits("labeled"), step.label("labeled"))


@term("intra", weight="loss.lambda_intra", reads=("labeled", "target"))
def intra_domain_mix(step: Step) -> torch.Tensor:
    """ClassMix of labeled target images onto unlabeled ones, the unlabeled pixels labeled by the
    segmenter's own confident predictions: unlabeled target pixels are learned from while the
    teacher trains, not only in the rounds."""
    return classmix_loss(step, "labeled", "target", step.predictions("target"), step.cfg.loss.mix_confidence,
                         note="intra_quality")


@term("adv", weight="loss.lambda_adv", reads=("sup", "target"), companion=Adversary, regularizer=True)
def adversarial(step: Step) -> torch.Tensor:
    """Make the discriminator take target softmax maps for source ones."""
    loss = step.cfg.loss
    return losses.adversarial_loss(step.companions["adv"].net, step.logits("target"), loss.temperature,
                                   loss.confidence)


@term("mic", weight="loss.lambda_mic", reads=("sup",))
def masked_image_consistency(step: Step) -> torch.Tensor:
    """Masked image consistency (MIC, Hoyer et al. 2023). A student predicts, from its
    pseudo-labeled image with patches masked out, the pseudo-label of the whole image (already
    confidence-filtered by the teacher's K views). In the ``ema`` stage the mean teacher labels
    the unmasked target image and each image counts with the share of pixels it is confident
    about, as in MIC."""
    if "mix" in step.companions:  # the ema stage: the mean teacher labels the whole target image
        confidence, pseudo = step.teacher_probs("target").max(dim=1)
        quality = (confidence > step.cfg.self_training.ema_threshold).float().mean(dim=(1, 2))
        step.notes["mic_quality"] = quality.mean().item()
        return masked_loss(step, step.image("target"), pseudo, quality)
    return masked_loss(step, step.image("sup"), step.label("sup"))


@term("entropy", weight="loss.lambda_entropy", reads=("target",), regularizer=True)
def target_entropy(step: Step) -> torch.Tensor:
    """Entropy minimisation on unlabeled target predictions (ADVENT's direct term)."""
    return losses.entropy_loss(step.logits("target"))


# Which kinds list it (udas_ray.stages.kinds): the teacher and the ema stage, the adapted models
# that learn from source images and their labels, as DAFormer's UDA training does. An ema stage
# that starts from the teacher (self_training.init) is kept near the teacher's encoder (which,
# with the term on, was kept near its own start). Not the students: their supervised stream is pseudo-labeled target
# images, whose labels are the teacher's guesses. Not the baselines: they are the reference rows
# (no adaptation, supervised, oracle), trained with cross-entropy alone as the literature's are.
@term("fd", weight="loss.lambda_fd", reads=("sup",), companion=FrozenEncoder, regularizer=True)
def imagenet_feature_distance(step: Step) -> torch.Tensor:
    """ImageNet feature distance (DAFormer, Hoyer et al. 2022): the segmenter's encoder features
    on the source images kept near those of the encoder the stage started from (ImageNet's for a
    pretrained model), on the feature cells showing a class of ``loss.fd_classes``."""
    features = step.features("sup")
    cells = thing_cells(step.label("sup"), step.cfg.loss.fd_classes, features.shape[-2:])
    if not cells.any():  # no object in the batch: no second encoder pass
        return torch.zeros((), device=features.device)
    with torch.no_grad():
        frozen = step.companions["fd"].net(step.image("sup"))
    return feature_distance(features, frozen, cells)
