"""udas_ray.flops against FLOPs counted by hand (one multiply-add = 2 FLOPs)."""

import pytest
import torch
import torch.nn as nn

from udas_ray.flops import count_step_flops, gflops_per_s, mfu

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


def test_step_runs_once():
    calls = []
    count_step_flops(lambda: calls.append(1))
    assert calls == [1]


def test_rates():
    assert gflops_per_s(2e9, 3.0) == pytest.approx(6.0)
    assert mfu(2e9, 3.0, 60.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        mfu(1e9, 1.0, 0.0)
