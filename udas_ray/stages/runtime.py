"""What a training loop needs from its surroundings, with and without Ray Train.

A stage's loop is written once against :class:`Session` (rank, world size, device, the state to
resume from, ``report``); :class:`RaySession` serves it inside a Ray Train worker,
:class:`InProcessSession` in Ray Train's in-process mode (``scaling.num_workers=0``, checkpoints
in the run folder) and :class:`PlainSession` in a plain process, which is what the benchmarks
compare against and what the unit tests drive.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from udas_ray import atomic, flops
from udas_ray.checkpoints import atomic_save, load_torch_file

log = logging.getLogger("udas_ray")
STATE_FILE = "state.pt"
HISTORY_FILE = "history.jsonl"


class Progress:
    """Running means of a loop's loss terms and its timing between two log lines.

    Once the loop knows the FLOPs of a step (``flops_per_step``), a window's summary also gives
    its GFLOP/s, and with a peak to hold them against (``peak_gflops``) its MFU."""

    def __init__(self, flops_per_step: int | None = None, peak_gflops: float | None = None):
        self.flops_per_step, self.peak_gflops = flops_per_step, peak_gflops
        self.reset()

    def reset(self):
        self.sums, self.count, self.wait, self.start = {}, 0, 0.0, time.perf_counter()

    def add(self, values: dict, wait: float):
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.wait += wait

    def summary(self) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        out.update(steps_per_s=self.count / elapsed, seconds_per_step=elapsed / max(self.count, 1),
                   data_wait_share=self.wait / elapsed)
        if self.flops_per_step is not None:
            out["gflops_per_s"] = flops.gflops_per_s(self.flops_per_step, out["steps_per_s"])
            if self.peak_gflops:
                out["mfu"] = flops.mfu(self.flops_per_step, out["steps_per_s"], self.peak_gflops)
        return out


def append_history(out_dir: str | Path, record: dict) -> None:
    """One line of ``history.jsonl``: a log window or an evaluation of a stage."""
    atomic.append_line(Path(out_dir) / HISTORY_FILE, json.dumps(record))


def read_history(out_dir: str | Path) -> list[dict]:
    """A stage's log windows and evaluations, one dict per reported step."""
    path = Path(out_dir) / HISTORY_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


class Session:
    rank = 0
    world = 1
    device = torch.device("cpu")

    def restore(self) -> dict | None:
        """The training state of the latest checkpoint, if this stage was restarted."""
        return None

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def report(self, metrics: dict, state: dict | None = None) -> None:
        raise NotImplementedError

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over workers, on ``tensor``'s device (summed on the session's: NCCL, the backend on
        GPUs, takes no CPU tensor)."""
        if self.world > 1 and dist.is_initialized():
            summed = tensor.to(self.device)
            dist.all_reduce(summed)
            return summed.to(tensor.device)
        return tensor

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Mean of gradients over workers, for modules not wrapped in DDP (the discriminator)."""
        if self.world > 1 and dist.is_initialized():
            for p in module.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world

    def broadcast_from_rank0(self, modules) -> None:
        """Every rank starts from rank 0's weights (for modules whose gradients are averaged by
        hand, :meth:`average_gradients`)."""
        if self.world > 1 and dist.is_initialized():
            for module in modules:
                for t in module.state_dict().values():
                    dist.broadcast(t, src=0)


class PlainSession(Session):
    """One process, no Ray: checkpoints go to ``<checkpoint_dir>/state.pt``."""

    def __init__(self, checkpoint_dir: str | Path, device: str = "cpu"):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = torch.device(device)
        self.reports: list[dict] = []

    def restore(self) -> dict | None:
        path = self.checkpoint_dir / STATE_FILE
        return load_torch_file(path, "training checkpoint") if path.is_file() else None

    def report(self, metrics: dict, state: dict | None = None) -> None:
        self.reports.append(dict(metrics))
        if state is not None:
            atomic_save(state, self.checkpoint_dir / STATE_FILE)


def saved_step(checkpoint_dir: str | Path) -> int:
    """The step of ``<checkpoint_dir>/state.pt`` (0: none, or unreadable). Memory-mapped: the
    tensors are not read."""
    try:
        state = torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
        return int(state["step"])
    except Exception:  # missing or damaged: the stage starts over, and restore() names a damaged file
        return 0


class RaySession(Session):
    """Inside ``train_loop_per_worker`` of a TorchTrainer."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world = ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def restore(self) -> dict | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return load_torch_file(Path(directory) / STATE_FILE, "training checkpoint")

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        if self.world > 1:
            return ray.train.torch.prepare_model(model)
        return model.to(self.device)

    def report(self, metrics: dict, state: dict | None = None) -> None:
        import ray.train

        if state is None or self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


class InProcessSession(RaySession):
    """Ray Train's in-process mode (``scaling.num_workers=0``), which keeps checkpoints only in
    memory: here they are written as :class:`PlainSession`'s, atomically into ``checkpoint_dir``
    (under the stage's folder in the run), so a killed stage resumes from its last one."""

    def __init__(self, checkpoint_dir: str | Path):
        super().__init__()
        self.files = PlainSession(checkpoint_dir, str(self.device))

    def restore(self) -> dict | None:
        return self.files.restore()

    def report(self, metrics: dict, state: dict | None = None) -> None:
        import ray.train

        ray.train.report(metrics)
        self.files.report(metrics, state)


def quiet_worker_logs() -> None:
    """Inside a Train worker: our own progress lines at INFO, Ray Train's console chatter
    (a line per report and checkpoint) only from WARNING up; its log files keep everything."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("udas_ray").setLevel(logging.INFO)
    for name in ("ray.train", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(logging.WARNING)


def threads_for(cpus: float) -> int:
    """Torch threads for a share of ``cpus`` CPUs: rounded half up, at least 1 (1.5 -> 2, 0.5 -> 1)."""
    return max(1, math.floor(cpus + 0.5))


def set_threads(cpus: float) -> int:
    """Torch intra-op threads (and ``OMP_NUM_THREADS`` for child processes) = the CPUs this
    worker was given, rounded as :func:`threads_for`; returns the count.

    Ray starts a worker with ``OMP_NUM_THREADS`` = floor(CPUs), at least 1, so torch there runs
    1 thread on 1.5 CPUs; rounding half up gives it 2, half a CPU over its share, which with
    conf/default.yaml's 1.5 + 0.5 split measured faster than 1 (docs/BENCHMARKS.md).

    Inter-op threads are set to the same count too, but torch allows that only once per process
    and before any parallel work: where it is too late (a second stage in the same worker, a
    process that already ran torch ops) the default stays, which is harmless here as the loop
    runs no inter-op parallel work (no ``torch.jit.fork``)."""
    threads = threads_for(cpus)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError as err:  # parallel work already started, or set once before
            log.debug("inter-op threads stay at %d: %s", torch.get_num_interop_threads(), err)
    return threads
