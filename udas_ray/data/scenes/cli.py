"""The command line (``python -m udas_ray.data.scenes``) and inspection helpers: class statistics, a contact sheet."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from udas_ray.classes import CLASS_NAMES, NUM_CLASSES, colorize, label_ids_to_train_ids
from udas_ray.data.scenes.domains import DOMAINS, PAIRS, SOURCE_KNOBS
from udas_ray.data.scenes.files import (DEFAULT_NUM_SOURCE, DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SOURCE_SIZE,
                                        DEFAULT_TARGET_SIZE, write_source, write_target)
from udas_ray.data.scenes.scene import render_scene
from udas_ray.errors import UdasError


def class_frequencies(domain: str, num: int, size: tuple[int, int], seed: int = 0, split: str = "train",
                      **knobs) -> tuple[np.ndarray, np.ndarray]:
    """(pixel fraction per trainId, fraction of images containing it) over ``num`` scenes."""
    pixels = np.zeros(NUM_CLASSES + 1, np.float64)
    images = np.zeros(NUM_CLASSES + 1, np.float64)
    for i in range(num):
        _, lbl = render_scene(domain, seed, i, size, split, **knobs)
        tid = label_ids_to_train_ids(lbl)
        counts = np.bincount(np.minimum(tid, NUM_CLASSES).ravel(), minlength=NUM_CLASSES + 1)
        pixels += counts
        images += counts > 0
    return pixels[:NUM_CLASSES] / max(1.0, pixels.sum()), images[:NUM_CLASSES] / max(1, num)


def contact_sheet(path, *, num: int = 6, seed: int = 0, source_size=DEFAULT_SOURCE_SIZE,
                  target_size=DEFAULT_TARGET_SIZE, scale: int = 2, pair: str = "street") -> Path:
    """A PNG of ``num`` source and target scenes of ``pair`` with their colourised labels (rows: src
    img, src lbl, tgt...)."""
    rows = []
    for domain, size in zip(PAIRS[pair], (source_size, target_size)):
        imgs, lbls = [], []
        for i in range(num):
            img, lbl = render_scene(domain, seed, i, size)
            imgs.append(img)
            lbls.append(colorize(label_ids_to_train_ids(lbl)))
        gap = np.full((size[0], 2, 3), 255, np.uint8)
        for group in (imgs, lbls):
            rows.append(np.concatenate([x for a in group for x in (a, gap)], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)
    path = Path(path)
    sheet.save(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m udas_ray.data.scenes",
                                 description="Generate the embedded sim->real street-scene benchmark.")
    ap.add_argument("--root", help="output directory (created atomically; must not hold other data)")
    ap.add_argument("--domain", choices=sorted(DOMAINS), default="source",
                    help="written in the GTA5 layout if it is a rendered (source) domain, else as Cityscapes")
    ap.add_argument("--pair", choices=list(PAIRS), default="street", help="the pair --sheet shows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="default: 108 192 / 96 192")
    ap.add_argument("--num-images", type=int, default=DEFAULT_NUM_SOURCE, help="source images")
    ap.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN, help="target train images")
    ap.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL, help="target val images")
    for key, default in SOURCE_KNOBS.items():
        ap.add_argument(f"--{key}", type=float, help=f"knob of a rendered domain (source's default {default})")
    ap.add_argument("--sheet", metavar="PNG", help="also write a contact sheet of both domains")
    ap.add_argument("--stats", type=int, metavar="N", help="print class frequencies over N scenes of --domain")
    args = ap.parse_args(argv)
    try:
        knobs = {key: getattr(args, key) for key in SOURCE_KNOBS if getattr(args, key) is not None}
        rendered = not DOMAINS[args.domain].camera
        default_size = DEFAULT_SOURCE_SIZE if rendered else DEFAULT_TARGET_SIZE
        size = tuple(args.size) if args.size else default_size
        if args.root:
            t0 = time.perf_counter()
            if rendered:
                out = write_source(args.root, num_images=args.num_images, size=size, seed=args.seed,
                                   domain=args.domain, **knobs)
            else:
                out = write_target(args.root, num_train=args.num_train, num_val=args.num_val, size=size,
                                   seed=args.seed, domain=args.domain)
            print(f"{args.domain} scenes in {out} ({time.perf_counter() - t0:.1f} s)")
        if args.sheet:
            print(f"contact sheet: {contact_sheet(args.sheet, seed=args.seed, pair=args.pair)}")
        if args.stats:
            pix, img = class_frequencies(args.domain, args.stats, size, args.seed, **(knobs if rendered else {}))
            print(f"{'class':<14}{'pixels %':>9}{'images %':>9}")
            for name, p, q in zip(CLASS_NAMES, pix, img):
                print(f"{name:<14}{100 * p:9.2f}{100 * q:9.1f}")
        if not (args.root or args.sheet or args.stats):
            ap.error("nothing to do: give --root, --sheet or --stats")
    except UdasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
