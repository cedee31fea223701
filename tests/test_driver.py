"""The driver: stage order, manifest, summary, MLflow runs, resume, refusing a foreign run.dir."""

import json

import pytest

from udas_ray import driver as driver_mod
from udas_ray.data.splits import load_splits
from udas_ray.driver import Pipeline, check_run_dir, plan
from udas_ray.errors import UdasError
from udas_ray.stages import segment


def test_plan_reads_like_the_paper_table(tiny_cfg):
    cfg = tiny_cfg.override({"run.baselines": True, "self_training.rounds": 2})
    names = [s.name for s in plan(cfg.override({"data.target.labeled": 0}))]
    assert names == ["source_only", "source_randomized", "teacher", "pseudo_1", "round_1", "pseudo_2", "round_2",
                     "oracle"]
    # with labeled target images the baselines include SL, trained on those images alone
    assert [s.name for s in plan(cfg)][:4] == ["source_only", "source_randomized", "supervised", "teacher"]
    assert [s.name for s in plan(tiny_cfg) if s.row] == ["teacher", "round_1"]
    assert [s.name for s in plan(tiny_cfg.override({"run.supervised": True})) if s.row] == [
        "supervised", "teacher", "round_1"]


def test_stop_after_ends_the_plan_at_that_stage_and_may_change_on_resume(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"run.baselines": True, "self_training.rounds": 2, "data.target.labeled": 0})
    assert [s.name for s in plan(cfg.override({"run.stop_after": "teacher"}))] == [
        "source_only", "source_randomized", "teacher"]
    assert [s.name for s in plan(cfg.override({"run.stop_after": "oracle"}))] == [s.name for s in plan(cfg)]
    with pytest.raises(UdasError, match=r"run.stop_after='style_refined' is not a stage of this run; its stages: "
                                        r"source_only, source_randomized, teacher, pseudo_1"):
        plan(cfg.override({"run.stop_after": "style_refined"}))
    # a run stopped after its teacher goes on in the same run.dir without the key
    stopped = cfg.override({"run.dir": str(tmp_path / "run"), "run.stop_after": "teacher"})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / driver_mod.CONFIG_FILE).write_text(stopped.to_yaml())
    check_run_dir(stopped.override({"run.stop_after": None}))


def test_pipeline_writes_summary_manifest_and_nested_mlflow_runs(ray_session, tiny_cfg):
    # the fewest baselines: no randomized source-only row, no SL row
    cfg = tiny_cfg.override({"run.baselines": True, "augment.randomize.enabled": False,
                             "data.rare_class_sampling.enabled": False, "data.target.labeled": 0})
    result = Pipeline(cfg, load_splits(cfg)).run()
    run_dir = cfg.run.dir
    summary = json.loads(open(f"{run_dir}/summary.json").read())
    assert [s["name"] for s in summary["stages"]] == ["source_only", "teacher", "round_1", "oracle"]
    for row in summary["stages"]:
        assert 0 <= row["miou"] <= 100 and 0 <= row["pixel_accuracy"] <= 100
        assert set(row["per_class_iou"]) == set(__import__("udas_ray.classes").classes.CLASS_NAMES)
        assert row["checkpoint"] == "last"
    assert summary["stages"] == result["stages"]
    manifest = json.loads(open(f"{run_dir}/manifest.json").read())
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert 0 <= manifest["stages"]["pseudo_1"]["metrics"]["kept_share"] <= 1

    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    runs = client.search_runs([exp.experiment_id])
    parent = manifest["parent_run_id"]
    children = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert children == {"source_only", "teacher", "pseudo_1", "round_1", "oracle"}
    assert "miou_round_1" in client.get_run(parent).data.metrics
    pseudo_run = next(r for r in runs if r.info.run_name == "pseudo_1")
    assert "pseudo_miou" in pseudo_run.data.metrics and "kept_share" in pseudo_run.data.metrics


def test_tracking_off_runs_without_mlflow(ray_session, tiny_cfg, monkeypatch):
    """mlflow.enabled=false: a node without MLflow trains; results are in the run folder alone."""
    from udas_ray import tracking

    def no_mlflow(*args, **kwargs):
        raise AssertionError("MLflow was used with mlflow.enabled=false")

    monkeypatch.setattr(tracking, "_client", no_mlflow)
    cfg = tiny_cfg.override({"mlflow.enabled": False, "run.stop_after": "teacher"})
    assert cfg.tracking_uri is None
    Pipeline(cfg, load_splits(cfg)).run()
    summary = json.loads(open(f"{cfg.run.dir}/summary.json").read())
    assert [s["name"] for s in summary["stages"]] == ["teacher"]
    manifest = json.loads(open(f"{cfg.run.dir}/manifest.json").read())
    assert manifest.get("parent_run_id") is None and "mlflow_run_id" not in manifest["stages"]["teacher"]
    assert not list(__import__("pathlib").Path(cfg.run.dir).glob("mlflow.db"))


