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

from udas_ray import atomic

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


def gap_closed(rows: list[dict], final: str) -> float | None:
    """(final - source_only) / (oracle - source_only) in percent: the share of the gap closed."""
    by_name = {r["name"]: r["miou"] for r in rows}
    if not {"source_only", "oracle", final} <= set(by_name):
        return None
    gap = by_name["oracle"] - by_name["source_only"]
    return None if gap <= 0 else 100.0 * (by_name[final] - by_name["source_only"]) / gap


def final_stage(rows: list[dict]) -> str | None:
    """The method's result: the last round (or the teacher when there are no rounds)."""
    names = [r["name"] for r in rows]
    rounds = [n for n in names if n.startswith("round_")]
    return rounds[-1] if rounds else ("teacher" if "teacher" in names else None)


def build(rows: list[dict], **extra) -> dict:
    """The summary: rows, each adapted row's share of the gap closed, and the final one's."""
    for row in rows:
        if row["name"] not in ("source_only", "oracle"):
            row["gap_closed"] = gap_closed(rows, row["name"])
    summary = {"stages": rows, **extra}
    final = final_stage(rows)
    if final is not None and gap_closed(rows, final) is not None:
        summary["final_stage"] = final
        summary["gap_closed"] = gap_closed(rows, final)
    return summary


def write(run_dir: str | Path, summary: dict) -> Path:
    return atomic.write_text(Path(run_dir) / SUMMARY_FILE, json.dumps(clean(summary), indent=1, allow_nan=False))


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
    lines = [f"{'stage':<{width}}  {'mIoU':>15}  {'pixel acc':>15}  {'gap closed':>10}", "-" * (width + 46)]
    for r in rows:
        gap = r.get("gap_closed")
        lines.append(f"{r['name']:<{width}}  {_fmt(r['miou'], r.get('miou_std')):>15}  "
                     f"{_fmt(r['pixel_accuracy'], r.get('pixel_accuracy_std')):>15}  "
                     f"{'' if gap is None else f'{gap:9.1f}%':>10}")
    if summary.get("gap_closed") is not None:
        spread = f" ± {summary['gap_closed_std']:.1f}" if summary.get("gap_closed_std") is not None else ""
        lines.append(f"gap closed by {summary['final_stage']}: (final - source_only) / (oracle - source_only) "
                     f"= {summary['gap_closed']:.1f}{spread}%")
    if summary.get("seeds"):
        lines.append(f"mean ± std over seeds {summary['seeds']} (each seed's last checkpoint)")
    return "\n".join(lines)


def aggregate(per_seed: dict[int, dict]) -> dict:
    """Mean ± sample std per stage over seeds (rows of the stages every seed has)."""
    import statistics

    seeds = sorted(per_seed)
    names = [r["name"] for r in per_seed[seeds[0]]["stages"]]
    rows = []
    for name in names:
        runs = [next(r for r in per_seed[s]["stages"] if r["name"] == name) for s in seeds]

        def mean_std(values):
            values = [v for v in values if v is not None and math.isfinite(v)]
            if not values:
                return None, None
            return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

        miou, miou_std = mean_std([r["miou"] for r in runs])
        acc, acc_std = mean_std([r["pixel_accuracy"] for r in runs])
        per_class = {c: mean_std([r["per_class_iou"].get(c) for r in runs])[0] for c in runs[0]["per_class_iou"]}
        row = {"name": name, "miou": miou, "miou_std": miou_std, "pixel_accuracy": acc,
               "pixel_accuracy_std": acc_std, "per_class_iou": per_class, "checkpoint": "last",
               "per_seed_miou": {str(s): r["miou"] for s, r in zip(seeds, runs)}}
        gaps = [r.get("gap_closed") for r in runs]
        if any(g is not None for g in gaps):
            row["gap_closed"], row["gap_closed_std"] = mean_std(gaps)
        rows.append(row)
    summary = {"stages": rows, "seeds": seeds, "runs": {str(s): per_seed[s].get("run_dir") for s in seeds},
               "statistic": "mean and sample standard deviation over seeds, of each seed's last checkpoint"}
    final = final_stage(rows)
    if final is not None and next(r for r in rows if r["name"] == final).get("gap_closed") is not None:
        final_row = next(r for r in rows if r["name"] == final)
        summary.update(final_stage=final, gap_closed=final_row["gap_closed"], gap_closed_std=final_row["gap_closed_std"])
    return summary

