"""The CycleGAN style stage: networks, losses, the pool, the loop (plain and on Ray Train), and the
translation of the source set on a Ray Data actor pool."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from udas_ray import tracking
from udas_ray.data import readers
from udas_ray.data.batches import items
from udas_ray.models import cyclegan
from udas_ray.errors import UdasError
from udas_ray.stages import style, translate
from udas_ray.stages.runtime import read_history

TINY = {"style.steps": 4, "style.batch_size": 2, "style.ngf": 4, "style.n_blocks": 1, "style.ndf": 4,
        "style.n_layers": 2, "style.pool_size": 3, "style.image_size": [32, 64], "style.sample_every": 2,
        "style.checkpoint_every": 2, "style.log_every": 2, "style.translate_batch_size": 4}


def _cfg(tiny_cfg, **more):
    return tiny_cfg.override({**TINY, **{f"style.{k}": v for k, v in more.items()}})


def _splits(tiny_data):
    source, target = tiny_data
    return readers.read_gta5(source), readers.read_cityscapes(target, "train")


# --------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size", [(32, 64), (36, 52)])
def test_generator_keeps_the_image_size_and_range(size):
    G = cyclegan.build_generator(ngf=4, n_blocks=2)
    y = G(torch.rand(2, 3, *size) * 2 - 1)
    assert y.shape == (2, 3, *size)
    assert y.min() >= -1 and y.max() <= 1
    assert sum(isinstance(m, cyclegan.ResnetBlock) for m in G.modules()) == 2


def test_patch_discriminator_gives_one_logit_per_patch():
    D = cyclegan.build_patch_discriminator(ndf=4, n_layers=3)  # the 70x70 PatchGAN
    assert D(torch.zeros(2, 3, 64, 128)).shape == (2, 1, 6, 14)
    assert cyclegan.build_patch_discriminator(ndf=4, n_layers=2)(torch.zeros(1, 3, 32, 64)).shape == (1, 1, 6, 14)


def test_cycle_loss_is_zero_for_identity_generators():
    G = F = torch.nn.Identity()
    s, t = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    assert cyclegan.cycle_loss(F(G(s)), s).item() == 0.0
    assert cyclegan.cycle_loss(G(F(t)), t).item() == 0.0
    assert cyclegan.lsgan_loss(torch.ones(3), True).item() == 0.0
    assert cyclegan.lsgan_loss(torch.ones(3), False).item() == 1.0


def test_image_pool_keeps_at_most_its_size_and_returns_the_batch_shape():
    pool = cyclegan.ImagePool(size=5, seed=0)
    seen = set()
    for i in range(20):
        batch = torch.full((3, 3, 8, 8), float(i))
        out = pool.query(batch)
        assert out.shape == batch.shape
        assert len(pool) <= 5
        seen.update(out[:, 0, 0, 0].tolist())
    assert len(pool) == 5
    assert any(v < 19 for v in seen)  # past fakes do come back
    clone = cyclegan.ImagePool(size=5)
    clone.load_state_dict(pool.state_dict())
    assert len(clone) == 5 and torch.equal(torch.cat(clone.images), torch.cat(pool.images))
    x = torch.zeros(2, 3, 4, 4)
    assert cyclegan.ImagePool(size=0).query(x) is x


def test_uint8_conversions_round_trip():
    images = np.random.default_rng(0).integers(0, 256, (2, 6, 8, 3), dtype=np.uint8)
    t = cyclegan.to_tensor(images)
    assert t.shape == (2, 3, 6, 8) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(cyclegan.to_uint8(t), images)


def test_lr_is_constant_then_decays_linearly():
    assert style.lr_factor(0, 100) == style.lr_factor(49, 100) == 1.0
    assert style.lr_factor(50, 100) == 1.0 and style.lr_factor(75, 100) == pytest.approx(0.5)
    assert 0 < style.lr_factor(99, 100) < 0.05


@pytest.mark.parametrize("size", [(32, 64), None])
def test_restyle_returns_each_image_at_its_own_resolution(size):
    G = cyclegan.build_generator(ngf=4, n_blocks=1).eval()
    batch = [np.zeros((34, 50, 3), np.uint8), np.full((40, 64, 3), 200, np.uint8)]
    out = translate.restyle(G, batch, size)
    assert [o.shape for o in out] == [(34, 50, 3), (40, 64, 3)] and all(o.dtype == np.uint8 for o in out)


def test_the_teacher_trains_on_the_restyled_source_or_on_both_sets(tiny_data):
    source = readers.read_gta5(tiny_data[0])
    restyled = readers.Split("gta5", "/restyled", "train", tuple(readers.Sample(f"/restyled/{s.name}", s.label, s.name)
                                                                  for s in source.samples))
    assert translate.teacher_source(source, restyled, "restyled") is restyled
    both = translate.teacher_source(source, restyled, "both")
    assert [s.image for s in both.samples] == [s.image for s in source.samples + restyled.samples]
    assert both.label_kind == restyled.label_kind and len(both) == 2 * len(source)


def test_config_rejects_sizes_the_generator_cannot_keep(tiny_cfg):
    with pytest.raises(UdasError, match="style.image_size: both sides must be at least 32 and divisible by 4"):
        tiny_cfg.override({"style.image_size": [30, 64]})


# ---------------------------------------------------------------------------- the loop
def test_plain_loop_checkpoints_writes_grids_and_resumes(tiny_cfg, tiny_data, tmp_path):
    source, target = _splits(tiny_data)
    cfg = _cfg(tiny_cfg)
    src, tgt = items(source), items(target)
    batch = style.StyleBatchBuilder(src, tgt, (32, 64), seed=0)({"id": np.arange(3)})
    assert batch["source"].shape == batch["target"].shape == (3, 32, 64, 3) and batch["source"].dtype == np.uint8

    out = tmp_path / "style"
    spec = style.StyleSpec.from_splits(source, target, out)
    metrics = style.run_plain(cfg, spec, checkpoint_dir=tmp_path / "ckpt")
    assert metrics["step"] == 4
    losses = {k: v for k, v in metrics.items() if k.startswith("loss")}
    assert {"loss_g", "loss_gan_g", "loss_cyc_s", "loss_cyc_t", "loss_id", "loss_d_t", "loss_d_s"} <= set(losses)
    assert all(np.isfinite(v) and 0 <= v < 100 for v in losses.values())
    state = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)
    assert state["step"] == 4 and {"G", "F", "D_T", "D_S", "opt_g", "opt_d", "pool_t", "pool_s"} <= set(state)
    assert len(state["pool_t"]["images"]) == 3
    grid = np.asarray(Image.open(out / "samples" / "step_000004.png"))
    assert grid.shape == (6 * 32 + 6 * 4, 4 * 64 + 3 * 4, 3)  # 4 fixed images per row
    assert (out / "samples" / "step_000002.png").is_file()
    assert [r["step"] for r in read_history(out)] == [2, 4]

    G, blob = style.load_generator(out / "generator.pt")
    assert blob["arch"] == {"ngf": 4, "n_blocks": 1} and blob["step"] == 4
    assert G(torch.zeros(1, 3, 32, 64)).shape == (1, 3, 32, 64)

    # Longer run from the same checkpoint: resumes at step 4, not 0.
    more = style.run_plain(_cfg(tiny_cfg, steps=6), spec, checkpoint_dir=tmp_path / "ckpt")
    assert more["step"] == 6 and more["resumed_from"] == 4


def test_identity_loss_is_off_at_zero(tiny_cfg, tiny_data, tmp_path):
    source, target = _splits(tiny_data)
    m = style.run_plain(_cfg(tiny_cfg, steps=2, lambda_id=0.0), style.StyleSpec.from_splits(source, target, tmp_path / "s"))
    assert "loss_id" not in m and m["step"] == 2


# ---------------------------------------------------------------------------- on Ray
def test_style_on_ray_train_then_translate(ray_session, tiny_cfg, tiny_data, tmp_path):
    """One Ray Train worker fed by Ray Data, MLflow artifacts, then the actor-pool translation."""
    source, target = _splits(tiny_data)
    cfg = _cfg(tiny_cfg).override({"scaling.num_workers": 1, "scaling.cpus_per_worker": 1,
                                   "style.cpus_per_actor": 0.5})
    uri = cfg.tracking_uri
    run_id = tracking.create_run(uri, cfg.mlflow.experiment, "style")
    out = tmp_path / "style"
    spec = style.StyleSpec.from_splits(source, target, out, tracking_uri=uri, mlflow_run_id=run_id)
    metrics = style.run_on_ray(cfg, spec, tmp_path / "ray")
    assert metrics["step"] == 4 and Path(metrics["generator"]).is_file()
    checkpoints = sorted(p for p in (tmp_path / "ray" / "style").glob("checkpoint_*") if p.is_dir())
    assert checkpoints and (checkpoints[-1] / "state.pt").is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert {"loss_g", "loss_d_t", "loss_cyc_s", "lr"} <= set(run.data.metrics)
    assert run.data.params["style.ngf"] == "4"
    assert "style_samples.png" in {a.path for a in client.list_artifacts(run_id)}
    assert {"style_samples/step_000002.png", "style_samples/step_000004.png"} <= {
        a.path for a in client.list_artifacts(run_id, "style_samples")}

    final = tmp_path / "restyled" / "source"
    split = translate.translate_source(metrics["generator"], source, final, cfg)
    assert len(split) == len(source) and split.label_kind == source.label_kind
    assert not any(p.name.startswith(".") for p in final.parent.iterdir())  # no staging left
    again = readers.read_gta5(final)
    assert [s.name for s in again.samples] == [s.name for s in source.samples]
    for original, restyled in zip(source.samples, again.samples):
        assert Path(restyled.label).read_bytes() == Path(original.label).read_bytes()
        with Image.open(restyled.image) as new, Image.open(original.image) as old:
            assert new.size == old.size and new.mode == "RGB"
    marker = json.loads((final / translate.TRANSLATED_FILE).read_text())
    assert marker["images"] == len(source) and len(marker["generator_sha256"]) == 64  # reuse needs the hash

    # A complete set is not translated again (the generator path is not even read).
    stamp = (final / "images" / source.samples[0].name).stat().st_mtime_ns
    skipped = translate.translate_source(tmp_path / "missing.pt", source, final, cfg)
    assert len(skipped) == len(source)
    assert (final / "images" / source.samples[0].name).stat().st_mtime_ns == stamp
