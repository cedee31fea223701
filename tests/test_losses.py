"""Tests of udas_ray.losses with hand-computed values."""

import math

import numpy as np
import pytest
import torch
import torch._dynamo  # noqa: F401  (the first optimizer imports it: ~0.8 s, paid at collection)

from udas_ray.losses import (SOURCE, TARGET, adversarial_loss, confidence_mask, discriminator_loss, domain_loss,
                             entropy_loss,
                             segmentation_loss, sharpen)
from udas_ray.models import build_discriminator

# (N=1, C=2, H=1, W=2): pixel 0 has logits (2, 0), pixel 1 has logits (0, 1).
LOGITS = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])
CE_PIXEL0_CLASS0 = math.log(1 + math.exp(-2))  # -log(e^2 / (e^2 + 1)) = 0.126928
CE_PIXEL1_CLASS0 = math.log(1 + math.exp(1))  # -log(1 / (1 + e)) = 1.313262


def test_segmentation_loss_by_hand():
    loss = segmentation_loss(LOGITS, torch.tensor([[[0, 0]]]))
    assert loss.item() == pytest.approx((CE_PIXEL0_CLASS0 + CE_PIXEL1_CLASS0) / 2, abs=1e-6)  # 0.720095
    loss = segmentation_loss(LOGITS, torch.tensor([[[1, 1]]]))
    # pixel 0 as class 1: log(1 + e^2) = 2.126928; pixel 1 as class 1: log(1 + e^-1) = 0.313262
    assert loss.item() == pytest.approx((math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1))) / 2, abs=1e-6)


