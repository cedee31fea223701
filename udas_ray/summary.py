"""The run's result table: ``RUN_DIR/summary.json``, its Markdown and CSV forms, and its printed form.

    {"stages": [{"name": "source_only", "miou": 31.2, "pixel_accuracy": 80.1,
                 "per_class_iou": {"road": 90.3, ..., "train": null}, "checkpoint": "last"}, ...]}

Numbers are percentages over the whole target-val split; ``null`` marks a class absent from
both the ground truth and the predictions. Rows follow the paper's ablation table.

Beside the JSON, :func:`write` puts ``summary.md`` (the table UDA papers print: stages as rows,
mIoU, pixel accuracy, then one IoU column per class; the gap closed under it) and
``per_class.csv`` (the same numbers for a spreadsheet, one row per stage, a fixed header with all
19 classes). A class a row does not have (another protocol, an old summary) is left blank.
Multi-seed summaries (:func:`aggregate`) carry mean ± std for mIoU and pixel accuracy and only
means per class: the Markdown shows "mean ± std", the CSV adds ``*_std`` columns at the end.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from udas_ray import atomic
from udas_ray.classes import CLASS_NAMES

SUMMARY_FILE = "summary.json"
MARKDOWN_FILE = "summary.md"
CSV_FILE = "per_class.csv"
FILES = (SUMMARY_FILE, MARKDOWN_FILE, CSV_FILE)  # everything write() puts in the run folder

# Column heads of the printed per-class table: at most 5 characters, so 19 columns fit 150.
SHORT_NAMES = {"sidewalk": "sidew", "building": "build", "traffic light": "light", "traffic sign": "sign",
               "vegetation": "veget", "terrain": "terr", "person": "pers", "motorcycle": "mbike",
               "bicycle": "bike"}


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
    """``summary.json``, ``summary.md`` and ``per_class.csv``, each written atomically; the JSON's path."""
    run_dir, summary = Path(run_dir), clean(summary)
    path = atomic.write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=1, allow_nan=False))
    atomic.write_text(run_dir / MARKDOWN_FILE, markdown(summary))
    atomic.write_text(run_dir / CSV_FILE, per_class_csv(summary))
    return path


def _classes(rows: list[dict]) -> list[str]:
    """The classes any row has an entry for, in trainId order (all 19 under cityscapes19)."""
    present = {c for r in rows for c in (r.get("per_class_iou") or {})}
    return [c for c in CLASS_NAMES if c in present]


def _number(value, digits: int, spread=None, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    text = f"{value:.{digits}f}"
    return text if spread is None else f"{text} ± {spread:.{digits}f}"


def _gap_line(summary: dict, digits: int = 1) -> str | None:
    if summary.get("gap_closed") is None:
        return None
    spread = f" ± {summary['gap_closed_std']:.{digits}f}" if summary.get("gap_closed_std") is not None else ""
    return (f"gap closed by {summary['final_stage']}: (final - source_only) / (oracle - source_only) "
            f"= {summary['gap_closed']:.{digits}f}{spread}%")


def markdown(summary: dict) -> str:
    """The results table as UDA papers print it: IoU in %, one decimal, "-" where there is none."""
    rows = summary["stages"]
    names = _classes(rows)
    heads = ["stage", "mIoU", "pixel acc", *names]
    lines = ["| " + " | ".join(heads) + " |", "| --- |" + " ---: |" * (len(heads) - 1)]
    for r in rows:
        ious = r.get("per_class_iou") or {}
        cells = [f"`{r['name']}`", _number(r.get("miou"), 1, r.get("miou_std")),
                 _number(r.get("pixel_accuracy"), 1, r.get("pixel_accuracy_std")),
                 *(_number(ious.get(c), 1) for c in names)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [_gap_line(summary)]
    if summary.get("seeds"):
        notes.append(f"mean ± std over seeds {summary['seeds']} (each seed's last checkpoint); class IoUs are means")
    notes = [n for n in notes if n]
    return "\n".join(lines) + ("\n\n" + "\n\n".join(notes) if notes else "") + "\n"


def per_class_csv(summary: dict) -> str:
    """One row per stage: ``stage,miou,pixel_accuracy,<the 19 classes>`` (+ ``*_std`` when seeded)."""
    rows = summary["stages"]
    spreads = [k for k in ("miou_std", "pixel_accuracy_std") if any(r.get(k) is not None for r in rows)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["stage", "miou", "pixel_accuracy", *CLASS_NAMES, *spreads])
    for r in rows:
        ious = r.get("per_class_iou") or {}
        numbers = [r.get("miou"), r.get("pixel_accuracy"), *(ious.get(c) for c in CLASS_NAMES),
                   *(r.get(k) for k in spreads)]
        writer.writerow([r["name"], *(_number(v, 2, missing="") for v in numbers)])
    return out.getvalue()


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
        lines.append(_gap_line(summary))
    if summary.get("seeds"):
        lines.append(f"mean ± std over seeds {summary['seeds']} (each seed's last checkpoint)")
    names = _classes(rows)
    if names:
        lines += ["", "per-class IoU (%)" + (", means over seeds" if summary.get("seeds") else ""),
                  f"{'stage':<{width}}" + "".join(f" {SHORT_NAMES.get(c, c):>5}" for c in names),
                  "-" * (width + 6 * len(names))]
        for r in rows:
            ious = r.get("per_class_iou") or {}
            lines.append(f"{r['name']:<{width}}" + "".join(f" {_number(ious.get(c), 1):>5}" for c in names))
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

