"""The segmentation stage's logic without Ray: what trains on what, the batches, the loop."""

import json

import numpy as np
import pytest
import torch

from udas_ray.checkpoints import load_model
from udas_ray.data.batches import AugmentParams, BatchBuilder
from udas_ray.data.splits import load_splits
from udas_ray.errors import UdasError
from udas_ray.stages import kinds, segment
from udas_ray.stages.runtime import read_history
from udas_ray.stages.terms import TERMS


def spec_for(cfg, kind, tmp_path, **kw):
    return kinds.build_spec(cfg, load_splits(cfg), kind, kind, tmp_path / kind, **kw)


def test_teacher_streams_follow_the_config(tiny_cfg, tmp_path):
    spec = spec_for(tiny_cfg, "teacher", tmp_path)
    assert spec.streams.has_mix and spec.streams.has_target
    loss = tiny_cfg.loss
    assert spec.terms == ("seg", "cm", "labeled", "intra", "adv")
    assert [TERMS[t].weight(tiny_cfg) for t in spec.terms] == [1.0, loss.lambda_cm, loss.lambda_target,
                                                               loss.lambda_intra, loss.lambda_adv]
    assert len(spec.streams.mix_target) == 2 and len(spec.streams.sup) == 8
    assert spec.streams.labeled == spec.streams.mix_target  # the labeled target images, whole

    no_labels = spec_for(tiny_cfg.override({"data.target.labeled": 0}), "teacher", tmp_path)
    assert not no_labels.streams.has_mix and not no_labels.streams.labeled  # pure UDA
    assert no_labels.terms == ("seg", "adv")
    source_only = spec_for(tiny_cfg, "source_only", tmp_path)
    assert not source_only.streams.has_mix and not source_only.streams.has_target
    assert source_only.terms == ("seg",)
    no_adv = spec_for(tiny_cfg.override({"loss.lambda_adv": 0}), "teacher", tmp_path)
    assert "adv" not in no_adv.terms and no_adv.streams.has_target  # the intra-domain mix reads it
    uda_no_adv = spec_for(tiny_cfg.override({"loss.lambda_adv": 0, "data.target.labeled": 0}), "teacher", tmp_path)
    assert not uda_no_adv.streams.has_target


def test_baselines_train_on_target_labels(tiny_cfg, tmp_path):
    oracle = spec_for(tiny_cfg, "oracle", tmp_path)
    assert len(oracle.streams.sup) == 8 and all("gtFine" in label for _, label, _ in oracle.streams.sup)
    supervised = spec_for(tiny_cfg, "supervised", tmp_path)
    assert len(supervised.streams.sup) == 2
    with pytest.raises(UdasError, match="data.target.labeled"):
        spec_for(tiny_cfg.override({"data.target.labeled": 0}), "supervised", tmp_path)


def test_batch_builder_gives_uint8_batches_and_is_reproducible(tiny_cfg, tmp_path):
    spec = spec_for(tiny_cfg, "teacher", tmp_path)
    builder = BatchBuilder(spec.streams, spec.augment, seed=3)
    batch = builder({"id": np.arange(4)})
    assert batch["sup_image"].shape == (4, 32, 64, 3) and batch["sup_image"].dtype == np.uint8
    assert batch["sup_label"].shape == (4, 32, 64) and batch["mix_label"].shape == (4, 32, 64)
    assert batch["target_image"].shape == (4, 32, 64, 3)
    assert set(np.unique(batch["sup_label"])) <= {0, 2, 10, 13, 255}
    again = BatchBuilder(spec.streams, spec.augment, seed=3)({"id": np.arange(4)})
    assert all(np.array_equal(batch[k], again[k]) for k in batch)


