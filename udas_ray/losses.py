"""Loss functions: L_seg, L_cm, L_adv and the discriminator's, entropy (which stage sums which is
declared in ``udas_ray.stages.terms``).

Domain labels follow AdaptSegNet: the discriminator calls source 0 and target 1; the
segmenter's adversarial term asks it to call target predictions "source".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from udas_ray.classes import IGNORE

SOURCE, TARGET = 0.0, 1.0


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy averaged over labelled pixels (label 255 ignored); 0 if none is."""
    label = label.long()
    if not (label != IGNORE).any():
        return logits.sum() * 0.0  # keeps the graph (and DDP) intact
    return F.cross_entropy(logits, label, ignore_index=IGNORE)


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel entropy of the softmax, divided by log(C) so it lies in [0, 1]."""
    log_p = F.log_softmax(logits, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return entropy.mean() / math.log(logits.shape[1])


def sharpen(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax with temperature: T < 1 sharpens the maps the discriminator sees."""
    return F.softmax(logits / temperature, dim=1)


def confidence_mask(probs: torch.Tensor, threshold: float, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, h, w) float mask of the cells, at the discriminator's output size, whose pixels are
    confident on average (mean of max-softmax >= threshold); all ones when threshold is 0."""
    if threshold <= 0:
        return torch.ones(probs.shape[0], 1, *size, device=probs.device)
    confidence = probs.max(dim=1, keepdim=True).values
    pooled = F.adaptive_avg_pool2d(confidence, size)
    return (pooled >= threshold).float()


def domain_loss(d_logits: torch.Tensor, domain: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of discriminator logits against a constant domain label, averaged
    over the (unmasked) cells; 0 when the mask keeps no cell."""
    target = torch.full_like(d_logits, domain)
    per_cell = F.binary_cross_entropy_with_logits(d_logits, target, reduction="none")
    if mask is None:
        return per_cell.mean()
    kept = mask.sum()
    return (per_cell * mask).sum() / kept.clamp_min(1.0)


def adversarial_loss(discriminator, target_logits, temperature: float = 1.0, confidence: float = 0.0):
    """The segmenter's adversarial term: make the discriminator take target maps for source."""
    probs = sharpen(target_logits, temperature)
    d_out = discriminator(probs)
    mask = confidence_mask(probs.detach(), confidence, d_out.shape[-2:]) if confidence > 0 else None
    return domain_loss(d_out, SOURCE, mask)


def discriminator_loss(discriminator, source_logits, target_logits, temperature: float = 1.0):
    """The discriminator's own loss on detached maps: source -> 0, target -> 1."""
    d_source = discriminator(sharpen(source_logits.detach(), temperature))
    d_target = discriminator(sharpen(target_logits.detach(), temperature))
    return 0.5 * (domain_loss(d_source, SOURCE) + domain_loss(d_target, TARGET))
