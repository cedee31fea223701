"""The style stage: CycleGAN restyles the labeled source images to look like the target domain.

    G: S -> T, F: T -> S, D_T, D_S
    L_G = lsgan(D_T(G(s)), 1) + lsgan(D_S(F(t)), 1)
        + lambda_cyc * (|F(G(s)) - s| + |G(F(t)) - t|)
        + lambda_cyc * lambda_id * (|G(t) - t| + |F(s) - s|)
    L_D = 1/2 [lsgan(D_T(t), 1) + lsgan(D_T(pool_T(G(s))), 0)] + the same for D_S

Adam (lr, beta1), lr constant for the first half and linearly decayed to zero over the second.

:func:`style_loop` is the loop, plain PyTorch against a :class:`Session`, fed unpaired batches
``{"source", "target"}`` (uint8 N,H,W,3) built by :class:`StyleBatchBuilder`; :func:`run_style_on_ray`
feeds it from a Ray Data stream on Ray Train workers and :func:`run_style_plain` in one process.
Rank 0 leaves ``out_dir/generator.pt`` (G only), ``history.jsonl``, ``metrics.json`` and the
sample grids ``out_dir/samples/step_NNNNNN.png``.

:func:`translate_source` then runs G over every source image as Ray Data batch inference on an
actor pool and publishes ``final_root/images/<name>`` (restyled, at each image's original
resolution) with ``final_root/labels/<name>`` (the label file copied byte for byte): the GTA5
layout. The set is written into a staging folder that is renamed into place once complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from udas_ray import tracking
from udas_ray.checkpoints import atomic_save
from udas_ray.data import augment, images
from udas_ray.data.batches import Item
from udas_ray.data.readers import Sample, Split, read_gta5
from udas_ray.errors import UdasError
from udas_ray.models.cyclegan import (
    ImagePool, build_generator, build_patch_discriminator, cycle_loss, lsgan_loss, to_tensor, to_uint8,
)
from udas_ray.stages.runtime import (PlainSession, Progress, RaySession, Session, append_history, fit,
                                     quiet_worker_logs, read_history, set_threads, write_json)

log = logging.getLogger("udas_ray")

GENERATOR_FILE = "generator.pt"
GENERATOR_FORMAT = "udas-ray-cyclegan/1"
METRICS_FILE = "metrics.json"
SAMPLES_DIR = "samples"
TRANSLATED_FILE = "translated.json"  # written last into the staging folder: marks a complete set


@dataclass(frozen=True)
class StyleParams:
    """Everything the style stage needs; defaults = the embedded CPU benchmark."""

    enabled: bool = False
    steps: int = 1000  # ~0.15 s/step on 2 cores (2 threads), ~0.21 s/step on 1: 2.5-3.5 min
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cyc: float = 10.0
    lambda_id: float = 0.5  # x lambda_cyc; 0 = no identity loss
    ngf: int = 16
    n_blocks: int = 4
    ndf: int = 16
    n_layers: int = 3
    pool_size: int = 50
    image_size: tuple[int, int] = (96, 192)  # (H, W) the generators are trained at; multiples of 4
    flip: bool = True
    sample_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 50
    samples: int = 4  # images per row of the sample grid
    translate_at: str = "train_size"  # "train_size": restyle at image_size, resize back; "original"
    translate_batch_size: int = 8
    seed: int = 0

    def __post_init__(self):
        h, w = self.image_size
        if h % 4 or w % 4 or min(h, w) < 32:
            raise UdasError(f"style.image_size={list(self.image_size)}: both sides must be multiples of 4 and >= 32")
        if self.translate_at not in ("train_size", "original"):
            raise UdasError(f"style.translate_at={self.translate_at!r}: choose train_size or original")

    @classmethod
    def from_config(cls, cfg) -> "StyleParams":
        s = cfg.style
        return cls(
            enabled=s.enabled, steps=s.steps, batch_size=s.batch_size, lr=s.lr, beta1=s.beta1,
            lambda_cyc=s.lambda_cyc, lambda_id=s.lambda_id, ngf=s.ngf, n_blocks=s.n_blocks, ndf=s.ndf,
            n_layers=s.n_layers, pool_size=s.pool_size, image_size=tuple(s.image_size), flip=cfg.augment.flip,
            sample_every=s.sample_every, checkpoint_every=s.checkpoint_every, log_every=s.log_every,
            translate_at=s.translate_at, translate_batch_size=s.translate_batch_size, seed=cfg.run.seed,
        )


def image_items(split: Split) -> list[Item]:
    """The split's images without their labels (the style stage never reads a label)."""
    return [(s.image, None, split.label_kind) for s in split.samples]


