"""udas_ray.progress: the Ticker's rate/ETA arithmetic and throttling on a fake clock, the driver's
rough whole-run ETA, and that generating scenes logs progress."""

import logging

import pytest

from udas_ray import progress
from udas_ray.data import scenes
from udas_ray.progress import Ticker


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "udas_ray"]


def test_rate_and_eta_arithmetic(caplog):
    clock = FakeClock()
    t = Ticker(6000, "pseudo", every_s=10, clock=clock)
    assert t.rate() == 0 and t.eta() is None  # no time has passed yet
    clock.now += 14.0
    with caplog.at_level(logging.INFO, logger="udas_ray"):
        assert t.update(1200)
    assert t.rate() == pytest.approx(1200 / 14)
    assert t.eta() == pytest.approx(4800 / (1200 / 14))  # 56 s
    assert lines(caplog) == ["[pseudo] 1200/6000 images, 85.7/s, eta 0m56s"]
    clock.now += 56.0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="udas_ray"):
        assert not t.update(4800)  # the last items: finish() speaks for them
        t.finish()
        t.finish()  # once only
    assert lines(caplog) == ["[pseudo] 6000/6000 images in 1m10s, 85.7/s"]


def test_at_most_one_line_per_interval(caplog):
    clock = FakeClock()
    t = Ticker(1000, "scenes", every_s=10, clock=clock)
    logged_at = []
    with caplog.at_level(logging.INFO, logger="udas_ray"):
        for _ in range(95):  # 2 items every 0.4 s for 38 s
            clock.now += 0.4
            if t.update(2):
                logged_at.append(clock.now - 100)
    assert len(lines(caplog)) == len(logged_at) == 3
    assert all(b - a >= 10 - 1e-9 for a, b in zip(logged_at, logged_at[1:]))
    assert logged_at[0] == pytest.approx(10.0)


def test_a_quick_loop_can_stay_silent(caplog):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="udas_ray"):
        quiet = Ticker(3, "verify", quiet_under_s=5, clock=clock)
        quiet.update(3)
        quiet.finish()
        assert lines(caplog) == []
        slow = Ticker(3, "verify", quiet_under_s=5, clock=clock)
        clock.now += 6
        slow.update(3)
        slow.finish()
    assert lines(caplog) == ["[verify] 3/3 images in 0m06s, 0.5/s"]


def test_duration_and_rough_eta():
    assert progress.duration(56.4) == "0m56s"
    assert progress.duration(725) == "12m05s"
    assert progress.duration(7500) == "2h05m"
    assert progress.duration(None) == "?" and progress.duration(float("inf")) == "?"
    assert progress.rough_eta([], 3) is None
    assert progress.rough_eta([60.0, 120.0], 4) == pytest.approx(360.0)


def test_scene_generation_logs_progress(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="udas_ray"):
        scenes.write_source(tmp_path / "src", num_images=3, size=(24, 40))
        scenes.write_target(tmp_path / "tgt", num_train=2, num_val=1, size=(24, 40))
    text = lines(caplog)
    assert any(line.startswith("[scenes source] rendering 3 images") for line in text)
    assert any(line.startswith("[scenes source] 3/3 images in ") for line in text)
    assert any(line.startswith("[scenes target] 3/3 images in ") for line in text)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="udas_ray"):
        scenes.write_source(tmp_path / "src", num_images=3, size=(24, 40))  # already there: nothing to say
    assert lines(caplog) == []
