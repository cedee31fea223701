"""One command that runs udas-ray's GPU code paths on a one-GPU node and writes what they measured.

    python bench/gpu_check.py --out gpu_check.json [--work DIR] [--steps 30] [--precisions fp32,bf16,fp16]
                              [key=value ...]
    python bench/gpu_check.py --cpu --out tmp/gpu_check.json   # the same checks, tiny, on the CPU (the tests)

On a bare node, first install the wheels bench/gpu_bundle.py built (its docstring says how); the
checkout is found from this file, so it needs no install. Runs the project's own code, with
MLflow tracking off (every stage's tracking URI is left unset, so mlflow is never imported):

  data       the scene generator writes a small pair in the GTA5 / Cityscapes layouts: source at
             512x1024, target at Cityscapes' full 1024x2048, trained at data.image_size 512x1024
  peak       matmul peaks measured here, float32 (TF32 off, torch's default), TF32, bfloat16 and
             float16 (8192^2 matmuls timed between synchronizations, udas_ray.flops.measure_peak)
  teacher_P  for each precision P (train.precision; fp16 with its gradient scaler): the teacher
             stage of deeplabv2_resnet101 (random init, model.pretrained=null), channels-last,
             batch 2, as the pipeline runs it (stages.kinds.train_segmenter) on one Ray Train
             worker with scaling.use_gpu=true: steps/s and images/s after the warm-up window,
             GFLOP/s (the loop's own FLOP count) and MFU against the float32 and the bfloat16
             peak, the worker's peak CUDA memory (torch.cuda.max_memory_allocated), data wait
  teacher_bf16_in_process
             the bf16 teacher in Ray Train's in-process mode (scaling.num_workers=0), inside a Ray
             task holding the GPU, as the pipeline's driver actor does with conf/default.yaml
  eval_full_P  target-val scored at full resolution (data.eval_resolution=full: logits upsampled
             to the 1024x2048 labels) by the stage's own evaluation, at each precision: images/s
  pseudo     a pseudo-label round (pseudo.k=3 views, bf16) on a Ray Data actor holding the GPU:
             images/s once the actor answers, and over the whole round
  predict    udas-predict (commands.predict) --device cuda on target-val: images/s, full-size PNGs
  tracking_off  mlflow imported by none of the processes above

A failing check is recorded with its error and the others still run; the exit status is 1 if
any failed. The JSON (--out) holds the figures, the GPU, torch, CUDA and Ray versions, and
per check ``ok`` and ``error``. ``--cpu``: deeplabv2_tiny, 64x128 images (128x256 full size),
a handful of steps, fp32 and bf16, everything on the CPU; about a minute on two cores, where
the teachers of each precision run in-process and one bf16 teacher (``teacher_bf16_worker``)
on a Train worker, whose worker group alone takes ~20 s to start and stop there.
A GFLOP/s figure above the fastest measured peak fails its check (bench/common.py): the FLOP
count or the rate behind it is wrong. fp32 convolutions run on TF32 (cuDNN's default), so
their MFU against the float32 matmul peak may pass 100 %.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(ROOT))  # a bare node: this checkout's udas_ray, installed or not (bench/ is sys.path[0])
# Ray workers and actors import udas_ray too, wherever the command was started from.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])

import torch  # noqa: E402

from common import mean_of, metadata, peak_violations, windows_after_warmup, write_result  # noqa: E402
from udas_ray import flops  # noqa: E402
from udas_ray.atomic import write_json  # noqa: E402
from udas_ray.cli import DEFAULT_CONFIG  # noqa: E402
from udas_ray.config import load_config  # noqa: E402
from udas_ray.stages import kinds, loop  # noqa: E402
from udas_ray.stages.runtime import read_history, threads_for  # noqa: E402

log = logging.getLogger("gpu_check")
MEASURED_FILE = "gpu_check_process.json"  # in a stage folder: what its training process saw
_WORKER_LOOP = loop.worker_loop  # Ray Train's function, wrapped by measured_worker_loop


@dataclass(frozen=True)
class Sizes:
    model: str
    image_size: tuple[int, int]  # data.image_size (and the source's size)
    full_size: tuple[int, int]  # the target's size on disk: where eval_full scores
    num_source: int
    num_target_train: int
    num_target_val: int
    batch_size: int
    steps: int
    log_every: int
    precisions: tuple[str, ...]
    cpus_per_worker: float
    data_workers: int
    data_cpus: float
    pseudo_cpus: float
    ray_num_cpus: int | None
    peak_side: int  # of the matmuls timed for the peak
    in_process: bool  # the teacher of each precision in Ray Train's in-process mode; one bf16 teacher in the other


GPU_SIZES = Sizes("deeplabv2_resnet101", (512, 1024), (1024, 2048), 16, 16, 8, batch_size=2, steps=30, log_every=5,
                  precisions=("fp32", "bf16", "fp16"), cpus_per_worker=4, data_workers=4, data_cpus=2, pseudo_cpus=4,
                  ray_num_cpus=None, peak_side=8192, in_process=False)
CPU_SIZES = Sizes("deeplabv2_tiny", (64, 128), (128, 256), 8, 8, 4, batch_size=2, steps=6, log_every=2,
                  precisions=("fp32", "bf16"), cpus_per_worker=1, data_workers=1, data_cpus=0.5, pseudo_cpus=1,
                  ray_num_cpus=4, peak_side=1024, in_process=True)  # a Train worker group starts in ~20 s here
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def overrides(s: Sizes, work: Path, gpu: bool) -> list[str]:
    size = lambda hw: f"[{hw[0]},{hw[1]}]"  # noqa: E731
    return [
        f"run.dir={work / 'run'}", "run.baselines=false", "self_training.rounds=1",
        "data.source.format=scenes", f"data.source.root={work / 'data' / 'source'}",
        "data.target.format=scenes", f"data.target.root={work / 'data' / 'target'}", "data.target.labeled=0",
        f"data.image_size={size(s.image_size)}", f"data.scenes.source_size={size(s.image_size)}",
        f"data.scenes.target_size={size(s.full_size)}", f"data.scenes.num_source={s.num_source}",
        f"data.scenes.num_target_train={s.num_target_train}", f"data.scenes.num_target_val={s.num_target_val}",
        "data.verify=header", "data.eval_resolution=full",
        f"model.name={s.model}", "model.pretrained=null",
        f"train.batch_size={s.batch_size}", f"train.steps={s.steps}", f"train.log_every={s.log_every}",
        f"train.eval_every={s.steps}", f"train.checkpoint_every={s.steps}", "train.channels_last=true",
        f"scaling.use_gpu={str(gpu).lower()}", "scaling.num_workers=1", f"scaling.cpus_per_worker={s.cpus_per_worker}",
        f"scaling.data_workers={s.data_workers}", f"scaling.data_cpus={s.data_cpus}", "scaling.max_failures=0",
        f"scaling.ray_num_cpus={s.ray_num_cpus if s.ray_num_cpus else 'null'}",
        "pseudo.k=3", "pseudo.actors=1", f"pseudo.cpus_per_actor={s.pseudo_cpus}", "pseudo.batch_size=2",
    ]


# ------------------------------------------------------------------------------ what ran where
def measured_worker_loop(config: dict) -> dict:
    """Ray Train's ``loop.worker_loop``, and what its process saw: the device (as the loop's
    session got it), the peak CUDA memory, whether mlflow was imported; into the stage folder."""
    import ray.train.torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = _WORKER_LOOP(config)
    write_json(Path(config["spec"].out_dir) / MEASURED_FILE, process_record(ray.train.torch.get_device()))
    return result


def process_record(device: torch.device) -> dict:
    return {"device": str(device),
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
            "mlflow_imported": "mlflow" in sys.modules}


@contextlib.contextmanager
def measured_training():
    """``loop.train_on_ray`` hands Ray Train :func:`measured_worker_loop` instead of ``worker_loop``."""
    loop.worker_loop = measured_worker_loop
    try:
        yield
    finally:
        loop.worker_loop = _WORKER_LOOP


def in_process_stage(ctx: kinds.StageContext) -> dict:
    """A segmentation stage in Ray Train's in-process mode, in this Ray task (which holds the GPU,
    as the pipeline's driver actor does); the runner's fields and what this process saw."""
    import ray.train.torch

    from udas_ray.cluster import quiet_ray_data

    quiet_ray_data()  # as the driver actor's Pipeline does
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    fields = kinds.train_segmenter(ctx)
    return {"fields": fields, **process_record(ray.train.torch.get_device())}


# ------------------------------------------------------------------------------------ checks
class Checks:
    """Runs each check, recording its figures or its error; one failing does not stop the rest."""

    def __init__(self):
        self.results: dict[str, dict] = {}

    def run(self, name: str, fn, *args, **kwargs):
        log.warning("=== %s", name)
        start = time.perf_counter()
        value = None
        try:
            value = fn(*args, **kwargs)
            self.results[name] = {"ok": True, **(value if isinstance(value, dict) else {})}
        except (Exception, SystemExit) as exc:  # SystemExit: a command's entry point exiting on an error
            self.results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip(),
                                  "traceback": traceback.format_exc(limit=-6)}
            log.error("%s failed: %s", name, self.results[name]["error"])
        self.results[name]["wall_s"] = round(time.perf_counter() - start, 2)
        return value

    @property
    def failed(self) -> list[str]:
        return [n for n, r in self.results.items() if not r["ok"]]


def check_data(cfg) -> dict:
    from udas_ray.data.splits import load_splits

    splits = load_splits(cfg)
    return {"splits": splits, "source_images": len(splits.source), "target_train_images": len(splits.target_train),
            "target_val_images": len(splits.target_val), "pair": cfg.data.scenes.pair,
            "source_size": list(cfg.data.scenes.source_size), "target_size": list(cfg.data.scenes.target_size)}


def check_peak(gpu: bool, s: Sizes) -> dict:
    """Matmul peaks per compute dtype (GFLOP/s): the denominators of MFU."""
    flops.warm_up_counter()
    if not gpu:  # the Train worker's torch threads
        threads = threads_for(s.cpus_per_worker)
        wanted = {"fp32", "bf16", *s.precisions}  # bf16: the in-process teacher's
        peaks = {p: flops.measure_peak(threads, seconds=0.5, size=s.peak_side, dtype=DTYPES[p]) for p in sorted(wanted)}
        return {"gflops_per_s": {p: round(v, 1) for p, v in peaks.items()}, "threads": threads}
    peaks = {}
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    try:
        for name, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                  ("bf16", torch.bfloat16, False), ("fp16", torch.float16, False)):
            matmul.allow_tf32 = tf32
            peaks[name] = round(flops.measure_peak(dtype=dtype, device="cuda"), 1)
            torch.cuda.empty_cache()  # the matmul's operands, gone with the call
    finally:
        matmul.allow_tf32 = before
    return {"gflops_per_s": peaks, "matmul_side": s.peak_side}


def flops_per_step(history: list[dict]) -> int:
    return next(h["flops_per_step"] for h in history if "flops_per_step" in h)


def streams_of(windows: list[dict]) -> set[str]:
    """The batch streams a stage's loss terms read (its log windows name the terms as loss_<term>)."""
    from udas_ray.stages.terms import TERMS

    return {s for k in windows[0] if k.startswith("loss_") and k[5:] in TERMS for s in TERMS[k[5:]].reads}


