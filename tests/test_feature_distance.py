"""The ImageNet feature distance (loss.lambda_fd, DAFormer): the encoder's last features on source
images kept near those of a frozen copy of the encoder as the stage started, on the feature cells
that show a thing class; off by default, and then nothing of a step changes. Also: a run from
before the warm-up and feature-distance keys resumes as it did."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from udas_ray import driver, fingerprint, tracking
from udas_ray.checkpoints import unwrap
from udas_ray.data.splits import load_splits
from udas_ray.errors import UdasError
from udas_ray.models import build_segmenter
from udas_ray.models.memory_format import is_channels_last
from udas_ray.stages import kinds, segment
from udas_ray.stages.runtime import PlainSession, read_history
from udas_ray.stages.terms import TERMS, Step, feature_distance, thing_cells

FD = 0.005  # DAFormer's weight
NEW_KEYS = {"train.warmup_steps": ("train", "warmup_steps"), "loss.lambda_fd": ("loss", "lambda_fd"),
            "loss.fd_classes": ("loss", "fd_classes")}
MODELS = ["deeplabv2_tiny", "deeplab_efficientnet_lite0"]


def model_cfg(cfg, name, **keys):
    return cfg.override({"model.name": name, "model.pretrained": "scratch", **keys})


def task_and_batch(cfg, tmp_path, kind="teacher"):
    spec = kinds.build_spec(cfg, load_splits(cfg), kind, kind, tmp_path / kind)
    task = spec.task(cfg, PlainSession(tmp_path / "ckpt"), tracking.NullLogger())
    task.prepare(task.session)
    builder_cls, kwargs = spec.batch_recipe(cfg)
    batch = {k: torch.from_numpy(v) for k, v in builder_cls(**kwargs, seed=0)({"id": np.arange(2)}).items()}
    return task, batch


def fd_of(task, batch) -> torch.Tensor:
    step = Step(task.model, batch, "cpu", task.cfg, task.companions)
    task.companions["fd"].before_step(step)
    return TERMS["fd"].loss(step)


# ------------------------------------------------------------------------------ by hand
def test_cells_with_a_thing_pixel_count_and_stuff_ignore_and_poles_do_not():
    label = torch.zeros(1, 4, 8, dtype=torch.long)  # road
    label[0, 1, 5] = 13  # one car pixel: the (0, 2) cell of a 2 x 4 map
    label[0, 3, 0] = 5  # a pole: not one of DAFormer's classes
    label[0, 2, 7] = 255  # ignored
    cells = thing_cells(label, [6, 7, 11, 12, 13, 14, 15, 16, 17, 18], (2, 4))
    assert cells.tolist() == [[[False, False, True, False], [False, False, False, False]]]
    assert thing_cells(label, [5], (2, 4))[0, 1, 0] and not thing_cells(label, [1], (2, 4)).any()


def test_the_distance_is_the_mean_l2_norm_over_the_counted_cells():
    features = torch.zeros(1, 2, 1, 3)
    features[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # 5 from the frozen zeros
    features[0, :, 0, 1] = torch.tensor([1.0, 0.0])  # 1
    features[0, :, 0, 2] = torch.tensor([10.0, 0.0])  # not counted
    cells = torch.tensor([[[True, True, False]]])
    assert feature_distance(features, torch.zeros_like(features), cells).item() == pytest.approx(3.0)
    assert feature_distance(features, torch.zeros_like(features), torch.zeros_like(cells)).item() == 0


@pytest.mark.parametrize("name", MODELS)
def test_forward_hands_back_the_backbone_features_of_the_same_pass_and_the_same_logits(name):
    model = build_segmenter(name, 19, "scratch").eval()
    x = torch.randn(2, 3, 32, 64)
    logits, features = model(x, features=True)
    assert torch.equal(logits, model(x)) and torch.equal(features, model.backbone(x))
    if name == "deeplabv2_tiny":  # the pass every model made before: classifier(backbone(x)), upsampled
        before = F.interpolate(model.classifier(model.backbone(x)), size=(32, 64), mode="bilinear", align_corners=False)
        assert torch.equal(model(x), before)


# ------------------------------------------------------------------------- in a stage
def test_off_by_default_and_only_the_teacher_and_ema_list_it(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"self_training.mode": "both"})
    assert cfg.loss.lambda_fd == 0 and cfg.loss.fd_classes == [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]
    assert "fd" not in kinds.build_spec(cfg, load_splits(cfg), "teacher", "teacher", tmp_path / "t").terms
    listed = {name for name, kind in kinds.KINDS.items() if "fd" in kind.terms}
    assert listed == {"teacher", "ema"}
    on = cfg.override({"loss.lambda_fd": FD})
    for kind in ("teacher", "ema"):
        spec = kinds.build_spec(on, load_splits(on), kind, kind, tmp_path / kind)
        assert "fd" in spec.terms and TERMS["fd"].weight(on) == FD and TERMS["fd"].regularizer
    with pytest.raises(UdasError, match="loss.fd_classes"):
        tiny_cfg.override({"loss.fd_classes": [19]})


@pytest.mark.parametrize("name", MODELS)
def test_zero_for_the_unchanged_encoder_positive_after_a_step(tiny_cfg, tmp_path, name):
    task, batch = task_and_batch(model_cfg(tiny_cfg, name, **{"loss.lambda_fd": FD}), tmp_path)
    frozen = task.companions["fd"].net
    start = copy.deepcopy(frozen.state_dict())
    assert thing_cells(batch["sup_label"].long(), task.cfg.loss.fd_classes, (4, 8)).any()  # the car boxes
    task.model.eval()  # BatchNorm on running statistics, as the frozen copy
    assert fd_of(task, batch).item() == 0
    task.model.train()
    out = task.train_step(batch)
    assert out["loss_fd"] >= 0 and out["loss"] == pytest.approx(sum(
        w * out[f"loss_{n}"] for n, w in task.weights.items() if TERMS[n].regularizer) + sum(
        w * out[f"loss_{n}"] for n, w in task.weights.items() if not TERMS[n].regularizer) / sum(
        w for n, w in task.weights.items() if not TERMS[n].regularizer), rel=1e-5)
    task.model.eval()
    assert fd_of(task, batch).item() > 0
    assert task.companions["fd"].net is frozen  # made once per stage, not per step
    assert all(torch.equal(v, start[k]) for k, v in frozen.state_dict().items())


def test_zero_without_a_thing_pixel_and_the_frozen_encoder_does_not_run(tiny_cfg, tmp_path):
    task, batch = task_and_batch(tiny_cfg.override({"loss.lambda_fd": FD}), tmp_path)
    task.train_step(batch)  # the encoder has moved: a distance would be > 0
    calls = []
    task.companions["fd"].net.register_forward_hook(lambda *args: calls.append(1))
    batch["sup_label"][:] = 0  # road only (and 255 ignored)
    batch["sup_label"][:, :2] = 255
    assert fd_of(task, batch).item() == 0 and not calls
    batch["sup_label"][0, 5, 5] = 17  # one motorcycle pixel
    assert fd_of(task, batch).item() > 0 and calls


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_the_encoder_and_not_the_frozen_copy(tiny_cfg, tmp_path, name):
    task, batch = task_and_batch(model_cfg(tiny_cfg, name, **{"loss.lambda_fd": FD}), tmp_path)
    task.train_step(batch)
    task.opt.zero_grad(set_to_none=True)
    loss = fd_of(task, batch)
    assert loss.requires_grad
    loss.backward()
    model = unwrap(task.model)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert all(p.grad is None or not p.grad.any() for p in model.classifier.parameters())
    frozen = task.companions["fd"].net
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_frozen_copy_is_in_eval_mode_and_the_models_format_outside_optimizer_and_checkpoint(
        tiny_cfg, tmp_path, channels_last):
    cfg = tiny_cfg.override({"loss.lambda_fd": FD, "train.channels_last": channels_last})
    task, _ = task_and_batch(cfg, tmp_path)  # prepare() has put the model in train mode
    frozen = task.companions["fd"].net
    assert not any(m.training for m in frozen.modules()) and unwrap(task.model).training
    assert is_channels_last(frozen) == is_channels_last(task.model) == channels_last
    assert next(frozen.parameters()).device == next(task.model.parameters()).device
    in_opt = {id(p) for group in task.opt.param_groups for p in group["params"]}
    assert not in_opt & {id(p) for p in frozen.parameters()}
    assert in_opt == {id(p) for p in task.model.parameters()}
    model_ptrs = {p.data_ptr() for p in task.model.parameters()}
    assert not model_ptrs & {p.data_ptr() for p in frozen.parameters()}  # a copy, not shared weights
    off, _ = task_and_batch(tiny_cfg.override({"train.channels_last": channels_last}), tmp_path / "off")
    state, state_off = task.state_dict(0), off.state_dict(0)
    assert set(state) == set(state_off) and set(state["model"]) == set(state_off["model"])


def test_with_weight_zero_a_step_is_what_it_was(tiny_cfg, tmp_path, monkeypatch):
    """lambda_fd=0: no fd term, no companion, every forward pass as before (no features kept);
    turned on, the other terms' losses are the same to the bit and the total gains w * FD."""
    off, batch = task_and_batch(tiny_cfg, tmp_path / "off")
    on, _ = task_and_batch(tiny_cfg.override({"loss.lambda_fd": FD}), tmp_path / "on")
    assert "fd" not in off.weights and "fd" not in off.companions and "fd" in on.companions
    asked = []
    unwrap(off.model).register_forward_pre_hook(lambda m, args, kwargs: asked.append(kwargs), with_kwargs=True)
    torch.manual_seed(1)
    out_off = off.train_step(batch)
    assert asked and all(not kw.get("features") for kw in asked)
    torch.manual_seed(1)
    out_on = on.train_step(batch)
    assert {k: v for k, v in out_on.items() if k not in ("loss", "loss_fd")} == {
        k: v for k, v in out_off.items() if k != "loss"}
    assert out_on["loss"] == pytest.approx(out_off["loss"] + FD * out_on["loss_fd"], rel=1e-6)


