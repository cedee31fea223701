"""The segmentation stage: what the teacher, the students and the baselines have in common.

A :class:`SegmentSpec` (built from a stage kind by ``udas_ray.stages.kinds.build_spec``) says what
to train on and which loss terms to sum; its :class:`SegmentTask` is the model, its SGD optimizer
(poly schedule, after an optional linear warm-up) and the terms' companions, stepped by the
shared loop in ``udas_ray.stages.loop``. One step::

    step = Step(model, batch)          # logits per stream, computed once
    each term's loss L_t = term(step)  # logged as loss_<name>; w_t = its weight from the config
    loss = sum(w_t L_t over the cross-entropy terms) / sum(their w_t)
         + sum(w_t L_t over the regularizers)          # adversarial, entropy, feature distance
    loss.backward(); opt.step()        # through the fp16 gradient scaler
    companions update (the discriminator, the mean teacher)

The cross-entropy terms (source, CutMix, labeled target, the ClassMix and masked-image terms)
are a weighted *mean*, so a stage with more of them takes no larger steps; the regularizers are
added with their weights (``udas_ray.stages.terms``).

At the end the scored model (the mean teacher if there is one) may get target BatchNorm
statistics (AdaBN), is evaluated on target-val and saved as ``model.pt`` beside ``metrics.json``.

``train.precision`` (``udas_ray.precision``): the forward passes and losses of a step, and the
evaluations, run under autocast; the companions' own updates (the discriminator's step, the mean
teacher's average) stay in float32, on float32 copies of the logits.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from udas_ray import precision, visualize
from udas_ray.adabn import adapt_batchnorm
from udas_ray.checkpoints import load_model, load_state_into, save_model, unwrap
from udas_ray.classes import NUM_CLASSES
from udas_ray.config import Config
from udas_ray.data.batches import AugmentParams, BatchBuilder, Item, Streams, load_item
from udas_ray.inference import SplitCache, batched, predict_probs, split_confusion
from udas_ray.metrics import flat_metrics, scores
from udas_ray.models import build_segmenter, param_groups, to_memory_format
from udas_ray.stages import ema, loop  # noqa: F401  (ema registers the mean teacher's term where workers import this)
from udas_ray.atomic import write_json
from udas_ray.stages.runtime import Session
from udas_ray.stages.terms import TERMS, Step, total_loss

log = logging.getLogger("udas_ray")

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class SegmentSpec:
    name: str
    kind: str
    streams: Streams
    augment: AugmentParams
    terms: tuple[str, ...]  # the loss terms it sums, in order (their weights: Term.weight of the config)
    val: list[Item]
    steps: int
    out_dir: str
    init: str | None = None  # a model.pt to start from (a student from its teacher)
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    adabn: list[Item] = field(default_factory=list)  # target images whose BN statistics the final model gets

    def batch_recipe(self, cfg: Config) -> tuple[type, dict]:
        return BatchBuilder, {"streams": self.streams, "params": self.augment}

    def batch_size(self, cfg: Config) -> int:
        return cfg.train.batch_size

    def rows(self, cfg: Config, workers: int) -> int:
        return self.steps * cfg.train.batch_size * workers

    def task(self, cfg: Config, session: Session, tracker) -> "SegmentTask":
        return SegmentTask(cfg, self, session, tracker)


WARMUP_START = 1e-6  # the share of its scheduled rate a warm-up starts from (DAFormer's warm-up ratio)


def poly_lr(base: float, step: int, total: int, power: float, warmup: int = 0) -> float:
    """The learning rate at ``step`` of ``total``: ``base`` decayed by the poly schedule, and
    during the first ``warmup`` steps (``train.warmup_steps``) times a linear ramp from
    :data:`WARMUP_START` at step 0 to 1 at step ``warmup``; from then on the poly rate alone."""
    lr = base * (1 - step / max(total, 1)) ** power
    if step < warmup:
        lr *= WARMUP_START + (1 - WARMUP_START) * step / warmup
    return lr


def build_model(cfg: Config, spec: SegmentSpec) -> tuple[torch.nn.Module, dict]:
    """The segmenter, from the spec's ``init`` model file or built fresh; and its options."""
    options = {**cfg.model.options, "freeze_bn": cfg.model.freeze_bn}
    if spec.init:
        model, _ = load_model(spec.init, expect_name=cfg.model.name)
        return model.train(), options
    return build_segmenter(cfg.model.name, NUM_CLASSES, cfg.model.pretrained, **options), options


