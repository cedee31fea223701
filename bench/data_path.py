"""The data path at real size: images per second per CPU for each step of building a training example.

    python bench/data_path.py [--config conf/gta5_cityscapes.yaml] [--data DIR] [--seconds 3] [--out FILE]

On a pair at GTA5's and Cityscapes' sizes (bench/rehearsal.py's, written under ``--data`` if it is
not there yet), one process with one thread (what one of ``scaling.data_cpus`` gives Ray Data)
times, each for about ``--seconds``:
  decode      a PNG image and its label, source (1914x1052) and target (2048x1024)
  resize      to the config's sizes: source to data.source.image_size, target to data.image_size
  scale+crop  augment.scale / augment.crop as the config has them, and the mirror
  cutmix      a box of a target image pasted into a source image (image and label)
  jitter      augment.jitter's colour jitter
  randomize   augment.randomize's appearance randomization (its strengths, even if it is off)
  example     one whole teacher example as the training stage builds it (udas_ray.data.batches:
              a source image, a CutMix of source and labeled target, an unlabeled target image)
A GPU worker needs ``steps/s x train.batch_size / example/s`` CPUs of Ray Data to be kept fed:
the printed table gives example/s; bench/gpu_check.py gives a GPU's steps/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one CPU: a Ray Data actor's share

import numpy as np  # noqa: E402

from common import RESULTS, metadata, write_result  # noqa: E402
from rehearsal import make_pair  # noqa: E402
from udas_ray.config import load_config  # noqa: E402
from udas_ray.data import augment, images  # noqa: E402
from udas_ray.data.batches import AugmentParams, BatchBuilder, Streams  # noqa: E402
from udas_ray.data.splits import read_source, read_target  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def rate(fn, seconds: float) -> dict:
    """Calls of ``fn`` (one image each) per second, after one call to warm up."""
    fn(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        n += 1
        fn(n)
    elapsed = time.perf_counter() - start
    return {"images_per_s": round(n / elapsed, 2), "ms_per_image": round(1000 * elapsed / n, 1), "calls": n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "conf" / "gta5_cityscapes.yaml"))
    p.add_argument("--data", type=Path, default=REPO / "data" / "rehearsal")
    p.add_argument("--images", default="60,60,12", help="the pair's counts (bench/rehearsal.py's --images)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--out", default=str(RESULTS / "data_path.json"))
    args = p.parse_args()
    source_root, target_root = make_pair(args.data, *(int(x) for x in args.images.split(",")))
    cfg = load_config(args.config, [f"data.source.root={source_root}", f"data.target.root={target_root}"])
    src, tgt = read_source(cfg), read_target(cfg, "train")
    src_items = [(s.image, s.label, src.label_kind) for s in src.samples]
    tgt_items = [(s.image, s.label, tgt.label_kind) for s in tgt.samples]
    src_size = tuple(cfg.source_size)
    size = tuple(cfg.data.image_size)
    rng = np.random.default_rng(0)

    def pick(items, i):
        return items[i % len(items)]

    src_img, src_lbl = (images.resize_image(images.read_image(src_items[0][0]), size),
                        images.resize_label(images.read_label(src_items[0][1], src_items[0][2]), size))
    tgt_img, tgt_lbl = (images.resize_image(images.read_image(tgt_items[0][0]), size),
                        images.resize_label(images.read_label(tgt_items[0][1], tgt_items[0][2]), size))
    full_src = images.read_image(src_items[0][0]), images.read_label(src_items[0][1], src_items[0][2])
    full_tgt = images.read_image(tgt_items[0][0]), images.read_label(tgt_items[0][1], tgt_items[0][2])
    aug = cfg.augment
    params = AugmentParams.from_config(aug, randomize=True)
    streams = Streams(sup=src_items, sup_size=src_size, target_size=size, mix_source=src_items,
                      mix_target=tgt_items, target=tgt_items)
    builder = BatchBuilder(streams, AugmentParams.from_config(aug, randomize=aug.randomize.enabled), seed=0)
    ops = {
        "decode source image+label": lambda i: (images.read_image(pick(src_items, i)[0]),
                                                images.read_label(pick(src_items, i)[1], src.label_kind)),
        "decode target image+label": lambda i: (images.read_image(pick(tgt_items, i)[0]),
                                                images.read_label(pick(tgt_items, i)[1], tgt.label_kind)),
        f"resize source to {src_size[0]}x{src_size[1]}": lambda i: (images.resize_image(full_src[0], src_size),
                                                                   images.resize_label(full_src[1], src_size)),
        f"resize target to {size[0]}x{size[1]}": lambda i: (images.resize_image(full_tgt[0], size),
                                                           images.resize_label(full_tgt[1], size)),
        "scale+crop+mirror": lambda i: builder._geometric(rng, tgt_img, tgt_lbl),
        "cutmix": lambda i: augment.cutmix(src_img, src_lbl, tgt_img, tgt_lbl,
                                           augment.cutmix_box(*size, augment.sample_cutmix_lambda(rng, 1.0), rng)),
        "jitter": lambda i: augment.color_jitter(tgt_img, rng, **aug.jitter.model_dump()),
        "randomize": lambda i: augment.randomize_appearance(tgt_img, rng, **params.randomize),
        "teacher example (source, CutMix, target)": lambda i: builder.example(i),
    }
    table = {}
    for name, fn in ops.items():
        table[name] = rate(fn, args.seconds)
        print(f"{name:<42} {table[name]['images_per_s']:8.2f}/s {table[name]['ms_per_image']:8.1f} ms", flush=True)
    result = {**metadata(), "command": " ".join(sys.argv), "config": args.config, "image_size": list(size),
              "source_image_size": list(src_size), "scale": aug.scale, "crop": aug.crop, "per_cpu": table}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
