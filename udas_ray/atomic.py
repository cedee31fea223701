"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

The bytes go to a temp file with a unique name in the same folder (so the rename stays on one
file system and two writers never share a temp file), are flushed and fsynced, and the temp file
is renamed over the target with ``os.replace``. When the disk is full (or anything else fails)
the temp file is removed, the old file is left as it was, and a one-line :class:`UdasError`
names the path and the disk. The folder itself is not fsynced: after a power cut the rename may
be lost, but the file is still whole.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from pathlib import Path

from udas_ray.errors import UdasError

_SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT)


def _mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing parent)."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


def _write_error(path: Path, exc: OSError) -> UdasError:
    reason = exc.strerror or exc.__class__.__name__
    if exc.errno in _SPACE_ERRORS:
        return UdasError(f"{path}: could not write ({reason}) - free space on the disk holding it "
                         f"(mounted at {_mount_point(path)}) and rerun")
    return UdasError(f"{path}: could not write ({reason}) - check that {path.parent} is writable and rerun")


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as umask says, like open()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException as exc:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; parent folders are created."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, indent: int | None = 1) -> Path:
    """``json.dumps(obj, indent=indent)`` written atomically."""
    return write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"))