class SegmentTask:
    def __init__(self, cfg: Config, spec: SegmentSpec, session: Session, tracker):
        loop.seed_torch(cfg.run.seed, spec.name, session.rank)  # the same stage draws the same in every run
        self.cfg, self.spec, self.session, self.tracker = cfg, spec, session, tracker
        t = cfg.train
        self.schedule = loop.Schedule(spec.steps, t.log_every, t.eval_every, t.checkpoint_every)
        self.model, self.options = build_model(cfg, spec)
        self.model = to_memory_format(self.model, t.channels_last)
        self.opt = torch.optim.SGD(param_groups(self.model, t.lr), lr=t.lr, momentum=t.momentum,
                                   weight_decay=t.weight_decay)
        self.weights = {name: TERMS[name].weight(cfg) for name in spec.terms}
        self.companions = {name: TERMS[name].companion(cfg, self.model)
                           for name in spec.terms if TERMS[name].companion is not None}
        self.scored = next((c.scored for c in self.companions.values() if hasattr(c, "scored")), None)
        self.scaler = precision.grad_scaler(t.precision, session.device)
        self.cache = SplitCache(spec.val, tuple(cfg.data.image_size), full_labels=cfg.data.eval_resolution == "full")
        self.val: dict = {}
        self.result, self.confusion = None, None
        self.index = 0

    # ---- the loop's hooks ------------------------------------------------------------------
    def params(self) -> dict:
        s = self.spec
        return {**self.cfg.flat(), "stage": s.name, "stage.kind": s.kind, "stage.steps": s.steps,
                **{f"stage.weight.{k}": v for k, v in self.weights.items()},
                "stage.sup_images": len(s.streams.sup), "stage.init": s.init}

    def load_state_dict(self, state: dict) -> int:
        load_state_into(self.model, state["model"], f"{self.spec.name} checkpoint")
        self.opt.load_state_dict(state["opt"])
        precision.load_scaler_state(self.scaler, state)
        for companion in self.companions.values():
            companion.load_state_dict(state)
        loop.load_rng_state(state, self.cfg.run.seed, self.spec.name, self.session.rank)
        return int(state["step"])

    def prepare(self, session: Session) -> None:
        self.model = session.prepare(self.model)
        for companion in self.companions.values():
            companion.prepare(session)
        self.scored = self.scored if self.scored is not None else self.model
        self.model.train()

    def set_lr(self, step: int) -> float:
        t = self.cfg.train
        self.index = step

        def lr_of(base):
            return poly_lr(base, step, self.spec.steps, t.poly_power, t.warmup_steps)

        lr = lr_of(t.lr)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        for companion in self.companions.values():
            if hasattr(companion, "set_lr"):
                companion.set_lr(lr_of)
        return lr

    def train_step(self, batch: dict) -> dict:
        step = Step(self.model, batch, self.session.device, self.cfg, self.companions)
        for companion in self.companions.values():
            if hasattr(companion, "before_step"):
                companion.before_step(step)
        weighted, out = [], {}
        with precision.autocast(self.cfg.train.precision, self.session.device):
            for name, weight in self.weights.items():
                loss = TERMS[name].loss(step)
                weighted.append((TERMS[name], weight, loss))
                out[f"loss_{name}"] = loss.item()
            total = total_loss(weighted)
        precision.backward_step(total, self.opt, self.scaler)
        for companion in self.companions.values():
            out.update(companion.after_step(step, self.index))
        return {**out, **step.notes, "loss": total.item()}

    def evaluate(self, step: int) -> dict:
        self.result, self.confusion = evaluate(self.scored, self.spec, self.cache, self.cfg, self.session)
        self.val = flat_metrics(self.result, "val_")
        log.info("[%s] step %d val mIoU %.2f pixel acc %.2f", self.spec.name, step, self.result["miou"],
                 self.result["pixel_accuracy"])
        return self.val

    def state_dict(self, step: int) -> dict:
        state = {"model": unwrap(self.model).state_dict(), "opt": self.opt.state_dict(), "step": step,
                 **loop.rng_state(), **precision.scaler_state(self.scaler)}
        for companion in self.companions.values():
            state.update(companion.state_dict())
        return state

    def finish(self, step: int, resumed_from: int) -> dict:
        spec, adabn = self.spec, {}
        if spec.adabn:  # the kind's end-of-stage hook
            adabn = {"val_miou_before_adabn": self.val["val_miou"]} if self.val else {}
            seen = adapt_batchnorm(unwrap(self.scored), image_batches(spec.adabn, self.cfg), self.session.device)
            self.val = {}
            log.info("[%s] AdaBN: BatchNorm statistics re-estimated on %d target images", spec.name, seen)
        if not self.val:  # after AdaBN, or restarted after its last checkpoint: evaluate (once more)
            self.evaluate(step)
            if adabn:
                log.info("[%s] val mIoU %.2f after AdaBN (%.2f before)", spec.name, self.result["miou"],
                         adabn["val_miou_before_adabn"])
                self.tracker.metrics({**self.val, **adabn}, step + 1)
        if self.session.rank == 0:
            out = Path(spec.out_dir)
            save_model(out / MODEL_FILE, self.scored, model_name=self.cfg.model.name, num_classes=NUM_CLASSES,
                       model_options=self.options, stage=spec.name, step=step, config=self.cfg.to_dict())
            write_json(out / METRICS_FILE, {"stage": spec.name, "step": step, "resumed_from": resumed_from,
                                             **self.result, **adabn, "confusion": self.confusion.tolist()})
            log_pictures(self.tracker, self.scored, self.cache, self.confusion, self.cfg, spec,
                         device=self.session.device)
        return {**self.val, **adabn}


