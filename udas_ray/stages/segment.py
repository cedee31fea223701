"""The segmentation stage: one training loop for the teacher, the students and the baselines.

    L = L_seg + lambda_cm * L_cm + lambda_adv * L_adv

What a stage trains on is decided by :func:`build_spec` from its kind:

  source_only  source labels only (the "no adaptation" row)
  source_randomized  the same with appearance randomization (and rare-class sampling)
  teacher      source labels + CutMix with labeled target (if any) + the adversarial term
  ema          the online alternative: a mean teacher labels target images mixed with source
               ones by ClassMix (DACS / DAFormer), instead of offline rounds
  supervised   labeled target only (the SL baseline of the data-dependency experiment)
  oracle       every target-train label (the upper bound)
  student      pseudo-labeled target (+ labeled target), no adversary

:func:`segment_loop` is the loop itself, plain PyTorch against a :class:`Session`;
:func:`run_on_ray` feeds it from a Ray Data stream on Ray Train workers and
:func:`run_plain` from the same batch builder in one process.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from udas_ray import losses, visualize
from udas_ray.checkpoints import load_model, load_state_into, save_model, unwrap
from udas_ray.classes import NUM_CLASSES
from udas_ray.config import Config
from udas_ray.adabn import adapt_batchnorm
from udas_ray.data.batches import AugmentParams, BatchBuilder, Item, Streams, items, load_item
from udas_ray.data.readers import Split
from udas_ray.data.splits import Splits
from udas_ray.errors import UdasError
from udas_ray.inference import SplitCache, batched, predict_probs, split_confusion, to_input
from udas_ray.metrics import flat_metrics, scores
from udas_ray.models import build_discriminator, build_segmenter, param_groups
from udas_ray.stages import ema
from udas_ray.stages.runtime import (PlainSession, Progress, RaySession, Session, append_history, fit,
                                     quiet_worker_logs, read_history, set_threads, write_json)
from udas_ray import tracking

log = logging.getLogger("udas_ray")

KINDS = ("source_only", "source_randomized", "teacher", "supervised", "oracle", "student", "ema")
ADABN_KINDS = ("teacher", "ema")  # stages trained on source images whose model then labels target ones
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class SegmentSpec:
    name: str
    kind: str
    streams: Streams
    augment: AugmentParams
    val: list[Item]
    steps: int
    lambda_adv: float
    lambda_cm: float
    out_dir: str
    init: str | None = None  # a model.pt to start from (a student from its teacher)
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    extra: dict = field(default_factory=dict)  # stage-specific notes for the log
    adabn: list[Item] = field(default_factory=list)  # target images whose BN statistics the final model gets


def _source_weights(cfg: Config, source: list[Item]) -> list[float] | None:
    rcs = cfg.data.rare_class_sampling
    if not rcs.enabled:
        return None
    from udas_ray.data.sampling import cached_class_pixel_counts, rare_class_weights

    counts = cached_class_pixel_counts(source, cfg.source_size, Path(cfg.run.dir) / "cache")
    return rare_class_weights(counts, rcs.temperature).tolist()


def build_spec(cfg: Config, splits: Splits, kind: str, name: str, out_dir: str | Path, *,
               pseudo: Split | None = None, init: str | None = None, steps: int | None = None) -> SegmentSpec:
    """Decide the streams, augmentation and loss weights of a stage from its kind and the data."""
    if kind not in KINDS:
        raise ValueError(f"unknown stage kind {kind!r}")
    target_size, source = tuple(cfg.data.image_size), items(splits.source)
    labeled = items(splits.target_labeled)
    randomized = cfg.augment.randomize.enabled and kind in ("source_randomized", "teacher", "ema")
    lambda_adv, lambda_cm = 0.0, 0.0
    mix_source, mix_target, adv, weights, extra = [], [], [], None, []
    if kind in ("source_only", "source_randomized", "teacher", "ema"):
        sup, sup_size = source, cfg.source_size
        if kind != "source_only":  # the paper's "no adaptation" row stays plain
            weights = _source_weights(cfg, source)
        if kind == "teacher":
            lambda_adv, lambda_cm = cfg.loss.lambda_adv, cfg.loss.lambda_cm
            if lambda_cm > 0 and labeled:
                mix_source, mix_target = source, labeled
        if (kind == "teacher" and lambda_adv > 0) or kind == "ema":
            adv = items(splits.target_train.without_labels())
        if kind == "ema":
            sup_size = target_size  # source and target pixels are mixed
    elif kind == "supervised":
        if not labeled:
            raise UdasError(f"stage {name}: the supervised baseline needs labeled target images; set data.target.labeled > 0")
        sup, sup_size = labeled, target_size
    elif kind == "oracle":
        if not splits.target_train.has_labels:
            raise UdasError(f"{splits.target_train.root}: the oracle needs target-train labels; set run.baselines=false")
        sup, sup_size = items(splits.target_train), target_size
    else:  # student
        if pseudo is None or not len(pseudo):
            raise UdasError(f"stage {name}: no pseudo-labeled target images to train the student on")
        sup, sup_size = items(pseudo) + labeled, target_size
        if cfg.self_training.source_share > 0:
            extra = source
    noisy = kind == "student" and cfg.self_training.noisy
    adabn = items(splits.target_train.without_labels()) if cfg.adabn and kind in ADABN_KINDS else []
    randomized = randomized or (kind == "student" and cfg.self_training.randomize)
    return SegmentSpec(
        name=name,
        kind=kind,
        streams=Streams(sup, tuple(sup_size), target_size, mix_source, mix_target, adv, weights, extra,
                        cfg.self_training.source_share if extra else 0.0),
        augment=AugmentParams.from_config(cfg, jitter_sup=kind == "student", randomize=randomized,
                                          classmix_sup=noisy),
        val=items(splits.target_val),
        steps=steps or cfg.train.steps,
        lambda_adv=lambda_adv if (adv and kind == "teacher") else 0.0,
        lambda_cm=lambda_cm if mix_target else 0.0,
        out_dir=str(out_dir),
        init=init,
        adabn=adabn,
    )


# --------------------------------------------------------------------------- the step
def poly_lr(base: float, step: int, total: int, power: float) -> float:
    return base * (1 - step / max(total, 1)) ** power


def set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def train_step(model, disc, opt, opt_d, batch: dict, spec: SegmentSpec, cfg: Config, session: Session) -> dict:
    """One optimisation step of the segmenter (and of the discriminator); returns loss values."""
    device = session.device
    sup_logits = model(to_input(batch["sup_image"], device))
    loss_seg = losses.segmentation_loss(sup_logits, batch["sup_label"].to(device))
    total, out = loss_seg, {"loss_seg": loss_seg.item()}
    if spec.lambda_cm > 0 and "mix_image" in batch:
        loss_cm = losses.segmentation_loss(model(to_input(batch["mix_image"], device)), batch["mix_label"].to(device))
        total = total + spec.lambda_cm * loss_cm
        out["loss_cm"] = loss_cm.item()
    if disc is not None and "adv_image" in batch:
        target_logits = model(to_input(batch["adv_image"], device))
        set_requires_grad(disc, False)  # the segmenter's step must not move the discriminator
        loss_adv = losses.adversarial_loss(disc, target_logits, cfg.loss.temperature, cfg.loss.confidence)
        total = total + spec.lambda_adv * loss_adv
        out["loss_adv"] = loss_adv.item()
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    if disc is not None and "adv_image" in batch:
        set_requires_grad(disc, True)
        loss_d = losses.discriminator_loss(disc, sup_logits, target_logits, cfg.loss.temperature)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        session.average_gradients(disc)
        opt_d.step()
        out["loss_d"] = loss_d.item()
    out["loss"] = total.item()
    return out


# --------------------------------------------------------------------------- the loop
def build_models(cfg: Config, spec: SegmentSpec):
    options = {**cfg.model.options, "freeze_bn": cfg.model.freeze_bn}
    if spec.init:
        model, _ = load_model(spec.init, expect_name=cfg.model.name)
        model.train()
    else:
        model = build_segmenter(cfg.model.name, NUM_CLASSES, cfg.model.pretrained, **options)
    disc = build_discriminator(NUM_CLASSES, ndf=cfg.model.discriminator_ndf) if spec.lambda_adv > 0 else None
    return model, disc, options


def evaluate(model, spec: SegmentSpec, cache: SplitCache, cfg: Config, session: Session) -> tuple[dict, np.ndarray]:
    """Target-val scores: each worker evaluates its share, confusion matrices are summed."""
    mine = range(session.rank, len(spec.val), session.world)
    cm = split_confusion(unwrap(model), cache, mine, cfg.train.batch_size, session.device)
    cm = session.all_reduce_sum(torch.as_tensor(cm)).numpy()
    return scores(cm, cfg.data.protocol), cm


def segment_loop(cfg: Config, spec: SegmentSpec, batches: Iterable[dict], session: Session) -> dict:
    """Train a segmenter for ``spec.steps`` steps; returns the final target-val metrics."""
    torch.manual_seed(cfg.run.seed * 1000 + session.rank)
    model, disc, options = build_models(cfg, spec)
    opt = torch.optim.SGD(param_groups(model, cfg.train.lr), lr=cfg.train.lr,
                          momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.train.lr_discriminator, betas=(0.9, 0.99)) if disc else None
    teacher = ema.make_teacher(model) if spec.kind == "ema" else None  # the mean teacher
    step = resumed_from = 0
    state = session.restore()
    if state is not None:
        load_state_into(model, state["model"], f"{spec.name} checkpoint")
        if teacher is not None:
            teacher.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        if disc is not None:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["opt_d"])
        step = resumed_from = state["step"]
        log.info("[%s] resuming at step %d/%d from its last checkpoint", spec.name, step, spec.steps)
    model = session.prepare(model)
    if teacher is not None:
        teacher = teacher.to(session.device)
    scored = teacher if teacher is not None else model  # what is evaluated and saved
    if disc is not None:
        disc = disc.to(session.device)
    tracker = tracking.logger_for(spec.tracking_uri, spec.mlflow_run_id, session.rank)
    if step == 0:
        tracker.params({**cfg.flat(), "stage": spec.name, "stage.kind": spec.kind, "stage.steps": spec.steps,
                        "stage.lambda_adv": spec.lambda_adv, "stage.lambda_cm": spec.lambda_cm,
                        "stage.sup_images": len(spec.streams.sup), "stage.init": spec.init})
    cache = SplitCache(spec.val, tuple(cfg.data.image_size))
    progress, val, started = Progress(), {}, time.perf_counter()
    it: Iterator[dict] = iter(batches)
    model.train()
    while step < spec.steps:
        t0 = time.perf_counter()
        batch = next(it)
        wait = time.perf_counter() - t0
        lr = poly_lr(cfg.train.lr, step, spec.steps, cfg.train.poly_power)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        if opt_d is not None:
            for group in opt_d.param_groups:
                group["lr"] = poly_lr(cfg.train.lr_discriminator, step, spec.steps, cfg.train.poly_power)
        if teacher is not None:
            progress.add(ema.ema_step(model, teacher, opt, batch, step, cfg, session.device), wait)
        else:
            progress.add(train_step(model, disc, opt, opt_d, batch, spec, cfg, session), wait)
        step += 1
        last = step == spec.steps
        metrics = {}
        if step % cfg.train.log_every == 0 or last:
            metrics.update(progress.summary(), lr=lr)
            progress.reset()
            _log_progress(spec, step, metrics)
        if step % cfg.train.eval_every == 0 or last:
            result, cm = evaluate(scored, spec, cache, cfg, session)
            val = flat_metrics(result, "val_")
            metrics.update(val)
            log.info("[%s] step %d val mIoU %.2f pixel acc %.2f", spec.name, step, result["miou"], result["pixel_accuracy"])
        checkpoint = step % cfg.train.checkpoint_every == 0 or last
        if metrics or checkpoint:  # every rank reports on the same steps: report is a barrier
            tracker.metrics(metrics, step)
            if session.rank == 0:
                append_history(spec.out_dir, {"step": step, **metrics})
            state = _training_state(model, opt, disc, opt_d, teacher, step) if checkpoint and session.rank == 0 else None
            session.report({"step": step, **metrics}, state)
    adabn = {}
    if spec.adabn:
        adabn = {"val_miou_before_adabn": val["val_miou"]} if val else {}
        seen = adapt_batchnorm(unwrap(scored), _image_batches(spec.adabn, cfg), session.device)
        val = {}
        log.info("[%s] AdaBN: BatchNorm statistics re-estimated on %d target images", spec.name, seen)
    if not val:  # after AdaBN, or restarted after its last checkpoint: evaluate (once more)
        result, cm = evaluate(scored, spec, cache, cfg, session)
        val = flat_metrics(result, "val_")
        if adabn:
            log.info("[%s] val mIoU %.2f after AdaBN (%.2f before)", spec.name, result["miou"],
                     adabn["val_miou_before_adabn"])
            tracker.metrics({**val, **adabn}, step + 1)
    final = {**val, **adabn, "seconds": time.perf_counter() - started}
    if session.rank == 0:
        out = Path(spec.out_dir)
        save_model(out / MODEL_FILE, scored, model_name=cfg.model.name, num_classes=NUM_CLASSES,
                   model_options=options, stage=spec.name, step=step, config=cfg.to_dict())
        write_json(out / METRICS_FILE, {"stage": spec.name, "step": step, "resumed_from": resumed_from,
                                         **result, **adabn, "confusion": cm.tolist()})
        _log_pictures(tracker, scored, cache, cm, cfg, spec)
    return final


def _image_batches(image_items: list[Item], cfg: Config) -> Iterator[np.ndarray]:
    size = tuple(cfg.data.image_size)
    for chunk in batched(image_items, cfg.train.batch_size):
        yield np.stack([load_item(item, size)[0] for item in chunk])


def _training_state(model, opt, disc, opt_d, teacher, step: int) -> dict:
    state = {"model": unwrap(model).state_dict(), "opt": opt.state_dict(), "step": step}
    if teacher is not None:
        state["ema"] = teacher.state_dict()
    if disc is not None:
        state.update(disc=disc.state_dict(), opt_d=opt_d.state_dict())
    return state


def _log_progress(spec: SegmentSpec, step: int, m: dict) -> None:
    eta = (spec.steps - step) / max(m["steps_per_s"], 1e-9)
    terms = " ".join(f"{k}={v:.3f}" for k, v in m.items() if k.startswith("loss"))
    log.info("[%s] step %d/%d %.2f it/s data-wait %.0f%% %s lr=%.2e eta %s", spec.name, step, spec.steps,
             m["steps_per_s"], 100 * m["data_wait_share"], terms, m["lr"], _duration(eta))


def _duration(seconds: float) -> str:
    seconds = int(seconds) if math.isfinite(seconds) else 0
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _log_pictures(tracker, model, cache: SplitCache, cm, cfg: Config, spec: SegmentSpec, count: int = 4) -> None:
    if isinstance(tracker, tracking.NullLogger):
        return
    count = min(count, len(spec.val))
    pairs = [cache.get(i) for i in range(count)]
    images = np.stack([p[0] for p in pairs])
    preds = predict_probs(unwrap(model).eval(), images).argmax(1).numpy()
    tracker.image(visualize.prediction_grid(images, preds, np.stack([p[1] for p in pairs])), "predictions.png")
    tracker.image(visualize.confusion_figure(cm), "confusion_matrix.png")
    tracker.text(cfg.to_yaml(), "config.yaml")


# ------------------------------------------------------------------------- the feeds
def plain_batches(spec: SegmentSpec, batch_size: int, seed: int) -> Iterator[dict]:
    """Batches from the builder in this process: the reference the Ray stream is measured against."""
    builder = BatchBuilder(spec.streams, spec.augment, seed=seed)
    slot = 0
    while True:
        batch = builder({"id": np.arange(slot, slot + batch_size)})
        slot += batch_size
        yield {k: torch.from_numpy(v) for k, v in batch.items()}


def run_plain(cfg: Config, spec: SegmentSpec, checkpoint_dir: str | Path | None = None) -> dict:
    """The whole stage in this process, no Ray (baselines of the foundation, benchmarks, tests)."""
    session = PlainSession(checkpoint_dir or Path(spec.out_dir) / "plain")
    return segment_loop(cfg, spec, plain_batches(spec, cfg.train.batch_size, cfg.run.seed), session)


def training_dataset(cfg: Config, spec: SegmentSpec, workers: int):
    """A Ray Dataset streaming every training example of the stage: slot ids -> BatchBuilder
    (decode, resize, CutMix, jitter) on a pool of CPU actors. Nothing is materialised."""
    import pyarrow as pa
    import ray.data

    # Slot ids built in memory (no read task: on 2 cores a read task waiting for a whole CPU
    # next to the training worker would never be scheduled), a few batches per block.
    rows = spec.steps * cfg.train.batch_size * max(workers, 1)
    blocks = np.array_split(np.arange(rows), min(1000, max(1, rows // (cfg.train.batch_size * 4))))
    slots = ray.data.from_arrow([pa.table({"id": block}) for block in blocks])
    return slots.map_batches(
        BatchBuilder,
        fn_constructor_kwargs={"streams": spec.streams, "params": spec.augment},
        batch_size=cfg.train.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.scaling.data_workers),
        num_cpus=cfg.scaling.data_cpus,
    )


def ray_worker_loop(config: dict) -> dict:
    """``train_loop_per_worker``: read this worker's shard of the stream and run the loop."""
    import ray.train

    cfg, spec = Config.model_validate(config["cfg"]), config["spec"]
    quiet_worker_logs()
    set_threads(cfg.scaling.cpus_per_worker)
    shard = ray.train.get_dataset_shard("train")

    def batches():
        while True:  # a restarted worker group starts a fresh pass; the loop stops at spec.steps
            yield from shard.iter_torch_batches(batch_size=cfg.train.batch_size, drop_last=True, prefetch_batches=2)

    return segment_loop(cfg, spec, batches(), RaySession())


def run_on_ray(cfg: Config, spec: SegmentSpec, storage: str | Path, callbacks=None) -> dict:
    """Fit the stage with Ray Train; returns its final metrics (from ``metrics.json``)."""
    workers = cfg.scaling.num_workers
    result = fit(ray_worker_loop, {"cfg": cfg.to_dict(), "spec": spec}, cfg=cfg, name=spec.name,
                 datasets={"train": training_dataset(cfg, spec, workers)}, storage=storage, callbacks=callbacks)
    if result.error:
        raise result.error
    return read_metrics(spec.out_dir)


def read_metrics(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / METRICS_FILE).read_text())
