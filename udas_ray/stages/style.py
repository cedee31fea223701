"""The style stage: CycleGAN learns to restyle the labeled source images to look like the target.

    G: S -> T, F: T -> S, D_T, D_S
    L_G = lsgan(D_T(G(s)), 1) + lsgan(D_S(F(t)), 1)
        + lambda_cyc * (|F(G(s)) - s| + |G(F(t)) - t|)
        + lambda_cyc * lambda_id * (|G(t) - t| + |F(s) - s|)
    L_D = 1/2 [lsgan(D_T(t), 1) + lsgan(D_T(pool_T(G(s))), 0)] + the same for D_S

Adam (lr, beta1), lr constant for the first half and linearly decayed to zero over the second.

A :class:`StyleSpec` (the ``style`` config section passed through, plus the image lists) builds a
:class:`StyleTask` that the shared loop (``udas_ray.stages.loop``) steps with unpaired batches
``{"source", "target"}`` from :class:`StyleBatchBuilder`. Its "evaluation" is the sample grid.
Rank 0 leaves ``out_dir/generator.pt`` (G only), ``history.jsonl``, ``metrics.json`` and the
sample grids ``out_dir/samples/step_NNNNNN.png``. ``udas_ray.stages.translate`` then restyles
the whole source set with G.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from udas_ray.checkpoints import atomic_save, load_torch_file
from udas_ray.config import Config
from udas_ray.data import augment, images
from udas_ray.data.batches import Item
from udas_ray.data.readers import Split
from udas_ray.errors import UdasError
from udas_ray.models.cyclegan import (
    ImagePool, build_generator, build_patch_discriminator, cycle_loss, lsgan_loss, to_tensor, to_uint8,
)
from udas_ray.stages import loop
from udas_ray.atomic import write_json
from udas_ray.stages.runtime import Session, read_history
from udas_ray.stages.terms import broadcast_from_rank0, set_requires_grad

log = logging.getLogger("udas_ray")

GENERATOR_FILE = "generator.pt"
GENERATOR_FORMAT = "udas-ray-cyclegan/1"
METRICS_FILE = "metrics.json"
SAMPLES_DIR = "samples"
GRID_IMAGES = 4  # images per row of the sample grid


def image_items(split: Split) -> list[Item]:
    """The split's images without their labels (the style stage never reads a label)."""
    return [(s.image, None, split.label_kind) for s in split.samples]


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


def build_spec(source: Split, target: Split, out_dir: str | Path, **kw) -> StyleSpec:
    return StyleSpec(image_items(source), image_items(target), str(Path(out_dir).resolve()), **kw)


# ---------------------------------------------------------------------------- the step
def lr_factor(step: int, total: int) -> float:
    """1 for the first half of training, then linearly down towards 0."""
    start = total // 2
    if step < start:
        return 1.0
    return 1.0 - (step - start) / max(total - start, 1)


class CycleGAN:
    """The four networks, their two optimizers and the two pools: one object to step and save."""

    def __init__(self, style, seed: int):
        torch.manual_seed(seed)  # every rank builds the same initial weights
        self.G = build_generator(style.ngf, style.n_blocks)
        self.F = build_generator(style.ngf, style.n_blocks)
        self.D_T = build_patch_discriminator(style.ndf, style.n_layers)
        self.D_S = build_patch_discriminator(style.ndf, style.n_layers)
        betas = (style.beta1, 0.999)
        self.opt_g = torch.optim.Adam([*self.G.parameters(), *self.F.parameters()], lr=style.lr, betas=betas)
        self.opt_d = torch.optim.Adam([*self.D_T.parameters(), *self.D_S.parameters()], lr=style.lr, betas=betas)
        self.pool_t = ImagePool(style.pool_size, seed)
        self.pool_s = ImagePool(style.pool_size, seed + 1)
        self.style = style

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
        p = self.style
        G, F_, D_T, D_S = self.G, self.F, self.D_T, self.D_S
        # generators
        for d in (D_T, D_S):
            set_requires_grad(d, False)
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
            set_requires_grad(d, True)
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


