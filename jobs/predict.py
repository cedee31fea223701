"""Predict a target split with a trained stage and write it in the Cityscapes results format.

    python jobs/predict.py --run RUN_DIR [--stage NAME] [--split val] --out DIR
    python jobs/predict.py --checkpoint MODEL.pt --config FILE [key=value ...] --out DIR

One labelId PNG per input image, named after it, at the ground truth's full resolution, so
cityscapesscripts' evalPixelLevelSemanticLabeling accepts DIR as it is. The default stage is
the run's last finished one. Prints the split's mIoU when it has labels.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from udas_ray import cli, classes
from udas_ray.checkpoints import load_model
from udas_ray.config import load_config
from udas_ray.data import images
from udas_ray.data.splits import read_target
from udas_ray.driver import CONFIG_FILE, MANIFEST_FILE, plan
from udas_ray.errors import UdasError
from udas_ray.inference import batched, predict_probs
from udas_ray.metrics import Evaluator, export_cityscapes


def model_of_run(run_dir: Path, stage: str | None) -> tuple[Path, str]:
    manifest_path = run_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise UdasError(f"{run_dir}: no {MANIFEST_FILE}; is it a run.dir of jobs/self_train.py?")
    stages = json.loads(manifest_path.read_text())["stages"]
    trained = {name: s for name, s in stages.items() if s.get("status") == "done" and s.get("model")}
    if stage is None:
        if not trained:
            raise UdasError(f"{run_dir}: no stage has finished yet")
        cfg = load_config(run_dir / CONFIG_FILE)
        order = [s.name for s in plan(cfg) if s.name in trained and s.name != "oracle"] or list(trained)
        stage = order[-1]
    if stage not in trained:
        raise UdasError(f"{run_dir}: stage {stage!r} has not finished; finished: {', '.join(trained) or 'none'}")
    return Path(trained[stage]["model"]), stage


@cli.entry_point
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a run.dir written by jobs/self_train.py")
    p.add_argument("--stage", help="stage whose model to use (default: the last finished one)")
    p.add_argument("--checkpoint", type=Path, help="a model.pt (with --config)")
    p.add_argument("--config", type=Path, help="the config the checkpoint's data comes from")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--color", action="store_true", help="also write colour pictures under OUT/color")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    if args.run:
        cfg = load_config(args.run / CONFIG_FILE, args.overrides)
        model_path, stage = model_of_run(args.run, args.stage)
    elif args.checkpoint and args.config:
        cfg = load_config(args.config, args.overrides)
        model_path, stage = args.checkpoint, args.checkpoint.parent.name
    else:
        raise UdasError("give --run RUN_DIR, or --checkpoint MODEL.pt with --config FILE")
    split = read_target(cfg, args.split)
    model, _ = load_model(model_path)
    size = tuple(cfg.data.image_size)
    evaluator = Evaluator(protocol=cfg.data.protocol) if split.has_labels else None
    args.out.mkdir(parents=True, exist_ok=True)
    for chunk in batched(split.samples, args.batch_size):
        originals = [images.read_image(s.image) for s in chunk]
        batch = np.stack([images.resize_image(im, size) for im in originals])
        preds = predict_probs(model, batch).argmax(1).numpy().astype(np.uint8)
        for sample, original, pred in zip(chunk, originals, preds):
            full = original.shape[:2]
            if sample.label:
                truth = images.read_label(sample.label, split.label_kind)
                full = truth.shape
                evaluator.update(images.resize_label(pred, full), truth)
            export_cityscapes(pred, sample.name, full, args.out)
            if args.color:
                images.write_png(args.out / "color" / sample.name, classes.colorize(images.resize_label(pred, full)))
    print(f"{stage}: wrote {len(split)} predictions of {split.root} {args.split} to {args.out}")
    if evaluator:
        r = evaluator.result()
        print(f"mIoU {r['miou']:.2f}  pixel accuracy {r['pixel_accuracy']:.2f} (at full resolution)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
