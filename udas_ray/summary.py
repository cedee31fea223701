"""The run's result table: ``RUN_DIR/summary.json`` and its printed form.

    {"stages": [{"name": "source_only", "miou": 31.2, "pixel_accuracy": 80.1,
                 "per_class_iou": {"road": 90.3, ..., "train": null}, "checkpoint": "last"}, ...]}

Numbers are percentages over the whole target-val split; ``null`` marks a class absent from
both the ground truth and the predictions. Rows follow the paper's ablation table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

SUMMARY_FILE = "summary.json"


def stage_row(name: str, metrics: dict) -> dict:
    return {
        "name": name,
        "miou": metrics["miou"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "per_class_iou": metrics["per_class_iou"],
        "checkpoint": "last",
        "step": metrics.get("step"),
    }


def gap_closed(rows: list[dict], final: str | None = None) -> float | None:
    """(final - source_only) / (oracle - source_only), the share of the domain gap closed."""
    by_name = {r["name"]: r["miou"] for r in rows}
    if "source_only" not in by_name or "oracle" not in by_name:
        return None
    adapted = [r["name"] for r in rows if r["name"] not in ("source_only", "oracle")]
    final = final or (adapted[-1] if adapted else None)
    if final is None or final not in by_name:
        return None
    gap = by_name["oracle"] - by_name["source_only"]
    return None if gap <= 0 else 100.0 * (by_name[final] - by_name["source_only"]) / gap


def build(rows: list[dict], **extra) -> dict:
    summary = {"stages": rows, **extra}
    closed = gap_closed(rows)
    if closed is not None:
        summary["gap_closed"] = closed
    return summary


def write(run_dir: str | Path, summary: dict) -> Path:
    path = Path(run_dir) / SUMMARY_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean(summary), indent=1, allow_nan=False))
    tmp.replace(path)
    return path


def clean(obj):
    """JSON has no NaN: NaN and inf become null."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(value, spread=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:6.2f}" + (f" ± {spread:5.2f}" if spread is not None else "")


def table(summary: dict) -> str:
    """A fixed-width table of every stage's mIoU and pixel accuracy (mean ± std when seeded)."""
    rows = summary["stages"]
    width = max([len("stage")] + [len(r["name"]) for r in rows])
    lines = [f"{'stage':<{width}}  {'mIoU':>15}  {'pixel acc':>15}", "-" * (width + 34)]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {_fmt(r['miou'], r.get('miou_std')):>15}  "
                     f"{_fmt(r['pixel_accuracy'], r.get('pixel_accuracy_std')):>15}")
    if summary.get("gap_closed") is not None:
        lines.append(f"gap closed (final vs source_only..oracle): {summary['gap_closed']:.1f}%")
    return "\n".join(lines)
