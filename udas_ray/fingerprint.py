"""What a stage depended on, recorded when it runs, so that a resume notices when it changed.

A stage's *inputs* (:func:`stage_inputs`) are three things, kept in its manifest entry:

  config   the flat config minus the keys that may change on resume (``driver.RESUMABLE_KEYS``);
           stored whole, so a change names its keys, and a key the schema gained later (absent
           from the record) is not a change
  files    per split the stage reads (:func:`splits_read`), a hash of its sorted (image, label)
           paths: an image added, removed or renamed is noticed; a file rewritten in place is not
  parents  the stages whose models or labels it reads (:func:`stage_parents`), each by the ``id``
           its inputs got when it last ran: a parent trained again is a changed input

plus an ``id`` drawn when the stage runs. :func:`changes` says, in words for a log line, what
differs between a record and today's inputs.

The restyled source has its own record (``translated.json``): :func:`restyled_changes` compares its
generator path, generator file hash and ``style.translate_at`` with the current ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from udas_ray.config import Config

SPLIT_NAMES = {"source": "source", "target_train": "target-train", "target_val": "target-val"}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ stages
def config_view(cfg: Config, ignore: tuple[str, ...]) -> dict:
    """The flat config without the keys under ``ignore`` (keys or sections)."""
    return {k: v for k, v in cfg.flat().items() if not any(k == p or k.startswith(p + ".") for p in ignore)}


def files_hash(split) -> str:
    """A hash of a split's sorted (image, label) paths."""
    return _digest(sorted([s.image, s.label or ""] for s in split.samples))


def splits_read(stage, cfg: Config) -> tuple[str, ...]:
    """The splits a stage of the plan reads (a restyled stage's source is the style stage's output,
    a parent, not a split). Errs on the side of more: a stage listed here is re-run when they change."""
    from udas_ray.stages.kinds import KINDS
    from udas_ray.stages.terms import TERMS

    if stage.kind == "pseudo":
        return ("target_train",)
    if stage.kind == "style":
        return ("source", "target_train")
    kind = KINDS[stage.kind]
    reads = ["target_val"]  # every segmentation stage is evaluated on it
    st = cfg.self_training
    reads_source = kind.trains_on == "source" or (kind.noisy and (st.source_share > 0 or st.source_classmix > 0))
    if reads_source and not stage.restyled:
        reads.append("source")
    reads_target = (kind.trains_on != "source" or kind.adabn
                    or any(s != "sup" for t in kind.terms for s in TERMS[t].reads))
    if reads_target:
        reads.append("target_train")
    return tuple(reads)


def stage_parents(stages, cfg: Config) -> dict[str, list[str]]:
    """For each stage of the plan, the stages whose output it reads: the style stage (restyled
    source), the model that labels its pseudo-labels, the model it starts from."""
    from udas_ray.stages.kinds import KINDS, note_finished, starting_points, starts_from

    out, points = {}, starting_points()
    for stage in stages:
        parents = ["style"] if stage.restyled else []
        if stage.kind == "pseudo":
            parents.append(points["previous"])
        elif stage.kind in KINDS:
            if KINDS[stage.kind].trains_on == "pseudo":
                parents.append(f"pseudo_{stage.round}")
            start = starts_from(cfg, stage.kind)
            if start is not None:
                parents.append(points[start])
        note_finished(points, stage.kind, stage.name)
        out[stage.name] = [p for p in dict.fromkeys(parents) if p]
    return out


def stage_inputs(cfg: Config, splits, stage, parent_ids: dict[str, str | None], ignore: tuple[str, ...]) -> dict:
    """What ``stage`` depends on today (see the module docstring), without an ``id``."""
    return {"config": config_view(cfg, ignore),
            "files": {name: files_hash(getattr(splits, name)) for name in splits_read(stage, cfg)},
            "parents": dict(parent_ids)}


def with_id(inputs: dict) -> dict:
    """``inputs`` with a fresh ``id``: the identity of the run of the stage that used them."""
    return {**inputs, "id": _digest([inputs, time.time_ns()])}


def changes(recorded: dict, current: dict) -> list[str]:
    """What differs between a recorded and today's inputs, e.g. ``["target-train file list"]``;
    an entry one side lacks (a key or split the code added since) is not a change."""
    out = []
    old, new = recorded.get("config", {}), current.get("config", {})
    keys = [k for k in new if k in old and old[k] != new[k]]
    if keys:
        out.append("config: " + ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else ""))
    old, new = recorded.get("files", {}), current.get("files", {})
    out += [f"{SPLIT_NAMES.get(k, k)} file list" for k in new if k in old and old[k] != new[k]]
    old, new = recorded.get("parents", {}), current.get("parents", {})
    out += [f"{k} ran again" for k in new if k in old and old[k] != new[k]]
    return out


# ----------------------------------------------------------------------- restyled source
def generator_record(generator_path: str | Path, translate_at: str) -> dict:
    """What the restyled source was made with: for ``translated.json``."""
    return {"generator": str(generator_path), "generator_sha256": file_sha256(generator_path),
            "translate_at": translate_at}


def restyled_changes(final_root: str | Path, generator_path: str | Path, translate_at: str) -> list[str]:
    """Why the restyled source in ``final_root`` may not be reused with this generator and
    ``style.translate_at`` ([] = it may; also when there is none, nothing to compare)."""
    marker = Path(final_root) / "translated.json"
    if not marker.is_file():
        return []
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return ["translated.json unreadable"]
    out = []
    if info.get("generator") != str(generator_path):
        out.append(f"generator {info.get('generator')} -> {generator_path}")
    if info.get("generator_sha256") is None:
        out.append("no generator hash recorded")
    elif info["generator_sha256"] != file_sha256(generator_path):
        out.append("generator file changed")
    if info.get("translate_at") != translate_at:
        out.append(f"style.translate_at {info.get('translate_at')} -> {translate_at}")
    return out
