"""Joining a Ray cluster: the one submitted to (``ray job submit``), a running local one, or a
new local one sized by ``scaling.ray_num_cpus``."""

from __future__ import annotations

import logging
import os

from udas_ray.errors import UdasError

log = logging.getLogger("udas_ray")


def quiet_ray_data() -> None:
    """No progress bars from Ray Data: one log line per stage is what we print."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


# Ray loggers that print a console line every second or every report and say nothing a user
# acts on: Train V2's report log (named after its file path) and the placement-group cleaner,
# which polls the State API and warns each second when there is no dashboard to answer it.
NOISY_RAY_LOGGERS = (
    "ray.train.v2._internal.execution.context",
    "ray.train.v2._internal.execution.controller.placement_group_cleaner",
)


def setup_worker() -> None:
    """Runs in every Ray worker process of the job (``worker_process_setup_hook``).

    Pins ``RAY_ADDRESS`` to this worker's own cluster: Ray Train's placement-group cleaner looks
    the cluster up for the State API, and with a second Ray on the machine (a test session, a
    colleague's) that lookup fails, the cleaner dies, and a stopped trial's CPUs are never freed.
    """
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    root = os.path.dirname(os.path.dirname(ray.__file__))
    for name in NOISY_RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger(os.path.join(root, *name.split(".")) + ".py").setLevel(logging.ERROR)


def cpu_demand(cfg) -> dict[str, float]:
    """The CPUs each kind of stage reserves at once, with the config keys that set them."""
    sc, p, st = cfg.scaling, cfg.pseudo, cfg.style
    training = sc.num_workers * sc.cpus_per_worker + (sc.data_workers * sc.data_cpus if sc.num_workers else 0)
    demand = {
        "training (scaling.num_workers x scaling.cpus_per_worker + scaling.data_workers x scaling.data_cpus)": training,
        "pseudo-labelling (pseudo.actors x pseudo.cpus_per_actor)": p.actors * p.cpus_per_actor,
    }
    if st.enabled:
        demand["style translation (style.actors x style.cpus_per_actor)"] = st.actors * st.cpus_per_actor
    return demand


def check_fits(cfg, reserved: float = 0.0, what: str = "") -> None:
    """Fail at once, naming the keys, when a stage asks for more CPUs than the cluster has:
    Ray would otherwise wait for them forever."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    for stage, cpus in cpu_demand(cfg).items():
        if cpus + reserved > total + 1e-9:
            extra = f" plus {reserved:g} for {what}" if reserved else ""
            raise UdasError(f"{stage} needs {cpus:g} CPUs{extra}, but the Ray cluster has {total:g}; "
                            "lower those keys (or add nodes)")


def connect(cfg, dashboard: bool = False) -> None:
    """Join or start Ray, then check that every stage of ``cfg`` fits in it.

    ``dashboard``: start a local Ray with its dashboard, which serves the State API. Sweeps need
    it: when Tune stops a trial, Ray Train's placement-group cleaner asks the State API whether
    the trial's controller is gone before freeing its workers' CPUs; without an answer they stay
    reserved and the next trial waits for them forever.
    """
    import ray

    if not ray.is_initialized():
        _init(cfg, dashboard)
    quiet_ray_data()
    check_fits(cfg)


def _init(cfg, dashboard: bool) -> None:
    import ray

    env = {"env_vars": {"PYTHONUNBUFFERED": "1"}, "worker_process_setup_hook": "udas_ray.cluster.setup_worker"}
    address = os.environ.get("RAY_ADDRESS")
    if address == "local":  # asked for a Ray of its own, whatever runs on this machine
        os.environ.pop("RAY_ADDRESS")
        _start_local(cfg, env, dashboard)
        return
    if address:
        ray.init(runtime_env=env, log_to_driver=True)
        log.info("joined the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        return
    try:
        ray.init(address="auto", runtime_env=env)
        log.info("joined the running Ray cluster")
    except ConnectionError:
        _start_local(cfg, env, dashboard)


def _start_local(cfg, env, dashboard: bool) -> None:
    import ray

    num_cpus = cfg.scaling.ray_num_cpus or os.cpu_count()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, runtime_env=env)
    log.info("started a local Ray with %d CPUs", num_cpus)
