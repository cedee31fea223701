"""Joining a Ray cluster: the one submitted to (``ray job submit``), a running local one, or a
new local one sized by ``scaling.ray_num_cpus``."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("udas_ray")


def quiet_ray_data() -> None:
    """No progress bars from Ray Data: one log line per stage is what we print."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def connect(cfg) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=env, log_to_driver=True)
        log.info("joined the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        quiet_ray_data()
        return
    try:
        ray.init(address="auto", runtime_env=env)
        log.info("joined the running Ray cluster")
    except ConnectionError:
        num_cpus = cfg.scaling.ray_num_cpus or os.cpu_count()
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=env)
        log.info("started a local Ray with %d CPUs", num_cpus)
    quiet_ray_data()
