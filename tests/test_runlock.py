"""One job per run folder: a second holder is refused at once, a dead holder blocks no one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from udas_ray.errors import UdasError
from udas_ray.runlock import RunLock

REPO = Path(__file__).resolve().parent.parent

# Run in another process: try the lock, print "locked" or the error line, exit 0 / 2.
TRY_LOCK = """
import sys
from udas_ray.errors import UdasError
from udas_ray.runlock import RunLock
try:
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
except UdasError as exc:
    print(exc, flush=True)
    sys.exit(2)
"""

# Run in another process: take the lock, say so, then sleep until killed.
HOLD_LOCK = """
import sys, time
from udas_ray.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(300)
"""


def try_lock_elsewhere(run_dir):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", TRY_LOCK, str(run_dir)], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    return proc, time.monotonic() - started


def test_a_second_job_is_refused_at_once_and_named(tmp_path):
    run_dir = tmp_path / "runs" / "a"
    with RunLock(run_dir) as lock:
        assert lock.held and (run_dir / ".lock").is_file()  # the folder is created
        proc, seconds = try_lock_elsewhere(run_dir)
        assert proc.returncode == 2, proc.stderr
        assert seconds < 10
        line = proc.stdout.strip()
        assert line.startswith(f"{run_dir} is in use by another job (pid {os.getpid()} on ")
        assert "wait for it or choose another run.dir" in line and "\n" not in line
    assert not lock.held
    proc, _ = try_lock_elsewhere(run_dir)
    assert proc.returncode == 0 and proc.stdout.strip() == "locked", proc.stdout + proc.stderr


def test_the_lock_file_says_who_holds_it_while_held(tmp_path):
    with RunLock(tmp_path):
        text = (tmp_path / ".lock").read_text()
        assert f'"pid": {os.getpid()}' in text and '"command": ' in text
    assert (tmp_path / ".lock").read_text() == ""  # released: no stale holder record


def test_a_second_lock_in_the_same_process_is_refused_too(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(UdasError, match="is in use by another job"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # and free again afterwards
        pass


def test_a_killed_holder_blocks_no_one(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UdasError, match=f"pid {holder.pid} on "):
            RunLock(run_dir).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    assert "pid" in (run_dir / ".lock").read_text()  # its record stays behind ...
    with RunLock(run_dir) as lock:  # ... but does not block
        assert lock.held
