"""bench/suite.py: the table of one recipe over the suite of pairs (mean over pairs, worst pair,
paired differences and the rule for defaults), the baselines it shares between recipes, and a
tiny suite run end to end."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))  # the scripts import bench/common.py as ``common``, as when run from there
spec = importlib.util.spec_from_file_location("suite", BENCH / "suite.py")
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)


def _cell(so, teacher, r1, r2, oracle, **extra):
    return {"source_only": so, "teacher": teacher, "round_1": r1, "round_2": r2, "oracle": oracle,
            "final": r2, "final_stage": "round_2", "per_class": {}, **extra}


RESULTS = {  # two pairs, two seeds
    "street": {0: _cell(20, 30, 32, 34, 40), 1: _cell(20, 28, 30, 32, 44)},  # gap closed 70 %, 50 %
    "sensor": {0: _cell(10, 14, 15, 16, 30), 1: _cell(12, 15, 13, 14, 32)},  # 30 %, 10 %; round_1 dips below teacher
}


def test_table_gives_each_pair_the_mean_over_pairs_and_the_worst_pair():
    text = suite.table("rand", {"augment.randomize.enabled": True}, "full", 0, RESULTS, None, None)
    assert "Recipe `rand` (augment.randomize.enabled=True), full length, 0 labeled target images, seeds 0, 1" in text
    assert "| street | 20.0 ± 0.0 | 29.0 ± 1.4 | 31.0 ± 1.4 | 33.0 ± 1.4 | 42.0 ± 2.8 | 60.0 ± 14.1 |" in text
    assert "| sensor | 11.0 ± 1.4 | 14.5 ± 0.7 | 14.0 ± 1.4 | 15.0 ± 1.4 | 31.0 ± 1.4 | 20.0 ± 14.1 |" in text
    # per seed the pair average (seed 0: 50 %, seed 1: 30 %), then mean ± std over seeds
    assert "| **mean over pairs** | 15.5 ± 0.7 | 21.8 ± 0.4 | 22.5 ± 1.4 | 24.0 ± 1.4 | 36.5 ± 2.1 | 40.0 ± 14.1 |" in text
    assert "Worst pair: **sensor** (sensor and light" in text and "20.0 ± 14.1 % of its gap closed" in text
    assert "Not source_only < teacher <= round_1 <= round_2 in the mean on: sensor." in text


def test_labeled_table_adds_sl_and_the_difference_to_it():
    results = {p: {s: {**c, "supervised": c["source_only"] + 5} for s, c in seeds.items()}
               for p, seeds in RESULTS.items()}
    text = suite.table("rand", {}, "full", 30, results, None, None)
    assert "| pair | source_only | teacher | round_1 | round_2 | oracle | gap closed (%) | SL | round_2 - SL |" in text
    assert "| street | 20.0 ± 0.0 | 29.0 ± 1.4 | 31.0 ± 1.4 | 33.0 ± 1.4 | 42.0 ± 2.8 | 60.0 ± 14.1 | 25.0 ± 0.0 | 8.0 ± 1.4 |" in text


def test_paired_differences_and_the_rule_for_defaults():
    better = {p: {s: _cell(c["source_only"], c["teacher"], c["round_1"], c["round_2"] + 2, c["oracle"])
                  for s, c in seeds.items()} for p, seeds in RESULTS.items()}
    text = suite.table("better", {}, "full", 0, better, "today", RESULTS)
    assert "| street | 20.0 ± 0.0 | 29.0 ± 1.4 | 31.0 ± 1.4 | 35.0 ± 1.4 | 42.0 ± 2.8 | 69.2 ± 15.3 | 2.0 ± 0.0 |" in text
    assert "suite mean 2.0 ± 0.0 mIoU (paired); pairs losing more than their seed spread: none; meets both " \
           "conditions of the rule, but a default needs 3 seeds at full length (2 seeds: rank only)" in text
    three = {p: {**seeds, 2: seeds[0]} for p, seeds in RESULTS.items()}
    better3 = {p: {**seeds, 2: seeds[0]} for p, seeds in better.items()}
    assert "none; passes the rule for defaults." in suite.table("better", {}, "full", 0, better3, "today", three)
    assert "(short runs: rank only)" in suite.table("better", {}, "short", 0, better3, "today", three)
    # a gain on one pair that costs another more than its seed spread is not a default
    mixed = {"street": {s: _cell(20, 30, 32, c["round_2"] + 8, c["oracle"]) for s, c in RESULTS["street"].items()},
             "sensor": {s: _cell(10, 14, 15, c["round_2"] - 3, c["oracle"]) for s, c in RESULTS["sensor"].items()}}
    s = suite.summarize(mixed, RESULTS)
    assert s["rule"]["losers"] == ["sensor"] and not s["rule"]["passes"]
    assert "does not pass the rule" in suite.table("mixed", {}, "full", 0, mixed, "today", RESULTS)
    one_seed = {p: {0: c[0]} for p, c in better.items()}
    text = suite.table("better", {}, "short", 0, one_seed, "today", RESULTS)
    assert "does not pass the rule for defaults (short runs: rank only)" in text


def test_recipes_share_baselines_only_when_they_train_them_the_same_way(tmp_path):
    from udas_ray.config import load_config

    base = load_config("default")
    view = suite.baseline_view(base.flat())
    assert suite.baseline_view(base.override({"loss.lambda_adv": 0.1, "augment.randomize.enabled": True,
                                              "train.adabn": False, "pseudo.threshold": 0.5}).flat()) == view
    for key, value in (("train.steps", 100), ("model.name", "deeplabv2_resnet18"), ("data.target.labeled", 30),
                       ("augment.flip", False)):
        assert suite.baseline_view(base.override({key: value}).flat()) != view, key
    run = tmp_path / "a" / "street" / "seed_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(base.override({"run.baselines": True}).to_yaml())
    assert suite.baseline_holder(tmp_path, "street", 0, view) == run
    assert suite.baseline_holder(tmp_path, "street", 1, view) is None
    assert suite.baseline_holder(tmp_path, "street", 0, suite.baseline_view(
        base.override({"train.steps": 100}).flat())) is None


def test_a_recipe_name_keeps_its_overrides(tmp_path):
    record = tmp_path / "rand" / "recipe.json"
    suite.check_recipe(record, "conf/default.yaml", {"augment.randomize.enabled": True})
    suite.check_recipe(record, "conf/default.yaml", {"augment.randomize.enabled": True})
    with pytest.raises(SystemExit, match="recipe 'rand' was run with .*another --recipe name"):
        suite.check_recipe(record, "conf/default.yaml", {"augment.randomize.enabled": False})


def test_bad_arguments_stop_before_any_run(tmp_path):
    with pytest.raises(SystemExit, match="unknown pair.*snow"):
        suite.main(["--recipe", "x", "--pairs", "street,snow", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="loss.lamda_adv"):
        suite.main(["--recipe", "x", "--out", str(tmp_path), "loss.lamda_adv=0.1"])
    assert not any(tmp_path.iterdir())


TINY = """extends: {default}
data:
  image_size: [32, 64]
  scenes: {{num_source: 6, num_target_train: 6, num_target_val: 3, source_size: [32, 64], target_size: [32, 64]}}
