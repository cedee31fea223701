"""Shared fixtures: one local Ray session for the whole suite, tiny datasets in real layouts."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/layouts.py

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_DASHBOARD_INTEGRATION", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs one (starting Ray costs ~5 s here)."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=True)
    from udas_ray.cluster import quiet_ray_data

    quiet_ray_data()
    yield ray
    ray.shutdown()
