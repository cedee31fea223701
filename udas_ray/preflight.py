"""What would fail a job late (or hang it) checked in seconds, before any Ray work.

A job loads its config and splits, then calls :func:`check`, then starts Ray. Each check raises
:class:`UdasError` with one line naming the config key and the file or folder at fault, and
writes nothing:

- labels a planned stage trains on: the oracle (``run.baselines``) needs every target-train
  label, and otherwise fails as the last stage, after the whole pipeline has run;
- ``scaling.use_gpu`` on a machine without a GPU: Ray would wait forever for one;
- the model: built once on CPU from ``model.name`` and ``model.options``, then loaded with
  ``model.pretrained`` (or, where it is null, the model's default weights, e.g. an installed
  package's) - else the first stage fails after Ray has started.

Source labels are checked by ``data.splits.load_splits`` already (every source image needs one).
"""

from __future__ import annotations

import os

from udas_ray.config import Config
from udas_ray.data.splits import Splits
from udas_ray.errors import UdasError


def check(runs: list[tuple[Config, Splits]]) -> None:
    """``runs``: every pipeline of the job (one per seed or budget), which share the model and
    scaling sections."""
    for cfg, splits in runs:
        target_labels(cfg, splits)
    cfg = runs[0][0]
    gpu(cfg)
    model(cfg)


def target_labels(cfg: Config, splits: Splits) -> None:
    from udas_ray.driver import plan
    from udas_ray.stages.kinds import KINDS

    needy = [s.name for s in plan(cfg) if s.kind in KINDS and KINDS[s.kind].trains_on == "target_train"]
    split = splits.target_train
    if not needy or split.has_labels:
        return
    missing = sum(s.label is None for s in split.samples)
    lack = "has none" if missing == len(split) else f"lacks {missing} of the {len(split)}"
    raise UdasError(f"{split.label_dir or split.root}: run.baselines=true trains the {', '.join(needy)} stage on "
                    f"every target-train label, but this folder {lack}; add the labels or set run.baselines=false")


def gpu(cfg: Config) -> None:
    """Without a cluster named in RAY_ADDRESS the GPUs are this machine's: ask torch. (A joined
    cluster's GPUs are counted by ``cluster.check_fits`` once connected.)"""
    if not cfg.scaling.use_gpu or os.environ.get("RAY_ADDRESS") not in (None, "", "local"):
        return
    import torch

    if not torch.cuda.is_available():
        raise UdasError("scaling.use_gpu=true, but this machine has no GPU that torch can use and RAY_ADDRESS "
                        "names no cluster to run on; set scaling.use_gpu=false")


def model(cfg: Config) -> None:
    from udas_ray.classes import NUM_CLASSES
    from udas_ray.models import SCRATCH, build_segmenter, load_pretrained

    options = {**cfg.model.options, "freeze_bn": cfg.model.freeze_bn}  # as stages.segment.build_model
    try:
        segmenter = build_segmenter(cfg.model.name, NUM_CLASSES, SCRATCH, **options)
    except (UdasError, TypeError, ValueError, RuntimeError) as exc:
        raise UdasError(f"model.options={dict(cfg.model.options)}: {exc}") from None
    try:  # null too: a model may load default weights (an installed package's)
        load_pretrained(segmenter, cfg.model.name, cfg.model.pretrained)
    except UdasError as exc:
        raise (exc if "model.pretrained" in str(exc) else UdasError(f"model.pretrained: {exc}")) from None