train: {{steps: 2, batch_size: 2, eval_every: 2, checkpoint_every: 2, log_every: 2}}
self_training: {{rounds: 1}}
pseudo: {{actors: 1, batch_size: 4, cpus_per_actor: 0.5}}
scaling: {{num_workers: 0, cpus_per_worker: 1, data_cpus: 0.25}}
"""


def test_a_tiny_suite_writes_its_table(tmp_path):
    """Two pairs, two-step stages, one seed; then a second recipe against the first on one of them,
    on the first's baselines."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(default=BENCH.parent / "conf" / "default.yaml"))
    out = tmp_path / "results"

    def run(*args):
        proc = subprocess.run([sys.executable, str(BENCH / "suite.py"), "--config", str(config), "--out", str(out),
                               *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    text = run("--recipe", "today", "--pairs", "street,engine")
    today_md = (out / "full" / "labels_0" / "today.md").read_text()
    assert "| street |" in today_md and "| engine |" in today_md and "| **mean over pairs** |" in today_md
    assert "Worst pair: **" in today_md and today_md.strip() in text
    text = run("--recipe", "adv", "--against", "today", "--pairs", "engine", "loss.lambda_adv=0.1")
    folder = out / "full" / "labels_0"
    md = (folder / "adv.md").read_text()
    assert md.strip() in text
    assert "| engine |" in md and "| street |" not in md and "| **mean over pairs** |" in md
    assert "Worst pair: **engine**" in md and "round_2 - today (paired)" in md  # rounds=1: round_1 is the final stage
    result = json.loads((folder / "adv.json").read_text())
    assert set(result["results"]) == {"engine"} and result["summary"]["worst"] == "engine"
    assert result["overrides"] == {"loss.lambda_adv": 0.1}
    # the second recipe trained no baselines of its own: they are the first recipe's, pair by pair
    for pair in ("engine",):
        adv, today = folder / "adv" / pair / "seed_0", folder / "today" / pair / "seed_0"
        assert "source_only" not in {r["name"] for r in json.loads((adv / "summary.json").read_text())["stages"]}
        assert json.loads((adv / "suite_run.json").read_text())["baselines_from"] == str(today)
        rows = {r["name"]: r["miou"] for r in json.loads((today / "summary.json").read_text())["stages"]}
        assert result["results"][pair]["0"]["source_only"] == rows["source_only"]
    assert (tmp_path / "data" / "scenes" / "engine" / "source" / "scenes.json").is_file()
