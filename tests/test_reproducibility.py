"""Same seed, same run: batches from run.seed and the stage name, RNG state in checkpoints, a
resumed stage equal to an uninterrupted one, every worker starting from rank 0's discriminator."""

import json
import socket

import numpy as np
import pytest
import torch

from udas_ray.checkpoints import read_model_file
from udas_ray.data.batches import BatchBuilder, stage_seed
from udas_ray.data.splits import load_splits
from udas_ray.stages import kinds, loop, segment, style
from udas_ray.stages.runtime import Session

TIMING = {"seconds", "steps_per_s", "seconds_per_step", "data_wait_share", "gflops_per_s", "mfu", "peak_gflops"}


def teacher_spec(cfg, out_dir):
    return kinds.build_spec(cfg, load_splits(cfg), "teacher", "teacher", out_dir)


def metrics_file(out_dir, drop=()):
    data = json.loads((out_dir / segment.METRICS_FILE).read_text())
    return {k: v for k, v in data.items() if k not in TIMING and k not in drop}


def assert_same_weights(a, b):
    sa, sb = read_model_file(a)["state_dict"], read_model_file(b)["state_dict"]
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"


# ------------------------------------------------------------------------------ batches
def test_slots_come_from_the_stage_seed_not_the_process(tiny_cfg, tmp_path):
    spec = teacher_spec(tiny_cfg, tmp_path / "t")
    builder_cls, kwargs = loop.batch_kwargs(tiny_cfg, spec)
    assert kwargs["seed"] == stage_seed(tiny_cfg.run.seed, "teacher")
    # two "actors" (builders) of one stage: slot i is the same example in both, slots differ
    one, two = builder_cls(**kwargs), builder_cls(**kwargs)
    a, b = one({"id": np.arange(0, 4)}), two({"id": np.arange(0, 8)})
    assert all(np.array_equal(a[k], b[k][:4]) for k in a)
    assert not np.array_equal(b["sup_image"][:4], b["sup_image"][4:])
    # another stage or another run.seed draws other examples
    other = BatchBuilder(spec.streams, spec.augment, seed=stage_seed(tiny_cfg.run.seed, "round_1"))
    assert not np.array_equal(a["sup_image"], other({"id": np.arange(4)})["sup_image"])
    assert stage_seed(1, "teacher") != stage_seed(0, "teacher") and 0 <= stage_seed(0, "x") < 2 ** 63


def test_the_style_recipe_is_seeded_too(tiny_cfg, tmp_path):
    splits = load_splits(tiny_cfg)
    spec = style.StyleSpec.from_splits(splits.source, splits.target_train, tmp_path / "style")
    builder_cls, kwargs = loop.batch_kwargs(tiny_cfg, spec)
    first = builder_cls(**kwargs)({"id": np.arange(3)})
    again = builder_cls(**kwargs)({"id": np.arange(3)})
    assert all(np.array_equal(first[k], again[k]) for k in first)
    with pytest.raises(TypeError):
        builder_cls(**{k: v for k, v in kwargs.items() if k != "seed"})  # no unseeded builder


def test_checkpointed_step_reads_the_checkpoint_snapshot(tmp_path):
    assert loop.checkpointed_step(tmp_path, "teacher") == 0
    (tmp_path / "teacher").mkdir()
    snapshot = {"ray_version": "2.60.0", "checkpoint_results": [
        {"version": 0, "checkpoint_dir_name": "checkpoint_a", "metrics": {"step": 400, "val_miou": 19.0}},
        {"version": 0, "checkpoint_dir_name": "checkpoint_b", "metrics": {"step": 600}}]}
    (tmp_path / "teacher" / "checkpoint_manager_snapshot.json").write_text(json.dumps(snapshot))
    assert loop.checkpointed_step(tmp_path, "teacher") == 600
    (tmp_path / "teacher" / "checkpoint_manager_snapshot.json").write_text("{not json")
    assert loop.checkpointed_step(tmp_path, "teacher") == 0


