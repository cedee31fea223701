"""What must not stop or outlive a job: a failing MLflow store, its own Ray, bad input found late."""

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
import psutil

from udas_ray import tracking
from udas_ray.data.splits import load_splits
from udas_ray.stages import kinds, segment

REPO = Path(__file__).resolve().parent.parent

CLIENT_CALLS = ("log_batch", "log_metric", "log_param", "set_tag", "log_artifact", "get_run", "update_run",
                "set_terminated")


def break_store_after_first_metrics(monkeypatch):
    """Every MlflowClient call raises once a log_batch carrying metrics has gone through."""
    state = {"broken": False, "refused": 0}

    def wrap(name):
        original = getattr(MlflowClient, name)

        def call(self, *args, **kwargs):
            if state["broken"]:
                state["refused"] += 1
                raise MlflowException(f"database is locked ({name})")
            result = original(self, *args, **kwargs)
            if name == "log_batch" and kwargs.get("metrics"):
                state["broken"] = True
            return result

        monkeypatch.setattr(MlflowClient, name, call)

    for name in CLIENT_CALLS:
        wrap(name)
    return state


def test_a_store_that_breaks_mid_stage_costs_one_warning_not_the_stage(tiny_cfg, tmp_path, monkeypatch, caplog):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    run_id = tracking.create_run(uri, tiny_cfg.mlflow.experiment, "source_only")
    spec = kinds.build_spec(tiny_cfg, load_splits(tiny_cfg), "source_only", "source_only", tmp_path / "source_only")
    spec = dataclasses.replace(spec, tracking_uri=uri, mlflow_run_id=run_id)
    state = break_store_after_first_metrics(monkeypatch)
    with caplog.at_level(logging.WARNING):
        final = segment.run_plain(tiny_cfg, spec, checkpoint_dir=tmp_path / "ckpt")
    assert 0 <= final["val_miou"] <= 100
    assert (tmp_path / "source_only" / "metrics.json").is_file() and (tmp_path / "source_only" / "model.pt").is_file()
    assert state["broken"] and state["refused"] >= 3  # later calls kept trying
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "mlflow" in r.getMessage().lower()]
    assert len(warnings) == 1 and uri in warnings[0].getMessage() and "database is locked" in warnings[0].getMessage()
    monkeypatch.undo()
    logged = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
    assert logged  # what went through before the store broke is there


def test_the_warning_comes_back_only_after_a_call_went_through(tmp_path, monkeypatch, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.create_run(uri, "udas-ray", "flaky")
    logger = tracking.RunLogger(uri, run_id)
    down = {"now": False}
    original = MlflowClient.log_batch

    def log_batch(self, *args, **kwargs):
        if down["now"]:
            raise MlflowException("connection refused")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    with caplog.at_level(logging.WARNING, logger="udas_ray.tracking"):
        for step, is_down in enumerate([False, True, True, False, True, False]):
            down["now"] = is_down
            logger.metrics({"loss": float(step)}, step)
    assert len([r for r in caplog.records if r.name == "udas_ray.tracking"]) == 2  # steps 1 and 4
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [0, 3, 5]  # resumed each time the store came back


JOB = """
import json, sys, time
from udas_ray import cluster
from udas_ray.config import Config

started = cluster.connect(Config.model_validate(json.loads(sys.argv[1])))
import ray
print("ready", started, ray.get_runtime_context().gcs_address, flush=True)
if sys.argv[2] == "raise":
    raise RuntimeError("the job failed")
time.sleep(120)
"""


def alive(proc: psutil.Process) -> bool:
    try:  # an orphan nobody reaps stays a zombie: dead all the same
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("end", ["raise", "SIGINT", "SIGTERM"])  # SIGHUP takes the SIGTERM handler
def test_a_job_starts_its_own_ray_and_takes_it_down_when_it_ends(ray_session, tiny_cfg, end):
    """With another Ray on the machine (the suite's), a job starts its own; however the job
    ends, no process it started outlives it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    job = subprocess.Popen([sys.executable, "-c", JOB, json.dumps(tiny_cfg.to_dict()), end], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = job.stdout.readline().split()
        assert ready[0] == "ready" and ready[2] != ray_session.get_runtime_context().gcs_address, ready
        started = psutil.Process(job.pid).children(recursive=True)
        assert {"gcs_server", "raylet"} <= {p.name() for p in started}  # its own Ray, not a joined one
        assert ready[1] == "True"  # and connect() says so
        if end != "raise":
            job.send_signal(getattr(signal, end))
        assert job.wait(timeout=60) != 0
        deadline = time.monotonic() + 15
        while any(alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [p.name() for p in started if alive(p)] == []
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()


# ------------------------------------------------------------------ input that fails late: early now
def job_overrides(source, target, run_dir):
    from test_jobs import tiny_overrides

    return tiny_overrides(source, target, run_dir)


@pytest.fixture(scope="module")
def broken_inputs(tiny_data, tmp_path_factory):
    """The tiny data with a hole each: no source labels, no target-train labels; a weights file
    that is not one."""
    import shutil

    source, target = tiny_data
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(source, root / "gta5")
    shutil.rmtree(root / "gta5" / "labels")
    shutil.copytree(target, root / "cityscapes")
    shutil.rmtree(root / "cityscapes" / "gtFine" / "train")
    (root / "weights.pth").write_bytes(b"half a download")
    return {"source": root / "gta5", "target": root / "cityscapes", "weights": root / "weights.pth"}


CASES = {  # overrides (formatted with the broken inputs), what the one line names
    "oracle without target-train labels": (["data.target.root={target}", "data.target.labeled=0", "run.baselines=true"],
                                           ["run.baselines", "{target}/gtFine/train"]),
    "a GPU on a machine without one": (["scaling.use_gpu=true"], ["scaling.use_gpu"]),
    "a source without labels": (["data.source.root={source}"], ["{source}/labels"]),
    "pretrained weights that are not there": (["model.pretrained=/nonexistent/resnet.pth"],
                                              ["model.pretrained", "/nonexistent/resnet.pth"]),
    "pretrained weights that do not load": (["model.pretrained={weights}"], ["model.pretrained", "{weights}"]),
    "model options the model does not take": (["model.options={{bogus: 1}}"], ["model.options", "bogus"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_input_that_would_fail_late_fails_in_seconds(tiny_data, broken_inputs, tmp_path, case):
    if case == "a GPU on a machine without one":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    overrides, named = CASES[case]
    source, target = tiny_data
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "jobs/self_train.py", *job_overrides(source, target, run_dir),
                           *(o.format(**broken_inputs) for o in overrides)],
                          cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert all(n.format(**broken_inputs) in lines[0] for n in named), lines[0]
    assert elapsed < 30
    assert not run_dir.exists()
