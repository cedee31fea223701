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

from udas_ray import losses
from udas_ray.checkpoints import unwrap
from udas_ray.classes import IGNORE
from udas_ray.inference import to_input


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


def ema_step(model, teacher, opt, batch: dict, step: int, cfg, device) -> dict:
    """One student step on source + ClassMix(source, target), then the teacher's EMA update."""
    source = to_input(batch["sup_image"], device)
    source_label = batch["sup_label"].to(device).long()
    target = to_input(batch["adv_image"], device)
    loss_source = losses.segmentation_loss(model(source), source_label)
    with torch.no_grad():
        confidence, pseudo = torch.softmax(teacher(target), dim=1).max(dim=1)
        quality = (confidence > cfg.self_training.ema_threshold).float().mean(dim=(1, 2))
        mask = classmix_masks(source_label)
        mixed = mask[:, None] * source + (1 - mask[:, None]) * target
        mixed_label = torch.where(mask.bool(), source_label, pseudo)
        weight = torch.where(mask.bool(), torch.ones_like(mask), quality[:, None, None].expand_as(mask))
    per_pixel = F.cross_entropy(model(mixed), mixed_label, ignore_index=IGNORE, reduction="none")
    valid = (mixed_label != IGNORE).float()
    loss_mix = (per_pixel * weight * valid).sum() / valid.sum().clamp_min(1.0)
    total = loss_source + loss_mix
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    update_teacher(teacher, model, step, cfg.self_training.ema_decay)
    return {"loss_seg": loss_source.item(), "loss_mix": loss_mix.item(), "mix_quality": quality.mean().item(),
            "loss": total.item()}
