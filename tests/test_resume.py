"""Resume that notices change: run.fresh forgets everything derived, a finished stage whose inputs
changed runs again with everything after it, the restyled source is reused only with its own
generator, and a sweep resumed over another space or base config is refused."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from udas_ray import driver, fingerprint
from udas_ray.config import load_config
from udas_ray.data.splits import load_splits
from udas_ray.errors import UdasError
from udas_ray.stages import kinds, pseudo, segment, translate
from udas_ray.stages.kinds import KINDS
from udas_ray.sweep import INPUTS_FILE, check_resume, record_inputs, reset_sweep_dir

REPO = Path(__file__).resolve().parent.parent
SWEEP = REPO / "conf" / "sweep.yaml"


# ----------------------------------------------------------------------------- run.fresh
def test_fresh_forgets_everything_derived_from_the_old_config(tmp_path):
    run_dir = tmp_path / "run"
    derived = ["stages/teacher", "ray/teacher", "pseudo/round_1", "pseudo/.round_2.staging", "style/source",
               "style/.source.staging", "cache", "seed_0/stages"]
    for name in derived:
        (run_dir / name).mkdir(parents=True)
        (run_dir / name / "x").write_text("old")
    for name in (driver.MANIFEST_FILE, driver.CONFIG_FILE, "summary.json", ".lock", "mlflow.db"):
        (run_dir / name).write_text("old")
    driver.reset_run_dir(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "mlflow.db"]  # the lock and the history stay


# ------------------------------------------------------------------ stage fingerprints
def test_stages_know_their_parents_and_the_splits_they_read(tiny_cfg):
    cfg = tiny_cfg.override({"style.enabled": True, "run.baselines": True, "self_training.rounds": 2})
    stages = driver.plan(cfg)
    parents = {s.name: s.parents for s in stages}
    assert parents["teacher"] == ["style"] and parents["pseudo_1"] == ["teacher"]
    assert parents["round_1"] == ["pseudo_1", "teacher"] and parents["round_2"] == ["pseudo_2", "round_1"]
    assert parents["oracle"] == [] and parents["source_only"] == []
    fresh = {s.name: s.parents for s in driver.plan(cfg.override({"self_training.init": "fresh"}))}
    assert fresh["round_2"] == ["pseudo_2"] and fresh["pseudo_2"] == ["round_1"]  # a round labels with the last one
    reads = {s.name: set(KINDS[s.kind].splits_read(cfg, s.restyled)) for s in stages}
    assert reads["source_only"] == {"source", "target_val"}
    assert reads["teacher"] == {"target_train", "target_val"}  # its source is the style stage's output
    assert reads["pseudo_1"] == {"target_train"} and reads["style"] == {"source", "target_train"}


@pytest.mark.parametrize("options", [{}, {"self_training.source_share": 0.2, "self_training.source_classmix": 0.5,
                                          "data.target.labeled": 0, "loss.lambda_entropy": 0.1}])
def test_a_segmentation_kind_records_every_split_its_spec_draws_from(tiny_cfg, tmp_path, options):
    """The recorded inputs hold each split build_spec may read: an image added to one of them
    makes the stage run again."""
    from udas_ray.data.readers import Split

    cfg = tiny_cfg.override(options)
    splits = load_splits(cfg)
    owner = {s.image: name for name in ("source", "target_train", "target_val") for s in getattr(splits, name).samples}
    labels = Split("pseudo", "x", "train", splits.target_train.samples, "labelids")
    for kind in (k for k in KINDS.values() if k.trains_on is not None):
        if kind.trains_on == "labeled_target" and not splits.target_labeled:
            continue  # the SL baseline is planned only with labeled target images
        spec = kinds.build_spec(cfg, splits, kind.name, kind.name, tmp_path / kind.name, pseudo=labels)
        s = spec.streams
        lists = [s.sup, s.mix_source, s.mix_target, s.target, s.labeled, s.paste, spec.adabn, spec.val,
                 *(pool for pool, _ in s.sup_alternates)]
        drawn = {owner[image] for found in lists for image, _, _ in found}
        assert drawn <= set(kind.splits_read(cfg, restyled=False)), kind.name

def test_changes_name_what_changed(tiny_cfg):
    splits = load_splits(tiny_cfg)
    teacher = next(s for s in driver.plan(tiny_cfg) if s.name == "teacher")
    before = fingerprint.stage_inputs(tiny_cfg, splits, teacher, {}, driver.RESUMABLE_KEYS)
    assert fingerprint.changes(before, before) == []
    # keys a resume may change are not inputs; keys the schema gained since are not changes
    how = tiny_cfg.override({"scaling.num_workers": 2, "pseudo.actors": 3})
    assert fingerprint.changes(before, fingerprint.stage_inputs(how, splits, teacher, {}, driver.RESUMABLE_KEYS)) == []
    older = {**before, "config": {k: v for k, v in before["config"].items() if k != "loss.lambda_intra"}}
    assert fingerprint.changes(older, before) == []
    other = tiny_cfg.override({"loss.lambda_adv": 0.5})
    after = fingerprint.stage_inputs(other, splits, teacher, {}, driver.RESUMABLE_KEYS)
    assert fingerprint.changes(before, after) == ["config: loss.lambda_adv"]
    fewer = splits.__class__(splits.source, splits.target_train.subset(range(7)), splits.target_labeled,
                             splits.target_val)
    after = fingerprint.stage_inputs(tiny_cfg, fewer, teacher, {}, driver.RESUMABLE_KEYS)
    assert fingerprint.changes(before, after) == ["target-train file list"]
    assert fingerprint.changes({**before, "parents": {"style": "a"}}, {**before, "parents": {"style": "b"}}) == [
        "style ran again"]


def _copy_target(tiny_data, tmp_path) -> Path:
    target = tmp_path / "target"
    shutil.copytree(tiny_data[1], target)
    return target


def _add_train_image(target: Path) -> None:
    from layouts import cityscapes_paths

    (src_img, src_lbl), (img, lbl) = cityscapes_paths(target, "train", "aachen", 0), \
        cityscapes_paths(target, "train", "aachen", 8)
    shutil.copyfile(src_img, img)
    shutil.copyfile(src_lbl, lbl)


def test_a_changed_file_list_trains_the_stage_and_everything_after_it_again(ray_session, tiny_cfg, tiny_data,
                                                                           tmp_path, monkeypatch, caplog):
    cfg = tiny_cfg.override({"train.steps": 2, "self_training.rounds": 1, "scaling.num_workers": 0,
                             "data.target.root": str(_copy_target(tiny_data, tmp_path))})
    real_train, real_pseudo = segment.run_on_ray, pseudo.run_pseudo_labels
    ran = []

    def train(cfg, spec, storage, callbacks=None):
        ran.append((spec.name, (Path(storage) / spec.name).exists()))
        return real_train(cfg, spec, storage, callbacks)

    def label(cfg, split, model_path, final):
        ran.append(("pseudo " + Path(final).name, Path(final).exists()))
        return real_pseudo(cfg, split, model_path, final)

    monkeypatch.setattr(segment, "run_on_ray", train)
    monkeypatch.setattr(pseudo, "run_pseudo_labels", label)
    driver.Pipeline(cfg, load_splits(cfg)).run()
    assert [name for name, _ in ran] == ["teacher", "pseudo round_1", "round_1"]
    manifest = json.loads((Path(cfg.run.dir) / driver.MANIFEST_FILE).read_text())
    first = {name: e["fingerprint"] for name, e in manifest["stages"].items()}
    first_runs = {name: e.get("mlflow_run_id") for name, e in manifest["stages"].items()}
    assert first["round_1"]["parents"] == {"pseudo_1": first["pseudo_1"]["id"], "teacher": first["teacher"]["id"]}

    ran.clear()
    driver.Pipeline(cfg, load_splits(cfg)).run()  # nothing changed: nothing runs
    assert ran == []

    _add_train_image(Path(cfg.data.target.root))
    caplog.set_level(logging.INFO, logger="udas_ray")
    driver.Pipeline(cfg, load_splits(cfg)).run()
    # every stage ran again, from scratch: no Ray Train checkpoints, no old pseudo-labels left
    assert ran == [("teacher", False), ("pseudo round_1", False), ("round_1", False)]
    assert "[teacher] inputs changed since it ran (target-train file list): training it again" in caplog.text
    assert "[round_1] teacher runs again, and so does every stage after it: training it again" in caplog.text
    manifest = json.loads((Path(cfg.run.dir) / driver.MANIFEST_FILE).read_text())
    assert all(e["status"] == "done" for e in manifest["stages"].values())
    assert manifest["stages"]["teacher"]["fingerprint"]["files"]["target_train"] != first["teacher"]["files"][
        "target_train"]
    assert manifest["stages"]["teacher"]["metrics"]["resumed_from"] == 0
    assert manifest["stages"]["round_1"]["fingerprint"]["id"] != first["round_1"]["id"]
    assert manifest["stages"]["round_1"]["mlflow_run_id"] != first_runs["round_1"]  # a new MLflow run


def test_restyled_source_is_reused_only_with_its_own_generator(tmp_path):
    restyled = tmp_path / "style" / "source"
    restyled.mkdir(parents=True)
    generator = tmp_path / "generator.pt"
    generator.write_bytes(b"weights one")
    assert translate.restyled_changes(restyled, generator, "train_size") == []  # nothing published yet
    (restyled / "translated.json").write_text(json.dumps({"images": 3, "label_kind": "labelids",
                                                          "generator": str(generator), "translate_at": "train_size"}))
    assert translate.restyled_changes(restyled, generator, "train_size") == ["no generator hash recorded"]
    (restyled / "translated.json").write_text(json.dumps({"images": 3, "label_kind": "labelids",
                                                          **translate.generator_record(generator, "train_size")}))
    assert translate.restyled_changes(restyled, generator, "train_size") == []
    assert translate.restyled_changes(restyled, generator, "original") == [
        "style.translate_at train_size -> original"]
    generator.write_bytes(b"weights two")
    assert translate.restyled_changes(restyled, generator, "train_size") == ["generator file changed"]


# ------------------------------------------------------------------------------- sweeps
def test_a_sweep_resumed_over_another_space_or_base_config_is_refused(tmp_path):
    cfg = load_config(SWEEP, [f"run.dir={tmp_path}"])
    record_inputs(tmp_path, cfg)
    check_resume(tmp_path, cfg)
    check_resume(tmp_path, cfg.override({"scaling.num_workers": 2, "tune.cpus_per_trial": 0.25}))  # how, not what
    space = dict(cfg.tune.space)
    space["loss.lambda_cm"] = {"uniform": [0.1, 0.2]}
    space["pseudo.k"] = {"choice": [1, 3]}
    with pytest.raises(UdasError) as err:
        check_resume(tmp_path, cfg.override({"tune.space": space, "tune.num_samples": 9, "loss.lambda_target": 0.3}))
    message = str(err.value)
    for key in ("tune.space.loss.lambda_cm", "tune.space.pseudo.k", "tune.num_samples", "loss.lambda_target"):
        assert key in message
    assert "run.fresh=true" in message and "\n" not in message
    (tmp_path / "tune" / "sweep").mkdir(parents=True)
    (tmp_path / "trials").mkdir()
    (tmp_path / "mlflow.db").write_text("history")
    reset_sweep_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_the_sweep_job_refuses_before_any_ray_work(tmp_path):
    run_dir = tmp_path / "sweep"
    cfg = load_config(SWEEP, [f"run.dir={run_dir}"])
    (run_dir / "tune" / "sweep").mkdir(parents=True)
    (run_dir / "tune" / "sweep" / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    (run_dir / driver.CONFIG_FILE).write_text(cfg.to_yaml())
    record_inputs(run_dir, cfg)
    proc = subprocess.run([sys.executable, "jobs/sweep.py", f"run.dir={run_dir}", "tune.num_samples=7"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": "local"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and f"tune.num_samples: {cfg.tune.num_samples} -> 7" in proc.stderr
    assert (run_dir / INPUTS_FILE).is_file() and not (run_dir / "trials").exists()