def check_teacher(cfg, splits, precision: str, peaks: dict, work: Path, gpu: bool, in_process: bool = False) -> dict:
    """The teacher stage at ``precision``, by its kind's runner; its speed, FLOPs, MFU and memory."""
    import ray

    tag = mode_name(precision, in_process, primary=None)
    run_dir = work / f"teacher_{tag}"  # its own: Ray Train would resume another run's checkpoint
    # the loop's own MFU against this run's peak (None: it measures a CPU matmul, wrong on a GPU)
    cfg = cfg.override({"train.precision": precision, "train.peak_gflops": peaks.get(precision), "run.dir": str(run_dir),
                        "scaling.num_workers": 0 if in_process else 1})
    ctx = kinds.StageContext(cfg, splits, kinds.StagePlan("teacher", "teacher", True), run_dir, parents={})
    if in_process:  # the GPU held by the calling process, as the pipeline's driver actor holds it
        task = ray.remote(num_cpus=0, num_gpus=1 if gpu else 0, max_retries=0)(in_process_stage)
        seen = ray.get(task.remote(ctx))
        fields = seen.pop("fields")
    else:
        with measured_training():
            fields = kinds.train_segmenter(ctx)
        seen = json.loads((ctx.out_dir / MEASURED_FILE).read_text())
    history = read_history(ctx.out_dir)
    windows = windows_after_warmup(history)
    rate, count = mean_of(windows, "steps_per_s"), flops_per_step(history)
    gflops = flops.gflops_per_s(count, rate)
    images_per_step = cfg.train.batch_size * len(streams_of(windows))
    if gpu and (not seen["device"].startswith("cuda") or not seen["peak_memory_bytes"]):
        raise RuntimeError(f"scaling.use_gpu=true, but the stage trained on {seen['device']} "
                           f"(peak CUDA memory {seen['peak_memory_bytes']})")
    impossible = peak_violations({f"teacher_{tag}": gflops}, max(peaks.values())) if peaks else []
    if impossible:
        raise RuntimeError("; ".join(impossible))
    timing = json.loads((ctx.out_dir / loop.TIMING_FILE).read_text())
    return {
        "precision": precision, "mode": "in_process" if in_process else "one Train worker",
        "device": seen["device"], "steps_per_s": round(rate, 3), "images_per_step": images_per_step,
        "images_per_s": round(rate * images_per_step, 2), "flops_per_step": count, "gflops_per_s": round(gflops, 1),
        "mfu_vs_fp32_peak": share(gflops, peaks.get("fp32")), "mfu_vs_bf16_peak": share(gflops, peaks.get("bf16")),
        "peak_memory_bytes": seen["peak_memory_bytes"],
        "data_wait_share": round(mean_of(windows, "data_wait_share"), 4), "windows_after_warmup": len(windows),
        "final_val_miou": round(fields["metrics"]["miou"], 2), "phase_seconds": timing["seconds"],
        "mlflow_imported": seen["mlflow_imported"], "model": fields["model"],
    }


