"""Tests of udas_ray.config: loading conf/default.yaml, dotted overrides, one-line errors."""

from pathlib import Path

import pytest

import udas_ray.models  # noqa: F401  (torch: imported at collection, not inside a test)
from udas_ray.config import Config, diff, load_config
from udas_ray.models import MODEL_NAMES
from udas_ray.errors import UdasError

DEFAULT = Path(__file__).resolve().parents[1] / "conf" / "default.yaml"

PUBLIC_KEYS = [
    "data.source.format", "data.source.root", "data.target.format", "data.target.root",
    "data.target.labeled", "data.image_size", "run.dir", "run.seed", "model.name",
    "model.pretrained", "loss.lambda_adv", "loss.lambda_cm", "pseudo.threshold", "pseudo.k",
    "self_training.rounds", "scaling.num_workers", "scaling.use_gpu", "mlflow.tracking_uri",
    "mlflow.experiment",
]


def _error(overrides=(), path=DEFAULT) -> str:
    with pytest.raises(UdasError) as info:
        load_config(path, list(overrides))
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def default():
    return load_config(DEFAULT)


def test_default_yaml_values_win_over_the_schema(default):
    import yaml

    written = yaml.safe_load(DEFAULT.read_text())
    flat = default.flat()
    from udas_ray.config import flatten

    for key, value in flatten(written).items():
        got = flat[key]
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert default.model.pretrained is None and default.data.source.format == "scenes"


def test_all_public_keys_exist(default):
    flat = default.flat()
    missing = [k for k in PUBLIC_KEYS if k not in flat]
    assert not missing


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(DEFAULT, ["data.image_size=[64,128]", "model.pretrained=null", "loss.lambda_adv=1e-2",
                                "scaling.use_gpu=true", "run.dir=runs/x=y"])
    assert cfg.data.image_size == (64, 128)
    assert cfg.model.pretrained is None
    assert cfg.loss.lambda_adv == pytest.approx(0.01) and isinstance(cfg.loss.lambda_adv, float)
    assert cfg.scaling.use_gpu is True
    assert cfg.run.dir == "runs/x=y"  # only the first '=' splits


def test_number_given_for_a_string_key_is_kept_as_text():
    cfg = load_config(DEFAULT, ["mlflow.experiment=2024", "run.dir=7"])
    assert cfg.mlflow.experiment == "2024" and cfg.run.dir == "7"


def test_override_inside_free_form_options():
    cfg = load_config(DEFAULT, ["model.options.widths=[8,16]"])
    assert cfg.model.options == {"widths": [8, 16]}


def test_unknown_key_suggests_the_right_one():
    msg = _error(["loss.lamda_adv=0.1"])
    assert "loss.lamda_adv" in msg and "did you mean 'loss.lambda_adv'" in msg


def test_unknown_section_on_the_command_line():
    msg = _error(["trian.steps=3"])
    assert "trian.steps" in msg and "'train.steps'" in msg


def test_unknown_section_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trian:\n  steps: 3\n")
    msg = _error(path=path)
    assert str(path) in msg and "'trian'" in msg and "did you mean 'train'" in msg


@pytest.mark.parametrize(
    "override, key",
    [
        ("loss.lambda_adv=-0.5", "loss.lambda_adv"),
        ("loss.lambda_cm=-1", "loss.lambda_cm"),
        ("pseudo.threshold=1.5", "pseudo.threshold"),
        ("pseudo.k=0", "pseudo.k"),
        ("run.seed=abc", "run.seed"),
        ("scaling.use_gpu=maybe", "scaling.use_gpu"),
        ("data.image_size=[16,64]", "data.image_size"),
        ("data.image_size=[64,31]", "data.image_size"),
        ("data.source.image_size=[8,8]", "data.source.image_size"),
        ("data.target.labeled=-1", "data.target.labeled"),
        ("data.target.format=gta5", "data.target.format"),
        ("model.name=resnet9000", "model.name"),
        ("train.adabn=sometimes", "train.adabn"),
    ],
)
def test_bad_values_name_their_key(override, key):
    msg = _error([override])
    assert key in msg


@pytest.mark.parametrize("value, labeled, on", [("auto", 0, True), ("auto", 30, False), ("true", 30, True),
                                                ("false", 0, False)])
