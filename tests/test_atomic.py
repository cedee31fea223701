"""Atomic writes: whole new file or untouched old one, no temp file left, one-line errors."""

import errno
import json
import os
import threading

import pytest

from udas_ray import atomic
from udas_ray.errors import UdasError


def test_write_text_and_json_create_folders_and_leave_only_the_file(tmp_path):
    text = tmp_path / "a" / "b" / "config.yaml"
    atomic.write_text(text, "run:\n  dir: x\n")
    assert text.read_text() == "run:\n  dir: x\n"
    js = tmp_path / "a" / "manifest.json"
    atomic.write_json(js, {"stages": {"teacher": {"status": "done"}}, "n": [1, 2]})
    assert json.loads(js.read_text()) == {"stages": {"teacher": {"status": "done"}}, "n": [1, 2]}
    assert js.read_text() == json.dumps({"stages": {"teacher": {"status": "done"}}, "n": [1, 2]}, indent=1)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b", "manifest.json"]
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["config.yaml"]


def test_overwrite_replaces_the_content_and_keeps_the_usual_mode(tmp_path):
    path = tmp_path / "f.txt"
    atomic.write_text(path, "old")
    atomic.write_text(path, "new, longer")
    assert path.read_text() == "new, longer"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_concurrent_writers_never_share_a_temp_file(tmp_path):
    path = tmp_path / "m.json"
    errors = []

    def writer(i):
        try:
            for j in range(20):
                atomic.write_json(path, {"writer": i, "j": j, "pad": "x" * 2000})
        except Exception as exc:  # collected: pytest does not see thread exceptions
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.loads(path.read_text())["j"] == 19
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_disk_full_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, where):
    path = tmp_path / "config.yaml"
    path.write_text("old content\n")
    if where == "write":  # the first chunk lands, the second does not: a half-written temp file
        real_write, calls = os.write, []

        def write(fd, data):
            calls.append(fd)
            if len(calls) == 1:
                return real_write(fd, bytes(data[:5]))
            _no_space()

        monkeypatch.setattr(atomic.os, "write", write)
    else:
        monkeypatch.setattr(atomic.os, where, _no_space)
    with pytest.raises(UdasError) as err:
        atomic.write_text(path, "new content that does not fit\n")
    monkeypatch.undo()
    message = str(err.value)
    assert message.startswith(f"{path}: could not write (No space left on device)")
    assert "free space on the disk holding it" in message and "\n" not in message
    assert path.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_other_errors_name_the_path_too(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(UdasError, match=r"not_a_folder/x\.json: could not write \(.*\) - check that"):
        atomic.write_json(blocker / "x.json", {})
    assert [p.name for p in tmp_path.iterdir()] == ["not_a_folder"]


def test_unserializable_json_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic.write_json(tmp_path / "x.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_line_the_disk_cannot_take_is_not_appended_in_part(tmp_path, monkeypatch):
    path = tmp_path / "history.jsonl"
    atomic.append_line(path, '{"step": 2}')
    real_write = os.write

    def half_then_full(fd, data):
        monkeypatch.setattr(atomic.os, "write", lambda *a: _no_space())
        return real_write(fd, bytes(data[:4]))

    monkeypatch.setattr(atomic.os, "write", half_then_full)
    with pytest.raises(UdasError) as err:
        atomic.append_line(path, '{"step": 4, "loss": 0.5}')
    monkeypatch.undo()
    assert str(err.value).startswith(f"{path}: could not write (No space left on device)")
    assert path.read_text() == '{"step": 2}\n'  # still one JSON record per line


def test_torch_files_too_keep_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    import torch

    from udas_ray.checkpoints import atomic_save

    path = atomic_save({"step": 2}, tmp_path / "state.pt")
    monkeypatch.setattr(atomic.os, "fsync", _no_space)
    with pytest.raises(UdasError, match=r"state\.pt: could not write \(No space left on device\) - free space"):
        atomic_save({"step": 4}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
