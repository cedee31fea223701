"""`make ui`: the MLflow UI over a store holding a finished run, looked at in headless Chromium."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from udas_ray import tracking

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=20000", "--window-size=1400,1000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.create_run(uri, "udas-ray", "udas ui-check")
    logger = tracking.RunLogger(uri, run_id)
    logger.params({"loss.lambda_adv": 0.001, "pseudo.threshold": 0.9})
    logger.metrics({"miou_teacher": 37.25, "miou_round_1": 41.625}, step=0)
    logger.finish()
    exp_id = tracking.experiment_id(uri, "udas-ray")
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", uri,
         "--default-artifact-root", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the MLflow UI did not answer /health within 90 s")
        yield f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs/{run_id}", tmp_path
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # our own server's process group only
        server.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("UDAS_REQUIRE_BROWSER"),
                    reason="chromium is not installed (make test installs it where it can)")
def test_the_run_and_its_miou_are_on_the_page(mlflow_ui):
    url, tmp = mlflow_ui
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile-dom'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    assert "udas ui-check" in dom
    assert "miou_round_1" in dom and "41.625" in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mlflow_ui_run.png"
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile-shot'}", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
