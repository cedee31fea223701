"""The style stage: the labeled source images learn to look like the target, by one of two
methods (``style.method``), each a :class:`StyleModel`:

``cyclegan`` (:class:`CycleGAN`, row ``style_transfer``)::

    G: S -> T, F: T -> S, D_T, D_S
    L_G = lsgan(D_T(G(s)), 1) + lsgan(D_S(F(t)), 1)
        + lambda_cyc * (|F(G(s)) - s| + |G(F(t)) - t|)
        + lambda_cyc * lambda_id * (|G(t) - t| + |F(s) - s|)
    L_D = 1/2 [lsgan(D_T(t), 1) + lsgan(D_T(pool_T(G(s))), 0)] + the same for D_S

``simgan`` (:class:`SimGAN`, row ``style_refined``): a full-resolution refiner R with a local
adversarial loss, an L1 self-regularisation to its input, and a history buffer of refined images.

Both: Adam (lr, beta1), lr constant for the first half and linearly decayed to zero over the second.

A :class:`StyleSpec` (the image lists; :meth:`StyleSpec.from_splits`) builds a
:class:`StyleTask` that the shared loop (``udas_ray.stages.loop``) steps with unpaired batches
``{"source", "target"}`` from :class:`StyleBatchBuilder`. Its "evaluation" is the sample grid.
Rank 0 leaves ``out_dir/generator.pt`` (G or R only), ``history.jsonl``, ``metrics.json`` and
the sample grids ``out_dir/samples/step_NNNNNN.png``. ``udas_ray.stages.translate`` then restyles
the whole source set with that network.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from udas_ray import classes
from udas_ray.checkpoints import atomic_save, load_torch_file
from udas_ray.config import Config
from udas_ray.data import augment, images
from udas_ray.data.batches import Item, items
from udas_ray.data.readers import Split
from udas_ray.errors import UdasError
from udas_ray.models.cyclegan import (
    ImagePool, build_generator, build_patch_discriminator, cycle_loss, lsgan_loss, to_tensor, to_uint8,
)
from udas_ray.models.refiner import HistoryBuffer, build_refiner, local_adversarial_loss, self_regularization_loss
from udas_ray.stages import loop
from udas_ray.atomic import write_json
from udas_ray.stages.runtime import Session, read_history

log = logging.getLogger("udas_ray")

GENERATOR_FILE = "generator.pt"
GENERATOR_FORMAT = "udas-ray-cyclegan/1"
REFINER_FORMAT = "udas-ray-simgan/1"
METRICS_FILE = "metrics.json"
SAMPLES_DIR = "samples"
GRID_IMAGES = 4  # images per row of the sample grid


# ------------------------------------------------------------------------- the batches
class StyleBatchBuilder:
    """Slot ids in, an unpaired batch out: ``{"source", "target"}`` uint8 (N, H, W, 3), each a
    uniformly drawn image resized to ``size`` and flipped at random. Slot ``i`` gives the same
    pair for the same ``seed`` in any process (the stage's seed, as ``udas_ray.data.batches``)."""

    def __init__(self, source: list[Item], target: list[Item], size: tuple[int, int], flip: bool = True, *,
                 seed: int):
        if not source or not target:
            raise UdasError("the style stage needs source and target images")
        self.source, self.target, self.size, self.flip = source, target, tuple(size), flip
        self.seed = int(seed)

    def _rng(self, slot: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(slot)])

    def _draw(self, pool: list[Item], rng) -> np.ndarray:
        image = images.resize_image(images.read_image(pool[rng.integers(len(pool))][0]), self.size)
        return augment.hflip(image) if self.flip and rng.random() < 0.5 else image

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pairs = []
        for slot in batch["id"]:
            rng = self._rng(slot)
            pairs.append((self._draw(self.source, rng), self._draw(self.target, rng)))
        return {"source": np.stack([p[0] for p in pairs]), "target": np.stack([p[1] for p in pairs])}


@dataclass(frozen=True)
class StyleSpec:
    source: list[Item]
    target: list[Item]
    out_dir: str
    name: str = "style"
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None

    def batch_recipe(self, cfg: Config) -> tuple[type, dict]:
        return StyleBatchBuilder, {"source": self.source, "target": self.target,
                                   "size": tuple(cfg.style.image_size), "flip": cfg.augment.flip}

    def batch_size(self, cfg: Config) -> int:
        return cfg.style.batch_size

    def rows(self, cfg: Config, workers: int) -> int:
        return cfg.style.steps * cfg.style.batch_size * workers

    def task(self, cfg: Config, session: Session, tracker) -> "StyleTask":
        return StyleTask(cfg, self, session, tracker)

    @classmethod
    def from_splits(cls, source: Split, target: Split, out_dir: str | Path, **kw) -> "StyleSpec":
        """The spec of the source and target-train splits (only the sample grid reads a label,
        never training), writing into ``out_dir``; ``kw``: the MLflow run."""
        return cls(items(source), items(target), str(Path(out_dir).resolve()), **kw)