# ------------------------------------------------------------------------ the pictures
def sample_images(image_list: list[Item], size: tuple[int, int], count: int) -> np.ndarray:
    """``count`` fixed images (evenly spread over the list), resized: the grid's columns."""
    picks = np.linspace(0, len(image_list) - 1, num=min(count, len(image_list))).round().astype(int)
    return np.stack([images.resize_image(images.read_image(image_list[i][0]), size) for i in picks])


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


# ---------------------------------------------------------------------------- the task
class StyleTask:
    def __init__(self, cfg: Config, spec: StyleSpec, session: Session, tracker):
        self.cfg, self.spec, self.session, self.tracker = cfg, spec, session, tracker
        st = cfg.style
        self.schedule = loop.Schedule(st.steps, st.log_every, st.sample_every, st.checkpoint_every)
        self.model = CycleGAN(st, cfg.run.seed)  # before loading: optimizer state follows
        self.last_window: dict = {}
        self.grid_written = False

    def params(self) -> dict:
        return {f"style.{k}": v for k, v in self.cfg.style.model_dump().items()}

    def load_state_dict(self, state: dict) -> int:
        loop.load_rng_state(state, self.cfg.run.seed, self.spec.name, self.session.rank)
        return self.model.load_state_dict(state)

    def prepare(self, session: Session) -> None:
        self.model.to(session.device)
        broadcast_from_rank0(self.model.nets.values(), session)  # gradients are averaged by hand
        if session.rank == 0:
            size = tuple(self.cfg.style.image_size)
            self.fixed_s = sample_images(self.spec.source, size, GRID_IMAGES)
            self.fixed_t = sample_images(self.spec.target, size, GRID_IMAGES)

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
            save_generator(out_dir / GENERATOR_FILE, self.model.G, self.cfg, step)
            write_json(out_dir / METRICS_FILE, final)
        return final

    def _write_grid(self, step: int, final: bool) -> None:
        grid = sample_grid(self.model.G, self.model.F, self.fixed_s, self.fixed_t, self.session.device)
        path = Path(self.spec.out_dir) / SAMPLES_DIR / f"step_{step:06d}.png"
        images.write_png(path, grid)
        self.tracker.artifact(path, "style_samples")
        if final:
            self.tracker.image(grid, "style_samples.png")
            self.grid_written = True


def save_generator(path: str | Path, G: torch.nn.Module, cfg: Config, step: int) -> Path:
    st = cfg.style
    return atomic_save({"format": GENERATOR_FORMAT, "arch": {"ngf": st.ngf, "n_blocks": st.n_blocks},
                        "image_size": list(st.image_size), "state_dict": G.state_dict(), "step": step,
                        "params": st.model_dump(mode="json")}, path)


def load_generator(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(G in eval mode, the file's metadata) from a ``generator.pt``."""
    path = Path(path)
    if not path.is_file():
        raise UdasError(f"{path}: generator file not found; train the style stage first")
    blob = load_torch_file(path, "style generator file")
    if not isinstance(blob, dict) or blob.get("format") != GENERATOR_FORMAT:
        raise UdasError(f"{path}: not a style generator file (expected generator.pt written by the style stage)")
    G = build_generator(**blob["arch"])
    G.load_state_dict(blob["state_dict"])
    return G.eval(), blob


def run_plain(cfg: Config, spec: StyleSpec, checkpoint_dir: str | Path | None = None) -> dict:
    """The whole stage in this process, no Ray (tests, benchmarks)."""
    return loop.run_plain(cfg, spec, checkpoint_dir)


def run_on_ray(cfg: Config, spec: StyleSpec, storage: str | Path) -> dict:
    """Fit the stage with Ray Train (``cfg.scaling``); returns ``metrics.json`` plus the generator path.
    Re-running with the same ``spec.name`` and ``storage`` resumes from the stage's last checkpoint."""
    loop.run_on_ray(cfg, spec, storage)
    metrics = json.loads((Path(spec.out_dir) / METRICS_FILE).read_text())
    return {**metrics, "generator": str(Path(spec.out_dir) / GENERATOR_FILE)}
