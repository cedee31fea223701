"""GPU placement, on any machine: the suite's Ray (``ray_session``) has one GPU that need not exist.

With ``scaling.use_gpu=true`` what trains and what labels must each hold a GPU (or a share of
one) that Ray reserved for it; a job whose stages cannot all get theirs fails when it connects,
naming the keys, instead of waiting forever for a GPU the cluster does not have.
"""

import pytest

from udas_ray.cluster import check_fits, driver_gpus
from udas_ray.driver import driver_actor
from udas_ray.errors import UdasError
from udas_ray.stages.loop import worker_resources
from udas_ray.stages.pseudo import actor_resources

GPU = {"scaling.use_gpu": True}


def assigned_to_driver(ray, cfg) -> dict:
    """The resources Ray gave the driver actor of ``cfg``, as seen from inside it."""
    actor = driver_actor(cfg.scaling).remote(cfg, None)
    try:
        return ray.get(actor.__ray_call__.remote(lambda pipeline: ray.get_runtime_context().get_assigned_resources()))
    finally:
        ray.kill(actor)


def test_the_in_process_driver_holds_the_gpu_its_stages_train_on(ray_session, tiny_cfg):
    # scaling.num_workers=0: the stages train inside the driver actor, which holds their GPU
    assert assigned_to_driver(ray_session, tiny_cfg.override({**GPU, "scaling.gpus_per_worker": 0.5}))["GPU"] == 0.5
    # with Train workers (or on the CPU) it holds none: the workers take theirs
    assert driver_gpus(tiny_cfg.override({**GPU, "scaling.num_workers": 1}).scaling) == 0
    assert driver_gpus(tiny_cfg.scaling) == 0


def test_train_workers_and_pseudo_label_actors_ask_for_their_share():
    from ray.train import ScalingConfig

    from udas_ray.config import load_config

    cfg = load_config(None, ["scaling.use_gpu=true", "scaling.num_workers=2", "scaling.gpus_per_worker=0.5",
                             "pseudo.gpus_per_actor=0.25", "pseudo.cpus_per_actor=2"])

    def gpus_per_worker(c) -> float:  # as loop.fit builds it
        return ScalingConfig(num_workers=2, use_gpu=c.scaling.use_gpu,
                             resources_per_worker=worker_resources(c.scaling)).num_gpus_per_worker

    assert gpus_per_worker(cfg) == 0.5 and actor_resources(cfg) == {"CPU": 2, "GPU": 0.25}
    cpu = cfg.override({"scaling.use_gpu": False})  # on the CPU the GPU keys ask for nothing
    assert gpus_per_worker(cpu) == 0 and actor_resources(cpu)["GPU"] == 0


def test_pseudo_labels_beside_the_in_process_driver_must_fit_the_gpus(ray_session, tiny_cfg):
    cfg = tiny_cfg.override({**GPU, "pseudo.actors": 4})  # a GPU each, and the driver keeps its own
    with pytest.raises(UdasError, match=r"pseudo-labelling \(pseudo.actors x pseudo.gpus_per_actor, plus "
                                        r"scaling.gpus_per_worker .*\) needs 5 GPUs, but the Ray cluster has 1; "
                                        r"lower pseudo.actors or pseudo.gpus_per_actor \(e.g. 0.5 to share a GPU\)"):
        check_fits(cfg)
    check_fits(cfg.override({"scaling.gpus_per_worker": 0.5, "pseudo.gpus_per_actor": 0.125}))  # shares of one GPU
    check_fits(cfg.override({"pseudo.gpus_per_actor": 0}))  # the actors on the CPU
    check_fits(cfg.override({"self_training.rounds": 0}))  # no pseudo-label stage
    check_fits(cfg.override({"scaling.use_gpu": False}))
    # two pipelines in flight (run.concurrent_seeds): two drivers hold their shares
    with pytest.raises(UdasError, match=r"each of 2 driver actors \(run.concurrent_seeds\)\) needs 1.5 GPUs"):
        check_fits(cfg.override({"scaling.gpus_per_worker": 0.5, "pseudo.gpus_per_actor": 0.125}), drivers=2)
    with pytest.raises(UdasError, match=r"training in the driver actor .* needs 2 GPUs.*lower scaling.gpus_per_worker"):
        check_fits(tiny_cfg.override({**GPU, "scaling.gpus_per_worker": 2}))


def test_train_workers_must_fit_the_gpus(ray_session, tiny_cfg):
    cfg = tiny_cfg.override({**GPU, "scaling.num_workers": 2})
    with pytest.raises(UdasError, match=r"training \(scaling.num_workers x scaling.gpus_per_worker\) needs 2 GPUs, "
                                        r"but the Ray cluster has 1; lower scaling.num_workers or "
                                        r"scaling.gpus_per_worker"):
        check_fits(cfg)
    check_fits(cfg.override({"scaling.num_workers": 1}))  # Train workers hold no GPU while the actors label
