"""docs/EXTENDING.md's example stage kind, run as the page shows it: one entry of KINDS is enough
for the plan, the driver, the recorded inputs and resume."""

import json
import re
from pathlib import Path

import pytest

from udas_ray.data.splits import load_splits
from udas_ray.driver import Pipeline, plan
from udas_ray.stages import kinds

DOC = Path(__file__).resolve().parent.parent / "docs" / "EXTENDING.md"


def example_code() -> str:
    """The python block right after the page's example marker."""
    found = re.search(r"<!-- the example kind: tests/test_extending.py runs this block -->\n```python\n(.*?)```",
                      DOC.read_text(), flags=re.S)
    assert found, f"{DOC}: the example kind's block is gone"
    return found.group(1)


@pytest.fixture
def example_kind():
    """The page's example registered for one test, and removed after it."""
    before = set(kinds.KINDS)
    exec(example_code(), {})
    added = set(kinds.KINDS) - before
    assert added == {"source_entropy"}
    yield kinds.KINDS["source_entropy"]
    for name in added:
        del kinds.KINDS[name]


def test_the_example_kind_joins_the_plan_when_its_config_asks(example_kind, tiny_cfg):
    assert "source_entropy" not in [s.name for s in plan(tiny_cfg)]  # loss.lambda_entropy is 0
    cfg = tiny_cfg.override({"loss.lambda_entropy": 0.1})
    stages = plan(cfg)
    assert [s.name for s in stages] == ["teacher", "pseudo_1", "round_1", "source_entropy"]
    assert stages[-1].row and stages[-1].parents == []
    assert example_kind.splits_read(cfg, restyled=False) == ("target_val", "source", "target_train")
    spec = kinds.build_spec(cfg, load_splits(cfg), "source_entropy", "source_entropy", "unused")
    assert spec.terms == ("seg", "entropy") and spec.streams.has_target


def test_the_example_kind_runs_in_the_pipeline_and_is_reused_on_resume(example_kind, ray_session, tiny_cfg):
    cfg = tiny_cfg.override({"loss.lambda_entropy": 0.1, "self_training.rounds": 0})
    result = Pipeline(cfg, load_splits(cfg)).run()
    assert [row["name"] for row in result["stages"]] == ["teacher", "source_entropy"]
    run_dir = Path(cfg.run.dir)
    entry = json.loads((run_dir / "manifest.json").read_text())["stages"]["source_entropy"]
    assert entry["status"] == "done" and entry["kind"] == "source_entropy"
    assert Path(entry["model"]).is_file() and set(entry["fingerprint"]["files"]) == {"source", "target_train",
                                                                                     "target_val"}
    history = [json.loads(line) for line in (run_dir / "stages" / "source_entropy" / "history.jsonl").open()]
    assert any("loss_entropy" in r for r in history)

    again = Pipeline(cfg, load_splits(cfg)).run()  # nothing changed: both stages reused
    assert again["stages"] == result["stages"]
    assert json.loads((run_dir / "manifest.json").read_text())["stages"]["source_entropy"] == entry
