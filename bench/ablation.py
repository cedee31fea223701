"""Ablation of what makes the rounds pay off, on the embedded benchmark.

    python bench/ablation.py [--config conf/default.yaml] [--rows full,no_randomize,...] [key=value ...]

Runs the pipeline once per row (each in bench/results/ablation/<row>), the baselines once (in
the first row), and writes the table of the final mIoU and the share of the domain gap closed,
(final - source_only) / (oracle - source_only), to bench/results/ablation.md and into
docs/RESULTS.md between its ablation markers. Rows resume like any run: rerunning skips finished stages.
"""

import argparse
import json
import re
from pathlib import Path

import ray
import yaml

from udas_ray.cli import DEFAULT_CONFIG
from udas_ray.cluster import connect
from udas_ray.config import flatten, load_config
from udas_ray.data.splits import load_splits
from udas_ray.driver import driver_actor

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def stated_keys(path: Path) -> dict:
    """The dotted keys a config file states itself, not those of the file it extends: a row
    taken from a file is those overrides on top of --config, like every other row."""
    tree = yaml.safe_load(path.read_text()) or {}
    tree.pop("extends", None)
    return flatten(tree)


# name -> (what it shows, overrides on top of the config)
ROWS = {
    "paper": ("the paper's recipe, conf/paper.yaml: global threshold, plain students, no randomization, "
              "no AdaBN, lambda_adv 0.001, lr 2.5e-3", stated_keys(ROOT / "conf" / "paper.yaml")),
    "full": ("the default recipe, conf/default.yaml", {}),
    "no_adabn": ("teacher keeps its source BatchNorm statistics (no AdaBN)", {"train.adabn": False}),
    "no_randomize": ("without appearance randomization", {"augment.randomize.enabled": False}),
    "no_class_balance": ("global threshold instead of class-balanced", {"pseudo.selection": "global"}),
    "no_noisy_student": ("students without strong augmentation / source share",
                         {"self_training.noisy": False, "self_training.source_share": 0.0}),
    "rare_class_sampling": ("with rare-class sampling (off by default)", {"data.rare_class_sampling.enabled": True}),
    "ema": ("the online mean teacher instead of offline rounds", {"self_training.mode": "ema"}),
}


def table(results: dict, baselines: dict) -> str:
    so, oracle = baselines["source_only"], baselines["oracle"]
    lines = [f"source-only {so:.1f} mIoU, oracle {oracle:.1f} mIoU (gap {oracle - so:.1f}).", "",
             "| row | what | teacher | final stage | final mIoU | gap closed |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        closed = 100 * (r["final"] - so) / (oracle - so)
        lines.append(f"| {name} | {ROWS[name][0]} | {r['teacher']:.1f} | {r['final_stage']} | {r['final']:.1f} | {closed:.0f} % |")
    return "\n".join(lines)


def write_between_markers(doc: Path, text: str) -> None:
    """Put ``text`` between the document's ablation markers (replacing what was there)."""
    marked, found = re.subn(r"(<!-- ablation:start -->\n).*?(<!-- ablation:end -->)",
                            lambda m: m.group(1) + text + "\n" + m.group(2), doc.read_text(), flags=re.S)
    if not found:
        raise SystemExit(f"{doc}: no <!-- ablation:start --> / <!-- ablation:end --> markers to write the table between")
    doc.write_text(marked)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    names = args.rows.split(",")
    base = load_config(args.config, args.overrides)
    connect(base)
    Driver = driver_actor()
    results, baselines = {}, {}
    for i, name in enumerate(names):
        cfg = base.override({**ROWS[name][1], "run.dir": str(RESULTS / "ablation" / name), "run.baselines": i == 0,
                             "mlflow.tracking_uri": f"sqlite:///{RESULTS / 'ablation' / 'mlflow.db'}"})
        summary = ray.get(Driver.remote(cfg.to_dict(), load_splits(cfg)).run.remote())
        rows = {r["name"]: r["miou"] for r in summary["stages"]}
        baselines.update({k: rows[k] for k in ("source_only", "oracle") if k in rows})
        final = "ema" if "ema" in rows and not any(k.startswith("round_") for k in rows) else \
            [k for k in rows if k.startswith("round_")][-1]
        results[name] = {"teacher": rows["teacher"], "final_stage": final, "final": rows[final],
                         "rounds": {k: v for k, v in rows.items() if k.startswith("round_")}}
        print(name, json.dumps(results[name]), flush=True)
    text = table(results, baselines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ablation.md").write_text(text + "\n")
    (RESULTS / "ablation.json").write_text(json.dumps({"baselines": baselines, "rows": results}, indent=1))
    write_between_markers(ROOT / "docs" / "RESULTS.md", text)
    print(text)


if __name__ == "__main__":
    main()
