"""Writing the benchmark to disk in the real datasets' layouts, atomically and idempotently.

Source: GTA5 (``images/00001.png`` + ``labels/00001.png``). Target: Cityscapes
(``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` + ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``).
Each root holds a ``scenes.json`` with the generation parameters: a second call with the
same parameters returns at once, one with other parameters is refused. Files are rendered
into a hidden ``.{root}.partial-{pid}`` sibling and renamed into place, so a killed run
never leaves a half-written root (its leftover directory is removed by the next run).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from udas_ray.data.scenes.domains import TARGET_CITIES, check_knobs
from udas_ray.data.scenes.scene import check_size, render_scene
from udas_ray.errors import UdasError
from udas_ray.progress import Ticker

log = logging.getLogger("udas_ray")

FORMAT_VERSION = 2  # recorded in scenes.json
# The default benchmark (sizes are (height, width)).
DEFAULT_SOURCE_SIZE = (108, 192)
DEFAULT_TARGET_SIZE = (96, 192)
DEFAULT_NUM_SOURCE = 1500
DEFAULT_NUM_TRAIN = 600
DEFAULT_NUM_VAL = 200


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, compress_level=1)


def target_name(split: str, index: int) -> tuple[str, str]:
    """(city, stem) of target image ``index`` of ``split``: stem = ``{city}_{seq:06d}_{frame:06d}``."""
    cities = TARGET_CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{19:06d}"


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UdasError(f"{name}={value!r} must be a non-negative integer")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UdasError(f"scene seed={seed!r} must be a non-negative integer")
    return int(seed)


def write_source(root, *, num_images: int = DEFAULT_NUM_SOURCE, size: tuple[int, int] = DEFAULT_SOURCE_SIZE,
                 seed: int = 0, domain: str = "source", **knobs) -> Path:
    """Write ``num_images`` scenes of ``domain`` in the GTA5 layout under ``root`` (atomic, idempotent)."""
    num_images = _check_count("num_images", num_images)
    h, w = check_size(size)
    seed = _check_seed(seed)
    knobs = check_knobs(domain, knobs)
    params = {"format": "udas_ray.scenes", "version": FORMAT_VERSION, "domain": domain, "layout": "gta5",
              "num_images": num_images, "size": [h, w], "seed": seed, "knobs": knobs}

    def fill(tmp: Path) -> None:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        log.info("[scenes %s] rendering %d images of %dx%d into %s", domain, num_images, h, w, root)
        ticker = Ticker(num_images, f"scenes {domain}")
        for i in range(num_images):
            img, lbl = render_scene(domain, seed, i, (h, w), "train", **knobs)
            name = f"{i + 1:05d}.png"
            _save_png(img, tmp / "images" / name)
            _save_png(lbl, tmp / "labels" / name)
            ticker.update()
        ticker.finish()

    return _write_atomic(root, params, fill)


def write_target(root, *, num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
                 size: tuple[int, int] = DEFAULT_TARGET_SIZE, seed: int = 0, domain: str = "target") -> Path:
    """Write scenes of ``domain`` in the Cityscapes layout (train and val) under ``root`` (atomic, idempotent)."""
    counts = {"train": _check_count("num_train", num_train), "val": _check_count("num_val", num_val)}
    h, w = check_size(size)
    seed = _check_seed(seed)
    check_knobs(domain, {})
    params = {"format": "udas_ray.scenes", "version": FORMAT_VERSION, "domain": domain, "layout": "cityscapes",
              "num_train": counts["train"], "num_val": counts["val"], "size": [h, w], "seed": seed,
              "cities": {k: list(v) for k, v in TARGET_CITIES.items()}}

    def fill(tmp: Path) -> None:
        log.info("[scenes %s] rendering %d train + %d val images of %dx%d into %s", domain, counts["train"],
                 counts["val"], h, w, root)
        ticker = Ticker(sum(counts.values()), f"scenes {domain}")
        for split, n in counts.items():
            for city in TARGET_CITIES[split][: max(0, min(n, len(TARGET_CITIES[split])))]:
                (tmp / "leftImg8bit" / split / city).mkdir(parents=True)
                (tmp / "gtFine" / split / city).mkdir(parents=True)
            for i in range(n):
                img, lbl = render_scene(domain, seed, i, (h, w), split)
                city, stem = target_name(split, i)
                _save_png(img, tmp / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
                _save_png(lbl, tmp / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
                ticker.update()
        ticker.finish()

    return _write_atomic(root, params, fill)


def _read_params(meta: Path):
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError):
        return None


def _differences(old, new) -> str:
    if not isinstance(old, dict):
        return "unreadable scenes.json"
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)!r} != {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _write_atomic(root, params: dict, fill) -> Path:
    root = Path(root).expanduser().absolute()
    params = json.loads(json.dumps(params))  # exactly what a reader gets back from scenes.json
    meta = root / "scenes.json"
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise UdasError(f"{root} exists and is not a directory; choose another root or delete it")
        if meta.is_file():
            old = _read_params(meta)
            if old == params:
                return root
            raise UdasError(f"{root} holds scenes generated with other parameters ({_differences(old, params)}); "
                            f"choose another root or delete it")
        if any(root.iterdir()):
            raise UdasError(f"{root} exists but holds no scenes.json (not written by udas_ray.data.scenes); "
                            f"choose another root or delete it")
        root.rmdir()  # an empty directory: take it over
    root.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{root.name}.partial-"
    for stale in root.parent.glob(prefix + "*"):  # left over by a killed run
        pid = stale.name[len(prefix):]
        if stale.is_dir() and (not pid.isdigit() or not _pid_alive(int(pid)) or int(pid) == os.getpid()):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = root.parent / f"{prefix}{os.getpid()}"
    tmp.mkdir()
    try:
        fill(tmp)
        (tmp / "scenes.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, root)
        except OSError:
            if meta.is_file() and _read_params(meta) == params:  # a concurrent run finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            raise UdasError(f"{root} appeared while scenes were being generated; choose another root or "
                            f"delete it") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root

