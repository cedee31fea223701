"""The self-training driver: runs the stages in order, keeps a manifest, resumes.

    [source_only]  teacher  (pseudo_1 -> round_1)  ...  (pseudo_R -> round_R)  [oracle]

Every stage is an instance of a kind declared in ``udas_ray.stages.kinds``: :func:`plan` puts the
kinds in order, :class:`Pipeline` runs each stage with its kind's runner, and nothing here tells
one kind from another. Each student starts from the model before it (``self_training.init=teacher``)
or from scratch and becomes the next round's teacher. ``RUN_DIR/manifest.json`` records every
stage's status, model file, metrics and MLflow run; running the job again with the same
``run.dir`` skips finished stages, reuses their models and pseudo-labels, and lets Ray Train
resume a half-trained stage from its last checkpoint. One MLflow parent run per job, one nested
run per stage, both continued on resume.

:class:`Pipeline` is plain Python; :data:`DriverActor` is the same class as a Ray actor.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

from udas_ray import atomic, fingerprint
from udas_ray import summary as summary_mod
from udas_ray import tracking
from udas_ray.config import Config, diff, read_yaml, validate
from udas_ray.paths import absolute_paths
from udas_ray.data.splits import Splits
from udas_ray.errors import UdasError
from udas_ray.stages.kinds import KINDS, StageContext, StageKind, StagePlan

log = logging.getLogger("udas_ray")

MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.yaml"
# Keys that may change between a run and its resumption: how, not what, is computed.
RESUMABLE_KEYS = ("run.fresh", "run.stop_after", "scaling", "data.verify", "train.peak_gflops",
                  "train.channels_last", "pseudo.actors", "pseudo.cpus_per_actor", "pseudo.gpus_per_actor",
                  "pseudo.batch_size", "style.actors", "style.cpus_per_actor", "style.translate_batch_size", "tune",
                  "data_dependency")


def plan(cfg: Config) -> list[StagePlan]:
    """The run's stages in order: every kind of :data:`~udas_ray.stages.kinds.KINDS` whose ``when``
    holds, in the table's order (kinds next to each other that repeat per round, once per
    ``self_training.rounds``, round by round), each reading the latest earlier stage that provides
    each role it reads; up to ``run.stop_after``."""
    stages, providers = [], {}  # role -> the latest stage so far that provides it
    for kind, r in _instances([k for k in KINDS.values() if k.when(cfg)], cfg.self_training.rounds):
        start = kind.starts_from if kind.starts_from and kind.starts_from.when(cfg) else None
        stage = StagePlan(kind.named(cfg, r), kind.name, kind.row, r,
                          restyled_by=providers.get(kind.source_role),
                          labelled_by=providers.get(kind.labels_from),
                          model_from=providers.get(start.role) if start else None)
        stages.append(stage)
        providers.update(dict.fromkeys(kind.provides, stage.name))
    return until(stages, cfg.run.stop_after)


def _instances(wanted: list[StageKind], rounds: int):
    """(kind, round) in plan order: a run of per-round kinds repeats as a group, round 1 to ``rounds``."""
    group: list[StageKind] = []
    for kind in [*wanted, None]:
        if kind is not None and kind.per_round:
            group.append(kind)
            continue
        yield from ((k, r) for r in range(1, rounds + 1) for k in group)
        group = []
        if kind is not None:
            yield kind, 0


def until(stages: list[StagePlan], last: str | None) -> list[StagePlan]:
    """The stages up to and including ``last`` (``run.stop_after``); all of them for None."""
    if last is None:
        return stages
    names = [s.name for s in stages]
    if last not in names:
        raise UdasError(f"run.stop_after={last!r} is not a stage of this run; its stages: {', '.join(names)}")
    return stages[: names.index(last) + 1]


# ------------------------------------------------------------------------- run folder
def check_run_dir(cfg: Config) -> None:
    """Refuse a run.dir written by a different config (naming the keys), unless run.fresh."""
    run_dir = Path(cfg.run.dir)
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        return
    try:
        before = absolute_paths(validate(read_yaml(saved), str(saved)))  # saved before paths were absolute
    except UdasError:
        before = None
    changes = diff(before, cfg, ignore=RESUMABLE_KEYS) if before is not None else {"(unreadable config)": (None, None)}
    if changes and not cfg.run.fresh:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:5])
        more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
        raise UdasError(f"{run_dir} holds a run with a different config ({shown}{more}); "
                        "choose another run.dir, or pass run.fresh=true to start over there")


def reset_run_dir(run_dir: Path) -> None:
    """run.fresh: forget everything an earlier run derived from its config (the folders every kind
    of stage writes: stages, Ray Train checkpoints, pseudo-labels, the restyled source; cached
    class counts, seed folders, the manifest and summaries); its MLflow history and the run lock stay."""
    folders = sorted({Path(template).parts[0] for kind in KINDS.values() for template in kind.outputs})
    derived = [*folders, "cache", MANIFEST_FILE, CONFIG_FILE, *summary_mod.FILES]
    for path in [*(run_dir / name for name in derived), *run_dir.glob("seed_*")]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class Manifest:
    """``manifest.json``: ``{"parent_run_id": ..., "stages": {name: {...}}}``, written atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"parent_run_id": None, "stages": {}}

    def stage(self, name: str) -> dict:
        return self.data["stages"].setdefault(name, {"status": "pending"})

    def done(self, name: str) -> bool:
        return self.data["stages"].get(name, {}).get("status") == "done"

    def update(self, name: str, **fields) -> None:
        self.stage(name).update(fields)
        self.save()

    def save(self) -> None:
        atomic.write_json(self.path, summary_mod.clean(self.data))


