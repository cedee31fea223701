"""MLflow: the only module that imports mlflow.

Runs are addressed by id through ``MlflowClient`` rather than MLflow's process-global "active
run", because a job's runs are written from several processes: the driver owns the parent run,
each stage's rank-0 worker writes into the stage's nested run, and a resumed job continues the
same runs instead of opening new ones.

Tracking never stops training: every :class:`RunLogger` call that fails (server gone, SQLite
locked, artifact store full) is dropped with one warning; the next call tries again, and a
success re-arms the warning. MLflow's HTTP client retries a dead server for ~4 minutes per call
by default; here it gives up after a few seconds (the two ``MLFLOW_HTTP_REQUEST_*`` defaults
below, which the environment can still set).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # ~5 s to give up on a dead server
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str, artifact_location: str | None = None) -> str:
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        # "Model training", so the UI opens on the runs table rather than on GenAI traces.
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except Exception:  # created concurrently by another process
        return client.get_experiment_by_name(name).experiment_id


def find_experiment(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in ``uri``, or None; creates nothing."""
    exp = _client(uri).get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else None


def default_artifact_location(uri: str) -> str | None:
    """Artifacts beside a SQLite store (``<dir>/mlartifacts``), not in the current directory."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent.joinpath("mlartifacts").resolve().as_uri()
    return None


def create_run(uri: str, experiment: str, name: str, parent_run_id: str | None = None, tags: dict | None = None) -> str:
    """A new run (nested under ``parent_run_id`` when given); returns its id."""
    client = _client(uri)
    exp_id = experiment_id(uri, experiment, default_artifact_location(uri))
    all_tags = {"mlflow.runName": name, **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(exp_id, tags=all_tags, run_name=name).info.run_id


def run_exists(uri: str, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        _client(uri).get_run(run_id)
        return True
    except Exception:
        return False


def _tolerant(method):
    """Run ``method`` as one tracking call: an exception is logged (once until a call succeeds
    again) and swallowed, and the call returns None."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            result = method(self, *args, **kwargs)
        except Exception as exc:
            if not self.failing:
                first_line = (str(exc).strip().splitlines() or [""])[0][:300]
                log.warning("MLflow at %s failed (%s: %s: %s); training goes on, and tracking "
                            "resumes when the store answers again", self.uri, method.__name__,
                            type(exc).__name__, first_line)
            self.failing = True
            return None
        self.failing = False
        return result

    return call


class RunLogger:
    """Writes params, metrics and artifacts into one existing run; never raises (see the module)."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.failing = False
        self._client = None
        self.start()

    @property
    def client(self):
        if self._client is None:  # built on first use, so a store down at start-up is retried too
            self._client = _client(self.uri)
        return self._client

    @_tolerant
    def start(self) -> None:
        self.client.update_run(self.run_id, status="RUNNING")

    @_tolerant
    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    @_tolerant
    def metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, int(step))
            for k, v in metrics.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    @_tolerant
    def tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    @_tolerant
    def artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), subdir)

    @_tolerant
    def text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.client.log_artifact(self.run_id, str(path))

    @_tolerant
    def image(self, array, name: str) -> None:
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            Image.fromarray(array).save(path)
            self.client.log_artifact(self.run_id, str(path))

    @_tolerant
    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class NullLogger:
    """Stands in for :class:`RunLogger` on ranks other than 0 and when tracking is off."""

    run_id = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def logger_for(uri: str | None, run_id: str | None, rank: int = 0):
    if rank != 0 or not uri or not run_id:
        return NullLogger()
    return RunLogger(uri, run_id)  # never raises: a store down now is warned about and retried