def test_mixed_labels_come_from_source_and_labeled_target(tiny_cfg, tmp_path):
    spec = spec_for(tiny_cfg, "teacher", tmp_path)
    params = AugmentParams(flip=False)  # no jitter, no flips: pixels can be traced
    builder = BatchBuilder(spec.streams, params, seed=0)
    ex = builder.example(5)
    # Every mixed pixel's label is the label of the same pixel in one of the two partners.
    rng = builder._rng(5)
    rng.integers(len(spec.streams.sup))
    from udas_ray.data.batches import load_item

    src_i, tgt_i = rng.integers(len(spec.streams.mix_source)), rng.integers(len(spec.streams.mix_target))
    _, src_label = load_item(spec.streams.mix_source[src_i], spec.streams.target_size)
    _, tgt_label = load_item(spec.streams.mix_target[tgt_i], spec.streams.target_size)
    assert np.all((ex["mix_label"] == src_label) | (ex["mix_label"] == tgt_label))


def test_every_teacher_batch_holds_labeled_target_images_and_both_cutmix_directions(tiny_cfg, tmp_path):
    # uniform source draws, so that the replay below draws as the builder does
    spec = spec_for(tiny_cfg.override({"data.rare_class_sampling.enabled": False}), "teacher", tmp_path)
    assert spec.augment.cutmix_both_directions
    batch = BatchBuilder(spec.streams, spec.augment, seed=1)({"id": np.arange(6)})
    assert batch["labeled_image"].shape == (6, 32, 64, 3) and batch["labeled_label"].shape == (6, 32, 64)
    assert set(np.unique(batch["labeled_label"])) <= {0, 2, 10, 13, 255}
    from udas_ray.data import augment
    from udas_ray.data.batches import load_item

    def bases(both: bool) -> set:
        """Which image lies under the pasted box, replaying the builder's draws slot by slot."""
        builder = BatchBuilder(spec.streams, AugmentParams(flip=False, cutmix_both_directions=both), seed=0)
        seen = set()
        for slot in range(30):
            lab = builder.example(slot)["mix_label"]
            rng = builder._rng(slot)
            rng.integers(len(spec.streams.sup))
            s_i, t_i = rng.integers(len(spec.streams.mix_source)), rng.integers(len(spec.streams.mix_target))
            _, src = load_item(spec.streams.mix_source[s_i], spec.streams.target_size)
            _, tgt = load_item(spec.streams.mix_target[t_i], spec.streams.target_size)
            y0, y1, x0, x1 = augment.cutmix_box(*spec.streams.target_size,
                                                augment.sample_cutmix_lambda(rng, 1.0), rng)
            outside = np.ones(lab.shape, bool)
            outside[y0:y1, x0:x1] = False
            base, box = (tgt, src) if both and rng.random() < 0.5 else (src, tgt)
            assert np.array_equal(lab[outside], base[outside]) and np.array_equal(lab[~outside], box[~outside])
            seen.add("target" if base is tgt else "source")
        return seen

    assert bases(both=True) == {"source", "target"}
    assert bases(both=False) == {"source"}


def test_poly_schedule():
    assert segment.poly_lr(0.01, 0, 100, 0.9) == pytest.approx(0.01)
    assert segment.poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert segment.poly_lr(0.01, 100, 100, 0.9) == 0


def test_plain_loop_trains_saves_and_resumes(tiny_cfg, tmp_path):
    spec = spec_for(tiny_cfg, "teacher", tmp_path)
    final = segment.run_plain(tiny_cfg, spec, checkpoint_dir=tmp_path / "ckpt")
    assert 0 <= final["val_miou"] <= 100
    metrics = segment.read_metrics(spec.out_dir)
    assert metrics["step"] == 4 and metrics["resumed_from"] == 0
    assert set(metrics["per_class_iou"]) >= {"road", "sky", "car"}
    model, meta = load_model(tmp_path / "teacher" / "model.pt")
    assert meta["stage"] == "teacher" and meta["step"] == 4
    assert model(torch.zeros(1, 3, 32, 64)).shape == (1, 19, 32, 64)
    state = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)
    assert state["step"] == 4 and "disc" in state and "opt_d" in state

    # A longer run over the same checkpoint picks up at step 4, not 0.
    longer = spec.__class__(**{**spec.__dict__, "steps": 6})
    segment.run_plain(tiny_cfg, longer, checkpoint_dir=tmp_path / "ckpt")
    assert segment.read_metrics(spec.out_dir)["resumed_from"] == 4


