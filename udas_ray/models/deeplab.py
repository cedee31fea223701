"""DeepLab-v2: a dilated ResNet backbone plus the ASPP classifier (summed branches).

The backbone's parameter and buffer names are those of torchvision's ResNet
(``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight``,
``layer2.0.downsample.0.weight``, ...), so an ImageNet state dict saved from
torchvision loads into ``model.backbone`` (its ``fc.*`` keys are ignored).

Output stride is 8: layer3 and layer4 keep layer2's resolution and use dilation
2 and 4 instead of stride 2. The classifier is DeepLab-v2's ASPP: four parallel
3x3 convolutions with dilations 6/12/18/24, each mapping the backbone features
straight to class logits, summed. ``forward`` upsamples the logits (bilinear,
align_corners=False) back to the input's height and width.

``deeplabv2_tiny`` is the same design scaled down for small images on a CPU:
BasicBlocks with narrow widths, a 3x3 stride-2 stem without max-pooling, and ASPP
dilations that fit a 12x24 feature map.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from udas_ray.errors import UdasError

__all__ = [
    "NAMES",
    "ASPP",
    "BasicBlock",
    "Bottleneck",
    "DeepLabV2",
    "ResNet",
    "Segmenter",
    "build_deeplabv2",
    "load_backbone_weights",
    "param_groups",
]


# ---------------------------------------------------------------------------- blocks
def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries stride and dilation, as torchvision's v1.5), 1x1 expand."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# -------------------------------------------------------------------------- backbone
class ResNet(nn.Module):
    """A ResNet without the pooling/fc head, with per-stage stride and dilation.

    Module names follow torchvision (conv1, bn1, maxpool, layer1..layer4, and
    inside each block conv1/bn1/.../downsample.0/downsample.1).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[int] = (1, 2, 1, 1),
        dilations: Sequence[int] = (1, 1, 2, 4),
        stem_width: int | None = None,
        stem_kernel: int = 7,
        stem_pool: bool = True,
        zero_init_residual: bool = True,
    ):
        super().__init__()
        if not (len(depths) == len(widths) == len(strides) == len(dilations) == 4):
            raise ValueError("ResNet needs exactly four stages (depths, widths, strides, dilations)")
        stem_width = widths[0] if stem_width is None else stem_width
        self.conv1 = nn.Conv2d(3, stem_width, stem_kernel, stride=2, padding=stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem_pool else nn.Identity()

        in_ch = stem_width
        for i in range(4):
            layer, in_ch = self._make_layer(block, in_ch, widths[i], depths[i], strides[i], dilations[i])
            self.add_module(f"layer{i + 1}", layer)
        self.out_channels = in_ch

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch starts at zero (the block is the identity); from
            # scratch this is what keeps SGD with a 10x classifier lr from diverging.
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @staticmethod
    def _make_layer(block, in_ch: int, planes: int, depth: int, stride: int, dilation: int):
        out_ch = planes * block.expansion
        downsample = None
        if stride != 1 or in_ch != out_ch:
            downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        blocks = [block(in_ch, planes, stride, dilation, downsample)]
        blocks += [block(out_ch, planes, 1, dilation) for _ in range(depth - 1)]
        return nn.Sequential(*blocks), out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


# ------------------------------------------------------------------------ classifier
class ASPP(nn.Module):
    """DeepLab-v2 atrous spatial pyramid pooling: parallel dilated 3x3 convs, summed."""

    def __init__(self, in_ch: int, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_ch, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out


# ---------------------------------------------------------------------------- model
class Segmenter(nn.Module):
    """``backbone`` + ``classifier`` (which ``param_groups`` gives 10x the learning rate);
    logits at input resolution. The base of every segmenter (DeepLabV2, efficientnet.py's).
    ``backbone(x)`` returns the encoder's last features, which ``forward(x, features=True)``
    also hands back (the ImageNet feature distance, ``udas_ray.stages.terms``).

    With ``freeze_bn=True`` every BatchNorm stays in eval mode (running statistics
    are used and never updated) even while the model is in train mode; its affine
    weights still train. Only sensible with pretrained weights.
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module, num_classes: int, freeze_bn: bool = False):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.num_classes = num_classes
        self.freeze_bn = freeze_bn
        self.train()

    def train(self, mode: bool = True) -> "Segmenter":
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor, features: bool = False):
        """Logits at the input's size; with ``features=True`` also the backbone's last features
        (what ``self.backbone(x)`` returns), from the same pass: ``(logits, features)``."""
        last = self.backbone(x)
        logits = F.interpolate(self.classifier(last), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, last) if features else logits


class DeepLabV2(Segmenter):
    """``backbone`` (ResNet) + ``classifier`` (ASPP); ``freeze_bn`` as :class:`Segmenter`'s."""

    def __init__(self, backbone: ResNet, num_classes: int, aspp_dilations: Sequence[int], freeze_bn: bool = False):
        super().__init__(backbone, ASPP(backbone.out_channels, num_classes, aspp_dilations), num_classes, freeze_bn)


# -------------------------------------------------------------------------- builder
_RESNETS = {
    "deeplabv2_resnet101": (Bottleneck, (3, 4, 23, 3)),
    "deeplabv2_resnet50": (Bottleneck, (3, 4, 6, 3)),
    "deeplabv2_resnet34": (BasicBlock, (3, 4, 6, 3)),
    "deeplabv2_resnet18": (BasicBlock, (2, 2, 2, 2)),
}
NAMES: tuple[str, ...] = (*_RESNETS, "deeplabv2_tiny")

# deeplabv2_tiny defaults, chosen by measurement on the embedded benchmark (96 x 192, 2 CPU
# cores): the DeepLab-v2 recipe at small scale. A single 3x3 stride-2 stem conv instead of
# 7x7 conv + max-pool, layer1 downsamples once more (output stride 4: a 24 x 48 map, where small
# objects such as poles, signs and riders still cover whole cells), layers 2-4 keep that
# resolution with dilations 2, 4 and 8, and the ASPP dilations are sized for a 24 x 48 map.
# 0.31M parameters, ~70 ms per fwd+bwd step at batch 8 on 2 threads. Against the output
# stride 8 variant (widths 16-128, strides 2,2,1,1): oracle 48 vs 36 mIoU at 900 steps.
TINY_DEFAULTS = dict(
    widths=(16, 32, 48, 64),
    depths=(2, 2, 2, 2),
    strides=(2, 1, 1, 1),
    dilations=(1, 2, 4, 8),
    aspp_dilations=(1, 3, 6, 9),
)

_COMMON_OPTIONS = ("freeze_bn", "aspp_dilations", "zero_init_residual")


def _tuple_of_ints(name: str, key: str, value, length: int | None = None) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise UdasError(f"{name}: option {key!r} must be a list of integers, got {value!r}") from None
    if not out or any(v < 1 for v in out) or (length is not None and len(out) != length):
        need = f"{length} positive integers" if length else "positive integers"
        raise UdasError(f"{name}: option {key!r} must be {need}, got {list(out)!r}")
    return out


def build_deeplabv2(name: str, num_classes: int, **options) -> DeepLabV2:
    """A DeepLab-v2 segmenter by name, with random weights (:func:`load_backbone_weights` loads
    a torchvision ResNet state dict; udas_ray.models.build_segmenter does both).

    Options (all models): ``freeze_bn`` (bool, default False), ``aspp_dilations``,
    ``zero_init_residual`` (bool, default True: the last BatchNorm of every residual
    block starts at 0; pretrained weights overwrite it).
    ``deeplabv2_tiny`` also takes ``widths``, ``depths``, ``strides``, ``dilations``
    (four integers each, one per stage).
    """
    valid = _COMMON_OPTIONS + (("widths", "depths", "strides", "dilations") if name == "deeplabv2_tiny" else ())
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UdasError(f"{name}: unknown option(s) {', '.join(unknown)}; valid options are {', '.join(valid)}")
    freeze_bn = bool(options.get("freeze_bn", False))
    zero_init = bool(options.get("zero_init_residual", True))

    if name == "deeplabv2_tiny":
        cfg = {k: _tuple_of_ints(name, k, options.get(k, v), None if k == "aspp_dilations" else 4)
               for k, v in TINY_DEFAULTS.items()}
        backbone = ResNet(BasicBlock, cfg["depths"], cfg["widths"], cfg["strides"], cfg["dilations"],
                          stem_kernel=3, stem_pool=False, zero_init_residual=zero_init)
        aspp = cfg["aspp_dilations"]
    else:
        block, depths = _RESNETS[name]
        backbone = ResNet(block, depths, zero_init_residual=zero_init)
        aspp = _tuple_of_ints(name, "aspp_dilations", options.get("aspp_dilations", (6, 12, 18, 24)))

    return DeepLabV2(backbone, num_classes, aspp, freeze_bn=freeze_bn)


# -------------------------------------------------------------------------- weights
def _load_problem(path: str, exc: Exception) -> str:
    """A short reason why torch.load failed."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        return "not a complete file written by torch.save"
    text = str(exc).strip()
    if text.startswith("Weights only load failed"):
        return "it holds Python objects besides tensors; save only the state dict: torch.save(model.state_dict(), path)"
    return (text.splitlines() or [type(exc).__name__])[0][:160]


def _first(keys, n: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:n])
    return shown + (", ..." if len(keys) > n else "")


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_backbone_weights(backbone: nn.Module, path: str, kind: str = "torchvision ResNet",
                          skip: tuple[str, ...] = ("fc.",)) -> list[str]:
    """Load a state dict of a ``kind`` backbone (default: torchvision-format ResNet) from ``path``
    into ``backbone``; the keys (of a classification head) starting with one of ``skip`` are
    left out, and returned.

    Accepts a plain state dict, or one wrapped as {"state_dict": ...} / {"model": ...},
    with keys optionally prefixed by "module." or "backbone.". Anything that does not fit
    exactly raises :class:`UdasError`, one line naming the file.
    """
    where = f"pretrained weights {path}"
    if os.path.isdir(path):
        raise UdasError(f"{where}: is a directory; model.pretrained must be a local {kind} state dict file (.pth)")
    if not os.path.isfile(path):
        raise UdasError(f"{where}: file not found; model.pretrained must be a local {kind} state dict (.pth)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickles arbitrary objects
        raise UdasError(f"{where}: cannot be read as a torch state dict ({_load_problem(path, exc)})") from None

    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise UdasError(f"{where}: not a state dict (expected a mapping of parameter names to tensors, got {type(obj).__name__})")

    given, skipped = {}, []
    for key, value in obj.items():
        key = _strip_prefixes(key)
        if key.startswith(skip):
            skipped.append(key)
        else:
            given[key] = value

    expected = backbone.state_dict()
    # Old checkpoints have no BatchNorm num_batches_tracked; it is not a weight.
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    if missing:
        raise UdasError(f"{where}: {len(missing)} of {len(expected)} backbone keys missing (e.g. {_first(missing)}); "
                        f"is it a state dict of the matching {kind}?")
    unexpected = [k for k in given if k not in expected]
    if unexpected:
        raise UdasError(f"{where}: {len(unexpected)} unexpected keys (e.g. {_first(unexpected)}); "
                        f"is it a state dict of the matching {kind}?")
    for key, value in expected.items():
        if key in given and given[key].shape != value.shape:
            raise UdasError(f"{where}: shape mismatch at {key}: file has {tuple(given[key].shape)}, "
                            f"model expects {tuple(value.shape)}")
    backbone.load_state_dict(given, strict=False)
    return skipped


# ------------------------------------------------------------------------ optimizer
def param_groups(model: nn.Module, lr: float, classifier_mult: float = 10.0) -> list[dict]:
    """SGD parameter groups: backbone at ``lr``, ASPP classifier at 10x ``lr``.

    Each group carries ``lr_mult`` so a poly schedule can set
    ``group["lr"] = base_lr * factor * group["lr_mult"]``. Parameters with
    ``requires_grad=False`` are left out. Works on a wrapped model (``.module``).
    """
    while not hasattr(model, "classifier") and hasattr(model, "module"):
        model = model.module
    head = [p for p in model.classifier.parameters() if p.requires_grad]
    head_ids = {id(p) for p in model.classifier.parameters()}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    return [
        {"params": body, "lr": lr, "lr_mult": 1.0},
        {"params": head, "lr": lr * classifier_mult, "lr_mult": classifier_mult},
    ]
