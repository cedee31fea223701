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
    address = os.environ.get("RAY_ADDRESS")
    if address == "local":  # asked for a Ray of its own, whatever runs on this machine
        os.environ.pop("RAY_ADDRESS")
        _start_local(cfg, env)
        return
    if address:
        ray.init(runtime_env=env, log_to_driver=True)
        log.info("joined the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        quiet_ray_data()
        return
    try:
        ray.init(address="auto", runtime_env=env)
        log.info("joined the running Ray cluster")
    except ConnectionError:
        _start_local(cfg, env)
        return
    quiet_ray_data()


def _start_local(cfg, env) -> None:
    import ray

    num_cpus = cfg.scaling.ray_num_cpus or os.cpu_count()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=env)
    log.info("started a local Ray with %d CPUs", num_cpus)
    quiet_ray_data()