def test_student_starts_from_its_teacher(tiny_cfg, tmp_path):
    teacher = spec_for(tiny_cfg.override({"loss.lambda_adv": 0}), "source_only", tmp_path)
    segment.run_plain(tiny_cfg, teacher)
    splits = load_splits(tiny_cfg)
    student = kinds.build_spec(tiny_cfg, splits, "oracle", "student_like", tmp_path / "s",
                                 init=str(tmp_path / "source_only" / "model.pt"))
    model = segment.build_model(tiny_cfg, student)[0]
    reference, _ = load_model(tmp_path / "source_only" / "model.pt")
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_student_refuses_a_teacher_of_another_model(tiny_cfg, tmp_path):
    from udas_ray.checkpoints import save_model
    from udas_ray.models import build_segmenter

    other = build_segmenter("deeplabv2_tiny", 19, widths=[8, 16, 32, 64])
    path = save_model(tmp_path / "odd.pt", other, model_name="deeplabv2_tiny", num_classes=19,
                      model_options={}, stage="x", step=1, config={})
    spec = spec_for(tiny_cfg, "oracle", tmp_path, init=str(path))
    with pytest.raises(UdasError, match="do not fit"):
        segment.build_model(tiny_cfg, spec)


def test_metrics_file_is_json(tiny_cfg, tmp_path):
    spec = spec_for(tiny_cfg, "source_only", tmp_path)
    segment.run_plain(tiny_cfg, spec)
    data = json.loads((tmp_path / "source_only" / "metrics.json").read_text())
    assert len(data["confusion"]) == 19 and sum(map(sum, data["confusion"])) > 0


def test_a_term_joins_the_teacher_by_its_config_key(tiny_cfg, tmp_path):
    assert "entropy" not in spec_for(tiny_cfg, "teacher", tmp_path).terms  # off by default
    cfg = tiny_cfg.override({"loss.lambda_entropy": 0.1})
    spec = spec_for(cfg, "teacher", tmp_path)
    assert "entropy" in spec.terms and spec.streams.has_target
    assert "entropy" not in spec_for(cfg, "source_only", tmp_path).terms  # only kinds that list it
    segment.run_plain(cfg, spec)
    logged = [r for r in read_history(spec.out_dir) if "loss" in r]
    assert logged and all(0 <= r["loss_entropy"] <= 1 for r in logged)
    # the total: weighted mean of the cross-entropy terms + weighted regularizers (window means)
    weight = {n: TERMS[n].weight(cfg) for n in spec.terms}
    assert weight["entropy"] == pytest.approx(0.1)
    ce = {n: w for n, w in weight.items() if n not in ("adv", "entropy")}
    for r in logged:
        expected = sum(w * r[f"loss_{n}"] for n, w in ce.items()) / sum(ce.values())
        expected += sum(weight[n] * r[f"loss_{n}"] for n in ("adv", "entropy"))
        assert r["loss"] == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_terms_are_averaged_and_regularizers_added():
    from udas_ray.stages.terms import total_loss

    t = torch.tensor
    weighted = [(TERMS["seg"], 1.0, t(2.0)), (TERMS["labeled"], 3.0, t(4.0)), (TERMS["adv"], 0.5, t(1.0))]
    assert total_loss(weighted).item() == pytest.approx((2.0 + 3 * 4.0) / 4 + 0.5)
    assert total_loss([(TERMS["seg"], 1.0, t(2.0))]).item() == pytest.approx(2.0)  # one term: unchanged


