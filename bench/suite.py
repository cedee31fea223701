"""One recipe over the benchmark suite: every sim->real pair x seeds, one table.

    python bench/suite.py --recipe NAME [--pairs street,material,...] [--seeds 0,1,2] [--short]
                          [--labeled N] [--against OTHER] [--doc FILE] [--config FILE] [key=value ...]

A recipe is a name and the config overrides that make it (none: the defaults). Each pair and
seed runs the whole pipeline in bench/results/suite/<length>/labels_<N>/<recipe>/<pair>/seed_<s>
(--out moves bench/results/suite),
and resumes there like any run; a finished run is kept. ``--short`` runs every stage for
SHORT_STEPS instead of train.steps, to rank candidates before full-length runs confirm them.
The baselines (source_only, oracle and, with labeled target images, supervised) are trained
once per pair and seed by the first recipe run there, and shared by every recipe that trains
them the same way (the same model, training, data and augmentation keys: BASELINE_KEYS).

The table, per pair: source_only / teacher / round_1 / round_2 / oracle and the share of the
source-only -> oracle gap that round_2 closes, (round_2 - source_only) / (oracle - source_only)
with each seed's own baselines, as mean ± std over seeds; then the mean over pairs (the mean of
each seed's pair average, ± its std over seeds) and the worst pair (the lowest gap closed).
With labeled target images it adds supervised (SL) and round_2 - SL. ``--against OTHER``
adds the paired difference round_2 - OTHER's round_2 (same pairs, same seeds) and applies the
rule for defaults (docs/SUITE.md): a recipe may replace OTHER only if the suite mean improves
and no pair loses more than its seed spread. Written to <recipe>.md and <recipe>.json beside
the runs; ``--doc FILE`` also puts the table into FILE between <!-- suite:<key>:start/end -->
markers (appended at the end when missing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

from common import final_stage, mean_std, metadata, recorded_baselines, write_between_markers
from udas_ray.cli import DEFAULT_CONFIG
from udas_ray.config import Config, flatten, load_config, parse_override
from udas_ray.data.scenes import PAIR_GAPS, PAIRS
from udas_ray.driver import CONFIG_FILE, RESUMABLE_KEYS
from udas_ray.errors import UdasError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "suite"
SHORT_STEPS = 200
RULE_SEEDS = 3  # a default changes on this many seeds at full length (docs/SUITE.md); fewer only rank
# Keys a baseline stage (source_only, oracle, supervised) is trained with: recipes that agree on
# them share baselines; the rest of the config (losses, pseudo-labels, students, the teacher's
# randomization and AdaBN) only changes the adapted stages.
BASELINE_KEYS = ("model", "train", "data", "augment.jitter", "augment.flip", "augment.scale", "augment.crop")
NOT_BASELINE_KEYS = ("train.adabn", "data.rare_class_sampling", *RESUMABLE_KEYS)
STAGES = ("source_only", "teacher", "round_1", "round_2", "oracle")


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def baseline_view(flat: dict) -> dict:
    """The keys of a flat config that its baseline stages are trained with."""
    return {k: v for k, v in flat.items() if _under(k, BASELINE_KEYS) and not _under(k, NOT_BASELINE_KEYS)}


def folder(root: Path, length: str, labeled: int) -> Path:
    return root / length / f"labels_{labeled}"


def run_config(base: Config, overrides: dict, pair: str, seed: int, run_dir: Path, mlflow_db: Path) -> Config:
    return base.override({**overrides, "data.scenes.pair": pair, "run.seed": seed, "run.dir": str(run_dir),
                          "mlflow.tracking_uri": f"sqlite:///{mlflow_db}"})


def baseline_holder(out: Path, pair: str, seed: int, view: dict) -> Path | None:
    """The run folder of this pair and seed (any recipe under ``out``) that trains baselines the
    way ``view`` says, or None."""
    for config in sorted(out.glob(f"*/{pair}/seed_{seed}/{CONFIG_FILE}")):
        tree = yaml.safe_load(config.read_text())
        if tree["run"]["baselines"] and baseline_view(flatten(tree)) == view:
            return config.parent
    return None


def read_rows(run_dir: Path) -> dict | None:
    """{stage: {"miou", "per_class_iou"}} of a finished run, or None."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    return {r["name"]: {"miou": r["miou"], "per_class_iou": r.get("per_class_iou", {})}
            for r in json.loads(path.read_text())["stages"]}