# --------------------------------------------------------------------------- run_plain
def test_two_plain_runs_with_the_same_seed_are_identical(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"train.steps": 2})
    spec_a, spec_b = teacher_spec(cfg, tmp_path / "a"), teacher_spec(cfg, tmp_path / "b")
    assert "intra" in spec_a.terms and "adv" in spec_a.terms  # torch's RNG (class masks) and the discriminator
    segment.run_plain(cfg, spec_a, checkpoint_dir=tmp_path / "ca")
    segment.run_plain(cfg, spec_b, checkpoint_dir=tmp_path / "cb")
    assert metrics_file(tmp_path / "a") == metrics_file(tmp_path / "b")
    assert_same_weights(tmp_path / "a" / segment.MODEL_FILE, tmp_path / "b" / segment.MODEL_FILE)
    # and the comparison can fail: another seed trains another model
    other = cfg.override({"run.seed": 1})
    segment.run_plain(other, teacher_spec(other, tmp_path / "c"), checkpoint_dir=tmp_path / "cc")
    with pytest.raises(AssertionError):
        assert_same_weights(tmp_path / "a" / segment.MODEL_FILE, tmp_path / "c" / segment.MODEL_FILE)


def test_a_stage_killed_after_a_checkpoint_resumes_as_if_never_stopped(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg  # 4 steps, a checkpoint every 2
    segment.run_plain(cfg, teacher_spec(cfg, tmp_path / "straight"), checkpoint_dir=tmp_path / "c1")

    real = loop.plain_batches

    def killed_after_two(builder, batch_size, start=0):
        batches = real(builder, batch_size, start)
        yield next(batches)
        yield next(batches)
        raise KeyboardInterrupt("killed after step 2's checkpoint")

    monkeypatch.setattr(loop, "plain_batches", killed_after_two)
    spec = teacher_spec(cfg, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        segment.run_plain(cfg, spec, checkpoint_dir=tmp_path / "c2")
    state = torch.load(tmp_path / "c2" / "state.pt", weights_only=True)
    assert state["step"] == 2 and state["rng"]["torch"].dtype == torch.uint8
    monkeypatch.setattr(loop, "plain_batches", real)
    segment.run_plain(cfg, spec, checkpoint_dir=tmp_path / "c2")

    assert metrics_file(tmp_path / "resumed")["resumed_from"] == 2
    assert metrics_file(tmp_path / "resumed", drop={"resumed_from"}) == metrics_file(tmp_path / "straight",
                                                                                     drop={"resumed_from"})
    assert_same_weights(tmp_path / "straight" / segment.MODEL_FILE, tmp_path / "resumed" / segment.MODEL_FILE)

    # rank 0 gets the saved RNG back; another rank (whose state no checkpoint holds) its own
    torch.manual_seed(123)
    loop.load_rng_state(state, 0, "teacher", rank=0)
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])
    loop.load_rng_state(state, 0, "teacher", rank=1)
    assert not torch.equal(torch.get_rng_state(), state["rng"]["torch"])


def test_two_plain_style_runs_with_the_same_seed_are_identical(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"style.steps": 3, "style.batch_size": 2, "style.ngf": 4, "style.n_blocks": 1,
                             "style.ndf": 4, "style.n_layers": 2, "style.pool_size": 2,
                             "style.image_size": [32, 64], "style.sample_every": 3, "style.checkpoint_every": 3,
                             "style.log_every": 3})
    splits = load_splits(cfg)
    for name in ("a", "b"):
        spec = style.StyleSpec.from_splits(splits.source, splits.target_train, tmp_path / name)
        style.run_plain(cfg, spec, checkpoint_dir=tmp_path / f"c{name}")
    ga, _ = style.load_generator(tmp_path / "a" / style.GENERATOR_FILE)
    gb, _ = style.load_generator(tmp_path / "b" / style.GENERATOR_FILE)
    assert all(torch.equal(x, y) for x, y in zip(ga.state_dict().values(), gb.state_dict().values()))


# -------------------------------------------------------------------- several workers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _FakeSession(Session):
    """A worker of a process group without Ray Train: the session's own broadcast runs."""

    def __init__(self, rank, world):
        self.rank, self.world, self.device = rank, world, torch.device("cpu")