def share(value: float, peak: float | None) -> float | None:
    return round(value / peak, 4) if peak else None


def mode_name(precision: str, in_process: bool, primary: bool | None) -> str:
    """``fp32``; with the other mode than the primary one (None: always) ``bf16_in_process`` / ``bf16_worker``."""
    if primary is not None and in_process == primary:
        return precision
    return f"{precision}_{'in_process' if in_process else 'worker'}"


def check_eval_full(cfg, splits, precision: str, model_path: str, device: torch.device, work: Path) -> dict:
    """Target-val at full resolution by the stage's own evaluation (segment.evaluate), at ``precision``."""
    from udas_ray.checkpoints import load_model
    from udas_ray.data.batches import items
    from udas_ray.inference import SplitCache
    from udas_ray.models import to_memory_format
    from udas_ray.stages import segment
    from udas_ray.stages.runtime import PlainSession

    cfg = cfg.override({"train.precision": precision})
    model = to_memory_format(load_model(model_path)[0].to(device), cfg.train.channels_last)
    val = items(splits.target_val)
    cache = SplitCache(val, tuple(cfg.data.image_size), full_labels=cfg.data.eval_resolution == "full")
    label_size = cache.get(0)[1].shape
    if tuple(label_size) == tuple(cfg.data.image_size):
        raise RuntimeError(f"labels at {label_size}, the input size: not a full-resolution evaluation")
    session, spec = PlainSession(work / "eval", str(device)), SimpleNamespace(val=val)
    segment.evaluate(model, spec, cache, cfg, session)  # warm-up: decodes the images, picks the kernels
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result, _ = segment.evaluate(model, spec, cache, cfg, session)
    sync(device)
    seconds = time.perf_counter() - start
    return {"precision": precision, "device": str(device), "images": len(val), "images_per_s": round(len(val) / seconds, 2),
            "input_size": list(cfg.data.image_size), "label_size": list(label_size), "miou": round(result["miou"], 2),
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_pseudo(cfg, splits, model_path: str, precision: str) -> dict:
    """A pseudo-label round by its kind's runner (stages.kinds.label_target), at ``precision``."""
    from udas_ray.progress import Ticker
    from udas_ray.stages import pseudo

    ticks: list[tuple[float, int]] = []

    class Timed(Ticker):  # when pass 1's results come back (its first waits for the actor to load the model)
        def update(self, n: int = 1) -> bool:
            said = super().update(n)
            if "pass 1" in self.what:
                ticks.append((time.perf_counter(), self.count))
            return said

    cfg = cfg.override({"train.precision": precision})
    stage = kinds.StagePlan("pseudo_1", "pseudo", False, round=1, model_from="teacher")
    ctx = kinds.StageContext(cfg, splits, stage, Path(cfg.run.dir), parents={"teacher": {"model": model_path}})
    start = time.perf_counter()
    with mock.patch.object(pseudo, "Ticker", Timed) if hasattr(pseudo, "Ticker") else contextlib.nullcontext():
        fields = kinds.label_target(ctx)
    seconds = time.perf_counter() - start
    n = len(splits.target_train)
    steady = None
    if len(ticks) >= 2 and ticks[-1][0] > ticks[0][0]:
        steady = round((ticks[-1][1] - ticks[0][1]) / (ticks[-1][0] - ticks[0][0]), 2)
    return {"precision": precision, "k": cfg.pseudo.k, "images": n, "images_per_s_after_first_batch": steady,
            "images_per_s_whole_round": round(n / seconds, 2), "kept_share": round(fields["metrics"]["kept_share"], 4),
            "gpus_per_actor": pseudo.actor_resources(cfg)["GPU"]}


def check_predict(cfg, model_path: str, device: torch.device, work: Path) -> dict:
    """udas-predict on target-val (full-size labelId PNGs and the mIoU at full resolution)."""
    from udas_ray.commands import predict

    config, out = work / "predict_config.yaml", work / "predict"
    config.write_text(cfg.to_yaml())
    argv = ["--checkpoint", model_path, "--config", str(config), "--split", "val", "--out", str(out),
            "--device", device.type, "--batch-size", "4"]
    printed = io.StringIO()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        status = predict.main(argv)
    seconds = time.perf_counter() - start
    text = printed.getvalue()
    print(text, end="")
    if status != 0:
        raise RuntimeError(f"udas-predict exited with {status}")
    on = re.search(r"\(on (\S+)\)", text)
    if not on or not on.group(1).startswith(device.type):
        raise RuntimeError(f"udas-predict did not say it ran on {device.type}: {text.strip()!r}")
    pngs = sorted(out.rglob("*.png"))
    from PIL import Image

    sizes = {Image.open(p).size[::-1] for p in pngs}
    miou = re.search(r"mIoU (\S+)", text)
    return {"device": on.group(1), "images": len(pngs), "images_per_s": round(len(pngs) / seconds, 2),
            "output_sizes": sorted(list(s) for s in sizes), "miou": float(miou.group(1)) if miou else None,
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None}


def check_tracking_off(results: dict) -> dict:
    """No process imported mlflow (the stages ran with tracking off)."""
    where = [name for name, r in results.items() if r.get("mlflow_imported")]
    if "mlflow" in sys.modules:
        where.append("this process")
    if where:
        raise RuntimeError(f"mlflow was imported in: {', '.join(where)}")
    return {"mlflow_imported": False}


def fresh_model(cfg, work: Path) -> str:
    """A model file of a randomly initialised segmenter, for the checks after training when no
    teacher stage finished."""
    from udas_ray.checkpoints import save_model
    from udas_ray.classes import NUM_CLASSES
    from udas_ray.models import build_segmenter

    model = build_segmenter(cfg.model.name, NUM_CLASSES, cfg.model.pretrained)
    path = work / "fresh" / "model.pt"
    save_model(path, model, model_name=cfg.model.name, num_classes=NUM_CLASSES, model_options={}, stage="fresh",
               step=0, config=cfg.to_dict())
    return str(path)


# ---------------------------------------------------------------------------------- the run
def environment(gpu: bool) -> dict:
    out = {**metadata(), "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if gpu else None,
           "gpu": None}
    if gpu:
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}", "memory_bytes": props.total_memory,
                      "count": torch.cuda.device_count()}
        out["tf32"] = {"cuda_matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the results JSON")
    p.add_argument("--cpu", action="store_true", help="tiny sizes, all on the CPU (what the tests run)")
    p.add_argument("--work", type=Path, help="folder for data and runs (default: a temporary one, removed)")
    p.add_argument("--steps", type=int, help="training steps per teacher (default: 30, --cpu 6)")
    p.add_argument("--precisions", help="comma-separated (default: fp32,bf16,fp16; --cpu fp32,bf16)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    gpu = not args.cpu
    if gpu and not torch.cuda.is_available():
        p.error("no CUDA device: run it on the GPU node, or with --cpu")
    sizes = CPU_SIZES if args.cpu else GPU_SIZES
    if args.steps:
        sizes = Sizes(**{**sizes.__dict__, "steps": args.steps, "log_every": max(1, args.steps // 6)})
    if args.precisions:
        sizes = Sizes(**{**sizes.__dict__, "precisions": tuple(args.precisions.split(","))})
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work = work.resolve()
    device = torch.device("cuda" if gpu else "cpu")
    checks = Checks()
    started = time.perf_counter()
    try:
        cfg = load_config(DEFAULT_CONFIG, [*overrides(sizes, work, gpu), *args.overrides])
        data = checks.run("data", check_data, cfg) or {}
        splits = data.pop("splits", None)
        checks.results["data"].pop("splits", None)
        from udas_ray.cluster import connect

        checks.run("ray", lambda: {"started_here": connect(cfg)})
        peaks = (checks.run("peak", check_peak, gpu, sizes) or {}).get("gflops_per_s", {})
        models = []
        runs = [(precision, sizes.in_process) for precision in sizes.precisions] + [("bf16", not sizes.in_process)]
        for precision, in_process in runs:
            name = "teacher_" + mode_name(precision, in_process, sizes.in_process)
            result = checks.run(name, check_teacher, cfg, splits, precision, peaks, work, gpu, in_process)
            if result:
                models.append(result["model"])
        model = models[0] if models else checks.run("fresh_model", fresh_model, cfg, work)
        for precision in sizes.precisions:
            checks.run(f"eval_full_{precision}", check_eval_full, cfg, splits, precision, model, device, work)
        checks.run("pseudo", check_pseudo, cfg, splits, model, "bf16")
        checks.run("predict", check_predict, cfg, model, device, work)
        checks.run("tracking_off", check_tracking_off, dict(checks.results))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    out = {"mode": "cpu" if args.cpu else "gpu", "ok": not checks.failed, "failed": checks.failed,
           "wall_s": round(time.perf_counter() - started, 1), **environment(gpu),
           "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.__dict__.items()},
           "checks": checks.results}
    write_result(out, args.out)
    summary(out)
    return 1 if checks.failed else 0


def summary(out: dict) -> None:
    print(f"\n{'check':<26} {'ok':<5} {'wall s':>7}  figures")
    for name, r in out["checks"].items():
        keys = ("steps_per_s", "images_per_s", "images_per_s_after_first_batch", "gflops_per_s", "mfu_vs_bf16_peak",
                "peak_memory_bytes")
        figures = "  ".join(f"{k}={r[k]}" for k in keys if r.get(k) is not None) if r["ok"] else r["error"][:100]
        print(f"{name:<26} {str(r['ok']):<5} {r['wall_s']:>7.1f}  {figures}")
    print(f"{'all ok' if out['ok'] else 'FAILED: ' + ', '.join(out['failed'])} in {out['wall_s']} s")


if __name__ == "__main__":
    sys.exit(main())