# ------------------------------------------------------------------------- the batches
class StyleBatchBuilder:
    """Slot ids in, an unpaired batch out: ``{"source", "target"}`` uint8 (N, H, W, 3), each a
    uniformly drawn image resized to ``size`` and flipped at random. ``seed=None`` draws fresh
    randomness in every process (Ray Data actors); with a seed slot ``i`` is reproducible."""

    def __init__(self, source: list[Item], target: list[Item], size: tuple[int, int], flip: bool = True,
                 seed: int | None = None):
        if not source or not target:
            raise UdasError("the style stage needs source and target images")
        self.source, self.target, self.size, self.flip = source, target, tuple(size), flip
        self.seed = seed
        self._entropy = None if seed is not None else (os.getpid(), time.time_ns())

    def _rng(self, slot: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(slot)] if self.seed is not None else [*self._entropy, int(slot)])

    def _draw(self, pool: list[Item], rng) -> np.ndarray:
        image = images.resize_image(images.read_image(pool[rng.integers(len(pool))][0]), self.size)
        return augment.hflip(image) if self.flip and rng.random() < 0.5 else image

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pairs = []
        for slot in batch["id"]:
            rng = self._rng(slot)
            pairs.append((self._draw(self.source, rng), self._draw(self.target, rng)))
        return {"source": np.stack([p[0] for p in pairs]), "target": np.stack([p[1] for p in pairs])}


# ---------------------------------------------------------------------------- the step
def lr_factor(step: int, total: int) -> float:
    """1 for the first half of training, then linearly down towards 0."""
    start = total // 2
    if step < start:
        return 1.0
    return 1.0 - (step - start) / max(total - start, 1)


