"""The stages under Ray: Train workers fed by Ray Data, checkpoints, MLflow, fault recovery,
pseudo-labels on an actor pool. One shared local Ray session; each fit costs ~20-30 s here."""

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from udas_ray import tracking
from udas_ray.data.splits import load_splits
from udas_ray.errors import UdasError
from udas_ray.stages import kinds, pseudo, segment


def _mlflow_run(cfg, name):
    uri = cfg.tracking_uri
    run_id = tracking.create_run(uri, cfg.mlflow.experiment, name)
    return uri, run_id


def test_teacher_on_two_ray_workers_logs_to_mlflow(ray_session, tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"scaling.num_workers": 2, "scaling.cpus_per_worker": 0.5, "train.steps": 4})
    uri, run_id = _mlflow_run(cfg, "teacher")
    spec = replace(kinds.build_spec(cfg, load_splits(cfg), "teacher", "teacher", tmp_path / "teacher"),
                   tracking_uri=uri, mlflow_run_id=run_id)
    metrics = segment.run_on_ray(cfg, spec, storage=tmp_path / "ray")

    assert metrics["step"] == 4 and 0 <= metrics["miou"] <= 100
    assert (tmp_path / "teacher" / "model.pt").is_file()
    checkpoints = sorted(p for p in (tmp_path / "ray" / "teacher").glob("checkpoint_*") if p.is_dir())
    assert checkpoints and (checkpoints[-1] / "state.pt").is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert {"loss_seg", "loss_cm", "loss_adv", "loss_d", "lr", "val_miou", "steps_per_s"} <= set(run.data.metrics)
    assert run.data.params["loss.lambda_adv"] == str(cfg.loss.lambda_adv)
    history = client.get_metric_history(run_id, "val_miou")
    assert sorted(m.step for m in history) == [2, 4]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"predictions.png", "confusion_matrix.png", "config.yaml"} <= artifacts


def _kill_worker_after_first_checkpoint(storage: Path, name: str, killed: list):
    from ray._private import state

    deadline = time.time() + 120
    # The controller writes its snapshot once a reported checkpoint is registered.
    while time.time() < deadline and not (storage / name / "checkpoint_manager_snapshot.json").is_file():
        time.sleep(0.2)
    for actor in state.actors().values():  # the GCS's actor table: no dashboard needed
        if actor["ActorClassName"] == "RayTrainWorker" and actor["State"] == "ALIVE":
            os.kill(actor["Pid"], signal.SIGKILL)
            killed.append(actor["Pid"])
            return


def test_a_killed_worker_resumes_from_its_last_checkpoint(ray_session, tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"scaling.num_workers": 1, "scaling.max_failures": 1, "train.steps": 60,
                             "train.checkpoint_every": 5, "train.eval_every": 60, "train.log_every": 10})
    spec = kinds.build_spec(cfg, load_splits(cfg), "source_only", "killed", tmp_path / "killed")
    killed = []
    killer = threading.Thread(target=_kill_worker_after_first_checkpoint, args=(tmp_path / "ray", "killed", killed))
    killer.start()
    metrics = segment.run_on_ray(cfg, spec, storage=tmp_path / "ray")
    killer.join()
    assert killed, "no worker was killed"
    assert metrics["step"] == 60
    assert metrics["resumed_from"] >= 5  # restarted from a checkpoint, not from step 0


def test_pseudo_labels_are_published_atomically_with_statistics(ray_session, tiny_cfg, tmp_path):
    splits = load_splits(tiny_cfg)
    spec = kinds.build_spec(tiny_cfg, splits, "oracle", "oracle", tmp_path / "oracle")
    segment.run_plain(tiny_cfg, spec)
    model = tmp_path / "oracle" / "model.pt"

    final = tmp_path / "pseudo" / "round_1"
    stats = pseudo.run_pseudo_labels(tiny_cfg.override({"pseudo.threshold": 0.0}), splits.target_train, model, final)
    labels = sorted((final / "labels").glob("*.png"))
    assert len(labels) == len(splits.target_train) == stats["images"]
    assert stats["kept_share"] == pytest.approx(1.0)  # threshold 0 keeps every pixel
    assert 0 <= stats["miou"] <= 100 and 0 <= stats["accuracy"] <= 100
    assert not any(p.name.startswith(".") for p in final.parent.iterdir())  # no staging left
    assert json.loads((final / "stats.json").read_text())["images"] == len(labels)
    student = pseudo.pseudo_split(final, splits.target_train)
    assert all(Path(s.label).is_file() for s in student.samples)

    # A threshold no pixel reaches: a warning and an all-ignore round, not a crash.
    strict = pseudo.run_pseudo_labels(tiny_cfg.override({"pseudo.threshold": 1.0, "pseudo.selection": "global"}),
                                      splits.target_train, model, final)
    assert strict["kept_share"] < 0.01
    from udas_ray.data.images import read_label

    assert np.all(read_label(labels[0]) == 255)


def test_a_stage_larger_than_the_cluster_fails_naming_its_keys(ray_session, tiny_cfg):
    from udas_ray.cluster import check_fits, connect

    connect(tiny_cfg)  # the suite's session has 4 CPUs: the tiny config fits
    with pytest.raises(UdasError, match=r"pseudo.actors x pseudo.cpus_per_actor\) needs 6 CPUs.*has 4"):
        check_fits(tiny_cfg.override({"pseudo.actors": 3, "pseudo.cpus_per_actor": 2}))
    with pytest.raises(UdasError, match=r"scaling.cpus_per_worker.*needs 3.25 CPUs plus 1 for the trial"):
        check_fits(tiny_cfg.override({"scaling.num_workers": 1, "scaling.cpus_per_worker": 3}), 1.0, "the trial")
