"""SimGAN's refiner (Shrivastava et al., 2017): synthetic source images made to look real while
each pixel stays where it was, so the source labels remain valid.

* :class:`Refiner`: a 3x3 convolution to ``ngf`` channels, ``n_blocks`` residual blocks (the
  CycleGAN's, reflection padding, without InstanceNorm), a 1x1 convolution to 3 channels. Every
  layer keeps the full resolution (no stride, no pooling, no per-image statistics): a refined
  pixel depends only on a (4 n_blocks + 3)-pixel square of its input (19x19 with 4 blocks), so
  the network can recolour and retexture but has no way to move an object or paint one from
  elsewhere in the image. It outputs a *residual*: ``refined = clamp(input + r(input), -1, 1)``
  with the last convolution starting at zero, so an untrained refiner is the identity, the
  self-regularisation term starts at 0, and training only has to learn the change of appearance
  (a refiner that had to rebuild the whole image first would spend its first steps, and its
  first sample grids, on blurry copies whose labels do not hold).
* :func:`self_regularization_loss`: lambda times the per-pixel mean L1 between refined and input
  (or between their image gradients, ``style.reg_on: gradients``), taken on the refiner's output
  before its clamp (:meth:`Refiner.unbounded`).
* :func:`local_adversarial_loss`: logistic loss of a fully convolutional discriminator's
  per-patch logits (:func:`udas_ray.models.cyclegan.build_patch_discriminator`), averaged over
  the patches, so every local patch must look real on its own.
* :class:`HistoryBuffer`: earlier refined images; the discriminator sees the current batch of
  refined images together with as many drawn from the buffer.

The paper states neither the self-regularisation weight nor the buffer size; the defaults here:

* ``style.lambda_reg = 1``: with a per-pixel mean on images in [-1, 1], a uniform shift of 0.1
  (13 grey levels) costs 0.1, a seventh of the adversarial loss where the discriminator cannot
  tell (log 2 = 0.69). Palette, texture and noise changes stay cheap; repainting a region as
  another class (a change near 1 there) costs more than fooling the discriminator gains.
* ``style.pool_size = 50`` (CycleGAN's pool size): at batch size 1 the buffer spans the refiner's
  output of the last ~50-100 steps, old enough to remind the discriminator of artefacts the
  refiner has since dropped, recent enough that history does not make its task trivially easy.

Two departures from the paper, both off by default: ``style.noise_channels`` (a noise input, see
:class:`Refiner`) and ``style.reg_on: gradients`` (the self-regularisation on image gradients, one
of the feature maps the paper names). What they did on the embedded benchmark: docs/RESULTS.md.

Images are float tensors in [-1, 1], (N, 3, H, W), as in :mod:`udas_ray.models.cyclegan`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from udas_ray.models.cyclegan import ImagePool, ResnetBlock

__all__ = ["HistoryBuffer", "Refiner", "build_refiner", "local_adversarial_loss", "self_regularization_loss"]


class Refiner(nn.Module):
    """``noise`` > 0: that many channels of N(0, 1) noise, drawn afresh at every call, enter the
    first convolution beside the image (``style.noise_channels``). The paper's refiner is a
    deterministic map of its input; a target whose look includes sensor noise and random texture
    is then out of its reach, and the adversarial term pushes it to blur instead (measured, see
    docs/RESULTS.md). With noise it can draw them; the self-regularisation still holds every pixel
    near its input."""

    def __init__(self, ngf: int = 64, n_blocks: int = 4, noise: int = 0):
        super().__init__()
        self.stem = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(3 + noise, ngf, 3), nn.ReLU(True))
        self.blocks = nn.Sequential(*[ResnetBlock(ngf, norm=False) for _ in range(n_blocks)])
        self.out = nn.Conv2d(ngf, 3, 1)
        self.noise = noise
        self.arch = {"ngf": ngf, "n_blocks": n_blocks, "noise": noise}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unbounded(x).clamp(-1.0, 1.0)

    def unbounded(self, x: torch.Tensor) -> torch.Tensor:
        """``input + r(input)`` before the clamp to [-1, 1]. Training charges the
        self-regularisation on this: a pixel pushed past the bound passes no gradient through the
        clamp, not even from the L1 term, and a refiner can then lock into a flat saturated image
        for good (measured: one seed in three, docs/RESULTS.md); on the unbounded output the L1
        term keeps pulling such a pixel back towards its input."""
        h = x
        if self.noise:
            n, _, height, width = x.shape
            h = torch.cat([x, torch.randn(n, self.noise, height, width, dtype=x.dtype, device=x.device)], 1)
        return x + self.out(self.blocks(self.stem(h)))


def build_refiner(ngf: int = 64, n_blocks: int = 4, noise: int = 0) -> Refiner:
    """PyTorch's default initialisation (without normalisation, the CycleGAN's N(0, 0.02) would
    shrink the features block by block), and a zero last convolution: the identity at start."""
    refiner = Refiner(ngf, n_blocks, noise)
    nn.init.zeros_(refiner.out.weight)
    nn.init.zeros_(refiner.out.bias)
    return refiner


# ---------------------------------------------------------------------------- losses
def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(horizontal, vertical) differences of neighbouring pixels, per channel."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def self_regularization_loss(refined: torch.Tensor, original: torch.Tensor, weight: float,
                             space: str = "pixels") -> torch.Tensor:
    """``weight`` x mean |psi(refined) - psi(original)| (a mean, not the paper's sum, so the same
    weight holds at any image size), with the paper's feature map psi (``style.reg_on``):

    * ``pixels``: the identity, the paper's own choice: every pixel stays near its input;
    * ``gradients``: the differences to the right and lower neighbours (the paper names image
      derivatives as another choice), the mean of the two terms: edges, where labels change,
      must stay where and as strong as they were, while a region may change its colour as a
      whole, which the identity charges for at every pixel of it."""
    if space == "gradients":
        return weight * sum(F.l1_loss(r, o) for r, o in zip(image_gradients(refined), image_gradients(original))) / 2
    return weight * F.l1_loss(refined, original)


def local_adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Mean over patches of the logistic loss: -log D(x) for ``real``, -log(1 - D(x)) otherwise,
    with D(x) = sigmoid(logit) the probability that the patch is a real target patch."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


# ------------------------------------------------------------------------- history
class HistoryBuffer(ImagePool):
    """Up to ``size`` earlier refined images. :meth:`query` returns the current batch followed by
    as many images drawn at random from the buffer (so the discriminator's fakes are half current,
    half history; only the current ones while the buffer is empty), then stores the current
    images: appended while there is room, afterwards each in a random slot. Saved and loaded
    as :class:`~udas_ray.models.cyclegan.ImagePool`. ``size=0``: no history, the batch as it is."""

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size <= 0:
            return images
        current = images.detach()
        drawn = [self.images[self.rng.randrange(len(self.images))] for _ in current] if self.images else []
        batch = torch.cat([current, *(d.to(current.device) for d in drawn)], 0)
        for image in current:
            image = image.unsqueeze(0).clone()
            if len(self.images) < self.size:
                self.images.append(image)
            else:
                self.images[self.rng.randrange(self.size)] = image
        return batch