def test_a_failed_round_resumes_without_retraining_the_teacher(ray_session, tiny_cfg, monkeypatch):
    real = segment.run_on_ray
    trained = []

    def failing(cfg, spec, storage, callbacks=None):
        trained.append(spec.name)
        if spec.name == "round_1":
            raise RuntimeError("killed")
        return real(cfg, spec, storage)

    monkeypatch.setattr(segment, "run_on_ray", failing)
    splits = load_splits(tiny_cfg)
    with pytest.raises(RuntimeError, match="killed"):
        Pipeline(tiny_cfg, splits).run()
    manifest = json.loads(open(f"{tiny_cfg.run.dir}/manifest.json").read())
    assert manifest["stages"]["teacher"]["status"] == "done"
    assert manifest["stages"]["round_1"]["status"] == "failed"
    stats = f"{tiny_cfg.run.dir}/pseudo/round_1/stats.json"
    stats_mtime = __import__("os").path.getmtime(stats)

    trained.clear()
    monkeypatch.setattr(segment, "run_on_ray", lambda cfg, spec, storage, callbacks=None: trained.append(spec.name) or real(cfg, spec, storage))
    Pipeline(tiny_cfg, splits).run()
    assert trained == ["round_1"]  # the teacher and its pseudo-labels were reused
    assert __import__("os").path.getmtime(stats) == stats_mtime
    again = json.loads(open(f"{tiny_cfg.run.dir}/manifest.json").read())
    assert again["parent_run_id"] == manifest["parent_run_id"]  # the same MLflow parent, continued
    assert again["stages"]["teacher"]["mlflow_run_id"] == manifest["stages"]["teacher"]["mlflow_run_id"]


def test_the_teacher_can_start_from_the_supervised_model(ray_session, tiny_cfg, monkeypatch):
    cfg = tiny_cfg.override({"self_training.teacher_init": "supervised", "self_training.rounds": 0})
    # the supervised stage runs although run.baselines and run.supervised are off, and is a row
    assert [s.name for s in plan(cfg)] == ["supervised", "teacher"]
    assert next(s for s in plan(cfg) if s.name == "teacher").parents == ["supervised"]
    real, started = segment.run_on_ray, {}

    def recording(cfg, spec, storage, callbacks=None):
        started[spec.name] = (spec.init, spec.steps)
        return real(cfg, spec, storage)

    monkeypatch.setattr(segment, "run_on_ray", recording)
    result = Pipeline(cfg, load_splits(cfg)).run()
    manifest = json.loads(open(f"{cfg.run.dir}/manifest.json").read())
    assert started["supervised"] == (None, cfg.train.steps)
    assert started["teacher"] == (manifest["stages"]["supervised"]["model"], cfg.train.steps)
    assert [row["name"] for row in result["stages"]] == ["supervised", "teacher"]
    # without labeled target images there is nothing to start from: the teacher starts from scratch
    unlabeled = cfg.override({"data.target.labeled": 0})
    assert [s.name for s in plan(unlabeled)] == ["teacher"]
    assert plan(unlabeled)[0].parents == []


def test_a_run_dir_of_another_config_is_refused_unless_fresh(tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / driver_mod.CONFIG_FILE).write_text(tiny_cfg.to_yaml())
    check_run_dir(tiny_cfg)  # same config: fine
    check_run_dir(tiny_cfg.override({"scaling.num_workers": 2}))  # how, not what: fine
    with pytest.raises(UdasError, match=r"loss\.lambda_adv: 0\.01 -> 0\.5.*run\.fresh=true"):
        check_run_dir(tiny_cfg.override({"loss.lambda_adv": 0.5}))
    check_run_dir(tiny_cfg.override({"loss.lambda_adv": 0.5, "run.fresh": True}))


def test_a_run_saved_with_relative_paths_resumes_with_absolute_ones(tiny_cfg, tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    relative = tiny_cfg.override({"run.dir": "run", "data.source.root": os.path.relpath(tiny_cfg.data.source.root)})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / driver_mod.CONFIG_FILE).write_text(relative.to_yaml())
    check_run_dir(relative.override({"run.dir": str(tmp_path / "run"),
                                     "data.source.root": tiny_cfg.data.source.root}))


