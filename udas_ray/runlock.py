"""One job per run folder: an exclusive ``flock`` on ``RUN_DIR/.lock``.

Two jobs writing the same run.dir would interleave their manifests and checkpoints, so the
second one is refused at once with a one-line :class:`UdasError` that says who holds the folder
(pid, host, start time, command line: read from the lock file, where the holder wrote them).

``flock`` belongs to the open file, not to the file's existence: the lock goes away when the
holder closes it or dies in any way (SIGKILL included), so a stale ``.lock`` left behind never
blocks anyone and is never deleted (deleting it would let two jobs lock two different files).
The descriptor is not inherited by processes the holder starts (Ray's raylet and workers).
Locks are per open file, so a second ``RunLock`` on the same folder in the same process is
refused too.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from udas_ray.errors import UdasError

LOCK_FILE = ".lock"


def _holder_text(raw: bytes) -> str:
    """"pid N on HOST, started T: CMD" from the lock file's content, as well as it can."""
    try:
        info = json.loads(raw.decode())
        return (f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}")
    except (ValueError, KeyError, TypeError):
        return "holder unknown: it is just starting or wrote nothing"


class RunLock:
    """``with RunLock(run_dir): ...``: the folder is created if needed and locked for the block."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock now or raise UdasError naming the folder and its holder; never waits."""
        if self._fd is not None:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UdasError(f"{self.path}: cannot create the run lock ({exc.strerror}); check that run.dir is writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(os.pread(fd, 65536, 0))
            os.close(fd)
            raise UdasError(f"{self.run_dir} is in use by another job ({holder}); "
                            "wait for it or choose another run.dir") from None
        except OSError as exc:
            os.close(fd)
            raise UdasError(f"{self.path}: cannot lock the run folder ({exc.strerror})") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": shlex.join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file (no stale holder record) and let it go; the file itself stays."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
