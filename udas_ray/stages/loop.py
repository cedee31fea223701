"""One training loop for every stage that trains (segmentation and style), and the two ways to feed it.

A stage is a *spec* (plain data, picklable: what to train on, where to write) that knows how to
build its *task* (the models, their optimizers, one ``train_step``, ``evaluate`` and ``finish``).
:func:`run_loop` is the loop that every task shares::

    restore -> prepare -> for each step: lr, train_step, [log] [evaluate] [checkpoint + report] -> finish

Its log windows (progress line, ``history.jsonl``, MLflow, Ray Train's report) carry the
steps/s, the data wait, and the FLOP rate and MFU of the step (:func:`run_loop`).

The three places where Ray Train touches it are the :class:`~udas_ray.stages.runtime.Session`'s
``restore``, ``prepare`` and ``report``; everything else reads as single-process PyTorch.

:func:`run_plain` feeds the loop from the stage's batch builder in this process (tests,
benchmarks); :func:`train_on_ray` streams the same builder through Ray Data into Ray Train
workers. The config crosses into the workers as the validated :class:`Config` it is (pickled),
beside the spec; it is not checked again there.

Reproducibility: the builder is seeded from ``run.seed`` and the stage name, and step ``s`` reads
slots ``s*B*W ..`` (B the batch size, W the workers), also after a resume; a checkpoint holds
torch's RNG (:func:`rng_state`). So with one consumer of the batches (``run_plain``, or Ray Train
with ``scaling.num_workers`` 0 or 1, whose dataset keeps its order) two runs with the same seed
train the same, and a resumed stage trains as if never stopped. With several workers, which slots
a worker gets depends on timing (Ray Data's split), so runs differ.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch

from udas_ray import atomic, flops, precision, tracking
from udas_ray.config import Config
from udas_ray.data.batches import stage_seed
from udas_ray.errors import UdasError
from udas_ray.stages.runtime import (InProcessSession, PlainSession, Progress, RaySession, Session, append_history,
                                     quiet_worker_logs, saved_step, set_threads)

log = logging.getLogger("udas_ray")


@dataclass(frozen=True)
class Schedule:
    """Every how many steps a stage logs, evaluates and checkpoints (and always at its last step)."""

    steps: int
    log_every: int
    eval_every: int
    checkpoint_every: int


class Task(Protocol):
    """What a stage trains, built inside the worker that trains it."""

    schedule: Schedule
    tracker: tracking.RunLogger | tracking.NullLogger

    def params(self) -> dict: ...  # logged once, when the stage starts from scratch

    def load_state_dict(self, state: dict) -> int: ...  # returns the step to go on from

    def prepare(self, session: Session) -> None: ...  # devices, DDP, identical weights on every rank

    def set_lr(self, step: int) -> float: ...

    def train_step(self, batch: dict) -> dict: ...  # one optimisation step; returns its loss values

    def evaluate(self, step: int) -> dict: ...  # metrics to report (every rank calls it)

    def state_dict(self, step: int) -> dict: ...  # what a checkpoint holds

    def finish(self, step: int, resumed_from: int) -> dict: ...  # final files; returns the final metrics


class Spec(Protocol):
    """A stage as data: enough to build its batches and its task anywhere."""

    name: str
    out_dir: str
    tracking_uri: str | None
    mlflow_run_id: str | None

    def batch_recipe(self, cfg: Config) -> tuple[type, dict]: ...  # a builder class (slot ids -> uint8
    # arrays) and its keyword arguments; the class also takes ``seed`` (:func:`batch_kwargs` adds it)

    def rows(self, cfg: Config, workers: int) -> int: ...  # training examples the stage draws

    def batch_size(self, cfg: Config) -> int: ...

    def task(self, cfg: Config, session: Session, tracker) -> Task: ...


def run_loop(task: Task, batches: Iterable[dict] | Callable[[int], Iterable[dict]], session: Session, *,
             name: str, out_dir: str | Path, peak_gflops: float | None = None,
             peak_dtype: torch.dtype = torch.float32) -> dict:
    """Train ``task`` for its scheduled steps, resuming from the session's checkpoint if any.
    ``batches``: an iterable of batches, or a function of the step to start from returning one.

    The first step this process trains runs under torch's FLOP counter (:func:`count_first_step`);
    from then on every log window carries ``gflops_per_s`` and ``mfu`` against ``peak_gflops``
    (None: :func:`udas_ray.flops.measure_peak` at this process's torch threads in ``peak_dtype``,
    the dtype the step computes in, once, before the first step). The counted step stays in the
    first window's rate: with the counter's one-time imports done before the clock starts, it
    adds ~40-70 ms to it (tiny DeepLab), under 1 % of a 50-step window."""
    sched = task.schedule
    step = resumed_from = 0
    clock = Phases()
    with clock("setup"):
        state = session.restore()
        if state is not None:
            step = resumed_from = task.load_state_dict(state)
            log.info("[%s] resuming at step %d/%d from its last checkpoint", name, step, sched.steps)
        task.prepare(session)
        if step == 0:
            task.tracker.params(task.params())
    measured = not peak_gflops
    if step < sched.steps:
        with clock("flop_counter_and_peak"):
            flops.warm_up_counter()  # the counter's one-time imports, off the clock
            with torch.random.fork_rng(devices=[]):  # the measurement's randn must not move the training's RNG
                peak_gflops = peak_gflops or flops.measure_peak(torch.get_num_threads(), dtype=peak_dtype,
                                                                device=session.device)
    it = iter(batches(step) if callable(batches) else batches)
    progress, announce = Progress(peak_gflops=peak_gflops), False
    started = time.perf_counter()
    while step < sched.steps:
        t0 = time.perf_counter()
        batch = next(it)
        wait = time.perf_counter() - t0
        clock.add("first_batch" if progress.flops_per_step is None else "data_wait", wait)
        with clock("train_steps"):
            lr = task.set_lr(step)
            if progress.flops_per_step is None:
                losses, progress.flops_per_step = count_first_step(task, batch)
                log_flops(task, name, progress.flops_per_step, peak_gflops, peak_dtype if measured else None)
                announce = True
            else:
                losses = task.train_step(batch)
        progress.add(losses, wait)
        step += 1
        last = step == sched.steps
        metrics = {}
        if step % sched.log_every == 0 or last:
            metrics.update(progress.summary(), lr=lr)
            if announce:  # once per process, in its first window
                metrics.update(flops_per_step=progress.flops_per_step, peak_gflops=peak_gflops)
                announce = False
            progress.reset()
            log_progress(name, step, sched.steps, metrics)
        if step % sched.eval_every == 0 or last:
            with clock("evaluate"):
                metrics.update(task.evaluate(step))
        checkpoint = step % sched.checkpoint_every == 0 or last
        if metrics or checkpoint:  # every rank reports on the same steps: report is a barrier
            with clock("checkpoint_and_report"):
                task.tracker.metrics(metrics, step)
                if session.rank == 0:
                    append_history(out_dir, {"step": step, **metrics})
                session.report({"step": step, **metrics},
                               task.state_dict(step) if checkpoint and session.rank == 0 else None)
    with clock("finish"):
        final = task.finish(step, resumed_from)
    if session.rank == 0:
        clock.write(out_dir, steps=step - resumed_from)
    return {**final, "seconds": time.perf_counter() - started}


TIMING_FILE = "timing.json"  # in a stage folder: where its training process's time went


class Phases:
    """Wall-clock seconds of the loop's phases in this process (setup, the wait for the first
    batch, training steps, data waits, evaluations, checkpoints and reports, the stage's finish),
    written to the stage folder's ``timing.json``. What the stage's wall clock holds beyond their
    sum is outside the training process: Ray Train's worker group and Ray Data starting and
    stopping (bench/run_breakdown.py)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t0)

    def write(self, out_dir: str | Path, **extra) -> None:
        seconds = {k: round(v, 3) for k, v in self.seconds.items()}
        record = {"seconds": seconds, "total": round(sum(seconds.values()), 3), **extra}
        atomic.write_json(Path(out_dir) / TIMING_FILE, record)