def collect(out: Path, recipe: str, pairs: list[str], seeds: list[int]) -> dict:
    """``{pair: {seed: {stage: mIoU, ..., "per_class": {stage: {class: IoU}}, "seconds": s}}}`` for
    every finished run of ``recipe``, its baselines taken from the run that trained them."""
    results = {}
    for pair in pairs:
        for seed in seeds:
            run_dir = out / recipe / pair / f"seed_{seed}"
            rows = read_rows(run_dir)
            if rows is None:
                continue
            if "oracle" not in rows:
                info_file = run_dir / "suite_run.json"
                info = json.loads(info_file.read_text()) if info_file.is_file() else {}
                holder = read_rows(Path(info["baselines_from"])) if "baselines_from" in info else None
                if holder is None:
                    continue
                rows = {**{k: v for k, v in holder.items() if k in ("source_only", "oracle", "supervised")}, **rows}
            final = final_stage(rows)
            cell = {k: v["miou"] for k, v in rows.items()}
            cell["final"] = rows[final]["miou"]
            cell["final_stage"] = final
            cell["per_class"] = {k: rows[k]["per_class_iou"] for k in ("source_only", final, "oracle") if k in rows}
            info_file = run_dir / "suite_run.json"
            if info_file.is_file():
                cell["seconds"] = json.loads(info_file.read_text()).get("seconds")
            results.setdefault(pair, {})[seed] = cell
    return results


def gap_closed(cell: dict) -> float:
    return 100 * (cell["final"] - cell["source_only"]) / (cell["oracle"] - cell["source_only"])


