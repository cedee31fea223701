"""Tiny datasets in the real on-disk layouts (GTA5, Cityscapes, SYNTHIA, folder), written by the tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from udas_ray import classes


def _label_ids(rng, h, w) -> np.ndarray:
    """Horizontal bands of a few classes: sky / building / road, plus a car box."""
    lbl = np.full((h, w), 7, np.uint8)  # road
    lbl[: h // 3] = 23  # sky
    lbl[h // 3 : h // 2] = 11  # building
    y, x = rng.integers(h // 2, h - 4), rng.integers(0, w - 6)
    lbl[y : y + 3, x : x + 6] = 26  # car
    lbl[0, 0] = 0  # an unlabeled pixel
    return lbl


def _image_for(lbl: np.ndarray, rng) -> np.ndarray:
    colours = {7: (128, 64, 128), 23: (70, 130, 180), 11: (70, 70, 70), 26: (0, 0, 142), 0: (0, 0, 0)}
    img = np.zeros(lbl.shape + (3,), np.uint8)
    for lid, col in colours.items():
        img[lbl == lid] = col
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def write_gta5(root: Path, n: int = 4, size=(24, 40), unpaired: int = 0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(1, n + 1):
        lbl = _label_ids(rng, *size)
        save(root / "images" / f"{i:05d}.png", _image_for(lbl, rng))
        # GTA5 ships palette ('P') label PNGs whose indices are labelIds.
        pal = Image.frombytes("P", (size[1], size[0]), lbl.tobytes())
        pal.putpalette(classes.PALETTE.flatten().tolist() * 13 + [0] * (768 - 19 * 3 * 13))
        (root / "labels").mkdir(parents=True, exist_ok=True)
        pal.save(root / "labels" / f"{i:05d}.png")
    for j in range(unpaired):
        save(root / "images" / f"{n + 1 + j:05d}.png", np.zeros(size + (3,), np.uint8))
    return root


def cityscapes_paths(root: Path, split: str, city: str, k: int) -> tuple[Path, Path]:
    stem = f"{city}_{k:06d}_000019"
    return (root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")


def write_cityscapes(root: Path, n_train: int = 6, n_val: int = 3, size=(24, 48), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for k in range(n):
            city = "aachen" if k % 2 == 0 else "bremen"
            img_path, lbl_path = cityscapes_paths(root, split, city, k)
            lbl = _label_ids(rng, *size)
            save(img_path, _image_for(lbl, rng))
            save(lbl_path, lbl, "L")
    return root


def write_png16_rgb(path: Path, array: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write these), like SYNTHIA's GT/LABELS."""
    h, w, _ = array.shape
    data = array.astype(">u2")
    raw = b"".join(b"\x00" + data[y].tobytes() for y in range(h))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def write_synthia(root: Path, n: int = 3, size=(20, 32), seed: int = 0) -> Path:
    """SYNTHIA ids: 1 sky, 2 building, 3 road, 8 car (-> trainIds 10, 2, 0, 13)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        ids = np.full(size, 3, np.uint16)
        ids[: size[0] // 3] = 1
        ids[size[0] // 3 : size[0] // 2] = 2
        ids[-4:-1, 2:8] = 8
        lab = np.stack([ids, rng.integers(0, 1000, size).astype(np.uint16), np.zeros(size, np.uint16)], -1)
        write_png16_rgb(root / "GT" / "LABELS" / f"{i:07d}.png", lab)
        save(root / "RGB" / f"{i:07d}.png", rng.integers(0, 255, size + (3,)).astype(np.uint8))
    return root


def write_folder(root: Path, split: str, names: list[str], labeled: list[str] = (), size=(24, 40),
                 train_ids: bool = False, seed: int = 0) -> Path:
    """Format ``folder``: ROOT/SPLIT/images/NAME (file type from its suffix) and,
    for the stems in ``labeled``, ROOT/SPLIT/labels/STEM.png in labelIds (or trainIds)."""
    rng = np.random.default_rng(seed)
    for name in names:
        lbl = _label_ids(rng, *size)
        save(root / split / "images" / name, _image_for(lbl, rng))
        stem = Path(name).stem
        if stem in labeled:
            ids = classes.label_ids_to_train_ids(lbl) if train_ids else lbl
            save(root / split / "labels" / f"{stem}.png", ids, "L")
    return root
