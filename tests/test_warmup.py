"""train.warmup_steps: the learning rates ramp linearly from ~0 to the poly schedule's over the
first N steps of a segmentation stage, then follow the poly schedule alone; 0 changes nothing."""

import pytest

from udas_ray import tracking
from udas_ray.config import load_config
from udas_ray.errors import UdasError
from udas_ray.stages.runtime import PlainSession
from udas_ray.stages.segment import WARMUP_START, poly_lr


def poly(base, step, total, power):
    """The poly schedule as it was before warm-up existed."""
    return base * (1 - step / max(total, 1)) ** power


def test_warm_up_ramps_to_the_poly_rate_then_leaves_it_alone():
    base, total, power, warmup = 0.01, 100, 0.9, 10
    assert poly_lr(base, 0, total, power, warmup) == pytest.approx(base * WARMUP_START)  # ~0 at step 0
    assert poly_lr(base, 0, total, power, warmup) < 1e-7
    mid = poly_lr(base, 5, total, power, warmup)
    assert mid == pytest.approx(poly(base, 5, total, power) * (WARMUP_START + (1 - WARMUP_START) * 0.5))
    assert 0.49 * poly(base, 5, total, power) < mid < 0.51 * poly(base, 5, total, power)
    rates = [poly_lr(base, s, total, power, warmup) for s in range(warmup + 1)]
    assert rates == sorted(rates)  # rising through the warm-up (poly's decay is slower)
    for step in (10, 11, 50, 99, 100):  # from step N on: the poly rate alone, exactly
        assert poly_lr(base, step, total, power, warmup) == poly(base, step, total, power)


def test_no_warm_up_is_the_poly_schedule_exactly():
    for step in range(0, 101, 7):
        assert poly_lr(0.02, step, 100, 0.9) == poly(0.02, step, 100, 0.9)
        assert poly_lr(0.02, step, 100, 0.9, 0) == poly(0.02, step, 100, 0.9)


def test_the_key_defaults_to_off_and_refuses_a_negative_count():
    assert load_config(None).train.warmup_steps == 0
    with pytest.raises(UdasError, match="train.warmup_steps"):
        load_config(None, ["train.warmup_steps=-1"])


def _teacher_task(cfg, tmp_path):
    from udas_ray.data.splits import load_splits
    from udas_ray.stages import kinds

    spec = kinds.build_spec(cfg, load_splits(cfg), "teacher", "teacher", tmp_path / "teacher")
    return spec.task(cfg, PlainSession(tmp_path / "ckpt"), tracking.NullLogger())


def test_every_parameter_group_and_the_discriminator_warm_up(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"train.steps": 20, "train.warmup_steps": 4})
    task, t = _teacher_task(cfg, tmp_path), cfg.train
    for step in (0, 2, 4, 10):
        lr = task.set_lr(step)
        expected = poly_lr(t.lr, step, 20, t.poly_power, 4)
        assert lr == expected
        assert [g["lr"] for g in task.opt.param_groups] == [expected * g["lr_mult"] for g in task.opt.param_groups]
        assert [g["lr"] for g in task.companions["adv"].opt.param_groups] == [
            poly_lr(t.lr_discriminator, step, 20, t.poly_power, 4)]
    task.set_lr(2)
    assert task.opt.param_groups[1]["lr"] == pytest.approx(10 * task.opt.param_groups[0]["lr"])  # the head's 10x stays


def test_without_warm_up_the_stage_sets_the_rates_it_always_set(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"train.steps": 20})
    task, t = _teacher_task(cfg, tmp_path), cfg.train
    for step in range(20):
        lr = task.set_lr(step)
        assert lr == poly(t.lr, step, 20, t.poly_power)
        assert [g["lr"] for g in task.opt.param_groups] == [lr * g["lr_mult"] for g in task.opt.param_groups]
