"""Measure the embedded benchmark's domain gap without Ray: source-only vs oracle on target val.

    python bench/gap.py [--steps 600] [key=value ...]

Trains both baselines with the plain in-process loop (the same loop the Ray stage runs) and
prints their target-val mIoU and the ratio. Used to tune the scene generator and the recipe.
"""

import argparse
import json
import logging
import tempfile
import time

import torch

from udas_ray.cli import DEFAULT_CONFIG
from udas_ray.config import load_config
from udas_ray.data.splits import load_splits
from udas_ray.stages import kinds, segment


def main():
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--kinds", default="source_only,oracle")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"run.dir={tmp}", "data.target.labeled=0", *args.overrides])
        splits = load_splits(cfg, check_files=False)
        out = {}
        for kind in args.kinds.split(","):
            start = time.time()
            spec = kinds.build_spec(cfg, splits, kind, kind, f"{tmp}/{kind}")
            segment.run_plain(cfg, spec)
            m = segment.read_metrics(f"{tmp}/{kind}")
            out[kind] = {"miou": round(m["miou"], 2), "pixel_accuracy": round(m["pixel_accuracy"], 2),
                         "seconds": round(time.time() - start), "per_class_iou": {k: None if v is None else round(v, 1) for k, v in m["per_class_iou"].items()}}
            print(kind, out[kind]["miou"], out[kind]["pixel_accuracy"], f"{out[kind]['seconds']}s", flush=True)
        if "source_only" in out and "oracle" in out:
            print("ratio source_only/oracle:", round(out["source_only"]["miou"] / out["oracle"]["miou"], 3))
        print(json.dumps(out))


if __name__ == "__main__":
    main()
