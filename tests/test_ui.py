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
    other = tracking.create_run(uri, "udas-ray", "udas ui-check other")
    logger = tracking.RunLogger(uri, other)
    logger.params({"loss.lambda_adv": 0.01, "pseudo.threshold": 0.8})
    logger.metrics({"miou_teacher": 35.5, "miou_round_1": 39.75}, step=0)
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
        base = f"http://127.0.0.1:{port}/#"
        compare = f'{base}/compare-runs?runs=["{run_id}","{other}"]&experiments=["{exp_id}"]'
        yield f"{base}/experiments/{exp_id}/runs/{run_id}", compare, tmp_path
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # our own server's process group only
        server.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("UDAS_REQUIRE_BROWSER"),
                    reason="chromium is not installed (make test installs it where it can)")
def test_the_run_and_its_miou_are_on_the_page(mlflow_ui):
    url, compare, tmp = mlflow_ui
    dom = dump_dom(url, tmp / "profile-dom")
    assert "udas ui-check" in dom
    assert "miou_round_1" in dom and "41.625" in dom
    screenshot(url, tmp / "profile-shot", "mlflow_ui_run.png")
    # the compare view a sweep is read in: both runs, their swept params and metrics side by side
    dom = dump_dom(compare, tmp / "profile-compare")
    assert "udas ui-check other" in dom and "loss.lambda_adv" in dom
    assert "miou_round_1" in dom and "39.75" in dom  # (the compare view rounds 41.625)
    screenshot(compare, tmp / "profile-compare-shot", "mlflow_ui_compare.png")


def dump_dom(url, profile) -> str:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120).stdout


def screenshot(url, profile, name) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