def _stdev(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(results: dict, against: dict | None = None) -> dict:
    """Per pair and over pairs: the numbers of the table (means, stds, paired differences, the rule)."""
    pairs = [p for p in results if results[p]]
    seeds = sorted(set.intersection(*(set(results[p]) for p in pairs))) if pairs else []
    out = {"pairs": {}, "seeds": seeds}
    labeled = bool(pairs) and all("supervised" in results[p][s] for p in pairs for s in seeds)
    for pair in pairs:
        cells = [results[pair][s] for s in seeds]
        if not cells:
            continue
        row = {stage: [c[stage] for c in cells if stage in c] for stage in (*STAGES, "final", "supervised")}
        row["seconds"] = [c["seconds"] for c in cells if c.get("seconds")]
        row["gap_closed"] = [gap_closed(c) for c in cells]
        if labeled:
            row["final_minus_sl"] = [c["final"] - c["supervised"] for c in cells]
        row["ordered"] = all(statistics.mean(row[a]) < statistics.mean(row[b]) if a == "source_only" else
                             statistics.mean(row[a]) <= statistics.mean(row[b])
                             for a, b in zip(("source_only", "teacher", "round_1"), ("teacher", "round_1", "round_2"))
                             if row[a] and row[b])
        if against and pair in against:
            both = [s for s in seeds if s in against[pair]]
            row["paired"] = [results[pair][s]["final"] - against[pair][s]["final"] for s in both]
            row["spread"] = max(_stdev([results[pair][s]["final"] for s in both]),
                                _stdev([against[pair][s]["final"] for s in both]))
        out["pairs"][pair] = row
    if not out["pairs"]:
        return out
    per_seed = {key: [statistics.mean(results[p][s][key] if key != "gap_closed" else gap_closed(results[p][s])
                                      for p in out["pairs"]) for s in seeds]
                for key in ("source_only", "teacher", "round_1", "final", "oracle", "gap_closed")
                if key == "gap_closed" or all(key in results[p][s] for p in out["pairs"] for s in seeds)}
    out["mean"] = per_seed
    out["worst"] = min(out["pairs"], key=lambda p: statistics.mean(out["pairs"][p]["gap_closed"]))
    if against:
        paired = [out["pairs"][p].get("paired") for p in out["pairs"]]
        if all(paired) and len({len(x) for x in paired}) == 1 and paired[0]:
            mean_paired = [statistics.mean(x[i] for x in paired) for i in range(len(paired[0]))]
            losers = [p for p in out["pairs"] if statistics.mean(out["pairs"][p]["paired"])
                      < -out["pairs"][p]["spread"]]
            out["rule"] = {"mean_paired": mean_paired, "losers": losers,
                           "passes": statistics.mean(mean_paired) > 0 and not losers and len(mean_paired) > 1}
    return out


def table(recipe: str, overrides: dict, length: str, labeled: int, results: dict, against_name: str | None,
          against: dict | None) -> str:
    s = summarize(results, against)
    if not s["pairs"]:
        return f"Recipe `{recipe}`: no finished run yet."
    labeled_rows = all("final_minus_sl" in r for r in s["pairs"].values())
    what = " ".join(f"{k}={v}" for k, v in overrides.items()) or "the defaults"
    seeds = ", ".join(map(str, s["seeds"]))
    lines = [f"Recipe `{recipe}` ({what}), {length} length, {labeled} labeled target images, seeds {seeds} "
             f"(mean ± std over seeds; gap closed: round_2 against each seed's own source_only and oracle).", ""]
    header = ["pair", "source_only", "teacher", "round_1", "round_2", "oracle", "gap closed (%)"]
    if labeled_rows:
        header += ["SL", "round_2 - SL"]
    if against is not None:
        header += [f"round_2 - {against_name} (paired)"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for pair, row in s["pairs"].items():
        cells = [pair] + [mean_std(row[k]) if row[k] else "" for k in STAGES] + [mean_std(row["gap_closed"])]
        if labeled_rows:
            cells += [mean_std(row["supervised"]), mean_std(row["final_minus_sl"])]
        if against is not None:
            cells.append(mean_std(row["paired"]) if row.get("paired") else "")
        lines.append("| " + " | ".join(cells) + " |")
    m = s["mean"]
    cells = ["**mean over pairs**"] + [mean_std(m[k]) if k in m else "" for k in
                                       ("source_only", "teacher", "round_1", "final", "oracle", "gap_closed")]
    if labeled_rows:
        for key in ("supervised", "final_minus_sl"):
            cells.append(mean_std([statistics.mean(s["pairs"][p][key][i] for p in s["pairs"])
                                   for i in range(len(s["seeds"]))]))
    if against is not None:
        cells.append(mean_std(s["rule"]["mean_paired"]) if "rule" in s else "")
    lines.append("| " + " | ".join(cells) + " |")
    worst = s["worst"]
    lines += ["", f"Worst pair: **{worst}** ({PAIR_GAPS[worst]}), "
                  f"{mean_std(s['pairs'][worst]['gap_closed'])} % of its gap closed."]
    unordered = [p for p, r in s["pairs"].items() if not r["ordered"]]
    lines.append("source_only < teacher <= round_1 <= round_2 in the mean on every pair." if not unordered else
                 f"Not source_only < teacher <= round_1 <= round_2 in the mean on: {', '.join(unordered)}.")
    if "rule" in s:
        r = s["rule"]
        n = len(s["seeds"])
        rank_only = ""  # why these runs can only rank, where they can
        if length != "full":
            rank_only = "short runs"
        elif n < RULE_SEEDS:
            rank_only = f"{n} seed{'s' if n > 1 else ''}"
        if not r["passes"]:
            verdict = "does not pass the rule for defaults" + (f" ({rank_only}: rank only)" if rank_only else "")
        elif rank_only:
            verdict = (f"meets both conditions of the rule, but a default needs {RULE_SEEDS} seeds at full length "
                       f"({rank_only}: rank only)")
        else:
            verdict = "passes the rule for defaults"
        losers = ", ".join(r["losers"]) or "none"
        lines.append(f"Against `{against_name}`: suite mean {mean_std(r['mean_paired'])} mIoU (paired); pairs losing "
                     f"more than their seed spread: {losers}; {verdict}.")
    secs = [c["seconds"] for p in results.values() for c in p.values() if c.get("seconds")]
    if secs:
        lines.append(f"Wall clock per pair and seed: {statistics.mean(secs) / 60:.1f} min on average "
                     f"({len(secs)} runs; baselines in the first recipe run of each pair and seed).")
    return "\n".join(lines)


def per_class_table(results: dict, pair: str) -> str:
    """Per class, mean over seeds: source_only, round_2 and oracle IoU of one pair."""
    cells = list(results[pair].values())
    classes = list(cells[0]["per_class"]["oracle"])
    lines = [f"Per class on `{pair}` (IoU, mean over seeds {', '.join(map(str, sorted(results[pair])))}):", "",
             "| class | source_only | round_2 | oracle |", "| --- | --- | --- | --- |"]
    for name in classes:
        vals = []
        for stage in ("source_only", cells[0]["final_stage"], "oracle"):
            xs = [c["per_class"][stage][name] for c in cells if c["per_class"].get(stage, {}).get(name) is not None]
            vals.append(f"{statistics.mean(xs):.1f}" if xs else "-")
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def check_recipe(record: Path, config: str, overrides: dict) -> None:
    """A recipe's name stands for one set of overrides: the first run records them, a later one
    with others is refused (give it another name)."""
    want = {"config": str(Path(config).resolve()), "overrides": overrides}
    if record.is_file():
        before = json.loads(record.read_text())
        if before != want:
            raise SystemExit(f"{record}: recipe {record.parent.name!r} was run with {before['overrides']} "
                             f"({before['config']}); give this one another --recipe name")
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(want, indent=1) + "\n")


def doc_key(recipe: str, length: str, labeled: int) -> str:
    return f"suite:{recipe}:{length}:labels_{labeled}"


def to_doc(doc: Path, key: str, text: str) -> None:
    if f"<!-- {key}:start -->" not in doc.read_text():
        with doc.open("a") as f:
            f.write(f"\n<!-- {key}:start -->\n<!-- {key}:end -->\n")
    write_between_markers(doc, text, key)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", required=True, help="the recipe's name (its results folder)")
    p.add_argument("--pairs", default=",".join(PAIRS))
    p.add_argument("--seeds", default="0", help="comma-separated run.seed values")
    p.add_argument("--short", action="store_true", help=f"{SHORT_STEPS} steps per stage, to rank candidates")
    p.add_argument("--labeled", type=int, default=0, help="labeled target images (data.target.labeled)")
    p.add_argument("--against", help="a recipe run the same way: paired differences and the rule for defaults")
    p.add_argument("--doc", type=Path, help="also write the table into this Markdown file")
    p.add_argument("--per-class", action="store_true", help="also the per-class table of the worst pair")
    p.add_argument("--table-only", action="store_true", help="write the table of what has finished; run nothing")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default {RESULTS.relative_to(ROOT)})")
    p.add_argument("overrides", nargs="*")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    pairs, seeds = args.pairs.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        raise SystemExit(f"--pairs: unknown pair(s) {', '.join(unknown)}; pairs: {', '.join(PAIRS)}")
    length = "short" if args.short else "full"
    try:
        overrides = dict(parse_override(o) for o in args.overrides)
        run_overrides = {**overrides, "data.target.labeled": args.labeled}
        if args.short:
            run_overrides.update({"train.steps": SHORT_STEPS, "train.eval_every": SHORT_STEPS,
                                  "train.checkpoint_every": SHORT_STEPS, "self_training.steps": None})
        base = load_config(args.config)
        out = folder(args.out, length, args.labeled)
        # every run's config, checked before any Ray work
        configs = {(p, s): run_config(base, run_overrides, p, s, out / args.recipe / p / f"seed_{s}",
                                      out / "mlflow.db") for p in pairs for s in seeds}
    except UdasError as exc:
        raise SystemExit(f"error: {exc}") from None
    against = None
    if args.against:
        if not (out / args.against).is_dir():
            raise SystemExit(f"--against {args.against}: no such recipe in {out}")
        against = collect(out, args.against, pairs, seeds)
    if not args.table_only:
        check_recipe(out / args.recipe / "recipe.json", args.config, overrides)
        run_all(configs, out, args.recipe)
    results = collect(out, args.recipe, pairs, seeds)
    text = table(args.recipe, overrides, length, args.labeled, results, args.against, against)
    summary = summarize(results, against)
    if args.per_class and summary["pairs"]:
        text += "\n\n" + per_class_table(results, summary["worst"])
    (out / f"{args.recipe}.md").write_text(text + "\n")
    (out / f"{args.recipe}.json").write_text(json.dumps(
        {"recipe": args.recipe, "overrides": overrides, "length": length, "labeled": args.labeled,
         "results": results, "summary": summary, "machine": metadata()}, indent=1, default=str))
    if args.doc:
        to_doc(args.doc, doc_key(args.recipe, length, args.labeled), text)
    print(text)


