"""Sweeps: the search space is checked before any trial; a tiny sweep runs, is comparable in
MLflow, writes best.yaml, and resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from udas_ray.config import load_config
from udas_ray.errors import UdasError
from udas_ray.sweep import parse_space

REPO = Path(__file__).resolve().parent.parent
SWEEP = REPO / "conf" / "sweep.yaml"


def space(text):
    return parse_space(load_config(SWEEP, [f"tune.space={text}"]))


def test_the_shipped_space_parses():
    parsed = parse_space(load_config(SWEEP))
    assert parsed["loss.lambda_adv"] == ("loguniform", [1e-4, 1e-2])
    assert parsed["pseudo.threshold"][0] == "choice"


def test_every_stage_of_a_shipped_sweep_trial_fits_two_cores():
    # A trial holds tune.cpus_per_trial while its stages run; a stage asking for the rest plus a
    # crumb would wait forever for a Ray Data actor (what conf/sweep.yaml once did on 2 cores).
    from udas_ray.cluster import cpu_demand

    cfg = load_config(SWEEP)
    for stage, cpus in cpu_demand(cfg).items():
        assert cpus + cfg.tune.cpus_per_trial <= 2.0, stage


@pytest.mark.parametrize("text, message", [
    ("{loss.lamda_adv: {uniform: [0, 1]}}", "unknown config key 'loss.lamda_adv'; did you mean 'loss.lambda_adv'?"),
    ("{pseudo.threshold: {choice: []}}", "tune.space.pseudo.threshold: choice needs a non-empty list"),
    ("{loss.lambda_cm: {uniform: [2.0, 0.5]}}", "the low bound 2 is not below the high bound 0.5"),
    ("{loss.lambda_adv: {loguniform: [0, 0.1]}}", "loguniform needs a positive low bound"),
    ("{pseudo.threshold: {uniform: [0.5, 1.5]}}", "tune.space.pseudo.threshold: 1.5 is not a valid value"),
    ("{pseudo.k: {grid: [1, 0]}}", "tune.space.pseudo.k: 0 is not a valid value"),
    ("{loss.lambda_adv: {normal: [0, 1]}}", "give one of loguniform, uniform, choice, grid"),
    ("{}", "tune.space is empty"),
])
def test_bad_spaces_fail_with_one_line_naming_them(text, message):
    with pytest.raises(UdasError) as err:
        space(text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_space_exits_2_before_any_trial(tmp_path):
    proc = subprocess.run([sys.executable, "jobs/sweep.py", f"run.dir={tmp_path / 's'}",
                           "tune.space={pseudo.threshold: {choice: []}}"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: tune.space.pseudo.threshold")
    assert not (tmp_path / "s").exists()


def test_an_asha_sweep_stops_weak_trials_frees_their_cpus_writes_best_yaml_and_mlflow_runs_and_resumes(
        tiny_data, tmp_path):
    # Each stage asks for all 2 CPUs of this Ray. When ASHA stops a trial, Ray Train frees its
    # workers' placement group only once the State API (the dashboard) confirms the trial is
    # gone; without it the next trial waited forever. The grid runs in order: a learning rate
    # that learns, then two that barely move the model: ASHA stops them at their first
    # evaluation, below the first trial's, and the last one starts only on the CPUs the second freed.
    source, target = tiny_data
    run_dir = tmp_path / "asha"
    args = [sys.executable, "jobs/sweep.py", "data.source.format=gta5", f"data.source.root={source}",
            "data.target.format=cityscapes", f"data.target.root={target}", "data.target.labeled=2",
            "data.image_size=[32,64]", "train.steps=12", "train.batch_size=2", "train.eval_every=4",
            "train.checkpoint_every=12", "train.peak_gflops=100", "scaling.num_workers=1",
            "scaling.cpus_per_worker=1.5", "scaling.data_cpus=0.49", "pseudo.actors=1", "pseudo.cpus_per_actor=0.99",
            "scaling.ray_num_cpus=2", f"run.dir={run_dir}", "tune.num_samples=1", "tune.scheduler=asha",
            "self_training.rounds=0",  # a trial is its teacher: where ASHA stops trials
            "tune.space={train.lr: {grid: [1.0e-2, 1.0e-7, 2.0e-7]}, loss.lambda_adv: {loguniform: [1.0e-4, 1.0e-2]}}"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_ADDRESS": "local"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = json.loads((run_dir / "sweep.json").read_text())["trials"]
    assert len(trials) == 3 and not any(t["error"] for t in trials)
    by_lr = {t["train.lr"]: t for t in trials}
    assert by_lr[1e-2]["finished"]
    assert not by_lr[1e-7]["finished"] and not by_lr[2e-7]["finished"], trials  # stopped early
    assert "stopped early" in proc.stdout

    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert best["train"]["lr"] == 1e-2 and 1e-4 <= best["loss"]["lambda_adv"] <= 1e-2
    load_config(run_dir / "best.yaml")  # ready to pass to jobs/self_train.py --config

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("udas-ray-sweep")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name.startswith("trial ")]
    assert len(runs) == 3
    # swept values as params, mIoU as metrics: what the compare view plots; a trial ASHA stopped
    # is closed as KILLED, not left RUNNING
    assert all("loss.lambda_adv" in run.data.params and "train.lr" in run.data.params for run in runs)
    status = {run.data.params["train.lr"]: run.info.status for run in runs}
    assert sorted(status.values()) == ["FINISHED", "KILLED", "KILLED"], status
    assert any("miou_teacher" in run.data.metrics for run in runs)

    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "RAY_ADDRESS": "local"})
    assert again.returncode == 0 and "resuming the sweep" in again.stdout
    assert len(json.loads((run_dir / "sweep.json").read_text())["trials"]) == 3  # finished trials kept


def test_a_sweep_over_in_process_stages_exits_2_before_any_trial(tmp_path):
    # conf/default.yaml trains in-process; inside a Tune trial such a stage reports nothing to Tune
    proc = subprocess.run([sys.executable, "jobs/sweep.py", f"run.dir={tmp_path / 's'}", "scaling.num_workers=0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: scaling.num_workers=0")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()
    assert load_config(SWEEP).scaling.num_workers == 1  # the shipped sweep trains on Train workers