def count_first_step(task: Task, batch: dict) -> tuple[dict, int]:
    """``task.train_step(batch)`` under torch's FLOP counter: the step's losses and its FLOPs.
    The step trains as any other, no extra forward or backward."""
    losses = []
    counted = flops.count_step_flops(lambda: losses.append(task.train_step(batch)))
    return losses[0], counted


def log_flops(task: Task, name: str, flops_per_step: int, peak: float, measured: torch.dtype | None) -> None:
    """``measured``: the dtype of the matmul the peak was measured with; None: train.peak_gflops."""
    source = (f"{torch.get_num_threads()}-thread {str(measured).removeprefix('torch.')} matmul measured at the start"
              if measured else "train.peak_gflops")
    log.info("[%s] %.3f GFLOP per step (matmuls and convolutions, counted on its first step); "
             "MFU against %.1f GFLOP/s (%s)", name, flops_per_step / 1e9, peak, source)
    task.tracker.params({"flops_per_step": flops_per_step, "peak_gflops": round(peak, 1)})


def log_progress(name: str, step: int, steps: int, m: dict) -> None:
    eta = (steps - step) / max(m["steps_per_s"], 1e-9)
    terms = " ".join(f"{k}={v:.3f}" for k, v in m.items() if k.startswith("loss"))
    mfu = f"{100 * m['mfu']:.1f}%" + (" (over 100 %: the peak is too low, see train.peak_gflops)" if m["mfu"] > 1 else "")
    log.info("[%s] step %d/%d %.2f it/s %.1f GFLOP/s MFU %s data-wait %.0f%% %s lr=%.2e eta %s", name,
             step, steps, m["steps_per_s"], m["gflops_per_s"], mfu, 100 * m["data_wait_share"],
             terms, m["lr"], duration(eta))