class StageInputs:
    """Whether a resumed run may reuse each stage, asked in plan order (``udas_ray.fingerprint``).

    A finished stage whose recorded inputs match today's is reused. One whose inputs changed
    (a file list, its parent trained again, a config key) runs again, and so does every stage
    after it; a half-run stage whose inputs changed starts over instead of resuming. A stage
    that runs forgets its old outputs when needed and gets today's inputs recorded (with a new
    id) before it starts. A finished stage from before inputs were recorded is reused and gets
    today's recorded."""

    def __init__(self, cfg: Config, splits: Splits, manifest: "Manifest", run_dir: Path):
        self.cfg, self.splits, self.manifest, self.run_dir = cfg, splits, manifest, run_dir
        self.ran: str | None = None  # the first stage this job runs: every stage after it runs too

    def reuse(self, stage: StagePlan) -> bool:
        entries, kind = self.manifest.data["stages"], KINDS[stage.kind]
        entry = entries.get(stage.name, {})
        parent_ids = {p: entries.get(p, {}).get("fingerprint", {}).get("id") for p in stage.parents}
        current = fingerprint.stage_inputs(self.cfg, self.splits, stage, parent_ids, RESUMABLE_KEYS)
        recorded, done = entry.get("fingerprint"), entry.get("status") == "done"
        forget = False
        if self.ran is not None:
            if done:
                log.info("[%s] %s runs again, and so does every stage after it: %s", stage.name, self.ran, kind.again)
            forget = True
        else:
            changed = fingerprint.changes(recorded, current) if recorded else []
            if done and not changed:
                if recorded is None:
                    log.info("[%s] no record of its inputs (it ran before they were recorded): taking today's",
                             stage.name)
                    self.manifest.update(stage.name, fingerprint=fingerprint.with_id(current))
                return True
            if changed:
                log.info("[%s] inputs changed since it %s (%s): %s", stage.name, "ran" if done else "started",
                         ", ".join(changed), kind.again if done else "starting it over")
                forget = True
            self.ran = stage.name
        if forget:
            for path in kind.output_paths(self.run_dir, stage):  # its folders, Ray Train checkpoints included
                if path.is_dir():
                    shutil.rmtree(path)
            entries[stage.name] = {"status": "pending"}  # a new MLflow run too
        self.manifest.update(stage.name, fingerprint=fingerprint.with_id(current))
        return False