def evaluate(model, spec: SegmentSpec, cache: SplitCache, cfg: Config, session: Session) -> tuple[dict, np.ndarray]:
    """Target-val scores: each worker evaluates its share, confusion matrices are summed."""
    mine = range(session.rank, len(spec.val), session.world)
    with precision.autocast(cfg.train.precision, session.device):
        cm = split_confusion(unwrap(model), cache, mine, cfg.train.batch_size, session.device)
    cm = session.all_reduce_sum(torch.as_tensor(cm)).numpy()
    return scores(cm, cfg.data.protocol), cm


def image_batches(image_items: list[Item], cfg: Config) -> Iterator[np.ndarray]:
    size = tuple(cfg.data.image_size)
    for chunk in batched(image_items, cfg.train.batch_size):
        yield np.stack([load_item(item, size)[0] for item in chunk])


def log_pictures(tracker, model, cache: SplitCache, cm, cfg: Config, spec: SegmentSpec, count: int = 4,
                 device="cpu") -> list[Path]:
    """``predictions.png`` (the first ``count`` target-val images | prediction | ground truth, with
    the class legend) and ``confusion_matrix.png`` into the stage folder, where people look
    whether or not MLflow is on; the same files and the config to the stage's MLflow run."""
    from udas_ray.data.images import resize_label, write_png

    out = Path(spec.out_dir)
    written = []
    count = min(count, len(spec.val))
    if count:
        pairs = [cache.get(i) for i in range(count)]
        images = np.stack([p[0] for p in pairs])
        preds = predict_probs(unwrap(model).eval(), images, device=device).argmax(1).cpu().numpy()
        truth = np.stack([resize_label(p[1], images.shape[1:3]) for p in pairs])  # full-resolution labels too
        grid = visualize.prediction_grid(images, preds, truth)
        write_png(out / visualize.PREDICTIONS_FILE, grid)
        written.append(out / visualize.PREDICTIONS_FILE)
    write_png(out / visualize.CONFUSION_FILE, visualize.confusion_figure(cm))
    written.append(out / visualize.CONFUSION_FILE)
    for path in written:
        tracker.artifact(path)
    tracker.text(cfg.to_yaml(), "config.yaml")
    return written


def run_plain(cfg: Config, spec: SegmentSpec, checkpoint_dir: str | Path | None = None) -> dict:
    """The whole stage in this process, no Ray (baselines of the benchmarks, tests)."""
    return loop.run_plain(cfg, spec, checkpoint_dir)


def run_on_ray(cfg: Config, spec: SegmentSpec, storage: str | Path, callbacks=None) -> dict:
    """Fit the stage with Ray Train (``loop.train_on_ray``); returns its final metrics (``metrics.json``)."""
    loop.train_on_ray(cfg, spec, storage, callbacks)
    return read_metrics(spec.out_dir)


def read_metrics(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / METRICS_FILE).read_text())
