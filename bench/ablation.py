"""Ablation of what makes the rounds pay off, on the embedded benchmark.

    python bench/ablation.py [--config conf/default.yaml] [--rows full,no_randomize,...] [--seeds 0,1,2] [key=value ...]

Runs the pipeline once per row and seed (each in bench/results/ablation/<row>/seed_<s>), the
baselines once per seed (in the first row), and writes the table of the teacher's and the final
mIoU and the share of the domain gap closed, (final - source_only) / (oracle - source_only) with
each seed's own baselines, as mean ± sample std over the seeds, to bench/results/ablation.md and
into docs/RESULTS.md between its ablation markers. Rows resume like any run: rerunning skips
finished stages.
"""

import argparse
import json
import re
from pathlib import Path

import ray
import yaml

from common import mean_std
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
    "randomize_no_rcs": ("appearance randomization on, rare-class sampling off (the recipe before 2026-12-06)",
                         {"augment.randomize.enabled": True, "data.rare_class_sampling.enabled": False}),
    "no_adabn": ("teacher keeps its source BatchNorm statistics (no AdaBN)", {"train.adabn": False}),
    "no_class_balance": ("global threshold instead of class-balanced", {"pseudo.selection": "global"}),
    "no_noisy_student": ("students without strong augmentation / source share",
                         {"self_training.noisy": False, "self_training.source_share": 0.0}),
    "mic": ("masked image consistency in the students (MIC, weight 1, 8-pixel squares)", {"loss.lambda_mic": 1.0}),
    "source_classmix": ("students paste source classes onto half their images", {"self_training.source_classmix": 0.5}),
    "scale_crop": ("random rescale x0.5-2 and crop of every training image", {"augment.scale": [0.5, 2.0]}),
    "multiscale_views": ("pseudo-labels from views at 0.75, 1 and 1.25x", {"pseudo.scales": [0.75, 1.0, 1.25]}),
    "ema": ("the online mean teacher instead of offline rounds", {"self_training.mode": "ema"}),
}


def table(results: dict, baselines: dict) -> str:
    """``results[row][seed]`` = {"teacher", "final_stage", "final"}; ``baselines[seed]`` =
    {"source_only", "oracle"}. Gap closed per seed with that seed's baselines."""
    seeds = sorted(baselines)
    so = [baselines[s]["source_only"] for s in seeds]
    oracle = [baselines[s]["oracle"] for s in seeds]
    over = f" over seeds {', '.join(map(str, seeds))} (mean ± std)" if len(seeds) > 1 else f", seed {seeds[0]}"
    lines = [f"source-only {mean_std(so)} mIoU, oracle {mean_std(oracle)} mIoU{over}.", "",
             "| row | what | teacher | final stage | final mIoU | gap closed (%) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, per_seed in results.items():
        runs = [per_seed[s] for s in seeds if s in per_seed]
        closed = [100 * (per_seed[s]["final"] - baselines[s]["source_only"])
                  / (baselines[s]["oracle"] - baselines[s]["source_only"]) for s in seeds if s in per_seed]
        lines.append(f"| {name} | {ROWS[name][0]} | {mean_std([r['teacher'] for r in runs])} | {runs[0]['final_stage']} "
                     f"| {mean_std([r['final'] for r in runs])} | {mean_std(closed)} |")
    return "\n".join(lines)


def final_stage(rows: dict) -> str:
    """The last round, or the ema stage when it ran instead of rounds."""
    rounds = [k for k in rows if k.startswith("round_")]
    return rounds[-1] if rounds else "ema"


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
    p.add_argument("--seeds", default="0", help="comma-separated run.seed values; each row runs once per seed")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    names, seeds = args.rows.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown ablation row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    base = load_config(args.config, args.overrides)
    connect(base)
    Driver = driver_actor()
    results, baselines = {name: {} for name in names}, {}
    for seed in seeds:
        for i, name in enumerate(names):
            cfg = base.override({**ROWS[name][1], "run.seed": seed, "run.baselines": i == 0,
                                 "run.dir": str(RESULTS / "ablation" / name / f"seed_{seed}"),
                                 "mlflow.tracking_uri": f"sqlite:///{RESULTS / 'ablation' / 'mlflow.db'}"})
            summary = ray.get(Driver.remote(cfg.to_dict(), load_splits(cfg)).run.remote())
            rows = {r["name"]: r["miou"] for r in summary["stages"]}
            if i == 0:
                baselines[seed] = {k: rows[k] for k in ("source_only", "oracle")}
            final = final_stage(rows)
            results[name][seed] = {"teacher": rows["teacher"], "final_stage": final, "final": rows[final],
                                   "rounds": {k: v for k, v in rows.items() if k.startswith("round_")}}
            print(name, seed, json.dumps(results[name][seed]), flush=True)
    text = table(results, baselines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ablation.md").write_text(text + "\n")
    (RESULTS / "ablation.json").write_text(json.dumps({"baselines": baselines, "rows": results}, indent=1))
    write_between_markers(ROOT / "docs" / "RESULTS.md", text)
    print(text)


if __name__ == "__main__":
    main()