# ---------------------------------------------------------------------------- pipeline
class Pipeline:
    def __init__(self, cfg: Config | dict, splits: Splits, *, train_callbacks=None, run_name: str | None = None,
                 tags: dict | None = None):
        """``cfg``: a validated :class:`Config`, which crosses the Ray boundary to the driver
        actor as it is (pickled, not checked again); a dict (a config's ``to_dict()``) is checked
        by ``config.validate``. ``train_callbacks``: a function returning Ray Train callbacks for
        each stage's fit (a sweep trial forwards evaluations to Tune this way);
        ``run_name``/``tags``: of the MLflow parent run."""
        self.cfg = cfg if isinstance(cfg, Config) else validate(cfg, "driver")
        self.train_callbacks, self.run_name, self.tags = train_callbacks, run_name, tags or {}
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        self.splits = splits
        self.run_dir = Path(self.cfg.run.dir).resolve()
        self.uri = self.cfg.tracking_uri
        try:
            from udas_ray.cluster import quiet_ray_data

            quiet_ray_data()
        except ImportError:
            pass

    def run(self) -> dict:
        from udas_ray import progress

        cfg = self.cfg
        check_run_dir(cfg)
        if cfg.run.fresh:
            reset_run_dir(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.run_dir / CONFIG_FILE, cfg.to_yaml())
        manifest = Manifest(self.run_dir / MANIFEST_FILE)
        parent = self._parent_run(manifest)
        logger = tracking.logger_for(self.uri, parent)
        rows, stages, started, timed = [], plan(cfg), time.monotonic(), []
        inputs = StageInputs(cfg, self.splits, manifest, self.run_dir)
        for k, stage in enumerate(stages, 1):
            if inputs.reuse(stage):
                log.info("stage %d/%d: %s (done before: reusing it)", k, len(stages), stage.name)
            else:
                # rough: the mean of the stages run so far in this job, times the stages left to run
                # (a pseudo-label pass costs less than a training stage; reused stages cost nothing)
                left = sum(not manifest.done(s.name) for s in stages[k - 1:])
                eta = progress.rough_eta(timed, left)
                log.info("stage %d/%d: %s  (run: %s elapsed, %s)", k, len(stages), stage.name,
                         progress.duration(time.monotonic() - started),
                         f"eta ~{progress.duration(eta)}, rough: stages differ in cost" if eta is not None
                         else "eta once a stage has finished")
                t0 = time.monotonic()
                self._run_stage(stage, manifest, parent)
                timed.append(time.monotonic() - t0)
            entry = manifest.stage(stage.name)
            if stage.row:
                rows.append(summary_mod.stage_row(stage.name, entry["metrics"]))
                # on the parent as soon as the stage is done: a run stopped later still shows it;
                # stage_miou with the stage's place in the plan as its step: the UI draws a curve
                logger.metrics({f"miou_{stage.name}": rows[-1]["miou"]}, step=0)
                logger.metrics({"stage_miou": rows[-1]["miou"]}, step=k)
        log.info("all %d stages done in %s", len(stages), progress.duration(time.monotonic() - started))
        result = summary_mod.build(rows, run_dir=str(self.run_dir), config_fingerprint=cfg.fingerprint())
        summary_mod.write(self.run_dir, result)
        try:  # a picture must not lose a finished run's summary
            from udas_ray import visualize
            from udas_ray.data.images import write_png

            plot = self.run_dir / visualize.STAGE_MIOU_FILE
            if rows:
                write_png(plot, visualize.stage_miou_figure(result))
                logger.artifact(plot)
        except Exception as exc:
            log.warning("could not draw the mIoU-per-stage plot: %s", exc)
        if result.get("gap_closed") is not None:
            logger.metrics({"gap_closed": result["gap_closed"]}, step=0)
        for name in summary_mod.FILES:
            logger.artifact(self.run_dir / name)
        logger.finish()
        return result

    # -------------------------------------------------------------------------------
    def _parent_run(self, manifest: Manifest) -> str | None:
        if not self.uri:  # mlflow.enabled=false
            return None
        try:
            run_id = manifest.data.get("parent_run_id")
            if not tracking.run_exists(self.uri, run_id):
                run_id = tracking.create_run(self.uri, self.cfg.mlflow.experiment,
                                             self.run_name or f"udas {self.run_dir.name}",
                                             tags={"run_dir": str(self.run_dir), **self.tags})
                manifest.data["parent_run_id"] = run_id
                manifest.save()
                tracking.RunLogger(self.uri, run_id).params(self.cfg.flat())
            return run_id
        except Exception as exc:  # tracking must not stop training
            log.warning("MLflow unavailable at %s (%s): continuing without tracking", self.uri, exc)
            self.uri = None
            return None

    def _stage_run(self, name: str, manifest: Manifest, parent: str | None) -> str | None:
        if not self.uri:
            return None
        run_id = manifest.stage(name).get("mlflow_run_id")
        if not tracking.run_exists(self.uri, run_id):
            run_id = tracking.create_run(self.uri, self.cfg.mlflow.experiment, name, parent, {"stage": name})
            manifest.update(name, mlflow_run_id=run_id)
        return run_id

    def _run_stage(self, stage: StagePlan, manifest: Manifest, parent: str | None):
        """The stage by its kind's runner, with the manifest entries of the stages it reads."""
        run_id = self._stage_run(stage.name, manifest, parent)
        manifest.update(stage.name, status="running", kind=stage.kind, started=time.time())
        parents = {name: manifest.stage(name) for name in stage.parents}
        context = StageContext(self.cfg, self.splits, stage, self.run_dir, parents, self.uri, run_id, self.train_callbacks)
        try:
            fields = KINDS[stage.kind].run(context)
        except BaseException:
            # On a full disk this write fails too: the stage's own error is the one to report
            # (a manifest left at "running" resumes the same way).
            with contextlib.suppress(UdasError):
                manifest.update(stage.name, status="failed")
            if run_id:
                tracking.RunLogger(self.uri, run_id).finish("FAILED")
            raise
        manifest.update(stage.name, status="done", finished=time.time(), **fields)
        if run_id:
            tracking.RunLogger(self.uri, run_id).finish()


def driver_actor(scaling):
    """The pipeline as a Ray actor that holds no CPU (its stages ask for their own). With
    ``scaling.use_gpu`` in the in-process mode it takes ``scaling.gpus_per_worker`` GPUs: its
    stages train inside it, so Ray must place it on a GPU node and keep that GPU for it.
    ``scaling``: the job's ``cfg.scaling``."""
    import ray

    from udas_ray.cluster import driver_gpus

    return ray.remote(num_cpus=0, num_gpus=driver_gpus(scaling), max_restarts=0)(Pipeline)
