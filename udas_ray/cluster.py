"""The job's Ray: the cluster ``RAY_ADDRESS`` names (``ray job submit`` sets it), else a new
local one of the job's own, sized by ``scaling.ray_num_cpus``.

A job never joins a Ray it merely finds on the machine: that one belongs to another job (or a
test session), whose end would take our stages down with it. The Ray a job starts ends with it:
at exit, on an error, on Ctrl-C, and on SIGTERM/SIGHUP (turned into a normal exit, so the
``ray.shutdown()`` registered at exit runs; without it a hang-up left Ray's agents running).
"""

from __future__ import annotations

import atexit
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


def driver_gpus(scaling) -> float:
    """GPUs the driver actor holds for the whole run: with ``scaling.use_gpu`` in the in-process
    mode (``num_workers=0``) the stages train inside it, so it takes a training worker's share."""
    return scaling.gpus_per_worker if scaling.use_gpu and scaling.num_workers == 0 else 0.0


def gpu_demand(cfg, drivers: int = 1) -> dict[str, tuple[float, str]]:
    """With ``scaling.use_gpu``: the GPUs each kind of stage needs at once, and what to lower when
    they do not fit. Pseudo-labelling runs beside the in-process driver actors (one per pipeline
    in flight: ``drivers``), which hold their GPUs meanwhile."""
    from udas_ray.driver import plan

    sc, p = cfg.scaling, cfg.pseudo
    if not sc.use_gpu:
        return {}
    held = drivers * driver_gpus(sc)
    if held:
        demand = {"training in the driver actor (scaling.num_workers=0: scaling.gpus_per_worker)":
                  (sc.gpus_per_worker, "lower scaling.gpus_per_worker")}
        beside = ", plus scaling.gpus_per_worker for " + (
            "the driver actor" if drivers == 1 else f"each of {drivers} driver actors (run.concurrent_seeds)")
    else:
        demand = {"training (scaling.num_workers x scaling.gpus_per_worker)":
                  (sc.num_workers * sc.gpus_per_worker, "lower scaling.num_workers or scaling.gpus_per_worker")}
        beside = ""
    if any(stage.kind == "pseudo" for stage in plan(cfg)):
        fix = "lower pseudo.actors or pseudo.gpus_per_actor (e.g. 0.5 to share a GPU)"
        demand[f"pseudo-labelling (pseudo.actors x pseudo.gpus_per_actor{beside})"] = (
            held + p.actors * p.gpus_per_actor, fix + (" or scaling.gpus_per_worker" if held else ""))
    return demand


def check_fits(cfg, reserved: float = 0.0, what: str = "", drivers: int = 1) -> None:
    """Fail at once, naming the keys, when a stage asks for more CPUs or GPUs than the cluster
    has: Ray would otherwise wait for them forever. ``drivers``: pipelines in flight at once
    (``run.concurrent_seeds``), each of whose in-process drivers holds its GPUs."""
    import ray

    resources = ray.cluster_resources()
    total = resources.get("CPU", 0.0)
    for stage, cpus in cpu_demand(cfg).items():
        if cpus + reserved > total + 1e-9:
            extra = f" plus {reserved:g} for {what}" if reserved else ""
            raise UdasError(f"{stage} needs {cpus:g} CPUs{extra}, but the Ray cluster has {total:g}; "
                            "lower those keys (or add nodes)")
    gpus = resources.get("GPU", 0.0)
    for stage, (need, fix) in gpu_demand(cfg, drivers).items():
        if need > gpus + 1e-9:
            raise UdasError(f"scaling.use_gpu=true: {stage} needs {need:g} GPUs, but the Ray cluster has {gpus:g}; "
                            f"{fix}, or set scaling.use_gpu=false (or add nodes)")


def connect(cfg, dashboard: bool = False, drivers: int = 1) -> bool:
    """Join or start Ray, then check that every stage of ``cfg`` fits in it; True when this call
    started Ray (it is then shut down when the process ends).

    ``dashboard``: start a local Ray with its dashboard, which serves the State API. Sweeps need
    it: when Tune stops a trial, Ray Train's placement-group cleaner asks the State API whether
    the trial's controller is gone before freeing its workers' CPUs; without an answer they stay
    reserved and the next trial waits for them forever. ``drivers``: as :func:`check_fits`.
    """
    import ray

    started = False
    if not ray.is_initialized():
        started = _init(cfg, dashboard)
        if started:
            _shut_down_at_exit()
    quiet_ray_data()
    check_fits(cfg, drivers=drivers)
    return started


def _init(cfg, dashboard: bool) -> bool:
    import ray

    env = {"env_vars": {"PYTHONUNBUFFERED": "1"}, "worker_process_setup_hook": "udas_ray.cluster.setup_worker"}
    address = os.environ.get("RAY_ADDRESS")
    if address and address != "local":  # "local": a Ray of its own, as without RAY_ADDRESS
        ray.init(runtime_env=env, log_to_driver=True)
        log.info("joined the Ray cluster at %s", address)
        return False
    os.environ.pop("RAY_ADDRESS", None)
    num_cpus = cfg.scaling.ray_num_cpus or os.cpu_count()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, runtime_env=env)
    log.info("started a local Ray with %d CPUs", num_cpus)
    return True


def _shut_down_at_exit() -> None:
    import ray

    from udas_ray.cli import exit_on_signals

    atexit.register(ray.shutdown)  # Ray registers one too; ours does not depend on that
    exit_on_signals()  # also for callers that are not an entry point (a bench script, a notebook)