def test_segmentation_loss_ignores_255():
    loss = segmentation_loss(LOGITS, torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert loss.item() == pytest.approx(CE_PIXEL0_CLASS0, abs=1e-6)  # the mean over labelled pixels only


def test_segmentation_loss_all_ignored_is_zero_with_gradient_path():
    logits = LOGITS.clone().requires_grad_(True)
    loss = segmentation_loss(logits, torch.full((1, 1, 2), 255))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_domain_loss_at_zero_logits_is_log2():
    z = torch.zeros(2, 1, 3, 4)
    assert domain_loss(z, SOURCE).item() == pytest.approx(math.log(2), abs=1e-6)
    assert domain_loss(z, TARGET).item() == pytest.approx(math.log(2), abs=1e-6)
    assert domain_loss(torch.full((1, 1, 1, 1), 20.0), TARGET).item() < 1e-6  # sure and right
    assert domain_loss(torch.full((1, 1, 1, 1), 20.0), SOURCE).item() == pytest.approx(20.0, abs=1e-6)


def test_masked_domain_loss_averages_unmasked_cells():
    d = torch.tensor([[[[0.0, 10.0, 10.0]]]])
    mask = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    # Cells: BCE against 0 is softplus(logit): log 2, ~10.0000454, ~10.0000454. Only the first is kept.
    assert domain_loss(d, SOURCE, mask).item() == pytest.approx(math.log(2), abs=1e-6)
    mask2 = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    assert domain_loss(d, SOURCE, mask2).item() == pytest.approx((math.log(2) + math.log1p(math.exp(10))) / 2, abs=1e-5)
    assert domain_loss(d, SOURCE, torch.zeros_like(mask)).item() == 0.0
    assert domain_loss(d, SOURCE).item() == pytest.approx((math.log(2) + 2 * math.log1p(math.exp(10))) / 3, abs=1e-5)


def _two_class_probs(p):
    p = torch.tensor(p, dtype=torch.float32)[None]  # (1, H, W): probability of class 0
    return torch.stack([p, 1 - p], dim=1)  # (1, 2, H, W)


def test_confidence_mask_threshold_zero_is_all_ones():
    probs = _two_class_probs([[0.5, 0.6], [0.7, 0.5]])
    mask = confidence_mask(probs, 0.0, (3, 5))
    assert mask.shape == (1, 1, 3, 5) and (mask == 1).all()


def test_confidence_mask_keeps_confident_cells():
    # max-softmax per pixel = max(p, 1 - p)
    probs = _two_class_probs([
        [0.95, 0.05, 0.99, 0.99],
        [0.95, 0.95, 0.99, 0.40],  # 0.40 -> confidence 0.60
    ])
    same = confidence_mask(probs, 0.9, (2, 4))  # one cell per pixel
    assert same[0, 0].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    # 2x2 cells: left mean 0.95 -> kept; right mean (0.99 * 3 + 0.60) / 4 = 0.8925 -> dropped.
    pooled = confidence_mask(probs, 0.9, (1, 2))
    assert pooled.shape == (1, 1, 1, 2) and pooled[0, 0].tolist() == [[1.0, 0.0]]


def test_sharpen_low_temperature_increases_max_prob():
    logits = torch.tensor([[[[1.0]], [[0.0]], [[-1.0]]]])
    p1, p05 = sharpen(logits, 1.0), sharpen(logits, 0.5)
    assert p1[0, :, 0, 0].sum().item() == pytest.approx(1.0) and p05[0, :, 0, 0].sum().item() == pytest.approx(1.0)
    assert p1[0, 0, 0, 0].item() == pytest.approx(math.e / (math.e + 1 + math.exp(-1)), abs=1e-6)  # 0.665241
    assert p05.max().item() > p1.max().item()
    assert sharpen(logits, 2.0).max().item() < p1.max().item()


def test_adversarial_loss_pushes_target_towards_source():
    torch.manual_seed(0)
    disc = build_discriminator(19, ndf=8)
    target = torch.randn(1, 19, 32, 32, requires_grad=True)
    loss = adversarial_loss(disc, target)
    assert loss.item() == pytest.approx(domain_loss(disc(sharpen(target.detach())), SOURCE).item(), abs=1e-6)
    loss.backward()
    assert target.grad is not None and target.grad.abs().sum() > 0


def test_one_adam_step_lowers_discriminator_loss():
    torch.manual_seed(0)
    disc = build_discriminator(19, ndf=8)
    source = torch.randn(2, 19, 32, 32, requires_grad=True)
    target = (torch.randn(2, 19, 32, 32) * 3).requires_grad_(True)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    before = discriminator_loss(disc, source, target)
    opt.zero_grad()
    before.backward()
    assert source.grad is None and target.grad is None  # the segmenter's maps are detached
    opt.step()
    with torch.no_grad():
        after = discriminator_loss(disc, source, target)
    assert after.item() < before.item()


def test_entropy_loss_by_hand():
    uniform = torch.zeros(1, 4, 2, 2)  # every pixel 1/4 each: the largest entropy, log 4 / log 4
    assert entropy_loss(uniform).item() == pytest.approx(1.0)
    logits = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)  # p = (3/4, 1/4)
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert entropy_loss(logits).item() == pytest.approx(expected)
    confident = torch.tensor([30.0, 0.0]).view(1, 2, 1, 1)
    assert entropy_loss(confident).item() < 1e-6


def test_classmix_loss_by_hand():
    """Half the classes of a labeled image pasted onto an unlabeled one: pasted pixels count fully,
    the rest with the share of the base image's pixels the model is confident about."""
    from udas_ray.config import Config
    from udas_ray.stages.terms import Step, classmix_loss

    h, w = 4, 6
    label = np.zeros((1, h, w), np.uint8)
    label[:, :, 3:] = 2  # classes 0 (left half) and 2 (right half)
    batch = {"labeled_image": torch.zeros(1, h, w, 3, dtype=torch.uint8), "labeled_label": torch.from_numpy(label),
             "target_image": torch.full((1, h, w, 3), 255, dtype=torch.uint8)}
    probs = torch.full((1, 19, h, w), 0.01)
    probs[:, 5] = 0.5
    probs[:, 5, :2] = 0.99  # the top half is confident: quality 1/2 at threshold 0.9

    class Uniform(torch.nn.Module):  # logits 0 everywhere: every pixel's cross-entropy is log(19)
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return torch.zeros(x.shape[0], 19, *x.shape[2:]) + self.w

    step = Step(Uniform(), batch, "cpu", Config(), {})
    loss = classmix_loss(step, "labeled", "target", probs, threshold=0.9, note="q")
    # one of the two classes (half the pixels) is pasted with weight 1, the other half weight 1/2
    assert loss.item() == pytest.approx(math.log(19) * (0.5 * 1 + 0.5 * 0.5))
    assert step.notes["q"] == pytest.approx(0.5)
    loss.backward()
    assert step.model.w.grad is not None


