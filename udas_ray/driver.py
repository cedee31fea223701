"""The self-training driver: runs the stages in order, keeps a manifest, resumes.

    [source_only]  teacher  (pseudo_1 -> round_1)  ...  (pseudo_R -> round_R)  [oracle]

Each student starts from the model before it (``self_training.init=teacher``) or from scratch
and becomes the next round's teacher. ``RUN_DIR/manifest.json`` records every stage's status,
model file, metrics and MLflow run; running the job again with the same ``run.dir`` skips
finished stages, reuses their models and pseudo-labels, and lets Ray Train resume a
half-trained stage from its last checkpoint. One MLflow parent run per job, one nested run
per stage, both continued on resume.

:class:`Pipeline` is plain Python; :data:`DriverActor` is the same class as a Ray actor.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from udas_ray import atomic, fingerprint
from udas_ray import summary as summary_mod
from udas_ray import tracking
from udas_ray.config import Config, diff, read_yaml, validate
from udas_ray.paths import absolute_paths
from udas_ray.data.splits import Splits
from udas_ray.errors import UdasError
from udas_ray.metrics import flat_metrics
from udas_ray.stages import kinds, pseudo, segment, style, translate

log = logging.getLogger("udas_ray")

MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.yaml"
# Keys that may change between a run and its resumption: how, not what, is computed.
RESUMABLE_KEYS = ("run.fresh", "run.stop_after", "scaling", "data.verify", "train.peak_gflops",
                  "train.channels_last", "pseudo.actors", "pseudo.cpus_per_actor", "pseudo.batch_size",
                  "style.actors", "style.cpus_per_actor", "style.translate_batch_size", "tune", "data_dependency")


@dataclass(frozen=True)
class StagePlan:
    name: str
    kind: str  # a segmentation kind (udas_ray.stages.kinds), "pseudo" or "style"
    row: bool  # a row of the summary table
    round: int = 0
    restyled: bool = False  # trains on the style stage's restyled source


def plan(cfg: Config) -> list[StagePlan]:
    stages = []
    if cfg.run.baselines:
        stages.append(StagePlan("source_only", "source_only", True))
        if cfg.augment.randomize.enabled or cfg.data.rare_class_sampling.enabled:
            stages.append(StagePlan("source_randomized", "source_randomized", True))
    restyled = cfg.style.enabled
    if restyled:
        stages.append(StagePlan("style", "style", False))  # CycleGAN or SimGAN + restyling of the source
        # the "ST" row: style_transfer (cyclegan) or style_refined (simgan)
        stages.append(StagePlan(style.METHODS[cfg.style.method].row, "source_only", True, restyled=True))
    warm_teacher = kinds.starts_from(cfg, "teacher") == "supervised"
    if (cfg.run.supervised or cfg.run.baselines or warm_teacher) and cfg.data.target.labeled > 0:
        stages.append(StagePlan("supervised", "supervised", True))
    stages.append(StagePlan("teacher", "teacher", True, restyled=restyled))
    if cfg.self_training.mode in ("offline", "both"):
        for r in range(1, cfg.self_training.rounds + 1):
            stages.append(StagePlan(f"pseudo_{r}", "pseudo", False, r))
            stages.append(StagePlan(f"round_{r}", "student", True, r))
    if cfg.self_training.mode in ("ema", "both"):
        stages.append(StagePlan("ema", "ema", True))
    if cfg.run.baselines:
        stages.append(StagePlan("oracle", "oracle", True))
    return until(stages, cfg.run.stop_after)


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
    """run.fresh: forget everything an earlier run derived from its config (stages, Ray Train
    checkpoints, pseudo-labels, the restyled source, cached class counts, seed folders, the
    manifest and summaries); its MLflow history and the run lock stay."""
    derived = ["stages", "pseudo", "ray", "style", "cache", MANIFEST_FILE, CONFIG_FILE, *summary_mod.FILES]
    for path in [*(run_dir / name for name in derived), *run_dir.glob("seed_*")]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def stage_outputs(run_dir: Path, stage: StagePlan) -> list[Path]:
    """What a stage leaves in the run folder (its Ray Train checkpoints included)."""
    paths = [run_dir / "stages" / stage.name, run_dir / "ray" / stage.name]
    if stage.kind == "pseudo":
        paths += [run_dir / "pseudo" / f"round_{stage.round}", run_dir / "pseudo" / f".round_{stage.round}.staging"]
    if stage.kind == "style":
        paths.append(run_dir / "style")  # the restyled source and its staging folder
    return paths


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

    def __init__(self, cfg: Config, splits: Splits, manifest: "Manifest", run_dir: Path, stages: list[StagePlan]):
        self.cfg, self.splits, self.manifest, self.run_dir = cfg, splits, manifest, run_dir
        self.parents = fingerprint.stage_parents(stages, cfg)
        self.ran: str | None = None  # the first stage this job runs: every stage after it runs too

    def reuse(self, stage: StagePlan) -> bool:
        entries = self.manifest.data["stages"]
        entry = entries.get(stage.name, {})
        parent_ids = {p: entries.get(p, {}).get("fingerprint", {}).get("id") for p in self.parents[stage.name]}
        current = fingerprint.stage_inputs(self.cfg, self.splits, stage, parent_ids, RESUMABLE_KEYS)
        recorded, done = entry.get("fingerprint"), entry.get("status") == "done"
        again = "labelling the target images again" if stage.kind == "pseudo" else "training it again"
        forget = False
        if self.ran is not None:
            if done:
                log.info("[%s] %s runs again, and so does every stage after it: %s", stage.name, self.ran, again)
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
                         ", ".join(changed), again if done else "starting it over")
                forget = True
            self.ran = stage.name
        if forget:
            for path in stage_outputs(self.run_dir, stage):
                if path.is_dir():
                    shutil.rmtree(path)
            entries[stage.name] = {"status": "pending"}  # a new MLflow run too
        self.manifest.update(stage.name, fingerprint=fingerprint.with_id(current))
        return False


# ---------------------------------------------------------------------------- pipeline
class Pipeline:
    def __init__(self, cfg: Config | dict, splits: Splits, *, train_callbacks=None, run_name: str | None = None,
                 tags: dict | None = None):
        """``train_callbacks``: a function returning Ray Train callbacks for each stage's fit (a
        sweep trial forwards evaluations to Tune this way); ``run_name``/``tags``: of the
        MLflow parent run."""
        self.cfg = cfg if isinstance(cfg, Config) else Config.model_validate(cfg)
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
        rows, models = [], kinds.starting_points()  # what later stages start from
        stages, started, timed = plan(cfg), time.monotonic(), []
        inputs = StageInputs(cfg, self.splits, manifest, self.run_dir, stages)
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
                self._run_stage(stage, manifest, parent, models)
                timed.append(time.monotonic() - t0)
            entry = manifest.stage(stage.name)
            # a segmentation stage always records its model: a missing one is an error, not None
            kinds.note_finished(models, stage.kind, entry["model"] if stage.kind in kinds.KINDS else None)
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

    def _run_stage(self, stage: StagePlan, manifest: Manifest, parent: str | None, models: dict):
        run_id = self._stage_run(stage.name, manifest, parent)
        manifest.update(stage.name, status="running", kind=stage.kind, started=time.time())
        runner = {"pseudo": self._pseudo, "style": self._style}.get(stage.kind, self._segment)
        try:
            fields = runner(stage, models, run_id)
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
            stage_logger = tracking.RunLogger(self.uri, run_id)
            picture = Path(fields.get("labels") or "") / pseudo.PICTURE_FILE
            if stage.kind == "pseudo" and picture.is_file():
                stage_logger.artifact(picture)
            stage_logger.finish()

    def _segment(self, stage: StagePlan, models: dict, run_id: str | None) -> dict:
        cfg, kind = self.cfg, kinds.KINDS[stage.kind]
        out_dir = self.run_dir / "stages" / stage.name
        pseudo_labels, init, steps = None, None, None
        if kind.trains_on == "pseudo":
            pseudo_labels = pseudo.pseudo_split(self.run_dir / "pseudo" / f"round_{stage.round}", self.splits.target_train)
        start = kinds.starts_from(cfg, stage.kind)
        if start is not None:
            init = models[start]
        if kind.starts_from != "scratch":  # students and the ema stage: the self-training schedule
            steps = cfg.self_training.steps
        splits = self.splits
        if stage.restyled:
            restyled = translate.read_translated(self.run_dir / "style" / "source")
            if stage.kind == "teacher":  # the style row trains on the restyled source alone
                restyled = translate.teacher_source(splits.source, restyled, cfg.style.train_on)
            splits = replace(splits, source=restyled)
        spec = kinds.build_spec(cfg, splits, stage.kind, stage.name, out_dir,
                                pseudo=pseudo_labels, init=init, steps=steps)
        spec = replace(spec, tracking_uri=self.uri, mlflow_run_id=run_id)
        callbacks = self.train_callbacks() if self.train_callbacks else None
        metrics = segment.run_on_ray(cfg, spec, storage=self.run_dir / "ray", callbacks=callbacks)
        log.info("[%s] target-val mIoU %.2f  pixel accuracy %.2f", stage.name, metrics["miou"], metrics["pixel_accuracy"])
        metrics.pop("confusion", None)
        return {"model": str(out_dir / segment.MODEL_FILE), "metrics": metrics}

    def _style(self, stage: StagePlan, models: dict, run_id: str | None) -> dict:
        """Train the style method, then restyle the whole source set (reused on resume once written)."""
        spec = style.build_spec(self.splits.source, self.splits.target_train, self.run_dir / "stages" / "style",
                                tracking_uri=self.uri, mlflow_run_id=run_id)
        metrics = style.run_on_ray(self.cfg, spec, self.run_dir / "ray")
        restyled, at = self.run_dir / "style" / "source", self.cfg.style.translate_at
        stale = fingerprint.restyled_changes(restyled, metrics["generator"], at)
        if stale:  # made by another generator or at another size: not this stage's output
            log.info("[style] %s was restyled otherwise (%s): restyling again", restyled, "; ".join(stale))
            shutil.rmtree(restyled)
        translated = translate.translate_source(metrics["generator"], self.splits.source, restyled, self.cfg)
        log.info("[style] restyled %d source images into %s", len(translated), translated.root)
        return {"model": metrics["generator"], "restyled": translated.root,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}

    def _pseudo(self, stage: StagePlan, models: dict, run_id: str | None) -> dict:
        final = self.run_dir / "pseudo" / f"round_{stage.round}"
        teacher_model = models["previous"]
        stats = pseudo.run_pseudo_labels(self.cfg, self.splits.target_train, teacher_model, final)
        quality = f", their mIoU {stats['miou']:.2f} accuracy {stats['accuracy']:.2f}" if "miou" in stats else ""
        log.info("[%s] kept %.1f%% of pixels%s", stage.name, 100 * stats["kept_share"], quality)
        if run_id:
            logger = tracking.RunLogger(self.uri, run_id)
            logger.params({"pseudo." + k: v for k, v in self.cfg.pseudo.model_dump().items()} | {"teacher": teacher_model})
            values = {"kept_share": 100 * stats["kept_share"]}
            if "miou" in stats:
                values.update(flat_metrics({"miou": stats["miou"], "pixel_accuracy": stats["accuracy"],
                                            "per_class_iou": stats["per_class_iou"]}, "pseudo_"))
            total = max(sum(stats["class_pixels"].values()), 1)
            values.update({f"kept_{k.replace(' ', '_')}": 100 * v / total for k, v in stats["class_pixels"].items()})
            logger.metrics(values, step=stage.round)
            logger.artifact(final / pseudo.STATS_FILE)
        return {"labels": str(final), "metrics": stats}


def driver_actor():
    """The pipeline as a Ray actor that holds no CPU (its stages ask for their own)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(Pipeline)
