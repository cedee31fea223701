"""Torch files are loaded weights-only: a crafted pickle is refused before its payload runs, and
everything udas-ray saves itself (model files, training states, CycleGAN state, generator files)
still loads that way."""

import pathlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from udas_ray.checkpoints import MODEL_FORMAT, load_model, load_torch_file, read_model_file, save_model
from udas_ray.classes import NUM_CLASSES
from udas_ray.config import load_config
from udas_ray.errors import UdasError
from udas_ray.models import build_discriminator, build_segmenter, param_groups
from udas_ray.stages import ema
from udas_ray.stages.runtime import STATE_FILE, PlainSession
from udas_ray.stages.style import CycleGAN, save_generator

REPO = Path(__file__).resolve().parent.parent
TINY_OPTIONS = {"widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1], "aspp_dilations": [1, 2]}
TINY_STYLE = ["style.ngf=2", "style.n_blocks=1", "style.ndf=2", "style.n_layers=1", "style.pool_size=2",
              "style.image_size=[32,32]"]


class Payload:
    """Unpickling this calls ``Path(marker).touch()``: a stand-in for a crafted file's code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def crafted_model_file(path: Path, marker: Path) -> Path:
    """A model.pt that looks like ours (format and all) but carries the payload."""
    torch.save({"format": MODEL_FORMAT, "model_name": "deeplabv2_tiny", "num_classes": NUM_CLASSES,
                "model_options": {}, "state_dict": {}, "stage": "x", "step": 0, "config": {},
                "extra": Payload(marker)}, path)
    return path


def test_the_crafted_file_really_runs_its_payload_when_fully_unpickled(tmp_path):
    """The control: without weights_only the same file does run code, so the tests below mean something."""
    marker = tmp_path / "ran"
    evil = crafted_model_file(tmp_path / "model.pt", marker)
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("read", [read_model_file, load_model, lambda p: load_torch_file(p, "model file")])
def test_a_crafted_model_file_is_refused_and_its_payload_never_runs(tmp_path, read):
    marker = tmp_path / "ran"
    evil = crafted_model_file(tmp_path / "model.pt", marker)
    with pytest.raises(UdasError) as err:
        read(evil)
    message = str(err.value)
    assert message.startswith(f"{evil}: refused: not a weights-only file (it may carry code")
    assert "\n" not in message
    assert not marker.exists()


def test_a_plain_pickle_is_refused_too(tmp_path, recwarn):
    marker = tmp_path / "ran"
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"a": Payload(marker)}))
    with pytest.raises(UdasError, match="refused: not a weights-only file"):
        read_model_file(evil)
    assert not marker.exists()
    assert not recwarn.list  # the error line is all the user sees


def test_missing_folder_and_damaged_files_are_named(tmp_path):
    with pytest.raises(UdasError, match=f"^{tmp_path / 'nope.pt'}: model file not found$"):
        read_model_file(tmp_path / "nope.pt")
    with pytest.raises(UdasError, match=f"^{tmp_path}: is a folder, not a model file$"):
        read_model_file(tmp_path)
    good = tmp_path / "good.pt"
    torch.save({"a": torch.zeros(1000)}, good)
    for name, data in [("empty.pt", b""), ("half.pt", good.read_bytes()[: good.stat().st_size // 2])]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UdasError, match=f"^{tmp_path / name}: training checkpoint not readable .*damaged"):
            load_torch_file(tmp_path / name, "training checkpoint")
    (tmp_path / "other.pt").write_bytes(good.read_bytes())  # readable, but not one of ours
    with pytest.raises(UdasError, match="not a udas-ray model file"):
        read_model_file(tmp_path / "other.pt")


def test_predict_refuses_a_crafted_checkpoint_with_one_line_and_exit_2(tiny_data, tmp_path):
    marker, out = tmp_path / "ran", tmp_path / "preds"
    evil = crafted_model_file(tmp_path / "evil.pt", marker)
    _, target = tiny_data  # the default config's target would be the generated benchmark
    proc = subprocess.run(
        [sys.executable, "jobs/predict.py", "--checkpoint", str(evil), "--config", "conf/default.yaml",
         "--out", str(out), "data.target.format=cityscapes", f"data.target.root={target}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {evil}: refused: not a weights-only file"), proc.stderr
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------ what we save loads
def _tiny_segmenter():
    return build_segmenter("deeplabv2_tiny", NUM_CLASSES, **TINY_OPTIONS)


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_model_file_round_trips_weights_only(tmp_path):
    cfg = load_config(None, [])
    model = _tiny_segmenter()
    path = save_model(tmp_path / "model.pt", model, model_name="deeplabv2_tiny", num_classes=NUM_CLASSES,
                      model_options={**TINY_OPTIONS, "freeze_bn": False}, stage="teacher", step=7,
                      config=cfg.to_dict())
    blob = load_torch_file(path, "model file")
    assert blob["config"] == cfg.to_dict() and blob["step"] == 7 and blob["stage"] == "teacher"
    loaded, meta = load_model(path, expect_name="deeplabv2_tiny")
    assert _same_tensors(loaded.state_dict(), model.state_dict())
    assert meta["model_options"]["widths"] == TINY_OPTIONS["widths"]


def test_a_segment_training_state_round_trips_weights_only(tmp_path):
    """What segment_loop checkpoints: model, SGD with momentum, discriminator with Adam, EMA teacher."""
    model, disc = _tiny_segmenter(), build_discriminator(NUM_CLASSES, ndf=4)
    opt = torch.optim.SGD(param_groups(model, 0.01), lr=0.01, momentum=0.9, weight_decay=5e-4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.9, 0.99))
    teacher = ema.make_teacher(model)
    out = model(torch.rand(2, 3, 32, 32))
    (out.mean() + disc(out.softmax(1)).mean()).backward()
    opt.step()
    opt_d.step()
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "disc": disc.state_dict(),
             "opt_d": opt_d.state_dict(), "ema": teacher.state_dict(), "step": 1}
    session = PlainSession(tmp_path)
    session.report({"step": 1}, state)
    back = load_torch_file(tmp_path / STATE_FILE, "training checkpoint")
    assert _same_tensors(back["model"], state["model"]) and _same_tensors(back["ema"], state["ema"])
    assert back["step"] == 1
    fresh = torch.optim.SGD(param_groups(_tiny_segmenter(), 0.01), lr=0.01, momentum=0.9)
    fresh.load_state_dict(back["opt"])
    assert fresh.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    torch.optim.Adam(build_discriminator(NUM_CLASSES, ndf=4).parameters()).load_state_dict(back["opt_d"])


def test_a_cyclegan_training_state_round_trips_weights_only(tmp_path):
    style = load_config(None, TINY_STYLE).style
    gan = CycleGAN(style, seed=0)
    session = PlainSession(tmp_path)
    torch.manual_seed(1)
    gan.train_step(torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1, session)
    assert len(gan.pool_t) == 2 and len(gan.pool_s) == 2  # the pools hold images
    session.report({"step": 1}, gan.state_dict(1))

    state = load_torch_file(tmp_path / STATE_FILE, "training checkpoint")
    other = CycleGAN(style, seed=5)
    assert other.load_state_dict(state) == 1
    for name, net in gan.nets.items():
        assert _same_tensors(net.state_dict(), other.nets[name].state_dict()), name
    for mine, theirs in [(gan.pool_t, other.pool_t), (gan.pool_s, other.pool_s)]:
        assert len(theirs) == len(mine)
        assert all(torch.allclose(a, b, atol=1e-3) for a, b in zip(mine.images, theirs.images))  # float16 on disk
        assert theirs.rng.getstate() == mine.rng.getstate()
        assert theirs.rng.random() == mine.rng.random()


def test_a_generator_file_round_trips_weights_only(tmp_path):
    cfg = load_config(None, TINY_STYLE)
    gan = CycleGAN(cfg.style, seed=0)
    path = save_generator(tmp_path / "generator.pt", gan.G, cfg, step=3)
    blob = load_torch_file(path, "style generator file")
    assert list(blob["params"]["image_size"]) == [32, 32] and blob["image_size"] == [32, 32]
    assert blob["arch"] == {"ngf": 2, "n_blocks": 1} and blob["step"] == 3
    assert _same_tensors(blob["state_dict"], gan.G.state_dict())