def test_patch_mask_drops_whole_squares_at_the_ratio():
    from udas_ray.stages.terms import patch_keep_mask

    g = torch.Generator().manual_seed(0)
    keep = patch_keep_mask(64, 10, 20, 4, 0.7, "cpu", generator=g)
    assert keep.shape == (64, 1, 10, 20) and set(keep.unique().tolist()) <= {0.0, 1.0}
    # constant inside every 4x4 square (the last row of squares is cut to 2 pixels)
    blocks = keep[:, 0, :8, :].reshape(64, 2, 4, 5, 4)
    assert (blocks == blocks[:, :, :1, :, :1]).all()
    assert keep.mean().item() == pytest.approx(0.3, abs=0.03)  # 64 images x 15 squares kept at 1 - 0.7
    assert patch_keep_mask(2, 5, 5, 2, 0.0, "cpu").min().item() == 1.0  # ratio 0: nothing masked


def test_masked_image_consistency_by_hand():
    """The model sees its image with squares blanked to the mean colour (0 after normalisation)
    and is scored against the whole image's label; the mean teacher's quality weights images."""
    from udas_ray.config import Config
    from udas_ray.stages.terms import TERMS, Step

    seen = []

    class Uniform(torch.nn.Module):  # logits 0: every labelled pixel costs log(19)
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            seen.append(x)
            return torch.zeros(x.shape[0], 19, *x.shape[2:]) + self.w

    h, w = 8, 12
    label = torch.full((2, h, w), 3, dtype=torch.uint8)
    label[1] = 255  # nothing labelled in the second image
    label[0, :, :6] = 255  # half of the first
    batch = {"sup_image": torch.full((2, h, w, 3), 200, dtype=torch.uint8), "sup_label": label}
    cfg = Config().override({"loss.lambda_mic": 1.0, "loss.mic_patch": 4, "loss.mic_ratio": 0.5})
    step = Step(Uniform(), batch, "cpu", cfg, {})
    loss = TERMS["mic"].loss(step)
    assert loss.item() == pytest.approx(math.log(19))  # mean over labelled pixels only, masked or not
    x = seen[-1]
    whole = step.image("sup")
    blank = (x == 0).all(dim=1)
    assert blank.any() and (~blank).any()  # some squares masked, some kept
    assert torch.equal(x[~blank.unsqueeze(1).expand_as(x)], whole[~blank.unsqueeze(1).expand_as(whole)])
    loss.backward()
    assert step.model.w.grad is not None

    class Teacher:  # the ema stage: the mean teacher labels the target image, confident on half of it
        def __init__(self):
            self.net = lambda image: torch.cat([torch.full((1, 1, h, w), 10.0), torch.zeros(1, 18, h, w)], 1) \
                * torch.cat([torch.ones(1, 1, h, w // 2), torch.zeros(1, 1, h, w // 2)], 3)

    batch = {"target_image": torch.full((1, h, w, 3), 90, dtype=torch.uint8)}
    step = Step(Uniform(), batch, "cpu", cfg, {"mix": Teacher()})
    loss = TERMS["mic"].loss(step)
    # every pixel labelled (argmax of the teacher), the image weighted by its confident share 1/2
    assert step.notes["mic_quality"] == pytest.approx(0.5)
    assert loss.item() == pytest.approx(0.5 * math.log(19))
