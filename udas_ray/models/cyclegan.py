"""CycleGAN's networks (Zhu et al., 2017) for restyling synthetic source images as target ones.

* :class:`ResnetGenerator`: c7s1-ngf, d(2ngf), d(4ngf), ``n_blocks`` x R(4ngf), u(2ngf), u(ngf),
  c7s1-3 + tanh; InstanceNorm (no affine parameters), reflection padding. ngf=64 and 9 blocks is
  the paper's 256x256 setting; ngf=16 with 3-4 blocks is enough for the embedded benchmark on a CPU.
  Fully convolutional: any H, W divisible by 4 comes back at the same size.
* :class:`PatchDiscriminator`: the 70x70 PatchGAN for ``n_layers=3`` (4x4 convolutions,
  LeakyReLU 0.2, InstanceNorm from the second layer on), one real/fake logit per patch.
* :class:`ImagePool`: the buffer of past fakes the discriminators are shown (Shrivastava et al.).
* :func:`lsgan_loss`: least-squares GAN loss.

Images are float tensors in [-1, 1], (N, 3, H, W); :func:`to_tensor` / :func:`to_uint8` convert
from / to uint8 (N, H, W, 3) arrays.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ImagePool", "PatchDiscriminator", "ResnetGenerator", "build_generator", "build_patch_discriminator",
    "cycle_loss", "lsgan_loss", "to_tensor", "to_uint8",
]


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """N(0, 0.02) convolution weights and zero biases, as in the reference implementation."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class ResnetBlock(nn.Module):
    """x + two 3x3 convolutions; ``norm=False`` leaves out the InstanceNorms, whose per-image
    statistics would let every pixel see the whole image (SimGAN's refiner stays local)."""

    def __init__(self, dim: int, norm: bool = True):
        super().__init__()
        norm_layer = _norm if norm else lambda channels: nn.Identity()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), norm_layer(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), norm_layer(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    def __init__(self, ngf: int = 64, n_blocks: int = 9, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), _norm(ngf), nn.ReLU(True)]
        for mult in (1, 2):  # two stride-2 downsamples
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), _norm(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):  # two stride-2 upsamples
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.arch = {"ngf": ngf, "n_blocks": n_blocks}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """n_layers stride-2 convolutions (ndf, 2ndf, ... capped at 8ndf), one stride-1 convolution,
    then a 1-channel stride-1 convolution: logits of shape (N, 1, ~H/2^n_layers - 2, ...)."""

    def __init__(self, ndf: int = 64, n_layers: int = 3, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1), _norm(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_generator(ngf: int = 64, n_blocks: int = 9) -> ResnetGenerator:
    return init_weights(ResnetGenerator(ngf, n_blocks))


def build_patch_discriminator(ndf: int = 64, n_layers: int = 3) -> PatchDiscriminator:
    """n_layers=3 is the 70x70 PatchGAN."""
    return init_weights(PatchDiscriminator(ndf, n_layers))


# ---------------------------------------------------------------------------- losses
def lsgan_loss(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss: mean (D(x) - 1)^2 for ``real``, mean D(x)^2 otherwise."""
    target = torch.ones_like(prediction) if real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """L1 between an image and its round trip through both generators."""
    return F.l1_loss(reconstructed, original)


# ------------------------------------------------------------------------------ pool
class ImagePool:
    """Past generated images: with a full pool, each new fake is, with probability 1/2, swapped
    for a random stored one (which is shown to the discriminator instead). ``size=0`` = no pool."""

    def __init__(self, size: int = 50, seed: int | None = None):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size <= 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.random() < 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i].to(image.device, copy=True))
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        """Stored images as float16 (half the bytes in a checkpoint; they are in [-1, 1])."""
        stack = torch.cat(self.images).half() if self.images else torch.empty(0)
        return {"images": stack, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.images = [im.unsqueeze(0).float() for im in state["images"]]
        self.rng.setstate(state["rng"])


# ---------------------------------------------------------------------- conversions
def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    t = torch.as_tensor(np.asarray(images))
    if t.dim() == 3:
        t = t.unsqueeze(0)
    return t.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = images.detach().float().clamp(-1, 1).add(1.0).mul(127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
