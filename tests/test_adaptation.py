"""What makes the rounds pay off: randomization, rare-class sampling, noisy students, the
mean teacher. Pure functions checked on hand-built inputs."""

import numpy as np
import pytest
import torch

from udas_ray.data import augment
from udas_ray.data.sampling import class_probabilities, rare_class_weights
from udas_ray.data.splits import load_splits
from udas_ray.stages import ema, kinds, segment
from udas_ray.stages.runtime import read_history


def test_randomization_changes_appearance_but_only_takes_images():
    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).integers(0, 255, (16, 24, 3)).astype(np.uint8)
    out = augment.randomize_appearance(image, rng, channel_shuffle=1.0, grayscale=0.0, noise=0.1, blur=1.0)
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    grey = augment.randomize_appearance(image, rng, grayscale=1.0)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert np.array_equal(augment.randomize_appearance(image, rng), image)  # all strengths 0: identity


def test_classmix_takes_half_the_classes_of_a():
    rng = np.random.default_rng(0)
    label_a = np.array([[0, 0, 1, 1], [2, 2, 3, 255]])
    mask = augment.classmix_mask(label_a, rng)
    chosen = set(np.unique(label_a[mask]))
    assert len(chosen) == 2 and 255 not in chosen  # half of {0, 1, 2, 3}
    assert all((label_a == c).sum() == (label_a[mask] == c).sum() for c in chosen)  # whole classes
    image_a, image_b = np.zeros((2, 4, 3), np.uint8), np.full((2, 4, 3), 9, np.uint8)
    label_b = np.full((2, 4), 7)
    image, label = augment.mix_with_mask(image_a, label_a, image_b, label_b, mask)
    assert np.all(image[mask] == 0) and np.all(image[~mask] == 9)
    assert np.all(label[mask] == label_a[mask]) and np.all(label[~mask] == 7)


def test_rare_classes_are_drawn_more_often():
    # Image 0: all road. Image 1: road + a few pole pixels. Image 2: road.
    counts = np.zeros((3, 19), np.int64)
    counts[:, 0] = [100, 90, 100]
    counts[1, 5] = 10
    p = class_probabilities(counts, temperature=0.01)
    assert p[5] > 0.99 and p[1] == 0  # pole is rare, sidewalk absent
    w = rare_class_weights(counts, temperature=0.01)
    assert w.sum() == pytest.approx(1.0) and w[1] > 0.9 and w[0] == pytest.approx(w[2])
    # A very high temperature: both present classes equally likely (1/2 each);
    # road is in all 3 images, pole only in image 1: w = (1/6, 1/6 + 1/2, 1/6).
    assert np.allclose(rare_class_weights(counts, temperature=1e9), [1 / 6, 2 / 3, 1 / 6])


def test_noisy_student_and_source_share(tiny_cfg, tmp_path):
    from udas_ray.data.readers import Split

    cfg = tiny_cfg.override({"self_training.noisy": True, "self_training.randomize": True,
                             "self_training.source_share": 0.25})
    splits = load_splits(cfg)
    pseudo = Split("pseudo", "x", "train", splits.target_train.samples, "labelids")
    spec = kinds.build_spec(cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo)
    assert spec.augment.randomize and spec.augment.classmix_sup
    (labeled, labeled_share), (source, source_share) = spec.streams.sup_alternates
    assert (labeled_share, source_share) == (cfg.self_training.labeled_share, 0.25)
    assert len(source) == len(splits.source) and len(labeled) == len(splits.target_labeled) == 2
    plain = kinds.build_spec(tiny_cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo)
    assert not plain.augment.randomize and [share for _, share in plain.streams.sup_alternates] == [
        tiny_cfg.self_training.labeled_share]


def test_students_draw_images_with_rare_pseudo_classes_more_often_when_asked(tiny_cfg, tmp_path):
    from PIL import Image

    from udas_ray.data.readers import Sample, Split

    cfg = tiny_cfg.override({"data.target.labeled": 0})
    splits = load_splits(cfg)

    def pseudo_split(fill: int, rare_in: int | None) -> Split:
        """Pseudo-labels all ``fill``, one image with a patch of train (labelId 31)."""
        samples = []
        for i, s in enumerate(splits.target_train.samples):
            label = np.full((32, 64), fill, np.uint8)
            if i == rare_in:
                label[:8, :8] = 31
            path = tmp_path / f"pseudo_{fill}_{i}.png"
            Image.fromarray(label).save(path)
            samples.append(Sample(s.image, str(path), s.name))
        return Split("pseudo", "x", "train", tuple(samples), "labelids")

    pseudo = pseudo_split(7, rare_in=1)  # road everywhere, a train in image 1
    plain = kinds.build_spec(cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo)
    assert plain.streams.sup_weights is None  # off by default: every pseudo-labeled image alike
    rcs_cfg = cfg.override({"self_training.rare_class_sampling": True})
    rcs = kinds.build_spec(rcs_cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo)
    weights = dict(zip([image for image, _, _ in rcs.streams.sup], rcs.streams.sup_weights))
    rare = weights.pop(pseudo.samples[1].image)
    assert rare > 10 * max(weights.values())
    # a round whose pseudo-labels ignore every pixel: uniform, not a division by zero
    ignored = kinds.build_spec(rcs_cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo_split(255, rare_in=None))
    assert ignored.streams.sup_weights is None


