"""Ablation of what makes the rounds pay off, on the embedded benchmark.

    python bench/ablation.py [--config conf/default.yaml] [--rows full,no_randomize,...] [--seeds 0,1,2]
                             [--name ablation] [key=value ...]

Runs the pipeline once per row and seed (each in bench/results/<name>/<row>/seed_<s>), the
baselines once per seed (in the first row run for a seed that has none yet), and writes the table
of the teacher's and the final mIoU and the share of the domain gap closed, (final - source_only)
/ (oracle - source_only) with each seed's own baselines, as mean ± sample std over the seeds, to
bench/results/<name>.md and into docs/RESULTS.md between its <!-- <name>:start --> /
<!-- <name>:end --> markers. With labeled target images (data.target.labeled=N) the baselines
include the supervised one (SL: the same model on the N labeled images alone) and the table adds
final - SL. The table holds every row and seed finished under <name>, over any number of
invocations, which must share one base (config and overrides, kept in <name>/base.json); a
finished row is kept, a started one resumes like any run.

The labeled-target rows switch off one of the teacher's and students' uses of the labels at a time:

    python bench/ablation.py --name ablation_labeled --rows full,adabn,no_target_term,no_student_labels,no_intra_mix \
        data.target.labeled=20
"""

import argparse
import json
from pathlib import Path

import ray
import yaml

from common import final_stage, mean_std, recorded_baselines, write_between_markers
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
    "simgan": ("teacher and students on the SimGAN-refined source, conf/simgan.yaml (its style_refined row: "
               "docs/RESULTS.md)", stated_keys(ROOT / "conf" / "simgan.yaml")),
    "student_rcs": ("students draw images with rare pseudo-label classes more often",
                    {"self_training.rare_class_sampling": True}),
    # with labeled target images (data.target.labeled > 0)
    "no_target_term": ("teacher: no cross-entropy on whole labeled target images, CutMix one way (target box into source)",
                       {"loss.lambda_target": 0.0, "augment.cutmix.both_directions": False}),
    "no_intra_mix": ("teacher: no ClassMix of labeled onto unlabeled target images", {"loss.lambda_intra": 0.0}),
    "no_student_labels": ("students: no labeled share (pseudo-labels only)", {"self_training.labeled_share": 0.0}),
    "adabn": ("teacher gets AdaBN although labeled target images exist (auto: off)", {"train.adabn": True}),
    "teacher_from_sl": ("teacher starts from the supervised (SL) stage's weights", {"self_training.teacher_init": "supervised"}),
    "student_labels_half": ("students: half of every batch from the labeled images",
                            {"self_training.labeled_share": 0.5}),
    "student_labels_quarter": ("students: a quarter of every batch from the labeled images",
                               {"self_training.labeled_share": 0.25}),
    "student_labels_three_quarters": ("students: three quarters of every batch from the labeled images",
                                      {"self_training.labeled_share": 0.75}),
    "target_x2": ("teacher: twice the weight on whole labeled target images", {"loss.lambda_target": 2.0}),
    "three_rounds": ("a third teacher-student round (default two)", {"self_training.rounds": 3}),
}


