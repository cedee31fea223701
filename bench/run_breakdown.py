"""Where the wall clock of a whole run goes: `make run` timed, stage by stage, phase by phase.

    python bench/run_breakdown.py [--checkout DIR] [--run-dir DIR] [--out FILE] [key=value ...]
    python bench/run_breakdown.py --read RUN_DIR [--wall SECONDS]
    python bench/run_breakdown.py --read RESULT.json   (an earlier result, e.g. with --peak added)
    (both: [--peak bench/results/peak.json])

Runs ``jobs/self_train.py`` (the job behind `make run`) on the embedded benchmark in a fresh run
folder and times it from the outside; ``--checkout`` runs another checkout's job instead (e.g. an
older commit in a ``git worktree``) on this checkout's data, so two versions can be timed side
by side on one machine. Then, from the run folder:
  * each stage's wall clock (the driver's manifest: start to end of the stage),
  * inside its training process (the stage folder's ``timing.json``, written by the training
    loop): setup, the first batch, the training steps, data waits, evaluations, checkpoints and
    reports, the stage's finish (AdaBN, final files);
  * outside it: the rest of the stage's wall clock, Ray Train's worker group and Ray Data
    starting and stopping;
  * steps/s, GFLOP/s and MFU of the stage's log windows after the first (``history.jsonl``); MFU
    as the stage logged it (against the matmul it measured at its start, or train.peak_gflops)
    and, when bench/peak.py has been run (``--peak``), against that measured peak as well: a
    stage faster than it fails the benchmark (bench/common.py's check);
  * the job's own time besides its stages (Ray start-up, checks, summary).
Printed as a table and written as JSON (bench/results/run_breakdown.json) with the machine's
metadata (bench/common.py). ``--read`` reports on a run folder, or again on an earlier result
JSON (its run folder may be gone; the machine metadata it recorded is kept), without running
anything.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import PEAK_FILE, RESULTS, check_peak, mean_of, metadata, windows_after_warmup, write_result
from udas_ray.driver import CONFIG_FILE
from udas_ray.stages.loop import TIMING_FILE
from udas_ray.stages.runtime import read_history

REPO = Path(__file__).resolve().parent.parent


def breakdown(run_dir: Path, wall: float | None) -> dict:
    """The stage-by-stage table's data (MFU against bench/peak.py's peak: :func:`rescore`)."""
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    out, in_stages = {}, 0.0
    for name, entry in stages.items():
        seconds = entry.get("finished", 0) - entry.get("started", 0)
        if seconds <= 0:
            continue
        in_stages += seconds
        folder = run_dir / "stages" / name  # the driver's stage folder (none for pseudo-labels)
        row = {"kind": entry.get("kind"), "wall_s": round(seconds, 1)}
        timing = folder / TIMING_FILE
        if timing.is_file():
            t = json.loads(timing.read_text())
            row["in_training_process_s"] = {k: round(v, 1) for k, v in t["seconds"].items()}
            row["outside_training_process_s"] = round(seconds - t["total"], 1)
        hist = windows_after_warmup(read_history(folder))
        for key in ("steps_per_s", "gflops_per_s", "mfu", "data_wait_share") if hist else ():
            value = mean_of(hist, key)
            row[key] = None if value is None else round(value, 3)
        out[name] = row
    result = {"run_dir": str(run_dir), "stages": out, "stages_s": round(in_stages, 1)}
    if wall is not None:
        result.update(wall_s=round(wall, 1), job_besides_stages_s=round(wall - in_stages, 1))
    return result


def run_precision(overrides: list[str], run_dir: Path | None = None) -> str:
    """train.precision of the timed run: its override, else the run folder's saved config, else fp32."""
    for item in overrides:
        if item.startswith("train.precision="):
            return item.split("=", 1)[1]
    saved = run_dir / CONFIG_FILE if run_dir else None
    if saved and saved.is_file():
        return (yaml.safe_load(saved.read_text()).get("train") or {}).get("precision", "fp32")
    return "fp32"


def peak_of(peak_file: dict, precision: str, path: Path) -> float:
    """bench/peak.py's peak for a run computing at ``precision`` (bf16: its bfloat16 peak)."""
    if precision != "bf16":
        return peak_file["peak_gflops_per_s"]
    if "peak_gflops_per_s_bf16" not in peak_file:
        sys.exit(f"{path}: no bfloat16 peak for a train.precision=bf16 run; rerun bench/peak.py")
    return peak_file["peak_gflops_per_s_bf16"]


def rescore(result: dict, peak: float | None) -> dict:
    """A result (fresh, or an earlier one's JSON) with each stage's MFU against ``peak``
    (``mfu_of_peak``, GFLOP/s over bench/peak.py's peak; none without a peak)."""
    result = {**result, "stages": {name: {k: v for k, v in row.items() if k != "mfu_of_peak"}
                                   for name, row in result["stages"].items()}}
    result.pop("peak_gflops_per_s", None)
    if peak:
        result["peak_gflops_per_s"] = peak
        for row in result["stages"].values():
            if row.get("gflops_per_s") is not None:
                row["mfu_of_peak"] = round(row["gflops_per_s"] / peak, 3)
    return result