def duration(seconds: float) -> str:
    seconds = int(seconds) if math.isfinite(seconds) else 0
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _start(spec: Spec, cfg: Config, session: Session, batches) -> dict:
    tracker = tracking.logger_for(spec.tracking_uri, spec.mlflow_run_id, session.rank)
    task = spec.task(cfg, session, tracker)
    return run_loop(task, batches, session, name=spec.name, out_dir=spec.out_dir, peak_gflops=cfg.train.peak_gflops,
                    peak_dtype=precision.compute_dtype(cfg.train.precision))


# ------------------------------------------------------------------------------ randomness
def batch_kwargs(cfg: Config, spec: Spec) -> tuple[type, dict]:
    """The spec's batch recipe with the stage's seed (``run.seed`` and the stage name)."""
    builder_cls, kwargs = spec.batch_recipe(cfg)
    return builder_cls, {**kwargs, "seed": stage_seed(cfg.run.seed, spec.name)}


def seed_torch(seed: int, name: str, rank: int, step: int = 0) -> None:
    """Seed torch's global RNG for stage ``name`` on ``rank`` (from ``run.seed``)."""
    torch.manual_seed(stage_seed(seed, name, "torch", str(rank), str(step)))


def rng_state() -> dict:
    """What a checkpoint keeps of the process's random state: torch's CPU generator (class
    masks of the ClassMix terms). Batches carry their own seeds; the CycleGAN pools keep theirs."""
    return {"rng": {"torch": torch.get_rng_state()}}


def load_rng_state(state: dict, seed: int, name: str, rank: int) -> None:
    """Put back the RNG a checkpoint holds (rank 0's). Other ranks, whose state was not saved,
    are seeded from the step instead. A checkpoint without an RNG state changes nothing."""
    saved = state.get("rng")
    if saved is None:
        return
    if rank == 0:
        torch.set_rng_state(saved["torch"])
    else:
        seed_torch(seed, name, rank, int(state["step"]))


# --------------------------------------------------------------------------- in this process
def plain_batches(builder, batch_size: int, start: int = 0) -> Iterator[dict]:
    """Batches from a builder in this process: consecutive slot ids from ``start``, as torch tensors."""
    slot = start
    while True:
        batch = builder({"id": np.arange(slot, slot + batch_size)})
        slot += batch_size
        yield {k: torch.from_numpy(v) for k, v in batch.items()}


def run_plain(cfg: Config, spec: Spec, checkpoint_dir: str | Path | None = None) -> dict:
    """The whole stage in this process, no Ray (benchmarks, tests); checkpoints in ``checkpoint_dir``."""
    device = "cuda" if cfg.scaling.use_gpu and torch.cuda.is_available() else "cpu"
    session = PlainSession(checkpoint_dir or Path(spec.out_dir) / "plain", device)
    builder_cls, kwargs = batch_kwargs(cfg, spec)
    builder, bs = builder_cls(**kwargs), spec.batch_size(cfg)
    return _start(spec, cfg, session, lambda step: plain_batches(builder, bs, step * bs))