def test_a_teacher_trains_with_it_and_its_checkpoint_holds_no_frozen_copy(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"loss.lambda_fd": FD, "train.steps": 2})
    spec = kinds.build_spec(cfg, load_splits(cfg), "teacher", "teacher", tmp_path / "teacher")
    segment.run_plain(cfg, spec, tmp_path / "ckpt")
    logged = [r for r in read_history(spec.out_dir) if "loss" in r]
    assert logged and all(r["loss_fd"] >= 0 for r in logged)
    state = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)
    model = build_segmenter(cfg.model.name, 19, cfg.model.pretrained)
    assert set(state["model"]) == set(model.state_dict())
    assert not any("frozen" in k or k == "fd" for k in state)


# --------------------------------------------------------------------------- resuming
def test_a_run_from_before_the_new_keys_resumes(tiny_cfg, tmp_path):
    """An old run's config.yaml and stage records lack train.warmup_steps, loss.lambda_fd and
    loss.fd_classes: at their defaults that is no change; turned on, it is one."""
    assert all(tiny_cfg.flat()[key] == default for key, default in
               {"train.warmup_steps": 0, "loss.lambda_fd": 0.0,
                "loss.fd_classes": [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]}.items())
    splits = load_splits(tiny_cfg)
    for stage in driver.plan(tiny_cfg):
        now = fingerprint.stage_inputs(tiny_cfg, splits, stage, {}, driver.RESUMABLE_KEYS)
        old = {**now, "config": {k: v for k, v in now["config"].items() if k not in NEW_KEYS}}
        assert set(now["config"]) - set(old["config"]) == set(NEW_KEYS)
        assert fingerprint.changes(old, now) == [], stage.name
    teacher = next(s for s in driver.plan(tiny_cfg) if s.name == "teacher")
    before = fingerprint.stage_inputs(tiny_cfg, splits, teacher, {}, driver.RESUMABLE_KEYS)
    after = fingerprint.stage_inputs(tiny_cfg.override({"loss.lambda_fd": FD}), splits, teacher, {},
                                     driver.RESUMABLE_KEYS)
    assert fingerprint.changes(before, after) == ["config: loss.lambda_fd"]

    tree = tiny_cfg.to_dict()
    for section, key in NEW_KEYS.values():
        del tree[section][key]
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / driver.CONFIG_FILE).write_text(yaml.safe_dump(tree))
    driver.check_run_dir(tiny_cfg)  # no error: the same config
    for changed in ({"train.warmup_steps": 100}, {"loss.lambda_fd": FD}):
        with pytest.raises(UdasError, match=next(iter(changed))):
            driver.check_run_dir(tiny_cfg.override(changed))


def test_the_ema_stage_trains_with_it_beside_its_mean_teacher(tiny_cfg, tmp_path):
    task, batch = task_and_batch(tiny_cfg.override({"loss.lambda_fd": FD}), tmp_path, kind="ema")
    assert set(task.companions) == {"mix", "fd"}
    out = task.train_step(batch)
    assert out["loss_fd"] >= 0 and "loss_mix" in out
    assert task.scored is task.companions["mix"].net  # the mean teacher is still what the stage scores
