"""Restyling the source set with a trained style generator, as Ray Data batch inference.

:func:`translate_source` runs G (the CycleGAN generator or the SimGAN refiner) over every source
image on an actor pool and publishes ``final_root/images/<name>`` (restyled, at each image's
original resolution) with ``final_root/labels/<name>`` (the label file copied byte for byte): the
GTA5 layout. The set is written into a staging folder that is renamed into place once complete,
so a killed run never leaves a half-restyled source behind. Progress (images, rate, ETA) is
logged from the driver as the actors' batches come back.

The published set records what it was made with (``translated.json``: :func:`generator_record`);
:func:`restyled_changes` compares that with the current generator file and ``style.translate_at``,
so a set made otherwise is restyled again instead of reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from udas_ray.config import Config
from udas_ray.data import images
from udas_ray.data.batches import stage_seed
from udas_ray.data.readers import Sample, Split, read_gta5
from udas_ray.errors import UdasError
from udas_ray.models.cyclegan import to_tensor, to_uint8
from udas_ray.atomic import write_json
from udas_ray.progress import Ticker
from udas_ray.stages.style import load_generator

log = logging.getLogger("udas_ray")

TRANSLATED_FILE = "translated.json"  # written last into the staging folder: marks a complete set


@torch.no_grad()
def restyle(G: torch.nn.Module, batch: list[np.ndarray], size: tuple[int, int] | None) -> list[np.ndarray]:
    """G over uint8 images, each returned at its own resolution. ``size``: run G at that (H, W) and
    resize back (bilinear); ``None``: run at the image's resolution (reflect-padded to a multiple of 4)."""
    if size is not None:
        x = to_tensor(np.stack([images.resize_image(im, size) for im in batch]))
        return [images.resize_image(y, im.shape[:2]) for y, im in zip(to_uint8(G(x)), batch)]
    out = []
    for im in batch:
        h, w = im.shape[:2]
        x = to_tensor(im)
        x = torch.nn.functional.pad(x, (0, -w % 4, 0, -h % 4), mode="reflect")
        out.append(to_uint8(G(x)[:, :, :h, :w])[0])
    return out


class Translator:
    """Ray Data callable class: G loaded once per actor; restyled images and copied labels out."""

    def __init__(self, generator_path: str, staging: str, translate_at: str = "train_size", threads: int = 1,
                 seed: int = 0):
        torch.set_num_threads(max(1, threads))
        self.G, blob = load_generator(generator_path)
        self.size = tuple(blob["image_size"]) if translate_at == "train_size" else None
        self.staging = Path(staging)
        self.seed = seed
        self.noisy = bool(getattr(self.G, "noise", 0))

    def __call__(self, batch: dict) -> dict:
        originals = [images.read_image(p) for p in batch["image"]]
        if self.noisy:  # a refiner with a noise input draws it from torch's generator: seeded by run.seed and
            # the batch's names, so a run's restyled source is the same whichever actor gets the batch
            torch.manual_seed(stage_seed(self.seed, "restyle", *map(str, batch["name"])))
        for out, label, name in zip(restyle(self.G, originals, self.size), batch["label"], batch["name"]):
            images.write_png(self.staging / "images" / str(name), out)
            if label:
                shutil.copyfile(str(label), self.staging / "labels" / str(name))
        return {"images": np.array([len(originals)])}


def translated_name(sample: Sample) -> str:
    return Path(sample.name).stem + ".png"


def read_translated(final_root: str | Path) -> Split | None:
    """The published restyled source, or None if ``final_root`` is not a complete set."""
    final_root = Path(final_root)
    marker = final_root / TRANSLATED_FILE
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    split = read_gta5(final_root)
    if len(split) != info["images"]:
        raise UdasError(f"{final_root}: holds {len(split)} restyled images but {info['images']} were published; "
                        "delete the folder and run the style stage again")
    return replace(split, label_kind=info["label_kind"])


