"""The online alternative to offline rounds: a mean teacher (DACS, Tranheden et al. 2021;
DAFormer, Hoyer et al. 2022).

Every step the teacher, an exponential moving average of the student, labels a batch of target
images; half of the classes of each source image are pasted onto a target image (ClassMix)
with their labels, the rest of the pixels keep the teacher's labels, weighted by the share of
target pixels the teacher is confident about. Loss = CE(source) + weighted CE(mixed).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from udas_ray.checkpoints import unwrap
from udas_ray.classes import IGNORE
from udas_ray.stages.terms import Step, term


def make_teacher(model: torch.nn.Module) -> torch.nn.Module:
    teacher = copy.deepcopy(unwrap(model)).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def update_teacher(teacher: torch.nn.Module, student: torch.nn.Module, step: int, decay: float) -> None:
    """teacher <- a * teacher + (1 - a) * student, with a ramped up over the first steps."""
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    student_state = unwrap(student).state_dict()
    for name, value in teacher.state_dict().items():
        if value.dtype.is_floating_point:
            value.mul_(alpha).add_(student_state[name].detach(), alpha=1 - alpha)
        else:
            value.copy_(student_state[name])


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


class MeanTeacher:
    """The companion of the ``mix`` term: an exponential moving average of the student, updated
    after every step; it is what the ``ema`` stage evaluates, saves and labels with."""

    state_keys = ("ema",)

    def __init__(self, cfg, model: torch.nn.Module):
        self.cfg = cfg
        self.net = make_teacher(model)

    @property
    def scored(self) -> torch.nn.Module:
        return self.net

    def prepare(self, session) -> None:
        self.net.to(session.device)

    def after_step(self, step: Step, index: int) -> dict:
        update_teacher(self.net, step.model, index, self.cfg.self_training.ema_decay)
        return {}

    def state_dict(self) -> dict:
        return {"ema": self.net.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["ema"])


@term("mix", reads=("sup", "target"), companion=MeanTeacher)
def mean_teacher_mix(step: Step) -> torch.Tensor:
    """ClassMix of source onto target images, target pixels labeled by the mean teacher and
    weighted by the share of them it is confident about."""
    teacher = step.companions["mix"].net
    source, source_label, target = step.image("sup"), step.label("sup"), step.image("target")
    with torch.no_grad():
        confidence, pseudo = torch.softmax(teacher(target), dim=1).max(dim=1)
        quality = (confidence > step.companions["mix"].cfg.self_training.ema_threshold).float().mean(dim=(1, 2))
        mask = classmix_masks(source_label)
        mixed = mask[:, None] * source + (1 - mask[:, None]) * target
        mixed_label = torch.where(mask.bool(), source_label, pseudo)
        weight = torch.where(mask.bool(), torch.ones_like(mask), quality[:, None, None].expand_as(mask))
    per_pixel = F.cross_entropy(step.model(mixed), mixed_label, ignore_index=IGNORE, reduction="none")
    valid = (mixed_label != IGNORE).float()
    step.notes["mix_quality"] = quality.mean().item()
    return (per_pixel * weight * valid).sum() / valid.sum().clamp_min(1.0)