def _requires_grad(modules, flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


class CycleGAN:
    """The four networks, their two optimizers and the two pools: one object to step and save."""

    def __init__(self, params: StyleParams, seed: int):
        torch.manual_seed(seed)  # every rank builds the same initial weights
        self.G = build_generator(params.ngf, params.n_blocks)
        self.F = build_generator(params.ngf, params.n_blocks)
        self.D_T = build_patch_discriminator(params.ndf, params.n_layers)
        self.D_S = build_patch_discriminator(params.ndf, params.n_layers)
        betas = (params.beta1, 0.999)
        self.opt_g = torch.optim.Adam([*self.G.parameters(), *self.F.parameters()], lr=params.lr, betas=betas)
        self.opt_d = torch.optim.Adam([*self.D_T.parameters(), *self.D_S.parameters()], lr=params.lr, betas=betas)
        self.pool_t = ImagePool(params.pool_size, seed)
        self.pool_s = ImagePool(params.pool_size, seed + 1)
        self.params = params

    @property
    def nets(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G, "F": self.F, "D_T": self.D_T, "D_S": self.D_S}

    def to(self, device) -> "CycleGAN":
        for net in self.nets.values():
            net.to(device)
        return self

    def state_dict(self, step: int) -> dict:
        return {**{k: m.state_dict() for k, m in self.nets.items()}, "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "pool_t": self.pool_t.state_dict(),
                "pool_s": self.pool_s.state_dict(), "step": step}

    def load_state_dict(self, state: dict) -> int:
        for k, m in self.nets.items():
            m.load_state_dict(state[k])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.pool_t.load_state_dict(state["pool_t"])
        self.pool_s.load_state_dict(state["pool_s"])
        return int(state["step"])

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr

    def train_step(self, real_s: torch.Tensor, real_t: torch.Tensor, session: Session) -> dict:
        p = self.params
        G, F_, D_T, D_S = self.G, self.F, self.D_T, self.D_S
        # generators
        _requires_grad((D_T, D_S), False)
        fake_t, fake_s = G(real_s), F_(real_t)
        rec_s, rec_t = F_(fake_t), G(fake_s)
        loss_gan_g, loss_gan_f = lsgan_loss(D_T(fake_t), True), lsgan_loss(D_S(fake_s), True)
        loss_cyc_s, loss_cyc_t = cycle_loss(rec_s, real_s), cycle_loss(rec_t, real_t)
        total = loss_gan_g + loss_gan_f + p.lambda_cyc * (loss_cyc_s + loss_cyc_t)
        out = {"loss_gan_g": loss_gan_g.item(), "loss_gan_f": loss_gan_f.item(),
               "loss_cyc_s": loss_cyc_s.item(), "loss_cyc_t": loss_cyc_t.item()}
        if p.lambda_id > 0:
            loss_id = cycle_loss(G(real_t), real_t) + cycle_loss(F_(real_s), real_s)
            total = total + p.lambda_cyc * p.lambda_id * loss_id
            out["loss_id"] = loss_id.item()
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        session.average_gradients(G)
        session.average_gradients(F_)
        self.opt_g.step()
        out["loss_g"] = total.item()
        # discriminators, on real images and pooled past fakes
        _requires_grad((D_T, D_S), True)
        pooled_t, pooled_s = self.pool_t.query(fake_t), self.pool_s.query(fake_s)
        loss_d_t = 0.5 * (lsgan_loss(D_T(real_t), True) + lsgan_loss(D_T(pooled_t), False))
        loss_d_s = 0.5 * (lsgan_loss(D_S(real_s), True) + lsgan_loss(D_S(pooled_s), False))
        self.opt_d.zero_grad(set_to_none=True)
        (loss_d_t + loss_d_s).backward()
        session.average_gradients(D_T)
        session.average_gradients(D_S)
        self.opt_d.step()
        out.update(loss_d_t=loss_d_t.item(), loss_d_s=loss_d_s.item())
        return out


def _broadcast_from_rank0(model: CycleGAN, session: Session) -> None:
    """Ranks start from identical weights (gradients are averaged by hand, not by DDP)."""
    if session.world > 1 and dist.is_initialized():
        for net in model.nets.values():
            for t in net.state_dict().values():
                dist.broadcast(t, src=0)


# ------------------------------------------------------------------------ the pictures
def sample_images(items: list[Item], size: tuple[int, int], count: int) -> np.ndarray:
    """``count`` fixed images (evenly spread over the list), resized: the grid's columns."""
    picks = np.linspace(0, len(items) - 1, num=min(count, len(items))).round().astype(int)
    return np.stack([images.resize_image(images.read_image(items[i][0]), size) for i in picks])


@torch.no_grad()
def sample_grid(G, F_, source: np.ndarray, target: np.ndarray, device="cpu") -> np.ndarray:
    """Rows: source / G(source) / F(G(source)), then target / F(target) / G(F(target))."""
    was = G.training, F_.training
    G.eval(), F_.eval()
    s, t = to_tensor(source).to(device), to_tensor(target).to(device)
    g_s, f_t = G(s), F_(t)
    rows = [s, g_s, F_(g_s), t, f_t, G(f_t)]
    G.train(was[0]), F_.train(was[1])
    gap = 4
    h, w = source.shape[1:3]
    grid = np.full((6 * h + 5 * gap + gap, len(source) * (w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = r * (h + gap) + (gap if r >= 3 else 0)  # a wider gap between the two domains
        for c, image in enumerate(to_uint8(row)):
            grid[y : y + h, c * (w + gap) : c * (w + gap) + w] = image
    return grid


# ---------------------------------------------------------------------------- the loop
def style_loop(params: StyleParams, source_items: list[Item], target_items: list[Item], batches: Iterable[dict],
               session: Session, out_dir: str | Path, tracker=None) -> dict:
    """Train the CycleGAN for ``params.steps`` steps; returns the last window's losses."""
    out_dir = Path(out_dir)
    tracker = tracker or tracking.NullLogger()
    model = CycleGAN(params, params.seed).to(session.device)  # before loading: optimizer state follows
    step = resumed_from = 0
    state = session.restore()
    if state is not None:
        step = resumed_from = model.load_state_dict(state)
        log.info("[style] resuming at step %d/%d from its last checkpoint", step, params.steps)
    _broadcast_from_rank0(model, session)
    if step == 0:
        tracker.params({f"style.{k}": v for k, v in asdict(params).items()})
    if session.rank == 0:
        fixed_s = sample_images(source_items, params.image_size, params.samples)
        fixed_t = sample_images(target_items, params.image_size, params.samples)
    window, last_metrics, started = Progress(), {}, time.perf_counter()
    it: Iterator[dict] = iter(batches)
    while step < params.steps:
        t0 = time.perf_counter()
        batch = next(it)
        wait = time.perf_counter() - t0
        lr = params.lr * lr_factor(step, params.steps)
        model.set_lr(lr)
        real_s = to_tensor(batch["source"]).to(session.device)
        real_t = to_tensor(batch["target"]).to(session.device)
        window.add(model.train_step(real_s, real_t, session), wait)
        step += 1
        last = step == params.steps
        metrics = {}
        if step % params.log_every == 0 or last:
            metrics = {**window.summary(), "lr": lr}
            last_metrics = metrics
            window = Progress()
            log.info("[style] step %d/%d %.2f s/step %s", step, params.steps, metrics["seconds_per_step"],
                     " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("loss")))
        if session.rank == 0 and (step % params.sample_every == 0 or last):
            _write_grid(tracker, sample_grid(model.G, model.F, fixed_s, fixed_t, session.device), out_dir, step, last)
        checkpoint = step % params.checkpoint_every == 0 or last
        if metrics or checkpoint:  # every rank reports on the same steps: report is a barrier
            tracker.metrics(metrics, step)
            if session.rank == 0 and metrics:
                append_history(out_dir, {"step": step, **metrics})
            session.report({"step": step, **metrics}, model.state_dict(step) if checkpoint and session.rank == 0 else None)
    final = {**last_metrics, "step": step, "resumed_from": resumed_from, "seconds": time.perf_counter() - started}
    if session.rank == 0:
        if resumed_from == params.steps:  # restarted after its last checkpoint: the grid once more
            _write_grid(tracker, sample_grid(model.G, model.F, fixed_s, fixed_t, session.device), out_dir, step, True)
        save_generator(out_dir / GENERATOR_FILE, model.G, params, step)
        write_json(out_dir / METRICS_FILE, final)
    return final


def _write_grid(tracker, grid: np.ndarray, out_dir: Path, step: int, final: bool) -> None:
    path = out_dir / SAMPLES_DIR / f"step_{step:06d}.png"
    images.write_png(path, grid)
    tracker.artifact(path, "style_samples")
    if final:
        tracker.image(grid, "style_samples.png")


def save_generator(path: str | Path, G: torch.nn.Module, params: StyleParams, step: int) -> Path:
    return atomic_save({"format": GENERATOR_FORMAT, "arch": {"ngf": params.ngf, "n_blocks": params.n_blocks},
                        "image_size": list(params.image_size), "state_dict": G.state_dict(), "step": step,
                        "params": asdict(params)}, path)


def load_generator(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(G in eval mode, the file's metadata) from a ``generator.pt``."""
    path = Path(path)
    if not path.is_file():
        raise UdasError(f"{path}: generator file not found; train the style stage first")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != GENERATOR_FORMAT:
        raise UdasError(f"{path}: not a style generator file (expected generator.pt written by the style stage)")
    G = build_generator(**blob["arch"])
    G.load_state_dict(blob["state_dict"])
    return G.eval(), blob


# ------------------------------------------------------------------------------ feeds
def plain_batches(params: StyleParams, source_items, target_items, seed: int) -> Iterator[dict]:
    builder = StyleBatchBuilder(source_items, target_items, params.image_size, params.flip, seed=seed)
    slot = 0
    while True:
        yield builder({"id": np.arange(slot, slot + params.batch_size)})
        slot += params.batch_size


def run_style_plain(params: StyleParams, source_items: list[Item], target_items: list[Item], out_dir: str | Path,
                    checkpoint_dir: str | Path | None = None, tracker=None) -> dict:
    """The whole stage in this process, no Ray (tests, benchmarks)."""
    session = PlainSession(checkpoint_dir or Path(out_dir) / "plain")
    return style_loop(params, source_items, target_items,
                      plain_batches(params, source_items, target_items, params.seed), session, out_dir, tracker)


def training_dataset(params: StyleParams, source_items, target_items, workers: int, data_workers: int = 1,
                     data_cpus: float = 0.5):
    """Slot ids -> :class:`StyleBatchBuilder` on a pool of CPU actors, streamed (nothing materialised)."""
    import pyarrow as pa
    import ray.data

    rows = params.steps * params.batch_size * max(workers, 1)
    blocks = np.array_split(np.arange(rows), min(1000, max(1, rows // (params.batch_size * 8))))
    slots = ray.data.from_arrow([pa.table({"id": block}) for block in blocks])
    return slots.map_batches(
        StyleBatchBuilder,
        fn_constructor_kwargs={"source": source_items, "target": target_items, "size": params.image_size,
                               "flip": params.flip},
        batch_size=params.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=data_workers),
        num_cpus=data_cpus,
    )


def ray_worker_loop(config: dict) -> dict:
    """``train_loop_per_worker``: this worker's shard of the stream -> :func:`style_loop`."""
    import ray.train

    quiet_worker_logs()
    set_threads(config["cpus_per_worker"])
    params: StyleParams = config["params"]
    shard = ray.train.get_dataset_shard("train")

    def batches():
        while True:  # a restarted worker group starts a fresh pass; the loop stops at params.steps
            for b in shard.iter_batches(batch_size=params.batch_size, drop_last=True, prefetch_batches=2,
                                        batch_format="numpy"):
                yield b

    session = RaySession()
    tracker = tracking.logger_for(config["tracking_uri"], config["run_id"], session.rank)
    return style_loop(params, config["source"], config["target"], batches(), session, config["out_dir"], tracker)


def run_style_on_ray(cfg, source: Split, target: Split, out_dir: str | Path, storage: str | Path, *,
                     params: StyleParams | None = None, tracking_uri: str | None = None, run_id: str | None = None,
                     name: str = "style") -> dict:
    """Fit the style stage with Ray Train (``cfg.scaling``); returns ``metrics.json`` plus the generator path.

    ``params`` defaults to ``StyleParams.from_config(cfg)``. Re-running with the same ``name`` and
    ``storage`` resumes from the stage's last Ray checkpoint."""
    params = params or StyleParams.from_config(cfg)
    sc = cfg.scaling
    src, tgt = image_items(source), image_items(target)
    config = {"params": params, "source": src, "target": tgt, "out_dir": str(Path(out_dir).resolve()),
              "tracking_uri": tracking_uri, "run_id": run_id, "cpus_per_worker": sc.cpus_per_worker}
    dataset = training_dataset(params, src, tgt, sc.num_workers, sc.data_workers, sc.data_cpus)
    result = fit(ray_worker_loop, config, cfg=cfg, name=name, datasets={"train": dataset}, storage=storage)
    if result.error:
        raise result.error
    metrics = json.loads((Path(out_dir) / METRICS_FILE).read_text())
    return {**metrics, "generator": str(Path(out_dir).resolve() / GENERATOR_FILE)}


# ------------------------------------------------------------------------ translation
@torch.no_grad()
def restyle(G: torch.nn.Module, batch: list[np.ndarray], size: tuple[int, int] | None) -> list[np.ndarray]:
    """G over uint8 images, each returned at its own resolution. ``size``: run G at that (H, W) and
    resize back (bilinear); ``None``: run at the image's resolution (reflect-padded to a multiple of 4)."""
    if size is not None:
        x = to_tensor(np.stack([images.resize_image(im, size) for im in batch]))
        return [images.resize_image(y, im.shape[:2]) for y, im in zip(to_uint8(G(x)), batch)]
    out = []
    for im in batch:
        h, w = im.shape[:2]
        x = to_tensor(im)
        x = torch.nn.functional.pad(x, (0, -w % 4, 0, -h % 4), mode="reflect")
        out.append(to_uint8(G(x)[:, :, :h, :w])[0])
    return out


class Translator:
    """Ray Data callable class: G loaded once per actor; restyled images and copied labels out."""

    def __init__(self, generator_path: str, staging: str, translate_at: str = "train_size", threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.G, blob = load_generator(generator_path)
        self.size = tuple(blob["image_size"]) if translate_at == "train_size" else None
        self.staging = Path(staging)

    def __call__(self, batch: dict) -> dict:
        originals = [images.read_image(p) for p in batch["image"]]
        for out, label, name in zip(restyle(self.G, originals, self.size), batch["label"], batch["name"]):
            images.write_png(self.staging / "images" / str(name), out)
            if label:
                shutil.copyfile(str(label), self.staging / "labels" / str(name))
        return {"images": np.array([len(originals)])}


def translated_name(sample: Sample) -> str:
    return Path(sample.name).stem + ".png"


def read_translated(final_root: str | Path) -> Split | None:
    """The published restyled source, or None if ``final_root`` is not a complete set."""
    final_root = Path(final_root)
    marker = final_root / TRANSLATED_FILE
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    split = read_gta5(final_root)
    if len(split) != info["images"]:
        raise UdasError(f"{final_root}: holds {len(split)} restyled images but {info['images']} were published; "
                        "delete the folder and run the style stage again")
    return replace(split, label_kind=info["label_kind"])


def translate_source(generator_path: str | Path, source: Split, final_root: str | Path, params: StyleParams,
                     actors: int = 1, cpus_per_actor: float = 1.0) -> Split:
    """Restyle every source image with G (Ray Data, an actor pool) into ``final_root`` in the GTA5
    layout; each label is copied unchanged. Returns the restyled :class:`Split` (same label kind as
    ``source``). A complete ``final_root`` is returned at once."""
    import ray.data

    done_split = read_translated(final_root)
    if done_split is not None:
        log.info("[style] %s already holds the restyled source; skipping translation", final_root)
        return done_split
    if not source.has_labels:
        raise UdasError(f"{source.root}: the style stage restyles labeled source images, but some have no label")
    final_root = Path(final_root).resolve()
    names = [translated_name(s) for s in source.samples]
    if len(set(names)) != len(names):
        raise UdasError(f"{source.root}: two source images share a file name; the GTA5 layout needs unique names")
    staging = final_root.with_name(f".{final_root.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)  # left over from a killed run
    (staging / "images").mkdir(parents=True)
    (staging / "labels").mkdir()
    rows = [{"image": s.image, "label": s.label, "name": n} for s, n in zip(source.samples, names)]
    bs = params.translate_batch_size
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // bs, 64)))
    out = ds.map_batches(
        Translator,
        fn_constructor_kwargs={"generator_path": str(generator_path), "staging": str(staging),
                               "translate_at": params.translate_at, "threads": max(1, int(cpus_per_actor))},
        batch_size=bs,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
    )
    done = sum(int(b["images"].sum()) for b in out.iter_batches(batch_size=None, batch_format="numpy"))
    if done != len(source):
        raise RuntimeError(f"style translation saw {done} of {len(source)} images")
    write_json(staging / TRANSLATED_FILE, {"images": len(source), "label_kind": source.label_kind,
                                            "source_root": source.root, "generator": str(generator_path),
                                            "translate_at": params.translate_at})
    if final_root.exists():
        shutil.rmtree(final_root)
    os.replace(staging, final_root)
    return read_translated(final_root)