# ------------------------------------------------------------------------------ on Ray Train
def training_dataset(cfg: Config, spec: Spec, workers: int, start: int = 0):
    """A Ray Dataset streaming the stage's training examples: slot ids -> the spec's batch
    builder (decode, resize, mix, jitter) on a pool of CPU actors. Nothing is materialised.
    ``start``: the step the stage resumes at; its slots come first."""
    import pyarrow as pa
    import ray.data

    # Slot ids built in memory (no read task: on 2 cores a read task waiting for a whole CPU
    # next to the training worker would never be scheduled), a few batches per block.
    bs, workers = spec.batch_size(cfg), max(workers, 1)
    rows = spec.rows(cfg, workers)
    ids = np.arange(min(start * bs * workers, max(rows - bs * workers, 0)), rows)
    blocks = np.array_split(ids, min(1000, max(1, len(ids) // (bs * 4))))
    builder_cls, kwargs = batch_kwargs(cfg, spec)
    ds = ray.data.from_arrow([pa.table({"id": block}) for block in blocks]).map_batches(
        builder_cls,
        fn_constructor_kwargs=kwargs,
        batch_size=bs,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.scaling.data_workers),
        num_cpus=cfg.scaling.data_cpus,
    )
    # batches in slot order (what scaling.num_workers=0 reads; Ray Train gives its workers the
    # same option through fit's DataConfig)
    ds.context.execution_options.preserve_order = True
    return ds


def worker_loop(config: dict) -> dict:
    """``train_loop_per_worker``: this worker's shard of the stream -> :func:`run_loop`."""
    import ray.train

    cfg, spec = config["cfg"], config["spec"]
    quiet_worker_logs()
    set_threads(cfg.scaling.cpus_per_worker)
    shard = ray.train.get_dataset_shard("train")
    bs = spec.batch_size(cfg)

    def batches():
        while True:  # a restarted worker group starts a fresh pass; the loop stops at its last step
            yield from shard.iter_torch_batches(batch_size=bs, drop_last=True, prefetch_batches=2)

    in_process = config.get("checkpoint_dir")
    return _start(spec, cfg, InProcessSession(in_process) if in_process else RaySession(), batches())


IN_PROCESS_DIR = "in_process"  # in a stage's Ray Train folder: its checkpoint in scaling.num_workers=0


def train_on_ray(cfg: Config, spec: Spec, storage: str | Path, callbacks=None):
    """Fit the stage with Ray Train as ``cfg.scaling`` says; raises the stage's error if it failed.
    Ray Train keeps its checkpoints under ``storage/<stage>``; in its in-process mode, which
    keeps them in memory only, the loop writes them to ``storage/<stage>/in_process/state.pt``."""
    checkpoint_dir = None
    if cfg.scaling.num_workers == 0:
        checkpoint_dir = Path(storage).resolve() / spec.name / IN_PROCESS_DIR
        start = saved_step(checkpoint_dir)
    else:
        start = checkpointed_step(storage, spec.name)
    train_config = {"cfg": cfg, "spec": spec, "checkpoint_dir": checkpoint_dir and str(checkpoint_dir)}
    result = fit(worker_loop, train_config, cfg=cfg, name=spec.name,
                 datasets={"train": training_dataset(cfg, spec, cfg.scaling.num_workers, start)}, storage=storage,
                 callbacks=callbacks)
    if result.error:
        raise result.error
    return result


def checkpointed_step(storage: str | Path, name: str) -> int:
    """The step of the last checkpoint Ray Train will resume run ``name`` from (0: none), read
    from its ``checkpoint_manager_snapshot.json`` (Ray 2.60's layout); anything unreadable is 0,
    which costs exactness (the resumed stage re-reads its first slots), not correctness."""
    path = Path(storage) / name / "checkpoint_manager_snapshot.json"
    try:
        results = json.loads(path.read_text())["checkpoint_results"]
        return max((int(r["metrics"]["step"]) for r in results), default=0)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def worker_resources(scaling) -> dict[str, float]:
    """What each Train worker reserves: ``scaling.cpus_per_worker`` CPUs and, with
    ``scaling.use_gpu``, ``scaling.gpus_per_worker`` GPUs."""
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker
    return resources


def fit(train_fn, train_config: dict, *, cfg: Config, name: str, datasets: dict | None = None,
        storage: str | Path, callbacks=None):
    """Run ``train_fn`` on Ray Train workers as the config's ``scaling`` section says.

    Each stage gets its own run name under ``storage``: re-running the same name resumes from
    that stage's last checkpoint (Ray Train's restore), which is how a killed job picks up a
    half-trained stage.
    """
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train import TrainingFailedError
    from ray.train.torch import TorchTrainer

    sc = cfg.scaling
    resources = worker_resources(sc)
    callbacks = list(callbacks or [])
    if sc.num_workers > 0:  # a lost node the nodes left cannot make up for ends the stage, naming it
        from udas_ray.lost_nodes import LostNodeCheck

        callbacks.append(LostNodeCheck(name, sc.num_workers, resources))
    trainer = TorchTrainer(
        train_fn,
        train_loop_config=train_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=sc.num_workers, use_gpu=sc.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(Path(storage).resolve()),
            failure_config=ray.train.FailureConfig(max_failures=sc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=callbacks,
        ),
        datasets=datasets or {},
        # batches in slot order: with one consumer, the same batches at the same steps in every run
        dataset_config=ray.train.DataConfig(execution_options=ExecutionOptions(preserve_order=True)),
    )
    try:
        return trainer.fit()
    except TrainingFailedError as exc:
        cause = getattr(exc, "controller_failure", None)  # raised by a callback on the controller
        if isinstance(cause, UdasError):
            raise cause from None
        raise
