"""train.precision: bf16 and fp16 autocast on CPU, the fp16 gradient scaler in checkpoints."""

import pytest
import torch

from udas_ray.checkpoints import atomic_save, load_torch_file
from udas_ray.config import load_config
from udas_ray.data.splits import load_splits
from udas_ray.errors import UdasError
from udas_ray.stages import kinds, loop
from udas_ray.stages.runtime import PlainSession
from udas_ray.tracking import NullLogger


def stage_task(cfg, tmp_path, kind="teacher"):
    """A stage's task (the teacher: segmentation, CutMix, labeled target, ClassMix, adversarial
    terms) ready to step, and its first batch."""
    spec = kinds.build_spec(cfg, load_splits(cfg), kind, kind, tmp_path / kind)
    task = spec.task(cfg, PlainSession(tmp_path / "ckpt"), NullLogger())
    task.prepare(task.session)
    task.set_lr(0)
    builder_cls, kwargs = loop.batch_kwargs(cfg, spec)
    return task, next(loop.plain_batches(builder_cls(**kwargs), cfg.train.batch_size))


def test_a_bf16_step_trains_with_the_loss_of_fp32(tiny_cfg, tmp_path):
    fp32, batch = stage_task(tiny_cfg, tmp_path / "fp32")
    bf16, _ = stage_task(tiny_cfg.override({"train.precision": "bf16"}), tmp_path / "bf16")
    before = [p.detach().clone() for p in bf16.model.parameters()]
    full, half = fp32.train_step(batch), bf16.train_step(batch)  # same weights, same batch
    assert set(half) == set(full)
    assert half["loss"] == pytest.approx(full["loss"], rel=0.05)
    assert half["loss_seg"] == pytest.approx(full["loss_seg"], rel=0.05)
    assert any(not torch.equal(a, b) for a, b in zip(before, bf16.model.parameters()))  # it stepped
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # weights stay float32
    assert 0 <= bf16.evaluate(1)["val_miou"] <= 100  # evaluation runs under bf16 autocast too


def test_the_fp16_scaler_state_survives_a_checkpoint(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"train.precision": "fp16"})
    task, batch = stage_task(cfg, tmp_path / "a", "source_only")
    out = task.train_step(batch)  # fp16 autocast and its scaler run on CPU
    assert torch.isfinite(torch.tensor(out["loss"]))
    task.scaler.update(new_scale=512.0)  # a scale the scaler would not start from
    path = atomic_save(task.state_dict(1), tmp_path / "state.pt")

    resumed, _ = stage_task(cfg, tmp_path / "b", "source_only")
    assert resumed.scaler.get_scale() != 512.0
    assert resumed.load_state_dict(load_torch_file(path)) == 1  # loads weights-only, as a resume does
    assert resumed.scaler.get_scale() == 512.0
    assert resumed.scaler.state_dict() == task.scaler.state_dict()
    # fp32 and bf16 checkpoints carry no scaler
    assert "scaler" not in stage_task(tiny_cfg, tmp_path / "c", "source_only")[0].state_dict(0)


def test_a_bad_precision_names_the_key():
    with pytest.raises(UdasError, match=r"train\.precision.*fp16"):
        load_config(None, ["train.precision=fp64"])