def table(result: dict) -> str:
    head = f"{'stage':<18} {'wall s':>7} {'steps':>6} {'eval':>5} {'ckpt':>5} {'other':>6} {'outside':>7} " \
           f"{'it/s':>5} {'GFLOP/s':>7} {'MFU':>6} {'wait':>5} {'MFU pk':>6}"
    lines = [head]
    for name, r in result["stages"].items():
        t = r.get("in_training_process_s", {})
        steps = t.get("train_steps", 0) + t.get("data_wait", 0)
        other = sum(v for k, v in t.items() if k not in ("train_steps", "data_wait", "evaluate", "checkpoint_and_report"))
        cells = [f"{name:<18}", f"{r['wall_s']:>7.1f}"]
        if t:
            cells += [f"{steps:>6.1f}", f"{t.get('evaluate', 0):>5.1f}", f"{t.get('checkpoint_and_report', 0):>5.1f}",
                      f"{other:>6.1f}", f"{r['outside_training_process_s']:>7.1f}"]
        else:
            cells += [f"{'':>6}", f"{'':>5}", f"{'':>5}", f"{'':>6}", f"{'':>7}"]
        if "steps_per_s" in r:
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else ""
            gf = f"{r['gflops_per_s']:.1f}" if r.get("gflops_per_s") is not None else ""
            cells += [f"{r['steps_per_s']:>5.2f}", f"{gf:>7}", f"{mfu:>6}", f"{100 * r['data_wait_share']:>4.1f}%"]
            if r.get("mfu_of_peak") is not None:
                cells.append(f"{100 * r['mfu_of_peak']:>5.1f}%")
        lines.append(" ".join(cells))
    tail = f"stages {result['stages_s']:.0f} s"
    if "wall_s" in result:
        tail = f"job {result['wall_s']:.0f} s = " + tail + f" + {result['job_besides_stages_s']:.0f} s besides them"
    pk = (f"; MFU pk = against bench/peak.py's {result['peak_gflops_per_s']:.1f} GFLOP/s"
          if "peak_gflops_per_s" in result else "")
    return "\n".join([*lines, tail, "steps = training steps + data waits; other = setup, first batch, FLOP count "
                      "and peak, finish; outside = Ray Train and Ray Data start/stop; MFU = against the peak the "
                      "stage used" + pk])


def run_job(checkout: Path, run_dir: Path, overrides: list[str]) -> float:
    """The checkout's jobs/self_train.py on this checkout's benchmark data; its wall clock."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop("RAY_ADDRESS", None)  # a Ray of its own, as `make run`
    data = [f"data.source.root={REPO / 'data/scenes/source'}", f"data.target.root={REPO / 'data/scenes/target'}"]
    cmd = [sys.executable, "jobs/self_train.py", f"run.dir={run_dir}", "run.fresh=true", *data, *overrides]
    print("running:", " ".join(cmd), f"(in {checkout})", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=checkout, env=env, check=True)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkout", type=Path, default=REPO, help="the checkout whose job runs (default: this one)")
    p.add_argument("--run-dir", type=Path, default=None, help="default: a temporary folder, removed afterwards")
    p.add_argument("--read", type=Path, default=None, help="report on this run folder or result JSON; run nothing")
    p.add_argument("--wall", type=float, default=None, help="with --read: the job's wall clock, if known")
    p.add_argument("--out", default=str(RESULTS / "run_breakdown.json"))
    p.add_argument("--peak", type=Path, default=PEAK_FILE,
                   help="bench/peak.py's result: MFU against it too (skipped when the file is missing)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.read and not args.read.exists():
        sys.exit(f"{args.read}: no such run folder or result file")
    peak_file = json.loads(args.peak.read_text()) if args.peak.is_file() else None
    if peak_file is not None and "peak_gflops_per_s" not in peak_file:
        sys.exit(f"{args.peak}: not a bench/peak.py result (no peak_gflops_per_s)")
    saved = json.loads(args.read.read_text()) if args.read and args.read.is_file() else None
    precision = run_precision(saved.get("overrides", []) if saved else args.overrides,
                              None if saved or not args.read else args.read)
    peak = peak_of(peak_file, precision, args.peak) if peak_file is not None else None
    if saved:
        result = saved
        machines = [m for m in (result.get("cpu", {}).get("model"), (peak_file or {}).get("cpu", {}).get("model")) if m]
        if len(set(machines)) > 1:
            sys.exit(f"{args.read}: measured on {machines[0]!r}, but {args.peak} on {machines[1]!r}; "
                     "give --peak the peak of the machine the result was measured on")
    elif args.read:
        result = breakdown(args.read.resolve(), args.wall)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = (args.run_dir or Path(tmp) / "run").resolve()
            wall = run_job(args.checkout.resolve(), run_dir, args.overrides)
            result = breakdown(run_dir, wall)
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.checkout, capture_output=True,
                                    text=True).stdout.strip()
            summary = json.loads((run_dir / "summary.json").read_text())
            result.update(checkout_commit=commit, overrides=args.overrides,
                          miou={row["name"]: round(row["miou"], 2) for row in summary["stages"]})
    result = rescore(result, peak)
    print(table(result))
    out = {**metadata(), **result}  # an earlier result's own metadata wins
    if peak_file:
        out["peak"] = {k: peak_file.get(k) for k in ("peak_gflops_per_s", "peak_from", "peak_gflops_per_s_bf16",
                                                     "peak_bf16_from", "threads", "date", "cpu")}
        out["peak"]["used"] = f"{peak} GFLOP/s ({precision})"
        check_peak({f"{name} GFLOP/s": r["gflops_per_s"] for name, r in result["stages"].items()
                    if r.get("gflops_per_s") is not None},
                   {"gflops_per_s": peak, "from": str(args.peak)}, out)
    write_result(out, args.out)


if __name__ == "__main__":
    main()
