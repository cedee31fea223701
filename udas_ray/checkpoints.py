"""Model files: what a finished stage leaves behind and the next stage or ``predict`` loads.

A model file (``model.pt``) is a dict ``{"format", "model_name", "num_classes", "model_options",
"state_dict", "stage", "step", "config"}`` saved with torch.save, written atomically. A training
checkpoint (``state.pt`` inside a Ray checkpoint) adds the discriminator and both optimizers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from udas_ray.errors import UdasError

MODEL_FORMAT = "udas-ray-model/1"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module behind DistributedDataParallel."""
    return getattr(model, "module", model)


def atomic_save(obj, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


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


def read_model_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UdasError(f"{path}: model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise UdasError(f"{path}: not a readable model file ({exc.__class__.__name__})") from None
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
    from udas_ray.models import build_segmenter

    blob = read_model_file(path)
    if expect_name and blob["model_name"] != expect_name:
        raise UdasError(
            f"{path}: holds a {blob['model_name']} model but model.name is {expect_name}; "
            "use the same model.name or start the student fresh (self_training.init=fresh)"
        )
    model = build_segmenter(blob["model_name"], blob["num_classes"], **blob.get("model_options", {}))
    load_state_into(model, blob["state_dict"], path)
    model.eval()
    return model, blob
