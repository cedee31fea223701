"""bench/ablation.py's table and how it lands in docs/RESULTS.md (the runs themselves are a benchmark)."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("ablation", Path(__file__).resolve().parent.parent / "bench" / "ablation.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def test_table_gives_the_share_of_the_gap_closed():
    text = ablation.table({"full": {"teacher": 21.0, "final_stage": "round_2", "final": 30.0}},
                          {"source_only": 20.0, "oracle": 40.0})
    assert "gap 20.0" in text
    assert "| full | the default recipe, conf/default.yaml | 21.0 | round_2 | 30.0 | 50 % |" in text


def test_results_markers_are_filled_and_refilled(tmp_path):
    readme = tmp_path / "RESULTS.md"
    readme.write_text("before\n<!-- ablation:start -->\n<!-- ablation:end -->\nafter\n")
    ablation.write_between_markers(readme, "first table")
    ablation.write_between_markers(readme, "second table")
    assert readme.read_text() == "before\n<!-- ablation:start -->\nsecond table\n<!-- ablation:end -->\nafter\n"

    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="RESULTS.md: no <!-- ablation:start -->"):
        ablation.write_between_markers(readme, "table")
    assert readme.read_text() == "no markers here\n"