def run_all(configs: dict, out: Path, recipe: str) -> None:
    import ray

    from udas_ray.cluster import connect
    from udas_ray.data.splits import load_splits
    from udas_ray.driver import driver_actor

    first = next(iter(configs.values()))
    connect(first)
    Driver = driver_actor(first.scaling)
    for (pair, seed), cfg in configs.items():
        run_dir = Path(cfg.run.dir)
        if read_rows(run_dir) is not None:
            print(f"{recipe} {pair} seed {seed}: finished earlier, kept", flush=True)
            continue
        view = baseline_view(cfg.flat())
        holder = baseline_holder(out, pair, seed, view)
        baselines = recorded_baselines(run_dir)  # a started run resumes with what it began with
        if baselines is None:
            baselines = holder is None
        fresh = not (run_dir / CONFIG_FILE).is_file()
        cfg = cfg.override({"run.baselines": baselines})
        info = {"baselines_from": str(run_dir if baselines else holder)}
        if not baselines and read_rows(holder) is None:
            print(f"{recipe} {pair} seed {seed}: its baselines are in {holder}, which has not finished: run that "
                  f"recipe again to finish them", file=sys.stderr)
        start = time.time()
        summary = ray.get(Driver.remote(cfg.to_dict(), load_splits(cfg)).run.remote())
        if fresh:  # the wall clock of a run from start to end (not of a resumed one)
            info["seconds"] = round(time.time() - start)
        (run_dir / "suite_run.json").write_text(json.dumps(info, indent=1) + "\n")
        print(recipe, pair, seed, json.dumps({r["name"]: round(r["miou"], 2) for r in summary["stages"]}), flush=True)


if __name__ == "__main__":
    main()
