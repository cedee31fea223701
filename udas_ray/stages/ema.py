"""The online alternative to offline rounds: a mean teacher (DACS, Tranheden et al. 2021;
DAFormer, Hoyer et al. 2022).

Every step the teacher, an exponential moving average of the student, labels a batch of target
images; half of the classes of each source image are pasted onto a target image (ClassMix)
with their labels, the rest of the pixels keep the teacher's labels, weighted by the share of
target pixels the teacher is confident about. The stage's loss is the mean of CE(source) and that
weighted CE(mixed), each of weight 1 (with ``loss.lambda_mic`` > 0, the masked-image term joins
the mean with its weight: ``terms.total_loss``).
"""

from __future__ import annotations

import copy

import torch

from udas_ray.checkpoints import unwrap
from udas_ray.stages.terms import Step, classmix_loss, classmix_masks, term  # noqa: F401 (classmix_masks: API)


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
    return classmix_loss(step, "sup", "target", step.teacher_probs("target"), step.cfg.self_training.ema_threshold,
                         note="mix_quality")
