"""The SimGAN style method: the refiner, its two losses, the history buffer, the stage through the
shared loop, its summary row in the plan and its config key."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from udas_ray.config import load_config
from udas_ray.data import readers
from udas_ray.driver import plan
from udas_ray.errors import UdasError
from udas_ray.models import refiner
from udas_ray.stages import style, translate
from udas_ray.stages.runtime import PlainSession

TINY = {"style.method": "simgan", "style.steps": 4, "style.batch_size": 2, "style.ngf": 4, "style.n_blocks": 2,
        "style.ndf": 4, "style.n_layers": 2, "style.pool_size": 3, "style.image_size": [32, 64],
        "style.sample_every": 2, "style.checkpoint_every": 2, "style.log_every": 2}


# ----------------------------------------------------------------------------- losses
def test_self_regularization_is_lambda_times_the_mean_absolute_difference():
    original = torch.tensor([0.5, -0.5, 1.0, 0.0]).reshape(1, 1, 2, 2)
    refined = torch.zeros(1, 1, 2, 2)
    # |0.5| + |-0.5| + |1| + |0| = 2 over 4 pixels = 0.5, times 3
    assert refiner.self_regularization_loss(refined, original, 3.0).item() == pytest.approx(1.5)
    assert refiner.self_regularization_loss(original, original, 3.0).item() == 0.0


def test_self_regularization_on_gradients_lets_a_region_change_colour_but_not_its_edges():
    original = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]).reshape(1, 1, 2, 3)  # an edge between columns 1, 2
    shifted = original - 0.5  # the whole image a shade darker
    assert refiner.self_regularization_loss(shifted, original, 3.0, "gradients").item() == 0.0
    assert refiner.self_regularization_loss(shifted, original, 3.0, "pixels").item() == pytest.approx(1.5)
    moved = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]).reshape(1, 1, 2, 3)  # the edge one column left
    # horizontal differences (0, 1) -> (1, 0) per row: mean |d| = 1; vertical ones unchanged: 0; mean of the two, x3
    assert refiner.self_regularization_loss(moved, original, 3.0, "gradients").item() == pytest.approx(1.5)


def test_local_adversarial_loss_averages_the_logistic_loss_over_patches():
    logits = torch.tensor([0.0, 0.0, math.log(3), -math.log(3)]).reshape(1, 1, 2, 2)  # D = 1/2, 1/2, 3/4, 1/4
    real = (2 * math.log(2) + math.log(4 / 3) + math.log(4)) / 4  # -log D per patch
    refined = (2 * math.log(2) + math.log(4) + math.log(4 / 3)) / 4  # -log(1 - D) per patch
    assert refiner.local_adversarial_loss(logits, True).item() == pytest.approx(real)
    assert refiner.local_adversarial_loss(logits, False).item() == pytest.approx(refined)
    confident = torch.tensor([math.log(9)]).reshape(1, 1, 1, 1)  # D = 0.9
    assert refiner.local_adversarial_loss(confident, True).item() == pytest.approx(-math.log(0.9))
    assert refiner.local_adversarial_loss(confident, False).item() == pytest.approx(-math.log(0.1))


# ----------------------------------------------------------------------------- history
def test_history_buffer_shows_the_current_batch_and_as_many_earlier_images():
    buffer = refiner.HistoryBuffer(size=4, seed=0)
    first = torch.stack([torch.full((3, 2, 2), v) for v in (0.0, 1.0)])
    assert torch.equal(buffer.query(first), first)  # nothing earlier yet: the current images alone
    for start in (2.0, 4.0, 6.0, 8.0):
        current = torch.stack([torch.full((3, 2, 2), v) for v in (start, start + 1)])
        out = buffer.query(current)
        assert out.shape == (4, 3, 2, 2)
        assert torch.equal(out[:2], current)  # the first half: this step's refined images
        assert all(v < start for v in out[2:, 0, 0, 0].tolist())  # the second: earlier ones
        assert len(buffer) <= 4
    assert len(buffer) == 4
    stored = sorted(im[0, 0, 0, 0].item() for im in buffer.images)
    assert stored[-1] >= 8.0  # the newest batch went in, into random slots once full

    clone = refiner.HistoryBuffer(size=4)
    clone.load_state_dict(buffer.state_dict())
    assert torch.equal(torch.cat(clone.images), torch.cat(buffer.images))
    assert clone.rng.random() == buffer.rng.random()
    x = torch.zeros(2, 3, 2, 2)
    assert refiner.HistoryBuffer(size=0).query(x) is x


# ----------------------------------------------------------------------------- refiner
def test_the_refiner_keeps_the_size_starts_as_the_identity_and_stays_local():
    R = refiner.build_refiner(ngf=4, n_blocks=2)
    x = torch.rand(2, 3, 36, 52) * 2 - 1
    assert torch.equal(R(x), x)  # the residual starts at zero
    torch.nn.init.normal_(R.out.weight, std=0.5)  # as if trained
    y = R(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.equal(y, x)
    # a change at one pixel reaches at most 1 + 2 * n_blocks = 5 pixels away: nothing can move
    poked = x.clone()
    poked[0, :, 18, 26] = -poked[0, :, 18, 26]
    changed = (R(poked) - y).abs().sum(1)[0].nonzero()
    assert len(changed) and (changed - torch.tensor([18, 26])).abs().max() <= 5
    assert torch.equal(R(poked)[1], y[1])


def test_a_refiner_with_noise_starts_as_the_identity_then_draws_fresh_noise_and_stays_local():
    R = refiner.build_refiner(ngf=4, n_blocks=2, noise=2)
    x = torch.rand(2, 3, 36, 52) * 2 - 1
    assert torch.equal(R(x), x)
    torch.nn.init.normal_(R.out.weight, std=0.5)
    torch.manual_seed(1)
    y = R(x)
    assert y.shape == x.shape and not torch.equal(R(x), y)  # a new draw at every call
    torch.manual_seed(1)
    assert torch.equal(R(x), y)  # ... from torch's generator: seeded, the same image
    # the noise is per pixel and the layers local: a changed input pixel still reaches 5 pixels at most
    poked = x.clone()
    poked[0, :, 18, 26] = -poked[0, :, 18, 26]
    torch.manual_seed(1)
    changed = (R(poked) - y).abs().sum(1)[0].nonzero()
    assert len(changed) and (changed - torch.tensor([18, 26])).abs().max() <= 5


def test_a_refiner_file_from_before_the_noise_input_still_loads(tmp_path):
    R = refiner.build_refiner(ngf=4, n_blocks=1)
    path = tmp_path / "generator.pt"
    torch.save({"format": style.REFINER_FORMAT, "arch": {"ngf": 4, "n_blocks": 1}, "image_size": [32, 64],
                "state_dict": R.state_dict(), "step": 1, "params": {}}, path)
    loaded, _ = style.load_generator(path)
    assert loaded.noise == 0 and loaded.stem[1].in_channels == 3


def test_a_huge_lambda_keeps_the_refined_image_at_its_input():
    cfg = load_config(None, [f"{k}={v}" for k, v in TINY.items()] + ["style.lambda_reg=1000", "style.lr=0.001"])
    gan = style.SimGAN(cfg.style, seed=0)
    session = PlainSession("/nonexistent")  # never reports
    torch.manual_seed(0)
    s, t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    for _ in range(3):
        losses = gan.train_step(s, t, session)
    assert {"loss_r", "loss_adv", "loss_reg", "loss_d"} <= set(losses)
    assert (gan.R(s) - s).abs().mean() < 0.01
    assert len(gan.history) == 3  # full: pool_size 3


def test_a_refiner_pushed_past_the_bound_is_pulled_back_by_the_self_regularisation():
    cfg = load_config(None, [f"{k}={v}" for k, v in TINY.items()] + ["style.lambda_reg=1000"])
    gan = style.SimGAN(cfg.style, seed=0)
    torch.nn.init.constant_(gan.R.out.bias, 3.0)  # every pixel of every channel saturated at +1
    s, t = torch.rand(2, 3, 16, 16) - 0.5, torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(gan.R(s), torch.ones_like(s))  # the clamp passes no gradient here
    gan.train_step(s, t, PlainSession("/nonexistent"))
    assert (gan.R.out.bias < 3.0).all()  # the L1 term reached the refiner through the unclamped output


def test_the_restyling_draws_a_noisy_refiners_noise_from_the_run_seed_and_the_batch(tmp_path):
    R = refiner.build_refiner(ngf=4, n_blocks=1, noise=1)
    torch.nn.init.normal_(R.out.weight, std=0.5)
    cfg = load_config(None, [f"{k}={v}" for k, v in TINY.items()] + ["style.noise_channels=1"])
    path = style.save_generator(tmp_path / "generator.pt", R, cfg, step=1)
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(image)
    batch = {"image": [str(image)], "label": [""], "name": ["a.png"]}

    def restyled(seed: int) -> np.ndarray:
        out = tmp_path / f"seed{seed}"
        (out / "images").mkdir(parents=True, exist_ok=True)
        translate.Translator(str(path), str(out), seed=seed)(batch)
        return np.asarray(Image.open(out / "images" / "a.png"))

    assert np.array_equal(restyled(0), restyled(0)) and not np.array_equal(restyled(0), restyled(1))


# ----------------------------------------------------------------------------- the stage
def test_a_tiny_simgan_stage_runs_through_the_loop_and_writes_its_refiner_and_grid(tiny_cfg, tiny_data, tmp_path):
    source_root, target_root = tiny_data
    source, target = readers.read_gta5(source_root), readers.read_cityscapes(target_root, "train")
    cfg = tiny_cfg.override({**TINY, "style.noise_channels": 1, "train.peak_gflops": 1.0})  # no peak measurement
    out = tmp_path / "style"
    metrics = style.run_plain(cfg, style.StyleSpec.from_splits(source, target, out), checkpoint_dir=tmp_path / "ckpt")
    assert metrics["step"] == 4
    assert all(np.isfinite(metrics[k]) for k in ("loss_r", "loss_adv", "loss_reg", "loss_d"))
    state = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=True)
    assert {"R", "D", "opt_r", "opt_d", "history", "step"} <= set(state)

    R, blob = style.load_generator(out / style.GENERATOR_FILE)
    assert isinstance(R, refiner.Refiner) and blob["format"] == style.REFINER_FORMAT
    assert blob["arch"] == {"ngf": 4, "n_blocks": 2, "noise": 1} and R.stem[1].in_channels == 4
    restyled = translate.restyle(R, [np.zeros((34, 50, 3), np.uint8)], None)  # any size, none lost
    assert restyled[0].shape == (34, 50, 3)

    # source / refined / difference / labels, then target: 5 rows of 4 images
    grid = np.asarray(Image.open(out / "samples" / "step_000004.png"))
    assert grid.shape == (5 * 32 + 5 * 4, 4 * 64 + 3 * 4, 3)
    label_row = grid[3 * 36 : 3 * 36 + 32, :64]
    assert (label_row == (128, 64, 128)).all(-1).any()  # road in the Cityscapes palette


def test_simgan_gives_the_plan_a_style_refined_row(tiny_cfg):
    cfg = tiny_cfg.override({"style.enabled": True, "style.method": "simgan", "self_training.rounds": 0})
    rows = [(s.name, s.kind, s.restyled) for s in plan(cfg)]
    assert rows == [("style", "style", False), ("style_refined", "source_restyled", True), ("teacher", "teacher", True)]
    assert [s.name for s in plan(cfg.override({"style.method": "cyclegan"}))][1] == "style_transfer"


def test_a_bad_style_method_fails_naming_the_key():
    with pytest.raises(UdasError, match=r"style\.method: .*'cyclegan' or 'simgan'.*got 'pix2pix'"):
        load_config(None, ["style.method=pix2pix"])
