"""`make ui`: the MLflow UI over a store holding a finished run, looked at in headless Chromium."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from udas_ray import tracking, ui

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
    for stage in ("teacher", "round_1"):  # nested stage runs, as the driver makes them
        tracking.RunLogger(uri, tracking.create_run(uri, "udas-ray", f"stage-{stage}", run_id, {"stage": stage})).finish()
    logger.finish()
    other = tracking.create_run(uri, "udas-ray", "udas ui-check other")
    logger = tracking.RunLogger(uri, other)
    logger.params({"loss.lambda_adv": 0.01, "pseudo.threshold": 0.8})
    logger.metrics({"miou_teacher": 35.5, "miou_round_1": 39.75}, step=0)
    logger.finish()
    exp_id = tracking.find_experiment(uri, "udas-ray")
    port = _free_port()
    server = ui.serve(uri, tmp_path / "artifacts", "127.0.0.1", port, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)  # what `make ui` starts
    try:
        ui.wait_until_up(f"http://127.0.0.1:{port}", server, timeout=90)
        base = f"http://127.0.0.1:{port}/#"
        compare = f'{base}/compare-runs?runs=["{run_id}","{other}"]&experiments=["{exp_id}"]'
        landing = ui.runs_url(f"http://127.0.0.1:{port}", exp_id)  # the address `make ui` prints
        yield f"{base}/experiments/{exp_id}/runs/{run_id}", compare, landing, tmp_path
    finally:
        ui.stop(server)  # our own server's process group only


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("UDAS_REQUIRE_BROWSER"),
                    reason="chromium is not installed (make test installs it where it can)")
def test_the_run_and_its_miou_are_on_the_page(mlflow_ui):
    url, compare, landing, tmp = mlflow_ui
    # where `make ui` sends a fresh browser: the runs table of training runs, stage runs as rows
    dom = dump_dom(landing, tmp / "profile-landing")
    # (in the GenAI view there is no runs table; sorted by date, the stage runs would be folded away)
    assert "matching runs" in dom  # the runs table's footer ("4 matching runs")
    assert "stage-teacher" in dom and "stage-round_1" in dom and "udas ui-check other" in dom
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


def test_sigterm_stops_the_ui_and_every_server_process_and_frees_the_port(tmp_path):
    """A supervisor or a container stops `make ui` with SIGTERM: nothing of MLflow's server may stay
    behind (its uvicorn workers and job runner), and the port must be free again."""
    import signal
    import sys

    import psutil

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tracking.create_run(f"sqlite:///{run_dir / 'mlflow.db'}", "udas-ray", "udas sigterm-check")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "udas_ray.ui", "--run", str(run_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:  # the server's own lines, then ours once it answers
            if line.startswith("MLflow UI of"):
                break
        assert f"http://127.0.0.1:{port}" in line, line
        started = psutil.Process(proc.pid).children(recursive=True)
        assert started, "the UI started no server process"
        proc.send_signal(signal.SIGTERM)  # to the UI's own process only, as `kill PID` does
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        gone, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, [p.info for p in alive]
        with socket.socket() as s:
            # As a new server binds it (uvicorn sets SO_REUSEADDR): the readiness probe's closed
            # connection may sit in TIME_WAIT on this port, which is no process holding it.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # free again: nothing listens on it
            s.listen()
    finally:
        if proc.poll() is None:
            proc.kill()
