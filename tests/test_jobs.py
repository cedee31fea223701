"""The entry points as a user runs them: one-line errors before any Ray work, predictions in
the Cityscapes results format, and ``ray job submit`` against a head node of our own."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def run_job(*args, timeout=120, env=None):
    return subprocess.run([PYTHON, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def tiny_overrides(source, target, run_dir):
    return ["data.source.format=gta5", f"data.source.root={source}", "data.target.format=cityscapes",
            f"data.target.root={target}", "data.target.labeled=2", "data.image_size=[32,64]",
            "train.steps=2", "train.batch_size=2", "train.eval_every=2", "train.checkpoint_every=2",
            f"run.dir={run_dir}", "self_training.rounds=1", "run.baselines=false", "scaling.num_workers=0",
            "pseudo.actors=1", "pseudo.cpus_per_actor=0.5", "scaling.data_cpus=0.25"]


@pytest.mark.parametrize("override, expected", [
    ("loss.lamda_adv=0.1", "unknown config key 'loss.lamda_adv'; did you mean 'loss.lambda_adv'?"),
    ("pseudo.threshold=1.5", "pseudo.threshold"),
    ("pseudo.k=0", "pseudo.k"),
    ("data.source.root=/nonexistent/gta", "/nonexistent/gta"),
    ("data.target.labeled=100", "data.target.labeled=100"),
    ("run.stop_after=oracle", "run.stop_after='oracle' is not a stage of this run; its stages: teacher, pseudo_1, round_1"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tiny_data, tmp_path, override, expected):
    source, target = tiny_data
    run_dir = tmp_path / "run"
    proc = run_job("jobs/self_train.py", *tiny_overrides(source, target, run_dir), override, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not run_dir.exists()  # refused before any work


def test_a_second_job_on_a_busy_run_dir_fails_at_once(tiny_data, tmp_path):
    """Another job holds run.dir (here: a process holding its lock): this one stops in seconds,
    naming the folder and the other process, and writes nothing there."""
    source, target = tiny_data
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([PYTHON, "-c", "import sys, time; from udas_ray.runlock import RunLock; "
                               f"lock = RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); "
                               "time.sleep(60)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        proc = run_job("jobs/self_train.py", *tiny_overrides(source, target, run_dir), timeout=60)
        assert time.monotonic() - start < 10
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(run_dir) in lines[0] and f"pid {holder.pid}" in lines[0]
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()


def test_a_missing_config_file_is_named(tmp_path):
    proc = run_job("jobs/self_train.py", "--config", str(tmp_path / "nope.yaml"), timeout=60)
    assert proc.returncode == 2 and "nope.yaml: config file not found" in proc.stderr


def test_predict_writes_cityscapes_results(ray_session, tiny_cfg, tmp_path):
    from udas_ray.data.splits import load_splits
    from udas_ray.driver import Pipeline

    Pipeline(tiny_cfg, load_splits(tiny_cfg)).run()
    out = tmp_path / "results"
    proc = run_job("jobs/predict.py", "--run", tiny_cfg.run.dir, "--out", str(out), "--color", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "round_1: wrote 4 predictions" in proc.stdout and "mIoU" in proc.stdout
    files = sorted(out.glob("*_leftImg8bit.png"))
    assert len(files) == 4
    pred = np.asarray(Image.open(files[0]))
    truth = Image.open(next(Path(tiny_cfg.data.target.root).glob(f"gtFine/val/*/{files[0].name.split('_leftImg8bit')[0]}_gtFine_labelIds.png")))
    assert pred.shape == (truth.height, truth.width)  # full resolution
    assert set(np.unique(pred)) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files  # OUT holds the labelId files only
    assert len(list(out.with_name("results_color").glob("*.png"))) == 4  # --color: a sibling folder

    bad = run_job("jobs/predict.py", "--run", tiny_cfg.run.dir, "--stage", "oracle", "--out", str(out), timeout=60)
    assert bad.returncode == 2 and "stage 'oracle' has not finished" in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_runs_the_pipeline_on_a_head_node(tiny_data, tmp_path):
    source, target = tiny_data
    run_dir = tmp_path / "job-run"
    bin_dir = Path(PYTHON).parent
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # Every port of our own: the suite's local Ray may hold the defaults (its dashboard agent
    # on 52365 would leave this head without a job agent).
    port, dash, agent, agent_grpc, env_agent, metrics, client = (_free_port() for _ in range(7))
    temp_dir = tempfile.mkdtemp(prefix="rayjob")  # short: Unix socket paths are capped
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
         f"--ray-client-server-port={client}",
         "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 90
        while time.time() < deadline:
            probe = subprocess.run([str(bin_dir / "ray"), "job", "list", "--address", address],
                                   env=env, capture_output=True, text=True)
            if probe.returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail(f"the head node's job server never answered: {probe.stderr[-600:]}")
        for _ in range(20):  # the job server answers before its agent can take jobs
            submit = subprocess.run(
                [str(bin_dir / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
                 "python", "jobs/self_train.py", *tiny_overrides(source, target, run_dir)],
                env=env, capture_output=True, text=True, timeout=480)
            if "No available agent" not in submit.stderr:
                break
            time.sleep(3)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "joined the Ray cluster" in submit.stdout
        summary = json.loads((run_dir / "summary.json").read_text())
        assert [s["name"] for s in summary["stages"]] == ["teacher", "round_1"]
    finally:
        stop_head(head, port)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_head(head: subprocess.Popen, port: int) -> None:
    """Our own head node and every process it started, by their ids. `ray start` stops them
    itself on SIGTERM, in 2 s on a fresh head but in 31 s once a job has run on it, so what is
    left after 5 s gets SIGKILL; the cluster address the head leaves in /tmp/ray is forgotten,
    or a later bare ray.init() would look for this dead head."""
    import psutil
    from ray._common.utils import reset_ray_address
    from ray._private.utils import read_ray_address

    started = []  # the Ray workers too: they are not in the head's process group
    with contextlib.suppress(psutil.NoSuchProcess):
        started = psutil.Process(head.pid).children(recursive=True)
    head.terminate()
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    for proc in started:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    _, alive = psutil.wait_procs(started, timeout=30)
    assert alive == [], f"processes of the head node still running: {alive}"
    if (read_ray_address() or "").endswith(f":{port}"):
        reset_ray_address()


def test_data_dependency_job_on_a_tiny_set(tiny_data, tmp_path):
    """Two budgets: every target-train image labeled (no image left to pseudo-label: the round
    learns from the ground truth), which trains SL beside the pipeline, and 0, which trains the
    baselines; the table holds UDAS - SL and the source-only and oracle lines."""
    source, target = tiny_data
    run_dir = tmp_path / "budgets"
    proc = run_job("jobs/data_dependency.py", *tiny_overrides(source, target, run_dir),
                   "data_dependency.budgets=[all,0]", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((run_dir / "data_dependency.json").read_text())
    everything, zero = data["budgets"]
    n = len(list((Path(target) / "leftImg8bit" / "train").rglob("*.png")))
    assert (everything["labeled"], zero["labeled"]) == (n, 0)
    assert everything["delta"] == pytest.approx(everything["udas"] - everything["supervised"])
    assert zero["supervised"] is None
    assert set(data["baselines"]) == {"source_only", "oracle"}
    summary = json.loads((run_dir / f"budget_{n}" / "summary.json").read_text())
    assert [r["name"] for r in summary["stages"]] == ["supervised", "teacher", "round_1"]
    assert (run_dir / "data_dependency.png").stat().st_size > 1000
    assert "UDAS - SL" in proc.stdout


def test_data_dependency_checks_the_model_before_any_ray_work(tiny_data, tmp_path):
    source, target = tiny_data
    run_dir = tmp_path / "budgets"
    start = time.monotonic()
    proc = run_job("jobs/data_dependency.py", *tiny_overrides(source, target, run_dir),
                   "data_dependency.budgets=[2,0]", "model.options={bogus: 1}", timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.options" in lines[0] and "bogus" in lines[0]
    assert not run_dir.exists()
