"""Model files: what a finished stage leaves behind and the next stage or ``predict`` loads.

A model file (``model.pt``) is a dict ``{"format", "model_name", "num_classes", "model_options",
"state_dict", "stage", "step", "config"}`` saved with torch.save, written atomically. A training
checkpoint (``state.pt`` inside a Ray checkpoint) adds the discriminator and both optimizers.

Every torch file udas-ray reads goes through :func:`load_torch_file`, which unpickles with
``weights_only=True``: tensors, dicts, lists, tuples and plain values only. A file that asks for
anything else (a class, a function: the way a crafted pickle runs code) is refused before any of
it runs, so a model file from someone else can be predicted with safely. What udas-ray itself
saves (model files, training states with optimizers, EMA teacher and CycleGAN pools, generator
files) is all of that kind.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from udas_ray import atomic
from udas_ray.errors import UdasError

MODEL_FORMAT = "udas-ray-model/1"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module behind DistributedDataParallel."""
    return getattr(model, "module", model)


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically: a kill or a full disk leaves the old file whole
    and no temp file; a full disk is a one-line error naming the file and its disk."""
    with atomic.writing(path) as f:
        torch.save(obj, f)
    return Path(path)


def save_model(path, model, *, model_name: str, num_classes: int, model_options: dict, stage: str, step: int, config: dict) -> Path:
    return atomic_save(
        {
            "format": MODEL_FORMAT,
            "model_name": model_name,
            "num_classes": num_classes,
            "model_options": dict(model_options),
            "state_dict": unwrap(model).state_dict(),
            "stage": stage,
            "step": step,
            "config": config,
        },
        path,
    )


def _weights_only_reason(exc: Exception) -> str:
    """The unpickler's own reason (e.g. "Unsupported global: GLOBAL getattr") out of torch's
    long message, or the exception's name."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        lines = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        if lines:
            return lines[0].split(" was not an allowed global")[0][:120]
    return exc.__class__.__name__


def load_torch_file(path: str | Path, what: str = "torch file"):
    """``torch.load(path, map_location="cpu", weights_only=True)``; any failure -> one-line
    :class:`UdasError` naming the file and ``what`` it should have been ("model file", ...)."""
    path = Path(path)
    if path.is_dir():
        raise UdasError(f"{path}: is a folder, not a {what}")
    if not path.is_file():
        raise UdasError(f"{path}: {what} not found")
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle's protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not str(exc).startswith("Weights only load failed"):
            raise UdasError(f"{path}: {what} not readable (UnpicklingError); it is damaged or was not written by torch.save") from None
        raise UdasError(
            f"{path}: refused: not a weights-only file (it may carry code; the loader stopped at: "
            f"{_weights_only_reason(exc)}); udas-ray loads only tensors and plain values, use a {what} written by udas-ray"
        ) from None
    except PermissionError:
        raise UdasError(f"{path}: {what} not readable (permission denied)") from None
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise UdasError(f"{path}: {what} not readable ({exc.__class__.__name__}); it is damaged or was not written by torch.save") from None


def read_model_file(path: str | Path) -> dict:
    blob = load_torch_file(path, "model file")
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise UdasError(f"{path}: not a udas-ray model file (expected a model.pt written by a stage)")
    return blob


def load_state_into(model: torch.nn.Module, state_dict: dict, path: str | Path) -> None:
    """Load weights, refusing with a one-line message when they do not fit the model."""
    own = unwrap(model).state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise UdasError(f"{path}: weights do not fit the model: {', '.join(detail)}; was it trained with another model.name?")
    for key, value in own.items():
        if tuple(value.shape) != tuple(state_dict[key].shape):
            raise UdasError(
                f"{path}: weights do not fit the model: {key} is {tuple(state_dict[key].shape)} in the file "
                f"but {tuple(value.shape)} in the model; check model.name and the number of classes"
            )
    unwrap(model).load_state_dict(state_dict)


def load_model(path: str | Path, expect_name: str | None = None) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, the file's metadata) from a model file."""
    from udas_ray.models import SCRATCH, build_segmenter

    blob = read_model_file(path)
    if expect_name and blob["model_name"] != expect_name:
        raise UdasError(
            f"{path}: holds a {blob['model_name']} model but model.name is {expect_name}; "
            "use the same model.name or start the student fresh (self_training.init=fresh)"
        )
    # the file holds every weight: no ImageNet file is read only to be overwritten
    model = build_segmenter(blob["model_name"], blob["num_classes"], SCRATCH, **blob.get("model_options", {}))
    load_state_into(model, blob["state_dict"], path)
    model.eval()
    return model, blob
