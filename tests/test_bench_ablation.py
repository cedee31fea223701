"""bench/ablation.py's and bench/compute_curve.py's tables, and how the ablation lands in docs/RESULTS.md
(the runs themselves are a benchmark)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))  # the scripts import bench/common.py as ``common``, as when run from there


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ablation, compute_curve = _load("ablation"), _load("compute_curve")


def test_table_gives_the_share_of_the_gap_closed():
    text = ablation.table({"full": {0: {"teacher": 21.0, "final_stage": "round_2", "final": 30.0}}},
                          {0: {"source_only": 20.0, "oracle": 40.0}})
    assert "source-only 20.0 mIoU, oracle 40.0 mIoU, seed 0." in text
    assert "| full | the default recipe, conf/default.yaml | 0 | 21.0 | round_2 | 30.0 | 50.0 | ref. |" in text


def test_table_over_seeds_uses_each_seeds_baselines_and_gives_mean_and_std():
    baselines = {0: {"source_only": 20.0, "oracle": 40.0}, 1: {"source_only": 10.0, "oracle": 50.0}}
    results = {"full": {0: {"teacher": 21.0, "final_stage": "round_2", "final": 30.0},  # closes 50 %
                        1: {"teacher": 23.0, "final_stage": "round_2", "final": 40.0}}}  # closes 75 %
    text = ablation.table(results, baselines)
    assert "source-only 15.0 ± 7.1 mIoU, oracle 45.0 ± 7.1 mIoU over seeds 0, 1 (mean ± std)." in text
    # teacher 22 ± 1.41, final 35 ± 7.07, gap closed 62.5 ± 17.68 (not the gap of the mean baselines)
    assert "| full | the default recipe, conf/default.yaml | 0, 1 | 22.0 ± 1.4 | round_2 | 35.0 ± 7.1 | 62.5 ± 17.7 | ref. |" in text


def test_table_with_labeled_target_gives_final_minus_sl_per_seed():
    baselines = {0: {"source_only": 20.0, "oracle": 40.0, "supervised": 30.0},
                 1: {"source_only": 20.0, "oracle": 40.0, "supervised": 26.0}}
    results = {"full": {0: {"teacher": 25.0, "final_stage": "round_2", "final": 34.0},   # SL + 4
                        1: {"teacher": 25.0, "final_stage": "round_2", "final": 32.0}}}  # SL + 6
    results["no_student_labels"] = {0: {"teacher": 25.0, "final_stage": "round_2", "final": 31.0}}  # full - 3
    text = ablation.table(results, baselines)
    assert ", SL 28.0 ± 2.8 mIoU over seeds 0, 1" in text
    assert text.splitlines()[2].endswith("| gap closed (%) | final - SL | final - full (same seeds) |")
    assert "| 0, 1 | 25.0 ± 0.0 | round_2 | 33.0 ± 1.4 | 65.0 ± 7.1 | 5.0 ± 1.4 | ref. |" in text
    # a row run on seed 0 only: its own mean, and its difference from full on seed 0 alone
    assert "| no_student_labels | students: no labeled share (pseudo-labels only) | 0 | 25.0 | round_2 | 31.0 | 55.0 | 1.0 | -3.0 |" in text


def test_collect_reads_every_finished_row_and_seed_and_the_baselines_from_the_row_that_trained_them(tmp_path):
    import json

    def finished(row, seed, stages):
        folder = tmp_path / row / f"seed_{seed}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"stages": [{"name": k, "miou": v} for k, v in stages.items()]}))

    finished("full", 0, {"source_only": 15.0, "supervised": 30.0, "teacher": 25.0, "round_1": 31.0, "round_2": 33.0, "oracle": 45.0})
    finished("full", 1, {"source_only": 16.0, "teacher": 24.0, "round_1": 30.0, "round_2": 32.0, "oracle": 44.0})
    finished("ema", 0, {"teacher": 25.0, "ema": 29.0})
    (tmp_path / "adabn" / "seed_0").mkdir(parents=True)  # started, never finished: no summary.json
    results, baselines = ablation.collect(tmp_path)
    assert list(results) == ["full", "ema"]  # ROWS order, unfinished rows left out
    assert results["full"][0] == {"teacher": 25.0, "final_stage": "round_2", "final": 33.0,
                                  "rounds": {"round_1": 31.0, "round_2": 33.0}}
    assert results["ema"][0]["final_stage"] == "ema" and results["ema"][0]["final"] == 29.0
    assert baselines == {0: {"source_only": 15.0, "oracle": 45.0, "supervised": 30.0},
                         1: {"source_only": 16.0, "oracle": 44.0}}


def test_every_ablation_row_is_a_valid_override_of_the_default_config():
    from udas_ray.config import load_config

    base = load_config(BENCH.parent / "conf" / "default.yaml", ["data.target.labeled=20"])
    for name, (_, overrides) in ablation.ROWS.items():
        row = base.override(overrides)  # an unknown key or a bad value raises here
        assert all(row.flat()[k] == (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()), name


def test_final_stage_is_the_last_round_or_the_ema_stage():
    assert ablation.final_stage({"teacher": 1, "round_1": 2, "round_2": 3, "ema": 4}) == "round_2"
    assert ablation.final_stage({"teacher": 1, "ema": 4}) == "ema"


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

    # another ablation (--name) has its own markers and leaves the first one's table alone
    readme.write_text("<!-- ablation:start -->\nold\n<!-- ablation:end -->\n<!-- labeled:start -->\n<!-- labeled:end -->\n")
    ablation.write_between_markers(readme, "labeled table", "labeled")
    assert readme.read_text() == ("<!-- ablation:start -->\nold\n<!-- ablation:end -->\n"
                                  "<!-- labeled:start -->\nlabeled table\n<!-- labeled:end -->\n")


def test_compute_curve_table_gives_one_row_per_step_count_with_seed_spread():
    run = {"source_only": 16.0, "teacher": 20.0, "final": 26.0, "oracle": 46.0, "gap_closed": 100 / 3, "minutes": 9.0}
    longer = {**run, "final": 31.0, "gap_closed": 50.0, "minutes": 20.0}
    text = compute_curve.table({2400: {0: longer}, 600: {0: run, 1: {**run, "final": 28.0, "gap_closed": 40.0}}})
    lines = text.splitlines()
    assert lines[2] == "| 600 | 0, 1 | 16.0 ± 0.0 | 20.0 ± 0.0 | 27.0 ± 1.4 | 46.0 ± 0.0 | 36.7 ± 4.7 | 9.0 ± 0.0 |"
    assert lines[3] == "| 2400 | 0 | 16.0 | 20.0 | 31.0 | 46.0 | 50.0 | 20.0 |"


@pytest.mark.parametrize("name", ["paper", "simgan"])
def test_ablation_rows_from_a_config_file_are_that_file(name):
    from udas_ray.config import diff, load_config

    conf = BENCH.parent / "conf"
    what, overrides = ablation.ROWS[name]
    assert f"conf/{name}.yaml" in what
    row = load_config(conf / "default.yaml").override(overrides)
    assert diff(row, load_config(conf / f"{name}.yaml")) == {}


def test_run_breakdown_splits_each_stage_into_its_phases_and_what_ray_costs_around_them(tmp_path):
    import json

    run_breakdown = _load("run_breakdown")
    run = tmp_path / "run"
    (run / "stages" / "teacher").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"stages": {
        "teacher": {"kind": "teacher", "started": 100.0, "finished": 160.0},
        "pseudo_1": {"kind": "pseudo", "started": 160.0, "finished": 170.0},
        "round_1": {"kind": "student", "started": 170.0}}}))  # still running: left out
    (run / "stages" / "teacher" / "timing.json").write_text(json.dumps(
        {"seconds": {"setup": 1.0, "first_batch": 2.0, "train_steps": 40.0, "data_wait": 1.0, "evaluate": 5.0,
                     "checkpoint_and_report": 0.5, "finish": 0.5}, "total": 50.0, "steps": 100}))
    (run / "stages" / "teacher" / "history.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 50, "steps_per_s": 1.0, "gflops_per_s": 40.0, "mfu": 0.1, "data_wait_share": 0.5},  # warm-up
        {"step": 100, "steps_per_s": 3.0, "gflops_per_s": 120.0, "mfu": 0.3, "data_wait_share": 0.01},
        {"step": 100, "val_miou": 20.0}]))
    result = run_breakdown.breakdown(run, wall=80.0)
    teacher = result["stages"]["teacher"]
    assert teacher["wall_s"] == 60.0 and teacher["outside_training_process_s"] == 10.0  # 60 s - 50 s inside
    assert teacher["steps_per_s"] == 3.0 and teacher["mfu"] == 0.3  # the warm-up window left out
    assert result["stages"]["pseudo_1"] == {"kind": "pseudo", "wall_s": 10.0}
    assert "round_1" not in result["stages"]
    assert result["stages_s"] == 70.0 and result["job_besides_stages_s"] == 10.0
    lines = run_breakdown.table(result).splitlines()
    assert lines[1].split()[:7] == ["teacher", "60.0", "41.0", "5.0", "0.5", "3.5", "10.0"]
    assert "job 80 s = stages 70 s + 10 s besides them" in run_breakdown.table(result)
    assert "mfu_of_peak" not in teacher  # no bench/peak.py result given
    # against bench/peak.py's peak: 120 GFLOP/s of 200 = 60 %, printed as the last column
    with_peak = run_breakdown.rescore(run_breakdown.breakdown(run, wall=80.0), 200.0)
    assert with_peak["stages"]["teacher"]["mfu_of_peak"] == 0.6 and with_peak["peak_gflops_per_s"] == 200.0
    assert run_breakdown.table(with_peak).splitlines()[1].split()[-1] == "60.0%"
    # an earlier result (its run folder gone) rescored against another peak
    rescored = run_breakdown.rescore(json.loads(json.dumps(with_peak)), 150.0)
    assert rescored["stages"]["teacher"]["mfu_of_peak"] == 0.8 and rescored["peak_gflops_per_s"] == 150.0
    assert "mfu_of_peak" not in run_breakdown.rescore(with_peak, None)["stages"]["teacher"]
    # a bf16 run is held against bench/peak.py's bfloat16 peak; a peak file without one is refused
    peaks = {"peak_gflops_per_s": 180.0, "peak_gflops_per_s_bf16": 400.0}
    assert run_breakdown.peak_of(peaks, run_breakdown.run_precision(["train.precision=bf16"]), Path("p")) == 400.0
    assert run_breakdown.peak_of(peaks, run_breakdown.run_precision([], run), Path("p")) == 180.0
    (run / "config.yaml").write_text("train: {precision: bf16}\n")
    assert run_breakdown.run_precision([], run) == "bf16"
    with pytest.raises(SystemExit, match="no bfloat16 peak"):
        run_breakdown.peak_of({"peak_gflops_per_s": 180.0}, "bf16", Path("p"))


def test_one_ablation_name_keeps_one_base(tmp_path):
    out = tmp_path / "ablation_labeled"
    ablation.check_same_base(out, "conf/default.yaml", ["data.target.labeled=20"])
    ablation.check_same_base(out, "conf/default.yaml", ["data.target.labeled=20"])  # the same base again: fine
    with pytest.raises(SystemExit, match="holds an ablation over another base .*data.target.labeled=20.*another --name"):
        ablation.check_same_base(out, "conf/default.yaml", ["data.target.labeled=30"])


def test_a_started_row_resumes_with_the_baselines_it_began_with(tmp_path):
    assert ablation.recorded_baselines(tmp_path / "never_started") is None
    (tmp_path / "config.yaml").write_text("run:\n  baselines: true\n  seed: 0\n")
    assert ablation.recorded_baselines(tmp_path) is True


def test_peak_keeps_the_float32_peak_apart_from_the_bfloat16_one():
    peak = _load("peak")
    rows = {"matmul": {"gflops_per_s_best": 180.0}, "conv": {"gflops_per_s_best": 170.0},
            "matmul bf16": {"gflops_per_s_best": 410.0}, "conv bf16": {"gflops_per_s_best": 460.0}}
    assert peak.fastest(rows, {"matmul bf16", "conv bf16"}) == ("matmul", "conv bf16")
    assert set(peak.bf16_workloads(64)) == {"matmul 64x64 bfloat16", "conv3x3 64->64 (8,64,96,192) channels_last bfloat16"}


def test_run_breakdown_refuses_a_missing_run_and_a_foreign_peak_file_in_one_line(tmp_path, monkeypatch, capsys):
    run_breakdown = _load("run_breakdown")
    out = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", ["run_breakdown.py", "--read", str(tmp_path / "gone"), "--out", str(out)])
    with pytest.raises(SystemExit, match="gone: no such run folder or result file"):
        run_breakdown.main()
    result = tmp_path / "result.json"
    result.write_text('{"stages": {}, "stages_s": 0}')
    not_a_peak = tmp_path / "peak.json"
    not_a_peak.write_text('{"gflops": 1}')
    monkeypatch.setattr(sys, "argv", ["run_breakdown.py", "--read", str(result), "--peak", str(not_a_peak),
                                      "--out", str(out)])
    with pytest.raises(SystemExit, match="peak.json: not a bench/peak.py result"):
        run_breakdown.main()
    assert not out.exists()