def _prepare_adversary(rank, world, port, out_dir):
    import torch.distributed as dist

    from udas_ray.config import load_config
    from udas_ray.stages.terms import Adversary

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # each rank builds other weights
        adversary = Adversary(load_config(None, ["model.discriminator_ndf=4"]), model=None)
        before = {k: v.clone() for k, v in adversary.net.state_dict().items()}
        adversary.prepare(_FakeSession(rank, world))
        torch.save({"before": before, "after": adversary.net.state_dict()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_every_worker_starts_from_rank_0s_discriminator(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_prepare_adversary, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert any(not torch.equal(r0["before"][k], r1["before"][k]) for k in r0["before"])  # built differently
    for key, value in r0["before"].items():
        assert torch.equal(r0["after"][key], value) and torch.equal(r1["after"][key], value)


# ------------------------------------------------------- Ray Train in-process (slower)
def test_ray_train_in_process_runs_repeat_exactly(ray_session, tiny_cfg, tmp_path, monkeypatch):
    """scaling.num_workers=0: the loop in this process, batches from a Ray Data actor in slot order."""
    cfg = tiny_cfg.override({"scaling.max_failures": 0})
    segment.run_on_ray(cfg, teacher_spec(cfg, tmp_path / "a"), storage=tmp_path / "ray_a")
    segment.run_on_ray(cfg, teacher_spec(cfg, tmp_path / "b"), storage=tmp_path / "ray_b")
    assert metrics_file(tmp_path / "a") == metrics_file(tmp_path / "b")
    assert_same_weights(tmp_path / "a" / segment.MODEL_FILE, tmp_path / "b" / segment.MODEL_FILE)

    real = loop._start

    def killed_after_two(spec, cfg, session, batches):
        def two():
            it = iter(batches)
            yield next(it)
            yield next(it)
            raise RuntimeError("killed after step 2's checkpoint")

        return real(spec, cfg, session, two())

    monkeypatch.setattr(loop, "_start", killed_after_two)
    spec = teacher_spec(cfg, tmp_path / "rerun")
    with pytest.raises(Exception, match="killed"):
        segment.run_on_ray(cfg, spec, storage=tmp_path / "ray_c")
    saved = tmp_path / "ray_c" / "teacher" / loop.IN_PROCESS_DIR / "state.pt"  # in the stage's folder of the run
    assert torch.load(saved, weights_only=True)["step"] == 2
    assert sorted(p.name for p in saved.parent.iterdir()) == ["state.pt"]  # no temp file left
    monkeypatch.setattr(loop, "_start", real)
    segment.run_on_ray(cfg, spec, storage=tmp_path / "ray_c")
    # the killed stage resumes at its last checkpoint, reads the batches it would have read, and
    # ends where an uninterrupted run does
    assert metrics_file(tmp_path / "rerun")["resumed_from"] == 2
    assert metrics_file(tmp_path / "rerun", drop={"resumed_from"}) == metrics_file(tmp_path / "a",
                                                                                 drop={"resumed_from"})
    assert_same_weights(tmp_path / "a" / segment.MODEL_FILE, tmp_path / "rerun" / segment.MODEL_FILE)


def test_ray_train_worker_stage_resumes_at_the_step_its_batches_start_from(ray_session, tiny_cfg, tmp_path):
    """One Train worker: Ray Train persists checkpoints in the stage's storage, and the dataset of a
    resumed stage starts at the slots of the step Ray Train resumes from."""
    cfg = tiny_cfg.override({"scaling.num_workers": 1, "scaling.cpus_per_worker": 0.5})
    spec = teacher_spec(cfg, tmp_path / "w")
    segment.run_on_ray(cfg, spec, storage=tmp_path / "ray")
    assert loop.checkpointed_step(tmp_path / "ray", "teacher") == 4
    segment.run_on_ray(cfg, spec, storage=tmp_path / "ray")  # resumes after its last step: nothing to train
    assert metrics_file(tmp_path / "w")["resumed_from"] == 4
