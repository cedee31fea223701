"""A job stopped outright (SIGKILL to the job and its Ray processes, as an OOM killer or a lost
machine does it; a disk that fills up): run again, it picks up where it was and ends as a job
never stopped.

Kept cheap: each job start costs several seconds of Ray start-up, so one run folder goes through
every stop in turn (four jobs) while the undisturbed run it is compared with runs beside them, on
the smallest images, model and step counts that still put a stop between two checkpoints. The
first stopped job starts once the undisturbed one's Ray is up: two Rays starting at once on a
busy 2-core machine can miss Ray's 30 s node start-up limit."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from test_jobs import tiny_overrides

REPO = Path(__file__).resolve().parent.parent
STATE = Path("ray") / "teacher" / "in_process" / "state.pt"  # the teacher's checkpoint in the run folder
ROUND_STATE = Path("ray") / "round_1" / "in_process" / "state.pt"
STAGING = Path("pseudo") / ".round_1.staging" / "pred"  # pseudo-labels being written
TARGET_IMAGES = 16  # target-train images: labelled in ~1 s, a window to kill the job in


@pytest.fixture
def kill_data(tmp_path):
    """The tiny layouts with enough target-train images that labelling them takes a moment."""
    from layouts import write_cityscapes, write_gta5

    root = tmp_path / "data"
    return (write_gta5(root / "gta5", n=8, size=(32, 64)),
            write_cityscapes(root / "cityscapes", TARGET_IMAGES, 4, size=(32, 64)))


def overrides(data, run_dir):
    # 6 steps a stage with a checkpoint every 2: a stop lands between two checkpoints. One
    # evaluation a stage, a tiny model and a given peak (no matmul measured at each start).
    return [*tiny_overrides(*data, run_dir), "train.steps=6", "train.eval_every=100", "train.log_every=2",
            "pseudo.batch_size=2", "train.peak_gflops=100",
            "model.options={widths: [8, 8, 8, 8], depths: [1, 1, 1, 1]}"]


def start(data, run_dir, log_name, log_dir=None) -> "Job":
    """The job on ``run_dir``, its output in ``log_dir/log_name``."""
    log_path = (log_dir or run_dir.parent) / log_name
    log_path.parent.mkdir(parents=True, exist_ok=True)
    job = Job(["jobs/self_train.py", *overrides(data, run_dir)], log_path)
    STARTED.append(job)
    return job


# Ray 2.60 gives a new node 30 s to start (ray/_private/node.py, raylet_start_wait_time_s, not
# configurable); on a 2-core machine busy with other work at a higher priority it can miss that.
RAY_DID_NOT_START = "The current node timed out during startup"


class Job:
    """A job in a process group of its own (SIGKILL reaches the job and the Ray it started), in
    this session (so in its scheduling group too), its stdout appended to ``log`` and its stderr
    to ``err`` (apart: a block-buffered stdout flushed in mid-line would cut into the stderr
    line a test reads). A job whose own Ray did not start in time has done nothing yet: it is
    started again (twice at most)."""

    def __init__(self, args: list[str], log: Path):
        self.args, self.log, self.err, self.tries = args, log, log.with_name(log.name + ".err"), 0
        log.write_text("")
        self.err.write_text("")
        self._start()

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
        self.offset = self.err.stat().st_size
        with open(self.log, "a") as out, open(self.err, "a") as err:
            self.proc = subprocess.Popen([sys.executable, *self.args], cwd=REPO, env=env, stdout=out, stderr=err,
                                         process_group=0)
        self.tries += 1

    def output(self) -> str:
        """The end of its stdout and of its stderr, to show in a failed assertion."""
        return self.log.read_text()[-1500:] + "\n--- stderr ---\n" + self.err.read_text()[-3000:]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code not in (None, 0) and self.tries < 3:
            with open(self.err) as f:
                f.seek(self.offset)
                if RAY_DID_NOT_START in f.read():
                    self._start()
                    return None
        return code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.proc.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.01))
            code = self.poll()
            if code is not None:
                return code


STARTED: list[Job] = []


@pytest.fixture(autouse=True)
def no_job_left():
    """A job a failed assertion left running goes, with its process group."""
    yield
    while STARTED:
        proc = STARTED.pop().proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def finish(job, timeout=1500):
    assert job.wait(timeout=timeout) == 0, job.output()


def kill_when(job, ready, what, timeout=900):
    """SIGKILL the job once ``ready()``: its driver actor, which trains and publishes, at once (a
    Ray worker is not in the job's process group and may go on for a moment after its raylet
    died), then the job's process group; every process it started must end."""
    driver = wait_for(job, ready, what, timeout)
    if driver is not None:
        driver.kill()
    started = [*psutil.Process(job.pid).children(recursive=True), *filter(None, [driver])]
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 60
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in started if alive(p)]
    for p in left:  # ours: never leave them behind, but say so
        p.kill()
    assert [p.name() for p in left] == []