# ---------------------------------------------------------------------------- the step
def lr_factor(step: int, total: int) -> float:
    """1 for the first half of training, then linearly down towards 0."""
    start = total // 2
    if step < start:
        return 1.0
    return 1.0 - (step - start) / max(total - start, 1)


class StyleModel:
    """What both style methods share: networks, optimizers and image pools kept in dicts under
    their checkpoint names, moved, saved, loaded and scheduled alike. A method builds them in
    ``__init__``, with ``generator`` (the network that restyles the source), and adds
    ``train_step`` and ``sample_rows`` (the sample grid). ``row``: its summary row; ``format``:
    its generator file's."""

    row: str
    format: str
    generator: torch.nn.Module
    nets: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    pools: dict[str, ImagePool]

    def __init__(self, style, seed: int):
        torch.manual_seed(seed)  # every rank builds the same initial weights
        self.style = style

    def adam(self, *nets: torch.nn.Module) -> torch.optim.Adam:
        params = [p for net in nets for p in net.parameters()]
        return torch.optim.Adam(params, lr=self.style.lr, betas=(self.style.beta1, 0.999))

    def to(self, device) -> "StyleModel":
        for net in self.nets.values():
            net.to(device)
        return self

    @property
    def parts(self) -> dict:
        """Everything a checkpoint holds, by its key there."""
        return {**self.nets, **self.optimizers, **self.pools}

    def state_dict(self, step: int) -> dict:
        return {**{k: part.state_dict() for k, part in self.parts.items()}, "step": step}

    def load_state_dict(self, state: dict) -> int:
        for k, part in self.parts.items():
            part.load_state_dict(state[k])
        return int(state["step"])

    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr


class CycleGAN(StyleModel):
    """The four networks, their two optimizers and the two pools: one object to step and save."""

    row, format = "style_transfer", GENERATOR_FORMAT

    def __init__(self, style, seed: int):
        super().__init__(style, seed)
        self.G = build_generator(style.ngf, style.n_blocks)
        self.F = build_generator(style.ngf, style.n_blocks)
        self.D_T = build_patch_discriminator(style.ndf, style.n_layers)
        self.D_S = build_patch_discriminator(style.ndf, style.n_layers)
        self.opt_g, self.opt_d = self.adam(self.G, self.F), self.adam(self.D_T, self.D_S)
        self.pool_t = ImagePool(style.pool_size, seed)
        self.pool_s = ImagePool(style.pool_size, seed + 1)
        self.nets = {"G": self.G, "F": self.F, "D_T": self.D_T, "D_S": self.D_S}
        self.optimizers = {"opt_g": self.opt_g, "opt_d": self.opt_d}
        self.pools = {"pool_t": self.pool_t, "pool_s": self.pool_s}
        self.generator = self.G

    def train_step(self, real_s: torch.Tensor, real_t: torch.Tensor, session: Session) -> dict:
        p = self.style
        G, F_, D_T, D_S = self.G, self.F, self.D_T, self.D_S
        # generators
        for d in (D_T, D_S):
            d.requires_grad_(False)
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
        for d in (D_T, D_S):
            d.requires_grad_(True)
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

    def sample_rows(self, s: torch.Tensor, t: torch.Tensor, labels: np.ndarray | None) -> list[list[np.ndarray]]:
        """source / G(source) / F(G(source)), then target / F(target) / G(F(target))."""
        g_s, f_t = self.G(s), self.F(t)
        return [[to_uint8(x) for x in (s, g_s, self.F(g_s))], [to_uint8(x) for x in (t, f_t, self.G(f_t))]]


