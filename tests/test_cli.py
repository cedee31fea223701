"""What every entry point shares (udas_ray/cli.py): --print-config, paths made absolute where the
user typed them, and the did-you-mean of an unknown key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from udas_ray import cli
from udas_ray.errors import UdasError

REPO = Path(__file__).resolve().parent.parent


def run_job(*args, cwd, timeout=60):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def write_configs(folder: Path) -> Path:
    """A config that ``extends:`` another, both with relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(f"extends: {REPO / 'conf' / 'default.yaml'}\nloss: {{lambda_adv: 0.5}}\n")
    (folder / "child.yaml").write_text("extends: base.yaml\nrun: {dir: runs/child}\ntrain: {steps: 11}\n")
    return folder / "child.yaml"


@pytest.mark.parametrize("job", ["jobs/self_train.py", "jobs/sweep.py", "jobs/data_dependency.py"])
def test_print_config_prints_the_resolved_config_and_does_nothing_else(tmp_path, job):
    config = write_configs(tmp_path / "conf")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_job(str(REPO / job), "--config", str(config), "--print-config", "train.lr=0.01", cwd=work)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["loss"]["lambda_adv"] == 0.5  # from the file it extends
    assert printed["train"]["steps"] == 11 and printed["train"]["lr"] == 0.01  # the file, the command line
    assert printed["run"]["dir"] == str(work / "runs" / "child")  # against the cwd, not the config's folder
    assert printed["data"]["source"]["root"] == str(work / "data" / "scenes" / "source")
    assert list(work.iterdir()) == []  # no run folder, no generated benchmark


def test_print_config_of_predict_shows_the_run_config(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("run: {dir: somewhere}\ntrain: {steps: 3}\n")
    proc = run_job(str(REPO / "jobs/predict.py"), "--run", str(run_dir), "--print-config", "train.steps=5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["train"]["steps"] == 5 and printed["run"]["dir"] == str(tmp_path / "somewhere")


def test_relative_paths_resolve_against_the_current_directory(tmp_path, monkeypatch):
    conf = tmp_path / "conf" / "paths.yaml"
    conf.parent.mkdir()
    conf.write_text("run: {dir: runs/a}\n"
                    "data:\n  source: {root: ../shared/gta5}\n  target: {root: /abs/cityscapes}\n"
                    "mlflow: {tracking_uri: sqlite:///stores/mlflow.db}\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    cwd = Path.cwd()
    cfg = cli.config_from(cli.parser("test").parse_args(["--config", str(conf), "model.pretrained=weights/r101.pth"]))
    assert cfg.run.dir == str(cwd / "runs" / "a")
    assert cfg.data.source.root == str(cwd.parent / "shared" / "gta5")  # normalised
    assert cfg.data.target.root == "/abs/cityscapes"  # absolute: as it was
    assert cfg.model.pretrained == str(cwd / "weights" / "r101.pth")
    assert cfg.mlflow.tracking_uri == f"sqlite:///{cwd / 'stores' / 'mlflow.db'}"
    assert cfg.tracking_uri.startswith("sqlite:////")

    same = cli.config_from(cli.parser("test").parse_args(["--config", str(conf), "mlflow.tracking_uri=sqlite:////x/m.db",
                                                          "run.dir=/a/../b"]))
    assert same.model.pretrained is None  # null stays null
    assert same.mlflow.tracking_uri == "sqlite:////x/m.db" and same.run.dir == "/a/../b"  # absolute: untouched
    other = cli.absolute_paths(same.override({"mlflow.tracking_uri": "http://tracking:5000"}))
    assert other.mlflow.tracking_uri == "http://tracking:5000"


def test_print_config_flag_is_off_by_default():
    args = cli.parser("test").parse_args(["train.steps=2"])
    assert args.print_config is False and cli.config_from(args).train.steps == 2


@pytest.mark.parametrize("override, hint", [
    ("lr=0.1", "did you mean 'train.lr' or 'style.lr'?"),  # a left-out section: every key with that leaf
    ("threshold=0.5", "did you mean 'pseudo.threshold'?"),
    ("root=/data", "did you mean 'data.source.root' or 'data.target.root'?"),
    ("trian.lr=0.1", "did you mean 'train.lr'?"),  # a typo among the same-leaf keys: just the close one
    ("loss.lamda_adv=0.1", "unknown config key 'loss.lamda_adv'; did you mean 'loss.lambda_adv'?"),
    ("zzz=1", "see conf/default.yaml for the valid keys"),
])
def test_unknown_key_suggestions(override, hint):
    with pytest.raises(UdasError) as err:
        cli.config_from(cli.parser("test").parse_args([override]))
    assert hint in str(err.value)
