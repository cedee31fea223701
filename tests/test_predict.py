"""jobs/predict.py as a user runs it on a model file: a dataset split, any folder of images
(--images), colour pictures beside the results (--color), --device; and the full-resolution
labels coming from upsampled logits."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
LABEL_IDS = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}


def predict(*args, timeout=120):
    return subprocess.run([sys.executable, str(REPO / "jobs" / "predict.py"), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def model_file(tiny_cfg, tmp_path):
    from udas_ray.checkpoints import save_model
    from udas_ray.models import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter("deeplabv2_tiny", 19, None)
    return save_model(tmp_path / "tiny" / "model.pt", model, model_name="deeplabv2_tiny", num_classes=19,
                      model_options={}, stage="tiny", step=0, config=tiny_cfg.to_dict())


@pytest.fixture
def photos(tmp_path):
    """A PNG and (in a sub-folder) a JPEG of other sizes than the model's 32x64, plus files to skip."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    Image.fromarray(rng.integers(0, 256, (41, 70, 3), dtype=np.uint8)).save(folder / "street.png")
    Image.fromarray(rng.integers(0, 256, (25, 37, 3), dtype=np.uint8)).save(folder / "sub" / "car.jpg")
    Image.fromarray(rng.integers(0, 256, (25, 37, 3), dtype=np.uint8)).save(folder / ".hidden" / "x.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_images_folder_gives_a_labelid_png_per_image_at_its_own_size(model_file, photos, tmp_path):
    out = tmp_path / "pred"
    proc = predict("--checkpoint", model_file, "--images", photos, "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "tiny: wrote 2 predictions" in proc.stdout and "(on cpu)" in proc.stdout
    assert files_under(out) == ["street.png", "sub/car.png"]  # sub-folders mirrored, other files skipped
    for name, size in (("street.png", (41, 70)), ("sub/car.png", (25, 37))):
        img = Image.open(out / name)
        assert img.mode == "L"
        pred = np.asarray(img)
        assert pred.shape == size
        assert set(np.unique(pred)) <= LABEL_IDS
    assert not (tmp_path / "pred_color").exists()


def test_color_goes_to_a_sibling_folder_and_out_holds_only_labelids(model_file, photos, tmp_path):
    out = tmp_path / "pred"
    proc = predict("--checkpoint", model_file, "--images", photos, "--out", out, "--color")
    assert proc.returncode == 0, proc.stderr
    assert files_under(out) == ["street.png", "sub/car.png"]
    color = tmp_path / "pred_color"
    assert files_under(color) == ["street.png", "sub/car.png"]
    assert np.asarray(Image.open(color / "street.png")).shape == (41, 70, 3)


def test_split_with_config_is_evaluated_and_written_for_cityscapes(model_file, tiny_cfg, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_cfg.to_yaml())
    out = tmp_path / "results"
    proc = predict("--checkpoint", model_file, "--config", config, "--out", out, "--color", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 4 predictions" in proc.stdout and "mIoU" in proc.stdout
    names = files_under(out)
    assert len(names) == 4 and all(n.endswith("_leftImg8bit.png") for n in names)
    assert files_under(tmp_path / "results_color") == names


def test_out_folder_inside_the_images_folder_is_not_predicted_again(model_file, photos):
    out = photos / "pred"
    for _ in range(2):
        proc = predict("--checkpoint", model_file, "--images", photos, "--out", out, "--color")
        assert proc.returncode == 0, proc.stderr
        assert "wrote 2 predictions" in proc.stdout
    assert files_under(out) == ["street.png", "sub/car.png"]


@pytest.mark.parametrize("case, expected", [
    ("missing", "--images folder not found"),
    ("empty", "no image files"),
    ("clash", "would both be written as"),
    ("device", "--device nonsense"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(model_file, tmp_path, case, expected):
    folder = tmp_path / "in"
    device = []
    if case != "missing":
        folder.mkdir()
        (folder / "readme.txt").write_text("x")
    if case in ("clash", "device"):
        Image.new("RGB", (40, 32)).save(folder / "a.png")
    if case == "clash":
        Image.new("RGB", (40, 32)).save(folder / "a.jpg")
    if case == "device":
        device = ["--device", "nonsense"]
    out = tmp_path / "pred"
    proc = predict("--checkpoint", model_file, "--images", folder, "--out", out, *device)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused(model_file, photos, tmp_path):
    proc = predict("--checkpoint", model_file, "--images", photos, "--out", tmp_path / "pred", "--device", "cuda")
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr


def test_a_checkpoint_alone_needs_images_or_config(model_file, tmp_path):
    proc = predict("--checkpoint", model_file, "--out", tmp_path / "pred")
    assert proc.returncode == 2 and "--checkpoint needs --config FILE" in proc.stderr


def test_full_resolution_labels_come_from_upsampled_logits():
    """Bilinear logits then argmax draws the border where the scores cross; a nearest-upsampled
    label map puts it on the small map's pixel grid."""
    from udas_ray.data.images import resize_label
    from udas_ray.inference import predict_labels

    small = torch.tensor([[[[3.0, 0.0], [0.0, 0.0]]], [[[0.0, 1.0], [1.0, 1.0]]]]).permute(1, 0, 2, 3)  # (1, 2, 2, 2)

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return small.expand(x.shape[0], -1, -1, -1)

    (labels,) = predict_labels(Fixed(), np.zeros((1, 2, 2, 3), np.uint8), [(8, 8)])
    nearest = resize_label(small.argmax(1)[0].numpy().astype(np.uint8), (8, 8))
    assert labels.shape == (8, 8) and labels.dtype == np.uint8
    assert (labels != nearest).any()
    assert labels[0, 0] == 0 and labels[7, 7] == 1
    assert (labels == 0).sum() > (nearest == 0).sum()  # class 0's strong score reaches beyond its quarter