class SimGAN(StyleModel):
    """SimGAN (Shrivastava et al., 2017): a refiner R (:mod:`udas_ray.models.refiner`) and a local
    discriminator D, no mapping back to the source::

        L_R = bce(D(R(s)), real) + lambda_reg * |U(s) - s|
        L_D = 1/2 [bce(D(t), real) + bce(D(R(s) and as many earlier refined images), refined)]

    with U(s) the refiner's output before its clamp (R(s) = clamp(U(s), -1, 1)) and bce the
    logistic loss averaged over D's patches. R is trained from its first step (it
    starts as the identity, so it needs no warm-up on the self-regularisation alone)."""

    row, format = "style_refined", REFINER_FORMAT

    def __init__(self, style, seed: int):
        super().__init__(style, seed)
        self.R = build_refiner(style.ngf, style.n_blocks, style.noise_channels)
        self.D = build_patch_discriminator(style.ndf, style.n_layers)
        self.opt_r, self.opt_d = self.adam(self.R), self.adam(self.D)
        self.history = HistoryBuffer(style.pool_size, seed)
        self.nets = {"R": self.R, "D": self.D}
        self.optimizers = {"opt_r": self.opt_r, "opt_d": self.opt_d}
        self.pools = {"history": self.history}
        self.generator = self.R

    def train_step(self, real_s: torch.Tensor, real_t: torch.Tensor, session: Session) -> dict:
        R, D = self.R, self.D
        D.requires_grad_(False)
        unbounded = R.unbounded(real_s)
        refined = unbounded.clamp(-1.0, 1.0)
        loss_adv = local_adversarial_loss(D(refined), True)
        loss_reg = self_regularization_loss(unbounded, real_s, self.style.lambda_reg, self.style.reg_on)
        self.opt_r.zero_grad(set_to_none=True)
        (loss_adv + loss_reg).backward()
        session.average_gradients(R)
        self.opt_r.step()
        D.requires_grad_(True)
        fakes = self.history.query(refined)
        loss_d = 0.5 * (local_adversarial_loss(D(real_t), True) + local_adversarial_loss(D(fakes), False))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        session.average_gradients(D)
        self.opt_d.step()
        return {"loss_r": (loss_adv + loss_reg).item(), "loss_adv": loss_adv.item(), "loss_reg": loss_reg.item(),
                "loss_d": loss_d.item()}

    def sample_rows(self, s: torch.Tensor, t: torch.Tensor, labels: np.ndarray | None) -> list[list[np.ndarray]]:
        """source / R(source) / |R(source) - source| x 4 / the source labels, then target: an edge
        R invented or moved would show in the difference row where the labels have none."""
        refined = self.R(s)
        difference = ((refined - s).abs() * 4 - 1).clamp(-1, 1)  # 0 -> black, 1/4 of the range -> white
        rows = [to_uint8(s), to_uint8(refined), to_uint8(difference)]
        if labels is not None:
            rows.append(classes.colorize(labels))
        return [rows, [to_uint8(t)]]


METHODS: dict[str, type[StyleModel]] = {"cyclegan": CycleGAN, "simgan": SimGAN}  # style.method


# ------------------------------------------------------------------------ the pictures
def sample_items(image_list: list[Item], count: int) -> list[Item]:
    """``count`` fixed items, evenly spread over the list: the grid's columns."""
    picks = np.linspace(0, len(image_list) - 1, num=min(count, len(image_list))).round().astype(int)
    return [image_list[i] for i in picks]


def sample_images(image_list: list[Item], size: tuple[int, int], count: int) -> np.ndarray:
    """The images of :func:`sample_items`, resized."""
    return np.stack([images.resize_image(images.read_image(item[0]), size) for item in sample_items(image_list, count)])


def sample_labels(image_list: list[Item], size: tuple[int, int], count: int) -> np.ndarray | None:
    """Their trainId labels, resized; None if one has no label."""
    picked = sample_items(image_list, count)
    if any(label is None for _, label, _ in picked):
        return None
    return np.stack([images.resize_label(images.read_label(label, kind), size) for _, label, kind in picked])


