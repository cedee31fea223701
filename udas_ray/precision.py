"""Mixed precision (``train.precision``): autocast around forward passes and losses, and a
gradient scaler for fp16.

    fp32  no autocast, the scaler does nothing (what udas-ray always did)
    bf16  torch.autocast with bfloat16 (CPU and GPU); bfloat16 has float32's range, no scaler
    fp16  torch.autocast with float16 and a torch.amp.GradScaler: the loss is scaled up before
          backward so small gradients survive in float16, and an overflowing step is skipped

fp16 autocast and its scaler run on CPU too (torch >= 2.3), so every value works with or
without a GPU. The scaler's state (its current scale) is part of a stage's checkpoint: a
resumed fp16 stage goes on with the scale it had reached.
"""

from __future__ import annotations

import contextlib

import torch

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # config.Train.precision
SCALER_KEY = "scaler"  # where a checkpoint keeps the scaler's state


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype autocast computes matmuls and convolutions in at ``precision``."""
    return _DTYPES[precision] or torch.float32


def _device_type(device) -> str:
    return torch.device(device).type


def autocast(precision: str, device):
    """The context that runs forward passes and losses at ``precision`` on ``device``."""
    dtype = _DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(_device_type(device), dtype=dtype)


def grad_scaler(precision: str, device) -> torch.amp.GradScaler:
    """A GradScaler that is on only for fp16 (off, ``scale`` returns the loss and ``step`` just
    steps the optimizer, so one code path serves every precision)."""
    return torch.amp.GradScaler(_device_type(device), enabled=precision == "fp16")


def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward of ``loss`` and one step of ``opt``, through ``scaler``."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def scaler_state(scaler: torch.amp.GradScaler) -> dict:
    """What a checkpoint keeps of the scaler (nothing when it is off)."""
    return {SCALER_KEY: scaler.state_dict()} if scaler.is_enabled() else {}


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> None:
    """Put back the scale a checkpoint holds; a checkpoint without one leaves the scaler as built."""
    saved = state.get(SCALER_KEY)
    if saved and scaler.is_enabled():
        scaler.load_state_dict(saved)
