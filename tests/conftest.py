"""Shared fixtures: one local Ray session for the whole suite, tiny datasets in real layouts."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/layouts.py
# Jobs the tests start (python jobs/x.py, whose sys.path[0] is jobs/) import this checkout's
# udas_ray, not whichever one the environment has installed.
REPO = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_DASHBOARD_INTEGRATION", "0")
# `make test` runs two test files at a time on two cores: an OpenMP thread that spins while it
# waits (libgomp's default) then takes the core the other file's work needs, and a 2-thread
# training step beside another one ran ~10x slower. Waiting threads sleep instead (the tests'
# own processes, their jobs and the Ray workers these start, which inherit the environment).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs one (starting Ray costs ~5 s here). Always a new
    one, as a job starts: without ``address="local"`` ray.init joins whatever cluster
    /tmp/ray/ray_current_cluster names, and a killed ``ray.cluster_utils.Cluster`` leaves that file.
    Its one GPU is counted, not looked for (none need exist), so that GPU placement is tested on
    any machine; only what asks for a GPU (``scaling.use_gpu=true``) is given it."""
    import ray

    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=True)
    from udas_ray.cluster import quiet_ray_data

    quiet_ray_data()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A GTA5-layout source and a Cityscapes-layout target, a few images each."""
    from layouts import write_cityscapes, write_gta5

    root = tmp_path_factory.mktemp("tiny")
    return write_gta5(root / "gta5", n=8, size=(32, 64)), write_cityscapes(root / "cityscapes", 8, 4, size=(32, 64))


@pytest.fixture
def tiny_cfg(tiny_data, tmp_path):
    """A config over ``tiny_data`` that trains in a second: override anything with .override()."""
    from udas_ray.config import load_config

    source, target = tiny_data
    return load_config(None, [
        "data.source.format=gta5", f"data.source.root={source}",
        "data.target.format=cityscapes", f"data.target.root={target}",
        "data.target.labeled=2", "data.image_size=[32,64]",
        "train.steps=4", "train.batch_size=2", "train.eval_every=2", "train.checkpoint_every=2",
        "train.log_every=2", f"run.dir={tmp_path / 'run'}", "self_training.rounds=1",
        "pseudo.actors=1", "pseudo.batch_size=4", "scaling.num_workers=0", "scaling.cpus_per_worker=1",
        "scaling.data_cpus=0.25", "pseudo.cpus_per_actor=0.5", "run.baselines=false", "pseudo.threshold=0.0",
    ])
