"""udas_ray.stages.loop.run_loop with a fake task (a bias-free Linear layer, FLOPs known by hand)
and udas_ray.stages.runtime's thread rounding."""

import json
import os
import time

import pytest
import torch
import torch.nn as nn

from udas_ray import flops, tracking
from udas_ray.stages import loop, runtime
from udas_ray.stages.loop import Schedule, run_loop
from udas_ray.stages.runtime import PlainSession, read_history

N, D_IN, D_OUT = 4, 16, 8
# forward: one (N, D_IN) x (D_IN, D_OUT) matmul; backward: only the weight's gradient (the
# input needs none), the same size again; the loss, its sum and the SGD update are not counted
HAND_FLOPS = 2 * N * D_IN * D_OUT + 2 * N * D_IN * D_OUT


class LinearTask:
    """The Task protocol of udas_ray.stages.loop around one Linear layer."""

    def __init__(self, steps: int, log_every: int):
        self.schedule = Schedule(steps=steps, log_every=log_every, eval_every=steps, checkpoint_every=steps)
        self.tracker = tracking.NullLogger()
        self.model = nn.Linear(D_IN, D_OUT, bias=False)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.steps_trained = 0

    def params(self):
        return {}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        return state["step"]

    def prepare(self, session):
        pass

    def set_lr(self, step):
        return 0.01

    def train_step(self, batch):
        loss = self.model(batch["x"]).pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.steps_trained += 1
        return {"loss": loss.item()}

    def evaluate(self, step):
        return {}

    def state_dict(self, step):
        return {"model": self.model.state_dict(), "step": step}

    def finish(self, step, resumed_from):
        return {"step": step}


def batches():
    while True:
        yield {"x": torch.randn(N, D_IN)}


def windows(out_dir):
    return [r for r in read_history(out_dir) if "steps_per_s" in r]


def test_every_window_has_its_flop_rate_and_mfu(tmp_path):
    task = LinearTask(steps=12, log_every=4)
    session = PlainSession(tmp_path / "ckpt")
    run_loop(task, batches(), session, name="fake", out_dir=tmp_path, peak_gflops=50.0)
    records = windows(tmp_path)
    assert [r["step"] for r in records] == [4, 8, 12]
    assert task.steps_trained == 12  # the counted step is a training step, not an extra one
    assert records[0]["flops_per_step"] == HAND_FLOPS  # announced once, in the first window
    assert records[0]["peak_gflops"] == 50.0
    assert all("flops_per_step" not in r for r in records[1:])
    for r in records:
        assert r["gflops_per_s"] == pytest.approx(HAND_FLOPS * r["steps_per_s"] / 1e9, rel=1e-9)
        assert r["mfu"] == pytest.approx(r["gflops_per_s"] / 50.0, rel=1e-9)
    assert all("gflops_per_s" in r and "mfu" in r for r in session.reports)  # what Ray Train gets


def test_peak_is_measured_once_when_not_given(tmp_path, monkeypatch):
    calls = []

    def fake_peak(threads, seconds=1.0, size=1024, dtype=torch.float32, device="cpu"):
        calls.append((threads, dtype))
        return 20.0

    monkeypatch.setattr(flops, "measure_peak", fake_peak)
    run_loop(LinearTask(steps=4, log_every=2), batches(), PlainSession(tmp_path / "ckpt"), name="fake",
             out_dir=tmp_path)
    assert calls == [(torch.get_num_threads(), torch.float32)]
    # a stage computing in bfloat16 is held against a bfloat16 matmul
    run_loop(LinearTask(steps=2, log_every=2), batches(), PlainSession(tmp_path / "ckpt_bf16"), name="fake",
             out_dir=tmp_path / "bf16", peak_dtype=torch.bfloat16)
    assert calls[-1] == (torch.get_num_threads(), torch.bfloat16)
    records = windows(tmp_path)
    assert records[0]["peak_gflops"] == 20.0
    assert all(r["mfu"] == pytest.approx(r["gflops_per_s"] / 20.0) for r in records)


def test_a_resumed_process_counts_again(tmp_path):
    session = PlainSession(tmp_path / "ckpt")
    run_loop(LinearTask(steps=3, log_every=3), batches(), session, name="fake", out_dir=tmp_path, peak_gflops=10.0)
    longer = LinearTask(steps=6, log_every=3)
    run_loop(longer, batches(), session, name="fake", out_dir=tmp_path, peak_gflops=10.0)
    assert longer.steps_trained == 3
    assert [r.get("flops_per_step") for r in windows(tmp_path)] == [HAND_FLOPS, HAND_FLOPS]