def test_style_transfer_runs_first_feeds_the_teacher_and_is_skipped_on_resume(ray_session, tiny_cfg, monkeypatch):
    cfg = tiny_cfg.override({"style.enabled": True, "style.steps": 2, "style.image_size": [32, 64],
                             "style.sample_every": 2, "style.checkpoint_every": 2, "style.ngf": 4, "style.ndf": 4,
                             "style.n_blocks": 1, "style.cpus_per_actor": 0.5, "self_training.rounds": 0})
    assert [s.name for s in plan(cfg)] == ["style", "style_transfer", "teacher"]
    seen = {}
    real = segment.run_on_ray

    def spy(cfg, spec, storage, callbacks=None):
        seen[spec.name] = spec.streams.sup[0][0]
        return real(cfg, spec, storage, callbacks)

    monkeypatch.setattr(segment, "run_on_ray", spy)
    result = Pipeline(cfg, load_splits(cfg)).run()
    assert [r["name"] for r in result["stages"]] == ["style_transfer", "teacher"]
    restyled = f"{cfg.run.dir}/style/source/images"
    assert seen["style_transfer"].startswith(restyled) and seen["teacher"].startswith(restyled)

    from udas_ray.stages import style

    monkeypatch.setattr(style, "run_on_ray", lambda *a, **k: pytest.fail("style retrained on resume"))
    Pipeline(cfg, load_splits(cfg)).run()


def test_seed_summaries_aggregate_to_mean_and_sample_std():
    from udas_ray import summary

    def run(seed, teacher, final):
        rows = [{"name": n, "miou": m, "pixel_accuracy": 50.0 + m / 10, "per_class_iou": {"road": m, "train": None}}
                for n, m in (("source_only", 10.0), ("teacher", teacher), ("round_1", final), ("oracle", 50.0))]
        return summary.build(rows, run_dir=f"r/seed_{seed}")

    agg = summary.aggregate({0: run(0, 20.0, 30.0), 1: run(1, 22.0, 34.0), 2: run(2, 24.0, 32.0)})
    rows = {r["name"]: r for r in agg["stages"]}
    assert rows["teacher"]["miou"] == pytest.approx(22.0) and rows["teacher"]["miou_std"] == pytest.approx(2.0)
    assert rows["round_1"]["miou"] == pytest.approx(32.0) and rows["round_1"]["miou_std"] == pytest.approx(2.0)
    assert rows["round_1"]["per_class_iou"] == {"road": pytest.approx(32.0), "train": None}
    # gap closed per seed: 50, 60, 55 % -> 55 ± 5
    assert agg["gap_closed"] == pytest.approx(55.0) and agg["gap_closed_std"] == pytest.approx(5.0)
    assert agg["seeds"] == [0, 1, 2] and all(r["checkpoint"] == "last" for r in agg["stages"])
    text = summary.table(agg)
    assert "32.00 ±  2.00" in text and "mean ± std over seeds [0, 1, 2]" in text


def test_budgets_resolve_counts_fractions_and_all():
    from udas_ray.budgets import resolve_budgets

    assert resolve_budgets(["all", 1000, 500, 100, 0], 2975) == [2975, 1000, 500, 100, 0]
    assert resolve_budgets(["all", 0.336, 0.168, 0.034, 0], 600) == [600, 202, 101, 20, 0]
    with pytest.raises(UdasError, match="3000 labeled images asked for but the target train split holds 2975"):
        resolve_budgets([3000], 2975)
    with pytest.raises(UdasError, match="'some'"):
        resolve_budgets(["some"], 10)


def test_budget_table_has_deltas_baselines_and_seed_spread(tmp_path):
    from udas_ray import budgets

    def result(stages, run_dir):
        return {"stages": [{"name": n, "miou": v} for n, v in stages], "run_dir": run_dir}

    results = {
        (20, 0): result([("supervised", 30.0), ("teacher", 31.0), ("round_1", 35.0)], "a"),
        (20, 1): result([("supervised", 32.0), ("teacher", 30.0), ("round_1", 33.0)], "b"),
        (0, 0): result([("source_only", 15.0), ("teacher", 20.0), ("round_1", 24.0), ("oracle", 45.0)], "c"),
    }
    table, baselines = budgets.table_rows(results)
    assert [r["labeled"] for r in table] == [20, 0]
    twenty = table[0]
    assert (twenty["supervised"], twenty["udas"], twenty["delta"], twenty["seeds"]) == (31.0, 34.0, 3.0, 2)
    assert twenty["delta_std"] == pytest.approx(2 ** 1.5)  # deltas 5 and 1: sample std 2*sqrt(2)
    assert twenty["supervised_std"] == pytest.approx(2 ** 0.5) and twenty["udas_stage"] == "round_1"
    zero = table[1]
    assert zero["supervised"] is None and zero["delta"] is None and zero["udas_std"] is None
    assert baselines == {"source_only": {"mean": 15.0, "std": None}, "oracle": {"mean": 45.0, "std": None}}
    text = budgets.format_table(table, baselines)
    assert "31.0 ± 1.4" in text and "3.0 ± 2.8" in text and "source_only: 15.0" in text
    png = budgets.plot(table, baselines, tmp_path / "dd.png", "title")
    assert png.stat().st_size > 1000
    data = json.loads(budgets.write_table(table, baselines, tmp_path / "dd.json").read_text())
    assert data["budgets"][0]["delta"] == 3.0 and data["baselines"]["oracle"]["mean"] == 45.0
