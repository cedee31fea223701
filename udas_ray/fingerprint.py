"""What a stage depended on, recorded when it runs, so that a resume notices when it changed.

A stage's *inputs* (:func:`stage_inputs`) are three things, kept in its manifest entry:

  config   the flat config minus the keys that may change on resume (``driver.RESUMABLE_KEYS``);
           stored whole, so a change names its keys, and a key the schema gained later (absent
           from the record) is not a change
  files    per split the stage reads (its kind's ``splits_read``, ``udas_ray.stages.kinds``), a
           hash of its sorted (image, label) paths: an image added, removed or renamed is
           noticed; a file rewritten in place is not
  parents  the stages whose outputs it reads (``StagePlan.parents``), each by the ``id`` its
           inputs got when it last ran: a parent trained again is a changed input

plus an ``id`` drawn when the stage runs. :func:`changes` says, in words for a log line, what
differs between a record and today's inputs.
"""

from __future__ import annotations

import hashlib
import json
import time

from udas_ray.config import Config
from udas_ray.stages.kinds import KINDS, StagePlan

SPLIT_NAMES = {"source": "source", "target_train": "target-train", "target_val": "target-val"}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_view(cfg: Config, ignore: tuple[str, ...]) -> dict:
    """The flat config without the keys under ``ignore`` (keys or sections)."""
    return {k: v for k, v in cfg.flat().items() if not any(k == p or k.startswith(p + ".") for p in ignore)}


def files_hash(split) -> str:
    """A hash of a split's sorted (image, label) paths."""
    return _digest(sorted([s.image, s.label or ""] for s in split.samples))


def stage_inputs(cfg: Config, splits, stage: StagePlan, parent_ids: dict[str, str | None],
                 ignore: tuple[str, ...]) -> dict:
    """What ``stage`` depends on today (see the module docstring), without an ``id``."""
    reads = KINDS[stage.kind].splits_read(cfg, stage.restyled)
    return {"config": config_view(cfg, ignore),
            "files": {name: files_hash(getattr(splits, name)) for name in reads},
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