def table(results: dict, baselines: dict) -> str:
    """``results[row][seed]`` = {"teacher", "final_stage", "final"}; ``baselines[seed]`` =
    {"source_only", "oracle"} and, with labeled target images, "supervised". A row counts the
    seeds it ran that have baselines; gap closed and final - SL per seed with that seed's
    baselines; with a ``full`` row, each other row's final minus full's on the seeds both ran
    (a paired difference)."""
    seeds = sorted(baselines)
    so = [baselines[s]["source_only"] for s in seeds]
    oracle = [baselines[s]["oracle"] for s in seeds]
    with_sl = all("supervised" in baselines[s] for s in seeds)
    full = results.get("full", {})
    over = f" over seeds {', '.join(map(str, seeds))} (mean ± std)" if len(seeds) > 1 else f", seed {seeds[0]}"
    sl = f", SL {mean_std([baselines[s]['supervised'] for s in seeds])} mIoU" if with_sl else ""
    header = ["row", "what", "seeds", "teacher", "final stage", "final mIoU", "gap closed (%)"]
    header += ["final - SL"] * with_sl + ["final - full (same seeds)"] * bool(full)
    lines = [f"source-only {mean_std(so)} mIoU, oracle {mean_std(oracle)} mIoU{sl}{over}.", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, per_seed in results.items():
        ran = [s for s in seeds if s in per_seed]
        if not ran:
            continue
        runs = [per_seed[s] for s in ran]
        closed = [100 * (per_seed[s]["final"] - baselines[s]["source_only"])
                  / (baselines[s]["oracle"] - baselines[s]["source_only"]) for s in ran]
        cells = [name, ROWS[name][0], ", ".join(map(str, ran)), mean_std([r["teacher"] for r in runs]),
                 runs[0]["final_stage"], mean_std([r["final"] for r in runs]), mean_std(closed)]
        if with_sl:
            cells.append(mean_std([per_seed[s]["final"] - baselines[s]["supervised"] for s in ran]))
        if full:
            paired = [per_seed[s]["final"] - full[s]["final"] for s in ran if s in full]
            cells.append("ref." if name == "full" else mean_std(paired) if paired else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def collect(out: Path) -> tuple[dict, dict]:
    """Every finished row and seed under ``out`` (``<row>/seed_<s>/summary.json``), in ROWS order,
    and each seed's baselines from whichever row trained them: the table of an ablation is all
    that was measured under its name, over however many invocations."""
    results, baselines = {}, {}
    for name in ROWS:
        for summary in sorted((out / name).glob("seed_*/summary.json")):
            seed = int(summary.parent.name.removeprefix("seed_"))
            rows = {r["name"]: r["miou"] for r in json.loads(summary.read_text())["stages"]}
            final = final_stage(rows)
            results.setdefault(name, {})[seed] = {
                "teacher": rows["teacher"], "final_stage": final, "final": rows[final],
                "rounds": {k: v for k, v in rows.items() if k.startswith("round_")}}
            if "source_only" in rows and "oracle" in rows:
                baselines[seed] = {k: rows[k] for k in ("source_only", "oracle", "supervised") if k in rows}
    return results, baselines


def check_same_base(out: Path, config: str, overrides: list[str]) -> None:
    """The rows of one ablation share a base (config file and overrides): the first invocation
    records it in ``out/base.json``, a later one with another base is refused."""
    base = {"config": str(Path(config).resolve()), "overrides": sorted(overrides)}
    record = out / "base.json"
    if record.is_file():
        before = json.loads(record.read_text())
        if before != base:
            raise SystemExit(f"{out} holds an ablation over another base ({before['config']} "
                             f"{' '.join(before['overrides'])}); give this one another --name")
        return
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(base, indent=1) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--seeds", default="0", help="comma-separated run.seed values; each row runs once per seed")
    p.add_argument("--name", default="ablation", help="results folder and docs/RESULTS.md markers of this ablation")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    names, seeds = args.rows.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown ablation row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    base = load_config(args.config, args.overrides)
    out = RESULTS / args.name
    doc = ROOT / "docs" / "RESULTS.md"
    markers = [f"<!-- {args.name}:{end} -->" for end in ("start", "end")]
    if not all(m in doc.read_text() for m in markers):  # before hours of training, not after
        raise SystemExit(f"{doc}: no {markers[0]} / {markers[1]} markers for --name {args.name}")
    check_same_base(out, args.config, args.overrides)
    done, have = collect(out)
    claimed = set(have)  # seeds whose baselines are on disk or trained by a row of this invocation
    connect(base)
    Driver = driver_actor(base.scaling)
    for seed in seeds:
        for name in names:
            folder = out / name / f"seed_{seed}"
            if seed in done.get(name, {}):
                print(f"{name} seed {seed}: finished earlier, kept", flush=True)
                continue
            baselines = recorded_baselines(folder)  # a started run resumes with what it began with
            if baselines is None:
                baselines = seed not in claimed
            claimed.add(seed)
            cfg = base.override({**ROWS[name][1], "run.seed": seed, "run.baselines": baselines, "run.dir": str(folder),
                                 "mlflow.tracking_uri": f"sqlite:///{out / 'mlflow.db'}"})
            summary = ray.get(Driver.remote(cfg.to_dict(), load_splits(cfg)).run.remote())
            print(name, seed, json.dumps({r["name"]: round(r["miou"], 2) for r in summary["stages"]}), flush=True)
    results, baselines = collect(out)
    text = table(results, baselines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text(text + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"baselines": baselines, "rows": results}, indent=1))
    write_between_markers(doc, text, args.name)
    print(text)


if __name__ == "__main__":
    main()
