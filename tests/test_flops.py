"""udas_ray.flops against FLOPs counted by hand (one multiply-add = 2 FLOPs)."""

import pytest
import torch
import torch.nn as nn

from udas_ray import flops
from udas_ray.flops import count_step_flops, gflops_per_s, measure_peak, mfu, time_calls

torch.set_num_threads(2)


def test_linear_forward_and_backward():
    n, d_in, d_out = 5, 7, 3
    layer = nn.Linear(d_in, d_out, bias=False)
    x = torch.randn(n, d_in)
    assert count_step_flops(lambda: layer(x)) == 2 * n * d_in * d_out
    # backward: one matmul for the weight's gradient, one for the input's
    x.requires_grad_(True)
    assert count_step_flops(lambda: layer(x).sum().backward()) == 3 * 2 * n * d_in * d_out
    # no gradient for the input: only the weight's matmul in backward
    assert count_step_flops(lambda: layer(x.detach()).sum().backward()) == 2 * 2 * n * d_in * d_out


def test_conv2d_forward():
    n, c_in, c_out, k, h, w = 2, 4, 6, 3, 10, 12
    conv = nn.Conv2d(c_in, c_out, k, stride=2, padding=1, bias=False)
    x = torch.randn(n, c_in, h, w)
    h_out, w_out = (h + 2 - k) // 2 + 1, (w + 2 - k) // 2 + 1
    with torch.no_grad():
        assert count_step_flops(lambda: conv(x)) == 2 * n * c_out * h_out * w_out * c_in * k * k


@pytest.mark.parametrize("groups", [1, 4, 8])
def test_conv2d_backward_costs_twice_its_forward_whatever_its_groups(groups):
    """A depthwise or grouped convolution (EfficientNet-Lite0's) must not be counted as a dense one
    in backward, or the model's MFU comes out above 100 %."""
    n, c, k, h, w = 2, 8, 3, 9, 11
    conv = nn.Conv2d(c, c, k, padding=1, groups=groups, bias=False)
    x = torch.randn(n, c, h, w, requires_grad=True)
    forward = 2 * n * c * h * w * (c // groups) * k * k
    assert count_step_flops(lambda: conv(x).sum().backward()) == 3 * forward
    # no gradient for the input: the weight's gradient only
    assert count_step_flops(lambda: conv(x.detach()).sum().backward()) == 2 * forward


def test_step_runs_once():
    calls = []
    count_step_flops(lambda: calls.append(1))
    assert calls == [1]


def test_rates():
    assert gflops_per_s(2e9, 3.0) == pytest.approx(6.0)
    assert mfu(2e9, 3.0, 60.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        mfu(1e9, 1.0, 0.0)


def test_time_calls_takes_workloads_in_turn_and_keeps_to_its_budget():
    order = []
    times = time_calls({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4 and [len(t) for t in times.values()] == [3, 3]
    slow = time_calls({"sleep": lambda: __import__("time").sleep(0.02)}, repeats=1000, warmup=0, budget_s=0.05)
    assert 1 <= len(slow["sleep"]) <= 4


def test_measure_peak_is_cached_and_leaves_the_thread_count(monkeypatch):
    monkeypatch.setattr(flops, "_PEAKS", {})
    before = torch.get_num_threads()
    peak = measure_peak(1, seconds=0.05, size=128)
    assert peak > 0 and torch.get_num_threads() == before
    bf16 = measure_peak(1, seconds=0.05, size=128, dtype=torch.bfloat16)  # its own entry, measured
    assert bf16 > 0 and set(flops._PEAKS) == {(1, 128, torch.float32), (1, 128, torch.bfloat16)}
    monkeypatch.setattr(flops, "time_calls", lambda *a, **k: pytest.fail("measured twice"))
    assert measure_peak(1, seconds=0.05, size=128) == peak
    assert measure_peak(1, seconds=0.05, size=128, dtype=torch.bfloat16) == bf16


def _bench_common():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "common.py"
    spec = importlib.util.spec_from_file_location("bench_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_benchmark_above_the_peak_fails_naming_both_numbers(capsys):
    common = _bench_common()
    peak = {"gflops_per_s": 100.0, "from": "peak.json"}
    common.check_peak({"plain loop": 99.0}, peak, {})  # under the peak: nothing happens
    with pytest.raises(SystemExit) as exit_info:
        common.check_peak({"plain loop": 99.0, "Ray Train": 250.5}, peak, {"figure": 1})
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Ray Train: 250.5 GFLOP/s exceeds the machine's measured peak of 100.0 GFLOP/s" in err
    assert "plain loop" not in err


def test_machine_peak_from_file_or_measured(tmp_path, monkeypatch):
    import json

    common = _bench_common()
    saved = tmp_path / "peak.json"
    saved.write_text(json.dumps({"threads": 2, "peak_gflops_per_s": 300.0, "peak_from": "matmul", "date": "d"}))
    assert common.machine_peak(2, saved)["gflops_per_s"] == 300.0
    monkeypatch.setattr(flops, "measure_peak", lambda threads, seconds, size: 40.0 * threads)
    assert common.machine_peak(4, saved)["gflops_per_s"] == 160.0  # the file's 2 threads are fewer
    assert common.machine_peak(1, tmp_path / "missing.json")["gflops_per_s"] == 40.0


def test_benchmark_metadata():
    meta = _bench_common().metadata(plain_loop=2)
    assert {"date", "cpu", "torch", "ray", "torch_threads"} <= set(meta)
    assert meta["cpu"]["model"] and isinstance(meta["cpu"]["flags"], list)
    assert meta["torch_threads"]["plain_loop"] == 2
