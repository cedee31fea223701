"""AdaptSegNet's output-level discriminator.

A fully-convolutional net over softmax maps (N, num_classes, H, W): four 4x4
stride-2 convolutions with ndf, 2ndf, 4ndf, 8ndf channels and LeakyReLU(0.2),
then a 4x4 stride-2 convolution to one channel. It returns logits (no sigmoid),
one per patch, of shape (N, 1, ~H/32, ~W/32); inputs need H, W >= 32.
Use ``BCEWithLogitsLoss`` on the output.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["FCDiscriminator", "build_discriminator"]


class FCDiscriminator(nn.Module):
    def __init__(self, num_classes: int, ndf: int = 64):
        super().__init__()
        chans = [num_classes, ndf, ndf * 2, ndf * 4, ndf * 8]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(chans[-1], 1, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_discriminator(num_classes: int, ndf: int = 64) -> nn.Module:
    """AdaptSegNet discriminator; ndf=64 as in the paper, ~16 is enough on a CPU."""
    return FCDiscriminator(num_classes, ndf)