def wait_for(job, ready, what, timeout=900) -> psutil.Process | None:
    """Wait until ``ready()``; the job's driver actor (the process that trains, in
    ``scaling.num_workers=0``), looked up while waiting so that it can be stopped the moment
    ``ready()`` holds, not after a walk through the job's processes."""
    deadline, driver = time.monotonic() + timeout, None
    while not ready():
        assert job.poll() is None, f"the job ended before {what}: " + job.output()
        assert time.monotonic() < deadline, f"no sign of {what} after {timeout} s"
        driver = driver or process_titled(job, "ray::Pipeline")
        time.sleep(0.01)
    return driver or process_titled(job, "ray::Pipeline")


def process_titled(job, title: str) -> psutil.Process | None:
    """The job's process whose title (a Ray worker's is ``ray::<actor>.<method>``) starts with ``title``."""
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process(job.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if " ".join(proc.cmdline()).startswith(title):
                    return proc
    return None


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stages(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "summary.json").read_text())["stages"]


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["step"]


@contextlib.contextmanager
def small_disk(mount: Path):
    """A 32 MB tmpfs of our own at ``mount``, unmounted afterwards; None where mounting needs
    root (the disk-full step is then left out)."""
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; the file that holds them."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        chunk = b"\0" * (1 << 20)
        while chunk:
            try:
                f.write(chunk)
            except OSError:
                chunk = chunk[:len(chunk) // 2]
    return ballast


def test_a_job_killed_or_out_of_disk_resumes_and_ends_as_one_never_stopped(kill_data, tmp_path):
    """One run folder stopped three times: SIGKILL mid-teacher, SIGKILL while the pseudo-labels
    are being written, a full disk mid-student (root only); each rerun picks up where it was."""
    straight = start(kill_data, tmp_path / "straight" / "run", "straight.log")
    wait_for(straight, lambda: "started a local Ray" in straight.err.read_text(), "the undisturbed job's Ray")

    with small_disk(tmp_path / "disk") as disk:
        run_dir = (disk or tmp_path) / "run"
        # killed between two checkpoints of the teacher: the rerun resumes it from the last one
        kill_when(start(kill_data, run_dir, "1.log", tmp_path), (run_dir / STATE).is_file, "the teacher's checkpoint")
        at = step_of(run_dir / STATE)
        assert manifest(run_dir)["teacher"]["status"] == "running"

        # killed while labelling: nothing is published, the rerun labels the round again
        staging = run_dir / STAGING
        kill_when(start(kill_data, run_dir, "2.log", tmp_path), lambda: staging.is_dir() and any(staging.iterdir()),
                  "pseudo-labels being written")
        done = manifest(run_dir)
        assert done["teacher"]["metrics"]["resumed_from"] == at > 0
        assert done["pseudo_1"]["status"] == "running" and not (run_dir / "pseudo" / "round_1").exists()

        if disk is not None:  # the disk fills up mid-student: one line naming it, nothing half-written
            job = start(kill_data, run_dir, "3.log", tmp_path)
            # held still from its first checkpoint while the disk fills: the next write fails
            driver = wait_for(job, (run_dir / ROUND_STATE).is_file, "the student's checkpoint")
            assert driver is not None, "no driver actor found"
            driver.suspend()
            try:
                ballast = fill(disk)
            finally:
                driver.resume()
            assert job.wait(timeout=900) == 2, job.output()
            errors = [line for line in job.err.read_text().splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and f"(mounted at {disk})" in errors[0] and "free space" in errors[0], errors
            assert "No space left on device" in errors[0]
            # the write that failed first is named (the student's history or checkpoint), not a
            # bookkeeping write that failed after it
            assert errors[0].startswith(f"error: {run_dir}/stages/round_1/") or \
                errors[0].startswith(f"error: {run_dir}/ray/round_1/"), errors
            assert manifest(run_dir)["pseudo_1"]["status"] == "done"
            labels = run_dir / "pseudo" / "round_1"
            assert len(list((labels / "labels").iterdir())) == TARGET_IMAGES and (labels / "stats.json").is_file()
            round_at = step_of(run_dir / ROUND_STATE)
            for history in run_dir.rglob("history.jsonl"):
                [json.loads(line) for line in history.read_text().splitlines()]
            assert [p.name for p in run_dir.rglob("*.tmp")] == []
            ballast.unlink()

        finish(start(kill_data, run_dir, "4.log", tmp_path))
        done = manifest(run_dir)
        assert all(entry["status"] == "done" for entry in done.values())
        assert not (run_dir / "pseudo" / ".round_1.staging").exists()
        assert len(list((run_dir / "pseudo" / "round_1" / "labels").iterdir())) == TARGET_IMAGES
        if disk is not None:
            assert done["round_1"]["metrics"]["resumed_from"] == round_at > 0
        finish(straight)
        assert stages(run_dir) == stages(tmp_path / "straight" / "run")
