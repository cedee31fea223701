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
from typing import BinaryIO, Iterator

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


@contextlib.contextmanager
def writing(path: str | Path, fsync: bool = True) -> Iterator[BinaryIO]:
    """``with writing(path) as f: ...``: what the block writes to ``f`` replaces ``path`` when the
    block ends, whole; if the block raises, nothing changes and the temp file is gone. A failed
    write (disk full, read-only, also when a writer such as ``torch.save`` wraps the OSError in
    its own exception) becomes the one-line :class:`UdasError`. ``fsync=False``: skip the flush
    to disk, for files published later as a whole folder (a rename of their staging folder)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never someone else's temp file; mode as umask says, like open()
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = _os_error(exc)
        if cause is not None:
            raise _write_error(path, cause) from None
        raise


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: itself, or what it was raised from or while handling."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`writing`)."""
    with writing(path, fsync) as f:
        _write_all(f.fileno(), data)  # unbuffered: straight to the temp file
    return Path(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_line(path: str | Path, line: str) -> Path:
    """Append ``line`` and a newline to ``path`` (created with its folders if needed), whole or
    not at all: a write the disk cannot take is cut off again and becomes the one-line error."""
    path = Path(path)
    data = (line + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            try:
                _write_all(fd, data)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # no half line
                raise
        finally:
            os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from None
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; parent folders are created."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, indent: int | None = 1) -> Path:
    """``json.dumps(obj, indent=indent)`` written atomically."""
    return write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"))