def test_masked_consistency_joins_students_and_ema_by_its_key(tiny_cfg, tmp_path):
    from udas_ray.data.readers import Split

    splits = load_splits(tiny_cfg)
    pseudo = Split("pseudo", "x", "train", splits.target_train.samples, "labelids")
    assert "mic" not in kinds.build_spec(tiny_cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo).terms
    cfg = tiny_cfg.override({"loss.lambda_mic": 0.5, "loss.mic_patch": 8})
    student = kinds.build_spec(cfg, splits, "student", "round_1", tmp_path / "s", pseudo=pseudo)
    assert "mic" in student.terms and TERMS["mic"].weight(cfg) == pytest.approx(0.5)
    assert "mic" in kinds.build_spec(cfg, splits, "ema", "ema", tmp_path / "e").terms
    assert "mic" not in spec_for(cfg, "teacher", tmp_path).terms  # the teacher has no labels to keep
    segment.run_plain(cfg, student)
    logged = [r for r in read_history(student.out_dir) if "loss" in r]
    assert logged and all(r["loss_mic"] > 0 for r in logged)


def test_validation_at_full_resolution_scores_every_label_pixel(tmp_path):
    """data.eval_resolution=full: the label keeps its own 16x32 pixels and the prediction's logits
    (8x16 here) are upsampled to it; input: the label is resized to the input size first."""
    from PIL import Image

    from udas_ray.inference import SplitCache, split_confusion

    label = np.full((16, 32), 7, np.uint8)  # labelId 7 = road (trainId 0) on the left half
    label[:, 16:] = 26  # car (trainId 13) on the right
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(label).save(tmp_path / "l.png")
    item = [(str(tmp_path / "i.png"), str(tmp_path / "l.png"), "labelids")]

    class LeftRoadRightCar(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 19, *x.shape[2:])
            half = x.shape[3] // 2
            logits[:, 0, :, :half], logits[:, 13, :, half:] = 5.0, 5.0
            return logits

    full = split_confusion(LeftRoadRightCar(), SplitCache(item, (8, 16), full_labels=True), [0])
    assert full.sum() == 16 * 32 and full[0, 0] == full[13, 13] == 16 * 16  # every full-size pixel, all right
    small = split_confusion(LeftRoadRightCar(), SplitCache(item, (8, 16)), [0])
    assert small.sum() == 8 * 16 and small[0, 0] == small[13, 13] == 8 * 8


def test_every_term_a_kind_lists_is_registered_where_a_train_worker_imports_it():
    """A Ray Train worker unpickles a SegmentSpec and imports only udas_ray.stages.segment: every
    term of every kind (the ema stage's mean-teacher term too) must be registered by that import."""
    import subprocess
    import sys

    code = ("from udas_ray.stages import segment, terms; print(' '.join(sorted(terms.TERMS)))")
    registered = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.split())
    listed = {t for kind in kinds.KINDS.values() for t in kind.terms}
    assert listed <= registered, f"not registered in a worker: {sorted(listed - registered)}"


@pytest.mark.parametrize("channels_last", [True, False])
def test_train_channels_last_sets_the_layout_of_weights_batches_and_activations(tiny_cfg, tmp_path, channels_last):
    from udas_ray import tracking
    from udas_ray.models.memory_format import is_channels_last
    from udas_ray.stages.runtime import PlainSession
    from udas_ray.stages.terms import Step

    cfg = tiny_cfg.override({"train.channels_last": channels_last})
    spec = spec_for(cfg, "teacher", tmp_path)
    task = spec.task(cfg, PlainSession(tmp_path / "ckpt"), tracking.NullLogger())
    assert is_channels_last(task.model) == channels_last
    assert is_channels_last(task.companions["adv"].net) == channels_last  # the discriminator too
    builder_cls, kwargs = spec.batch_recipe(cfg)
    batch = {k: torch.from_numpy(v) for k, v in builder_cls(**kwargs, seed=0)({"id": np.arange(2)}).items()}
    step = Step(task.model, batch, "cpu", cfg, task.companions)
    image, logits = step.image("sup"), step.logits("sup")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert image.is_contiguous(memory_format=fmt) and logits.is_contiguous(memory_format=fmt)
    assert image.is_contiguous() != channels_last  # 3-channel images: the two layouts differ