def test_students_keep_the_true_labels(tiny_cfg, tmp_path):
    """A labeled image is never learned from its pseudo-label: its ground truth comes in a fixed
    share of the student's examples (or, with no share, in the pool)."""
    from udas_ray.data.batches import BatchBuilder
    from udas_ray.data.readers import Split

    splits = load_splits(tiny_cfg)
    pseudo = Split("pseudo", "x", "train", splits.target_train.samples, "labelids")
    pseudo = replace_labels(pseudo, tmp_path)  # every pseudo-label all "sky"
    known = {s.image: s.label for s in splits.target_labeled.samples}
    spec = kinds.build_spec(tiny_cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo)
    assert not {image for image, _, _ in spec.streams.sup} & set(known)
    builder = BatchBuilder(spec.streams, spec.augment, seed=0)
    draws = [builder._draw_sup(builder._rng(slot)) for slot in range(400)]
    from_labeled = [d for d in draws if d[0] in known]
    assert all(label == known[image] for image, label, _ in from_labeled)  # ground truth, not pseudo
    assert abs(len(from_labeled) / len(draws) - tiny_cfg.self_training.labeled_share) < 0.06
    pooled = kinds.build_spec(tiny_cfg.override({"self_training.labeled_share": 0}), splits, "student",
                              "round_1", tmp_path, pseudo=pseudo)
    assert not pooled.streams.sup_alternates
    assert {(i, lbl) for i, lbl, _ in pooled.streams.sup if i in known} == set(known.items())


def test_with_every_target_image_labeled_the_students_learn_from_ground_truth_alone(tiny_cfg, tmp_path):
    """The label budget "all": no image is left for pseudo-labels, so the labeled images are the
    whole supervised stream instead of a share of an empty one."""
    from udas_ray.data.batches import BatchBuilder
    from udas_ray.data.readers import Split

    cfg = tiny_cfg.override({"data.target.labeled": len(load_splits(tiny_cfg).target_train)})
    splits = load_splits(cfg)
    pseudo = replace_labels(Split("pseudo", "x", "train", splits.target_train.samples, "labelids"), tmp_path)
    spec = kinds.build_spec(cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo)
    known = {s.image: s.label for s in splits.target_labeled.samples}
    assert len(known) == len(splits.target_train)
    assert {(image, label) for image, label, _ in spec.streams.sup} == set(known.items())
    assert not any(image in known for alternate, _ in spec.streams.sup_alternates for image, _, _ in alternate)
    builder = BatchBuilder(spec.streams, spec.augment, seed=0)
    draws = [builder._draw_sup(builder._rng(slot)) for slot in range(20)]
    assert all(label == known[image] for image, label, _ in draws)


def replace_labels(split, tmp_path):
    """The split with every label swapped for an all-sky (labelId 23) PNG."""
    from dataclasses import replace as dc_replace

    from PIL import Image

    from udas_ray.data.readers import Sample

    samples = []
    for s in split.samples:
        path = tmp_path / "pseudo" / (s.name.rsplit(".", 1)[0] + ".png")
        path.parent.mkdir(exist_ok=True)
        with Image.open(s.image) as im:
            Image.fromarray(np.full((im.height, im.width), 23, np.uint8)).save(path)
        samples.append(Sample(s.image, str(path), s.name))
    return dc_replace(split, samples=tuple(samples))


def test_randomization_and_rare_class_sampling_leave_source_only_plain(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"augment.randomize.enabled": True, "data.rare_class_sampling.enabled": True})
    splits = load_splits(cfg)
    plain = kinds.build_spec(cfg, splits, "source_only", "source_only", tmp_path)
    assert plain.augment.randomize is None and plain.streams.sup_weights is None
    randomized = kinds.build_spec(cfg, splits, "source_randomized", "source_randomized", tmp_path)
    assert randomized.augment.randomize and len(randomized.streams.sup_weights) == len(splits.source)
    teacher = kinds.build_spec(cfg, splits, "teacher", "teacher", tmp_path)
    assert teacher.augment.randomize and teacher.streams.sup_weights is not None


def test_mean_teacher_update():
    student, teacher = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    torch.nn.init.constant_(student.weight, 1.0)
    torch.nn.init.constant_(teacher.weight, 0.0)
    ema.update_teacher(teacher, student, step=0, decay=0.99)  # alpha = min(0, .99) = 0: copy
    assert torch.allclose(teacher.weight, torch.ones(1, 2))
    torch.nn.init.constant_(teacher.weight, 0.0)
    ema.update_teacher(teacher, student, step=1000, decay=0.9)  # alpha = 0.9
    assert torch.allclose(teacher.weight, torch.full((1, 2), 0.1))