def teacher_source(original: Split, restyled: Split, train_on: str) -> Split:
    """The source the teacher trains on (``style.train_on``): the restyled set, or with ``both``
    the restyled images and the originals in one set, so that each is drawn as often."""
    if train_on == "both":
        return replace(restyled, samples=original.samples + restyled.samples)
    return restyled


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def generator_record(generator_path: str | Path, translate_at: str) -> dict:
    """What the restyled source was made with: for ``translated.json``."""
    return {"generator": str(generator_path), "generator_sha256": file_sha256(generator_path),
            "translate_at": translate_at}


def restyled_changes(final_root: str | Path, generator_path: str | Path, translate_at: str) -> list[str]:
    """Why the restyled source in ``final_root`` may not be reused with this generator and
    ``style.translate_at`` ([] = it may; also when there is none, nothing to compare)."""
    marker = Path(final_root) / TRANSLATED_FILE
    if not marker.is_file():
        return []
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return ["translated.json unreadable"]
    out = []
    if info.get("generator") != str(generator_path):
        out.append(f"generator {info.get('generator')} -> {generator_path}")
    if info.get("generator_sha256") is None:
        out.append("no generator hash recorded")
    elif info["generator_sha256"] != file_sha256(generator_path):
        out.append("generator file changed")
    if info.get("translate_at") != translate_at:
        out.append(f"style.translate_at {info.get('translate_at')} -> {translate_at}")
    return out


def translate_source(generator_path: str | Path, source: Split, final_root: str | Path, cfg: Config) -> Split:
    """Restyle every source image with G (Ray Data, an actor pool of ``style.actors``) into
    ``final_root`` in the GTA5 layout; each label is copied unchanged. Returns the restyled
    :class:`Split` (same label kind as ``source``). A complete ``final_root`` is returned at once
    (:func:`restyled_changes` says whether it may be)."""
    import ray.data

    from udas_ray import lost_nodes

    done_split = read_translated(final_root)
    if done_split is not None:
        log.info("[style] %s already holds the restyled source; skipping translation", final_root)
        return done_split
    if not source.has_labels:
        raise UdasError(f"{source.root}: the style stage restyles labeled source images, but some have no label")
    final_root = Path(final_root).resolve()
    names = [translated_name(s) for s in source.samples]
    if len(set(names)) != len(names):
        raise UdasError(f"{source.root}: two source images share a file name; the GTA5 layout needs unique names")
    staging = final_root.with_name(f".{final_root.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)  # left over from a killed run
    (staging / "images").mkdir(parents=True)
    (staging / "labels").mkdir()
    rows = [{"image": s.image, "label": s.label, "name": n} for s, n in zip(source.samples, names)]
    st = cfg.style
    bs = st.translate_batch_size
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // bs, 64)))
    out = ds.map_batches(
        Translator,
        fn_constructor_kwargs={"generator_path": str(generator_path), "staging": str(staging),
                               "translate_at": st.translate_at, "threads": max(1, int(st.cpus_per_actor)),
                               "seed": cfg.run.seed},
        batch_size=bs,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=st.actors),
        num_cpus=st.cpus_per_actor,
    )
    log.info("[style] restyling %d source images on %d actor(s); the first results come once the actors have "
             "loaded the generator", len(source), st.actors)
    ticker = Ticker(len(source), "style restyle")
    results = out.iter_batches(batch_size=None, batch_format="numpy")
    for batch in lost_nodes.watch_nodes(results, "style restyle", {"CPU": st.cpus_per_actor}, "style.cpus_per_actor"):
        ticker.update(int(batch["images"].sum()))
    ticker.finish()
    done = ticker.count
    if done != len(source):
        raise RuntimeError(f"style translation saw {done} of {len(source)} images")
    write_json(staging / TRANSLATED_FILE, {"images": len(source), "label_kind": source.label_kind,
                                            "source_root": source.root,
                                            **generator_record(generator_path, st.translate_at)})
    if final_root.exists():
        shutil.rmtree(final_root)
    os.replace(staging, final_root)
    return read_translated(final_root)