def grid_picture(groups: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Rows of uint8 (N, H, W, 3) images, one image per column; a wider gap between groups."""
    rows = [row for group in groups for row in group]
    n, h, w = rows[0].shape[:3]
    grid = np.full((len(rows) * (h + gap) - gap + (len(groups) - 1) * gap, n * (w + gap) - gap, 3), 255, np.uint8)
    y = 0
    for group in groups:
        for row in group:
            for c, image in enumerate(row):
                grid[y : y + h, c * (w + gap) : c * (w + gap) + w] = image
            y += h + gap
        y += gap
    return grid


@torch.no_grad()
def sample_grid(model: StyleModel, source: np.ndarray, target: np.ndarray, labels: np.ndarray | None = None,
                device="cpu") -> np.ndarray:
    """The method's sample rows for fixed source and target images (networks in eval mode)."""
    was = {k: net.training for k, net in model.nets.items()}
    for net in model.nets.values():
        net.eval()
    groups = model.sample_rows(to_tensor(source).to(device), to_tensor(target).to(device), labels)
    for k, net in model.nets.items():
        net.train(was[k])
    return grid_picture(groups)


# ---------------------------------------------------------------------------- the task
class StyleTask:
    def __init__(self, cfg: Config, spec: StyleSpec, session: Session, tracker):
        self.cfg, self.spec, self.session, self.tracker = cfg, spec, session, tracker
        st = cfg.style
        self.schedule = loop.Schedule(st.steps, st.log_every, st.sample_every, st.checkpoint_every)
        self.model = METHODS[st.method](st, cfg.run.seed)  # before loading: optimizer state follows
        self.last_window: dict = {}
        self.grid_written = False

    def params(self) -> dict:
        return {f"style.{k}": v for k, v in self.cfg.style.model_dump().items()}

    def load_state_dict(self, state: dict) -> int:
        loop.load_rng_state(state, self.cfg.run.seed, self.spec.name, self.session.rank)
        return self.model.load_state_dict(state)

    def prepare(self, session: Session) -> None:
        self.model.to(session.device)
        session.broadcast_from_rank0(self.model.nets.values())  # gradients are averaged by hand
        if session.rank == 0:
            size = tuple(self.cfg.style.image_size)
            self.fixed_s = sample_images(self.spec.source, size, GRID_IMAGES)
            self.fixed_t = sample_images(self.spec.target, size, GRID_IMAGES)
            self.fixed_labels = sample_labels(self.spec.source, size, GRID_IMAGES)

    def set_lr(self, step: int) -> float:
        lr = self.cfg.style.lr * lr_factor(step, self.cfg.style.steps)
        self.model.set_lr(lr)
        return lr

    def train_step(self, batch: dict) -> dict:
        device = self.session.device
        return self.model.train_step(to_tensor(batch["source"]).to(device), to_tensor(batch["target"]).to(device),
                                     self.session)

    def evaluate(self, step: int) -> dict:
        """The sample grid (rank 0); the style stage reports no validation metric."""
        if self.session.rank == 0:
            self._write_grid(step, final=step == self.schedule.steps)
        return {}

    def state_dict(self, step: int) -> dict:
        """The CycleGAN (networks, optimizers, pools with their Python RNGs) and torch's RNG."""
        return {**self.model.state_dict(step), **loop.rng_state()}

    def finish(self, step: int, resumed_from: int) -> dict:
        history = read_history(self.spec.out_dir)
        window = next((r for r in reversed(history) if "steps_per_s" in r), {})
        final = {**{k: v for k, v in window.items() if k != "step"}, "step": step, "resumed_from": resumed_from}
        if self.session.rank == 0:
            out_dir = Path(self.spec.out_dir)
            if not self.grid_written:  # restarted after its last checkpoint: the grid once more
                self._write_grid(step, final=True)
            save_generator(out_dir / GENERATOR_FILE, self.model.generator, self.cfg, step)
            write_json(out_dir / METRICS_FILE, final)
        return final

    def _write_grid(self, step: int, final: bool) -> None:
        grid = sample_grid(self.model, self.fixed_s, self.fixed_t, self.fixed_labels, self.session.device)
        path = Path(self.spec.out_dir) / SAMPLES_DIR / f"step_{step:06d}.png"
        images.write_png(path, grid)
        self.tracker.artifact(path, "style_samples")
        if final:
            self.tracker.image(grid, "style_samples.png")
            self.grid_written = True


def save_generator(path: str | Path, G: torch.nn.Module, cfg: Config, step: int) -> Path:
    st = cfg.style
    return atomic_save({"format": METHODS[st.method].format, "arch": G.arch,
                        "image_size": list(st.image_size), "state_dict": G.state_dict(), "step": step,
                        "params": st.model_dump(mode="json")}, path)


def load_generator(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(G or R in eval mode, the file's metadata) from a ``generator.pt`` of either method."""
    path = Path(path)
    if not path.is_file():
        raise UdasError(f"{path}: generator file not found; train the style stage first")
    blob = load_torch_file(path, "style generator file")
    builders = {GENERATOR_FORMAT: build_generator, REFINER_FORMAT: build_refiner}
    if not isinstance(blob, dict) or blob.get("format") not in builders:
        raise UdasError(f"{path}: not a style generator file (expected generator.pt written by the style stage)")
    G = builders[blob["format"]](**blob["arch"])
    G.load_state_dict(blob["state_dict"])
    return G.eval(), blob


def run_plain(cfg: Config, spec: StyleSpec, checkpoint_dir: str | Path | None = None) -> dict:
    """The whole stage in this process, no Ray (tests, benchmarks)."""
    return loop.run_plain(cfg, spec, checkpoint_dir)


def run_on_ray(cfg: Config, spec: StyleSpec, storage: str | Path, callbacks=None) -> dict:
    """Fit the stage with Ray Train (``loop.train_on_ray``); returns ``metrics.json`` plus the generator
    path. Re-running with the same ``spec.name`` and ``storage`` resumes from the stage's last checkpoint."""
    loop.train_on_ray(cfg, spec, storage, callbacks)
    metrics = json.loads((Path(spec.out_dir) / METRICS_FILE).read_text())
    return {**metrics, "generator": str(Path(spec.out_dir) / GENERATOR_FILE)}
