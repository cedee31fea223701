"""udas_ray.summary's files: summary.json, summary.md (the papers' table) and per_class.csv."""

import csv
import json

from udas_ray import summary
from udas_ray.classes import CLASS_NAMES


def _row(name: str, miou: float, offset: float) -> dict:
    """A stage whose class c has IoU offset + c (train: absent), so every cell is predictable."""
    ious = {c: (None if c == "train" else offset + i) for i, c in enumerate(CLASS_NAMES)}
    return summary.stage_row(name, {"miou": miou, "pixel_accuracy": 50.0 + miou, "per_class_iou": ious, "step": 8})


def _summary() -> dict:
    rows = [_row("source_only", 10.0, 0.0), _row("teacher", 20.0, 20.0), _row("round_1", 30.04, 40.0),
            _row("oracle", 50.0, 60.0)]
    return summary.build(rows, run_dir="r")


def _markdown_table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in rows]


def test_write_puts_json_markdown_and_csv_side_by_side(tmp_path):
    path = summary.write(tmp_path, _summary())
    assert path == tmp_path / summary.SUMMARY_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(summary.FILES)  # no temp files left
    assert [r["name"] for r in json.loads(path.read_text())["stages"]] == ["source_only", "teacher", "round_1", "oracle"]

    md = (tmp_path / summary.MARKDOWN_FILE).read_text()
    table = _markdown_table(md)
    assert table[0] == ["stage", "mIoU", "pixel acc", *CLASS_NAMES]
    assert set(table[1]) == {"---", "---:"}
    body = {r[0]: r[1:] for r in table[2:]}
    assert list(body) == ["`source_only`", "`teacher`", "`round_1`", "`oracle`"]
    assert body["`round_1`"][:2] == ["30.0", "80.0"]
    assert body["`round_1`"][2 + CLASS_NAMES.index("road")] == "40.0"
    assert body["`round_1`"][2 + CLASS_NAMES.index("bicycle")] == "58.0"
    assert body["`teacher`"][2 + CLASS_NAMES.index("car")] == "33.0"
    assert all(r[2 + CLASS_NAMES.index("train")] == "-" for r in body.values())
    # (30.04 - 10) / (50 - 10) = 50.1 %, under the table
    assert "gap closed by round_1: (final - source_only) / (oracle - source_only) = 50.1%" in md.split("\n\n", 1)[1]

    with open(tmp_path / summary.CSV_FILE, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["stage", "miou", "pixel_accuracy", *CLASS_NAMES]
    by_stage = {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert list(by_stage) == ["source_only", "teacher", "round_1", "oracle"]
    assert by_stage["round_1"]["miou"] == "30.04" and by_stage["round_1"]["pixel_accuracy"] == "80.04"
    assert by_stage["oracle"]["traffic light"] == "66.00" and by_stage["source_only"]["road"] == "0.00"
    assert by_stage["teacher"]["train"] == ""


def test_table_prints_per_class_iou_within_150_columns():
    text = summary.table(_summary())
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 150
    head = next(line for line in lines if line.startswith("stage") and "road" in line)
    assert head.split()[1:] == [summary.SHORT_NAMES.get(c, c) for c in CLASS_NAMES]
    round_1 = [line for line in lines if line.startswith("round_1")][-1].split()
    assert round_1[1 + CLASS_NAMES.index("sky")] == "50.0" and round_1[1 + CLASS_NAMES.index("train")] == "-"
    assert len({summary.SHORT_NAMES.get(c, c) for c in CLASS_NAMES}) == 19


def test_multi_seed_aggregate_writes_mean_and_std(tmp_path):
    def run(seed, final):
        rows = [{"name": n, "miou": m, "pixel_accuracy": 50.0 + m / 10, "per_class_iou": {"road": m, "train": None}}
                for n, m in (("source_only", 10.0), ("round_1", final), ("oracle", 50.0))]
        return summary.build(rows, run_dir=f"r/seed_{seed}")

    agg = summary.aggregate({0: run(0, 30.0), 1: run(1, 34.0), 2: run(2, 32.0)})
    summary.write(tmp_path, agg)
    md = (tmp_path / summary.MARKDOWN_FILE).read_text()
    table = _markdown_table(md)
    assert table[0] == ["stage", "mIoU", "pixel acc", "road", "train"]  # the classes the rows have
    round_1 = next(r for r in table if r[0] == "`round_1`")
    assert round_1 == ["`round_1`", "32.0 ± 2.0", "53.2 ± 0.2", "32.0", "-"]
    assert "= 55.0 ± 5.0%" in md and "mean ± std over seeds [0, 1, 2]" in md
    with open(tmp_path / summary.CSV_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-2:] == ["miou_std", "pixel_accuracy_std"]
    r1 = next(r for r in rows if r["stage"] == "round_1")
    assert (r1["miou"], r1["miou_std"], r1["road"], r1["sidewalk"]) == ("32.00", "2.00", "32.00", "")
    assert "per-class IoU (%), means over seeds" in summary.table(agg)


def test_rows_without_per_class_iou_and_nan(tmp_path):
    rows = [{"name": "source_only", "miou": 10.0, "pixel_accuracy": float("nan")},
            {"name": "teacher", "miou": None, "pixel_accuracy": 60.0, "per_class_iou": None}]
    result = summary.build(rows)
    summary.write(tmp_path, result)
    assert _markdown_table((tmp_path / summary.MARKDOWN_FILE).read_text()) == [
        ["stage", "mIoU", "pixel acc"], ["---", "---:", "---:"], ["`source_only`", "10.0", "-"], ["`teacher`", "-", "60.0"]]
    lines = (tmp_path / summary.CSV_FILE).read_text().splitlines()
    assert lines[1] == "source_only,10.00," + "," * 19 and lines[2] == "teacher,,60.00" + "," * 19
    assert "per-class" not in summary.table(result)
    assert json.loads((tmp_path / summary.SUMMARY_FILE).read_text())["stages"][0]["pixel_accuracy"] is None


def test_markdown_gap_line_only_when_present():
    rows = [_row("teacher", 20.0, 0.0)]
    assert "gap closed" not in summary.markdown(summary.build(rows))
    assert summary.markdown(summary.build(rows)).endswith("|\n")


def test_files_are_written_atomically(tmp_path, monkeypatch):
    from udas_ray import atomic

    written = []
    real = atomic.write_text
    monkeypatch.setattr(atomic, "write_text", lambda path, text: written.append(path.name) or real(path, text))
    summary.write(tmp_path, _summary())
    assert written == list(summary.FILES)