def test_adabn_auto_means_only_without_target_labels(value, labeled, on):
    cfg = load_config(DEFAULT, [f"train.adabn={value}", f"data.target.labeled={labeled}"])
    assert cfg.adabn is on


def test_bad_model_name_lists_the_choices():
    msg = _error(["model.name=unet"])
    assert "'unet'" in msg and "deeplabv2_tiny" in msg


def test_malformed_override():
    msg = _error(["loss.lambda_adv"])
    assert "key=value" in msg and "loss.lambda_adv" in msg


def test_setting_below_a_value_is_an_error():
    msg = _error(["loss.lambda_adv.x=1"])
    assert "loss.lambda_adv" in msg


def test_invalid_yaml_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  dir: runs/a\n  seed: [1, 2\n")
    msg = _error(path=path)
    assert str(path) in msg and "not valid YAML" in msg and "line" in msg


def test_yaml_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    assert str(path) in _error(path=path)


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = _error(path=path)
    assert str(path) in msg and "not found" in msg


def test_override_method_validates_and_copies(default):
    before = (default.loss.lambda_adv, default.pseudo.k)
    changed = default.override({"loss.lambda_adv": 0.5}, pseudo__k=5)
    assert changed.loss.lambda_adv == pytest.approx(0.5) and changed.pseudo.k == 5
    assert (default.loss.lambda_adv, default.pseudo.k) == before  # the original is untouched
    with pytest.raises(UdasError, match="pseudo.threshold"):
        default.override({"pseudo.threshold": 2})
    with pytest.raises(UdasError, match="did you mean 'loss.lambda_adv'"):
        default.override({"loss.lamda_adv": 0.1})


def test_diff_lists_exactly_the_changed_keys(default):
    other = default.override({"loss.lambda_adv": 0.25, "run.seed": 3, "run.dir": "runs/b"})
    assert diff(default, other) == {"loss.lambda_adv": (0.01, 0.25), "run.dir": ("runs/default", "runs/b"),
                                    "run.seed": (0, 3)}
    assert diff(default, other, ignore=("run",)) == {"loss.lambda_adv": (0.01, 0.25)}
    assert diff(default, default) == {}


def test_flat_uses_dotted_keys(default):
    flat = default.flat()
    assert flat["pseudo.threshold"] == 0.9
    assert flat["data.image_size"] == [96, 192]
    assert flat["data.source.format"] == "scenes"


def test_fingerprint_is_stable_and_sensitive(tmp_path, default):
    fp = default.fingerprint()
    assert len(fp) == 16 and all(c in "0123456789abcdef" for c in fp)
    assert load_config(DEFAULT).fingerprint() == fp
    # The same values written in another order / spelled as overrides give the same fingerprint.
    reordered = tmp_path / "r.yaml"
    reordered.write_text("model: {pretrained: null, name: deeplabv2_tiny}\nloss: {lambda_cm: 1.0, lambda_adv: 0.01}\n")
    same = load_config(None, ["loss.lambda_adv=0.01"])
    assert load_config(reordered).fingerprint() == same.fingerprint()
    assert default.override({"loss.lambda_adv": 0.25}).fingerprint() != fp
    assert isinstance(default, Config)


@pytest.mark.parametrize("name", ["default.yaml", "gta5_cityscapes.yaml", "sweep.yaml"])
def test_every_shipped_config_validates(name):
    cfg = load_config(Path(__file__).resolve().parent.parent / "conf" / name)
    assert cfg.model.name in MODEL_NAMES


def test_extends_overlays_the_base_file(tmp_path):
    (tmp_path / "base.yaml").write_text("loss: {lambda_adv: 0.5, lambda_cm: 2.0}\nrun: {dir: a}\n")
    (tmp_path / "top.yaml").write_text("extends: base.yaml\nloss: {lambda_adv: 0.25}\n")
    cfg = load_config(tmp_path / "top.yaml")
    assert (cfg.loss.lambda_adv, cfg.loss.lambda_cm, cfg.run.dir) == (0.25, 2.0, "a")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(UdasError, match="loops back"):
        load_config(tmp_path / "loop.yaml")
