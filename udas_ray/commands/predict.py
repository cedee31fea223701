"""Predict a target split, or any folder of images, with a trained model: labelId PNGs.

``udas-predict`` is ``python jobs/predict.py`` in a checkout:

    udas-predict --run RUN_DIR [--stage NAME] [--split val] --out DIR [--color]
    udas-predict --checkpoint MODEL.pt --config FILE [key=value ...] --out DIR
    udas-predict (--run RUN_DIR | --checkpoint MODEL.pt) --images FOLDER --out DIR

One labelId PNG per input image, named after it, at the image's full resolution (its ground
truth's, for a split), so cityscapesscripts' evalPixelLevelSemanticLabeling accepts DIR as it
is. The model sees each image at data.image_size; its logits are upsampled (bilinear) to the
full size before the argmax. The default stage is the run's last finished one. Prints the
split's mIoU when it has labels. Logs progress (images, rate, ETA) every 10 s on stderr.

--images FOLDER predicts every png/jpg/jpeg/bmp/webp file under FOLDER, sub-folders included
(hidden files and folders, and DIR itself if it lies inside FOLDER, are skipped), in sorted
order, into DIR/<same sub-folder>/<stem>.png; no labels, no dataset config. The model input
size is data.image_size of the run's config, of --config, or else of the config saved in the
model file. --color also writes Cityscapes-palette pictures into the sibling folder DIR_color,
so DIR holds nothing but labelId files. --device defaults to cuda when there is one, else cpu.
"""

import json
import sys
from pathlib import Path

from udas_ray import cli, classes
from udas_ray.checkpoints import load_model
from udas_ray.config import load_config, parse_override, validate
from udas_ray.data import images
from udas_ray.data.splits import read_target
from udas_ray.driver import CONFIG_FILE, MANIFEST_FILE, plan
from udas_ray.errors import UdasError
from udas_ray.inference import batched, predict_images
from udas_ray.metrics import Evaluator, export_cityscapes
from udas_ray.models import to_memory_format
from udas_ray.progress import Ticker

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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


def load_run_model(run_dir: str | Path, stage: str | None = None) -> tuple:
    """(model in eval mode, its file's metadata) of a stage of a run.dir (default: its last
    finished stage, the oracle aside)."""
    return load_model(model_of_run(Path(run_dir), stage)[0])


def image_files(folder: Path, skip: tuple[Path, ...] = ()) -> list[tuple[Path, Path]]:
    """(image, output name relative to OUT) for every image file under ``folder``, sorted; two
    images that would write the same output (a.png and a.jpg) are refused."""
    if not folder.is_dir():
        raise UdasError(f"{folder}: --images folder not found")
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if (not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES
                or any(part.startswith(".") for part in rel.parts)
                or any(path.resolve().is_relative_to(s) for s in skip)):
            continue
        name = rel.with_suffix(".png")
        if name in found:
            raise UdasError(f"{found[name]} and {path} would both be written as {name}; rename one of them")
        found[name] = path
    if not found:
        raise UdasError(f"{folder}: no image files ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) in it or its sub-folders")
    for path in found.values():
        images.probe(path)  # an unreadable file fails here, before anything is written
    return [(path, name) for name, path in found.items()]


def pick_device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UdasError(f"--device {name}: not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UdasError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UdasError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def checkpoint_config(args, blob: dict):
    """The config saved in a model file (the one it was trained with) + the overrides."""
    try:
        cfg = validate(blob.get("config") or {}, f"{args.checkpoint} (its saved config)")
        cfg = cfg.override(dict(parse_override(text) for text in args.overrides))
    except UdasError as exc:
        raise UdasError(f"{exc}; pass --config FILE") from None
    return cli.settle(cfg, args)


@cli.entry_point
def main(argv=None):
    p = cli.parser(__doc__.splitlines()[0], default_config=None)
    p.add_argument("--run", type=Path, help="a run.dir written by jobs/self_train.py")
    p.add_argument("--stage", help="stage whose model to use (default: the last finished one)")
    p.add_argument("--checkpoint", type=Path, help="a model.pt (with --config, or with --images)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--images", type=Path, help="predict every image file under this folder instead of a split")
    p.add_argument("--out", type=Path, help="folder for the labelId PNGs")
    p.add_argument("--color", action="store_true", help="also write colour pictures into the sibling folder OUT_color")
    p.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    if bool(args.run) == bool(args.checkpoint):
        raise UdasError("give --run RUN_DIR, or --checkpoint MODEL.pt (with --config FILE, or with --images DIR)")
    if args.run:
        if args.config:
            raise UdasError("--config goes with --checkpoint; --run uses RUN_DIR/" + CONFIG_FILE)
        cfg = cli.config_from(args, args.run / CONFIG_FILE)
        model, blob = load_run_model(args.run, args.stage)
        stage = blob["stage"]
    elif args.config:
        cfg = cli.config_from(args)
        model, blob = load_model(args.checkpoint)
        stage = blob.get("stage") or args.checkpoint.parent.name
    elif args.images:
        model, blob = load_model(args.checkpoint)
        cfg = checkpoint_config(args, blob)
        stage = blob.get("stage") or args.checkpoint.parent.name
    else:
        raise UdasError("--checkpoint needs --config FILE (the data it predicts), unless you give --images DIR")
    if args.out is None:
        raise UdasError("give --out DIR, the folder for the predictions")
    out = args.out.resolve()
    color_dir = out.with_name(out.name + "_color")
    device = pick_device(args.device)
    try:
        model = to_memory_format(model.to(device), cfg.train.channels_last)
    except (RuntimeError, AssertionError) as exc:
        raise UdasError(f"--device {args.device}: cannot use it ({str(exc).splitlines()[0]})") from None

    evaluator, label_kind = None, None
    if args.images:
        todo = [(path, name, None) for path, name in image_files(args.images, skip=(out, color_dir))]
        what = str(args.images)
    else:
        split = read_target(cfg, args.split)
        todo = [(s.image, s.name, s.label) for s in split.samples]
        what = f"{split.root} {args.split}"
        label_kind = split.label_kind
        evaluator = Evaluator(protocol=cfg.data.protocol) if split.has_labels else None

    size = tuple(cfg.data.image_size)
    out.mkdir(parents=True, exist_ok=True)
    ticker = Ticker(len(todo), f"predict {stage}")
    for chunk in batched(todo, args.batch_size):
        originals = [images.read_image(path) for path, _, _ in chunk]
        truths = [images.read_label(label, label_kind) if label else None for _, _, label in chunk]
        full_sizes = [t.shape if t is not None else im.shape[:2] for im, t in zip(originals, truths)]
        preds = predict_images(model, originals, size, full_sizes, device=device)
        for (_, name, _), truth, pred in zip(chunk, truths, preds):
            if evaluator is not None and truth is not None:
                evaluator.update(pred, truth)
            export_cityscapes(pred, str(name), pred.shape, out)
            if args.color:
                images.write_png(color_dir / name, classes.colorize(pred))
        ticker.update(len(chunk))
    ticker.finish()
    print(f"{stage}: wrote {len(todo)} predictions of {what} to {out} (on {device})")
    if args.color:
        print(f"colour pictures in {color_dir}")
    if evaluator:
        r = evaluator.result()
        print(f"mIoU {r['miou']:.2f}  pixel accuracy {r['pixel_accuracy']:.2f} (at full resolution)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
