"""Paths resolved once, where the user typed them: a Ray worker or a Tune trial runs in a folder
of its own, so every relative path of a config is made absolute by the entry point."""

from __future__ import annotations

import os
from pathlib import Path

from udas_ray.config import Config

PATH_KEYS = ("data.source.root", "data.target.root", "run.dir", "model.pretrained")
SQLITE = "sqlite:///"


def absolute_paths(cfg: Config, cwd: str | Path | None = None) -> Config:
    """``cfg`` with relative :data:`PATH_KEYS` and a relative ``sqlite:///path`` tracking URI made
    absolute against ``cwd`` (default: the current directory); ``~`` is expanded, absolute paths,
    other URIs and null stay as they are."""
    cwd = Path(cwd) if cwd is not None else Path.cwd()

    def absolute(path: str) -> str:
        path = os.path.expanduser(path)
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(cwd, path))

    from udas_ray.models import SCRATCH

    # model.pretrained=scratch names no file: random weights for a model whose default is pretrained
    changes = {key: absolute(cfg.get(key)) for key in PATH_KEYS if cfg.get(key) and cfg.get(key) != SCRATCH}
    uri = cfg.mlflow.tracking_uri or ""
    db = uri[len(SQLITE):]
    if uri.startswith(SQLITE) and db and db != ":memory:":
        changes["mlflow.tracking_uri"] = SQLITE + absolute(db)
    changes = {key: value for key, value in changes.items() if value != cfg.get(key)}
    return cfg.override(changes) if changes else cfg