def test_a_finished_stage_measures_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(flops, "measure_peak", lambda *a, **k: pytest.fail("no step left to train"))
    session = PlainSession(tmp_path / "ckpt")
    run_loop(LinearTask(steps=2, log_every=2), batches(), session, name="fake", out_dir=tmp_path, peak_gflops=10.0)
    again = LinearTask(steps=2, log_every=2)
    assert run_loop(again, batches(), session, name="fake", out_dir=tmp_path)["step"] == 2
    assert again.steps_trained == 0


def test_progress_line_shows_the_rate(tmp_path, caplog):
    with caplog.at_level("INFO", logger="udas_ray"):
        run_loop(LinearTask(steps=2, log_every=2), batches(), PlainSession(tmp_path), name="fake",
                 out_dir=tmp_path, peak_gflops=10.0)
    text = caplog.text
    assert f"{HAND_FLOPS / 1e9:.3f} GFLOP per step" in text and "train.peak_gflops" in text
    assert "GFLOP/s MFU" in text and "over 100 %" not in text


def test_an_impossible_mfu_blames_the_peak(tmp_path, caplog):
    with caplog.at_level("INFO", logger="udas_ray"):
        run_loop(LinearTask(steps=2, log_every=2), batches(), PlainSession(tmp_path), name="fake",
                 out_dir=tmp_path, peak_gflops=1e-12)
    assert "over 100 %: the peak is too low, see train.peak_gflops" in caplog.text


@pytest.mark.parametrize("cpus, threads", [(0.25, 1), (0.5, 1), (1.0, 1), (1.4, 1), (1.5, 2), (2.0, 2), (2.5, 3)])
def test_thread_rounding(cpus, threads):
    assert runtime.threads_for(cpus) == threads


def test_set_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))  # restored afterwards
    before = torch.get_num_threads()
    try:
        assert runtime.set_threads(0.5) == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        # inter-op threads can be set once per process, before parallel work: here it is too
        # late (torch ran ops already), and set_threads leaves them without failing
        assert runtime.set_threads(1.5) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_loop_passes_the_configured_peak(monkeypatch):
    seen = {}
    monkeypatch.setattr(loop, "run_loop", lambda *a, **k: seen.update(k) or {})

    class Spec:
        name, out_dir, tracking_uri, mlflow_run_id = "fake", "unused", None, None

        def task(self, cfg, session, tracker):
            return None

    from udas_ray.config import Config

    cfg = Config.model_validate({}).override({"train.peak_gflops": 123.0})
    loop._start(Spec(), cfg, PlainSession("unused"), iter(()))
    assert seen["peak_gflops"] == 123.0


class SlowTask(LinearTask):
    """Evaluation and finish that take a known time."""

    def evaluate(self, step):
        time.sleep(0.2)
        return {}

    def finish(self, step, resumed_from):
        time.sleep(0.1)
        return {"step": step}


def slow_batches(first_wait: float):
    time.sleep(first_wait)  # the first batch keeps the loop waiting
    yield from batches()


def test_timing_json_says_where_the_stage_process_spent_its_time(tmp_path):
    task = SlowTask(steps=6, log_every=3)
    task.schedule = Schedule(steps=6, log_every=3, eval_every=3, checkpoint_every=3)
    started = time.perf_counter()
    run_loop(task, slow_batches(0.3), PlainSession(tmp_path / "ckpt"), name="fake", out_dir=tmp_path, peak_gflops=50.0)
    wall = time.perf_counter() - started
    timing = json.loads((tmp_path / loop.TIMING_FILE).read_text())
    seconds = timing["seconds"]
    assert timing["steps"] == 6
    assert set(seconds) == {"setup", "flop_counter_and_peak", "first_batch", "train_steps", "data_wait", "evaluate",
                            "checkpoint_and_report", "finish"}
    assert seconds["first_batch"] >= 0.3 and seconds["data_wait"] < 0.3  # later batches come at once
    assert 0.4 <= seconds["evaluate"] < 1.0  # two evaluations of 0.2 s
    assert 0.1 <= seconds["finish"] < 0.5
    assert timing["total"] == pytest.approx(sum(seconds.values()), abs=0.01) and timing["total"] <= wall


def test_a_resumed_stage_times_only_the_steps_it_trained(tmp_path):
    run_loop(LinearTask(steps=4, log_every=2), batches(), PlainSession(tmp_path / "ckpt"), name="fake",
             out_dir=tmp_path, peak_gflops=50.0)
    run_loop(LinearTask(steps=6, log_every=2), batches(), PlainSession(tmp_path / "ckpt"), name="fake",
             out_dir=tmp_path, peak_gflops=50.0)
    assert json.loads((tmp_path / loop.TIMING_FILE).read_text())["steps"] == 2