def test_classmix_masks_cover_whole_classes():
    labels = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    mask = ema.classmix_masks(labels, torch.Generator().manual_seed(0))
    kept = labels[mask.bool()].unique().tolist()
    assert len(kept) == 2 and 255 not in kept
    for c in kept:
        assert bool(mask[labels == c].all())


def test_ema_stage_trains_and_saves_the_mean_teacher(tiny_cfg, tmp_path):
    splits = load_splits(tiny_cfg)
    spec = kinds.build_spec(tiny_cfg, splits, "ema", "ema", tmp_path / "ema")
    assert spec.streams.has_target and spec.terms == ("seg", "mix")
    segment.run_plain(tiny_cfg, spec, checkpoint_dir=tmp_path / "ckpt")
    history = read_history(tmp_path / "ema")
    assert "loss_mix" in history[-1] and 0 <= history[-1]["mix_quality"] <= 1
    state = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)
    saved = torch.load(tmp_path / "ema" / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in state["ema"].items())  # the teacher is the output


def test_adabn_running_stats_become_the_target_batch_statistics():
    from udas_ray.adabn import adapt_batchnorm
    from udas_ray.inference import to_input

    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 2, 1, bias=False), torch.nn.BatchNorm2d(2)
    bn.weight.data.fill_(3.0)
    model = torch.nn.Sequential(conv, bn).eval()
    images = np.random.default_rng(0).integers(0, 255, (4, 6, 8, 3), dtype=np.uint8)
    assert adapt_batchnorm(model, [images]) == 4
    with torch.no_grad():
        y = conv(to_input(images))
    assert torch.allclose(bn.running_mean, y.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, y.var((0, 2, 3), unbiased=True), atol=1e-4)
    assert not model.training and not bn.training and bn.momentum == 0.1  # modes and momentum restored
    assert torch.all(bn.weight == 3.0)  # no parameter moves

    model.train()
    bn.eval()  # a frozen BatchNorm inside a training model (model.freeze_bn) stays frozen
    adapt_batchnorm(model, [images])
    assert model.training and conv.training and not bn.training

    before = bn.running_mean.clone()
    assert adapt_batchnorm(model, []) == 0  # nothing to adapt on: statistics kept
    assert torch.equal(bn.running_mean, before)


def test_teacher_gets_target_batchnorm_statistics_and_records_both_scores(tiny_cfg, tmp_path):
    from udas_ray.adabn import adapt_batchnorm, batchnorms
    from udas_ray.checkpoints import load_model
    from udas_ray.data.batches import load_item

    cfg = tiny_cfg.override({"train.adabn": True})
    splits = load_splits(cfg)
    spec = kinds.build_spec(cfg, splits, "teacher", "teacher", tmp_path / "teacher")
    assert len(spec.adabn) == len(splits.target_train)
    for kind in ("source_only", "source_randomized", "oracle"):  # baselines stay unadapted
        assert kinds.build_spec(cfg, splits, kind, kind, tmp_path / kind).adabn == []
    final = segment.run_plain(cfg, spec, checkpoint_dir=tmp_path / "ckpt")
    assert 0 <= final["val_miou_before_adabn"] <= 100
    assert segment.read_metrics(spec.out_dir)["val_miou_before_adabn"] == final["val_miou_before_adabn"]

    # The saved model is the last checkpoint with its BN statistics re-estimated on target-train.
    saved, _ = load_model(tmp_path / "teacher" / "model.pt")
    trained, _ = load_model(tmp_path / "teacher" / "model.pt")
    checkpoint = torch.load(tmp_path / "ckpt" / "state.pt", weights_only=False)["model"]
    trained.load_state_dict(checkpoint)
    images = np.stack([load_item(item, tuple(cfg.data.image_size))[0] for item in spec.adabn])
    adapt_batchnorm(trained, [images[:2], images[2:4], images[4:6], images[6:]])
    for a, b in zip(batchnorms(saved), batchnorms(trained)):
        assert torch.allclose(a.running_mean, b.running_mean, atol=1e-4)
    assert not torch.equal(batchnorms(saved)[0].running_mean, checkpoint["backbone.bn1.running_mean"])



def test_students_paste_source_classes_only_when_asked(tiny_cfg, tmp_path):
    from udas_ray.data.readers import Split

    splits = load_splits(tiny_cfg)
    pseudo = Split("pseudo", "x", "train", splits.target_train.samples, "labelids")
    plain = kinds.build_spec(tiny_cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo)
    assert plain.streams.paste == [] and plain.augment.paste_share == 0  # off by default
    cfg = tiny_cfg.override({"self_training.source_classmix": 0.5})
    spec = kinds.build_spec(cfg, splits, "student", "round_1", tmp_path, pseudo=pseudo)
    assert len(spec.streams.paste) == len(splits.source) and spec.augment.paste_share == 0.5
    teacher = kinds.build_spec(cfg, splits, "teacher", "teacher", tmp_path)
    assert teacher.streams.paste == [] and teacher.augment.paste_share == 0  # students only
