"""The package as users get it: console scripts over the same functions as jobs/, the shipped
configs found by name, the package list in pyproject.toml, and the Python API example of docs/USAGE.md."""

import importlib.util
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import udas_ray
from udas_ray.config import load_config, shipped_dir
from udas_ray.errors import UdasError

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = {"udas-train": "self_train", "udas-predict": "predict", "udas-sweep": "sweep",
           "udas-budgets": "data_dependency"}


def test_console_scripts_and_jobs_files_run_the_same_function():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == set(SCRIPTS)
    for script, job in SCRIPTS.items():
        module_name, func = scripts[script].split(":")
        target = getattr(importlib.import_module(module_name), func)
        spec = importlib.util.spec_from_file_location(f"job_{job}", REPO / "jobs" / f"{job}.py")
        jobs_file = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(jobs_file)
        assert jobs_file.main is target, f"jobs/{job}.py must call {scripts[script]}"


def test_the_packages_listed_are_the_package_folders():
    setuptools = PYPROJECT["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "udas_ray").rglob("__init__.py")}
    assert set(setuptools["packages"]) == folders | {"udas_ray.conf"}
    assert setuptools["package-dir"] == {"udas_ray.conf": "conf"}
    runtime = " ".join(PYPROJECT["project"]["dependencies"])
    assert "pytest" not in runtime and "psutil" not in runtime  # extras dev / bench
    assert "ray[default,train,tune,data]>=2.60,<2.61" in PYPROJECT["project"]["dependencies"]


def test_shipped_configs_load_by_name_and_extend_each_other():
    assert shipped_dir() == REPO / "conf"  # a checkout; an installed package has udas_ray/conf
    assert load_config("default") == load_config(REPO / "conf" / "default.yaml")
    sweep = load_config("sweep.yaml")  # extends: default.yaml, found beside it
    assert sweep.data.image_size == load_config("default").data.image_size and sweep.tune.space
    simgan = load_config("simgan")  # the refiner recipe of docs/RESULTS.md on top of the default
    assert (simgan.style.method, simgan.style.noise_channels, simgan.style.n_layers) == ("simgan", 1, 1)
    assert simgan.train == load_config("default").train
    names = ", ".join(sorted(p.stem for p in (REPO / "conf").glob("*.yaml")))  # every shipped config
    with pytest.raises(UdasError, match=rf"^nosuch: config file not found .*{names}\)"):
        load_config("nosuch")


def readme_example() -> str:
    """The Python API example of docs/USAGE.md (the README links to it)."""
    text = (REPO / "docs" / "USAGE.md").read_text()
    section = text.split("\n## Python API\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs(ray_session, tiny_data, tmp_path, monkeypatch, capsys):
    """The docs' example as written, with the config shrunk to the tiny data set."""
    from test_jobs import tiny_overrides

    source, target = tiny_data
    tiny = tiny_overrides(source, target, tmp_path / "runs" / "api")
    monkeypatch.setattr(udas_ray, "load_config", lambda path, overrides=(): load_config(path, [*overrides, *tiny]),
                        raising=False)
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8)).save("street.png")
    exec(compile(readme_example(), "docs/USAGE.md (Python API)", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"teacher  mIoU \d+\.\d", out) and re.search(r"round_1  mIoU \d+\.\d", out)
    assert "round_1 (40, 70) uint8" in out  # the last finished stage, at the image's own size
