"""The real-scale rehearsal: conf/gta5_cityscapes.yaml on CPU over a pair at the real datasets' sizes.

    python bench/rehearsal.py [--images 60,60,12] [--double] [--steps 24] [--data DIR] [--out FILE] [key=value ...]

Writes a pair with the project's scene generator at GTA5's and Cityscapes' sizes and layouts
(source 1914x1052 as GTA5, target train and val 2048x1024 as Cityscapes; ``--images`` gives the
source / target-train / target-val counts), then runs ``jobs/self_train.py --config
conf/gta5_cityscapes.yaml`` on it, changing only what a 2-core CPU needs (CPU_CHANGES: no GPU, the
tiny model, ``--steps`` steps per stage, CPUs that fit the machine); batch, crop, K views,
full-resolution pseudo-labels and evaluation stay as the config has them. Then ``predict`` writes
the val split at full resolution, and cityscapesscripts' evaluator (when installed) scores that
folder as written.

Measured while the job runs, every SAMPLE_S seconds, stage by stage (the stage is the one the run's
manifest marks as running):
  * peak RSS per process role (ROLES: the job, the driver actor, Train workers, Ray Data's
    workers, pseudo-label actors, Ray's own processes) and of the job's whole process tree;
  * the object store's use and anything spilled (from the Ray it started);
  * disk written (growth of the run folder);
  * time per phase (bench/run_breakdown.py's breakdown of the manifest and each stage's timing).
``--double`` runs again with twice every count: a peak that grows with the images (and not with the
batch) shows there. Results: JSON (``--out``) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The job runs in the environment this script was started with; the object-store poller reads the
# job's Ray, which (once any Ray has run on the machine) asks its clients for the auth token.
JOB_ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of the job's own is the one watched
os.environ.setdefault("RAY_AUTH_MODE", "token")

import psutil  # noqa: E402

from common import RESULTS, metadata, write_result  # noqa: E402
from run_breakdown import breakdown  # noqa: E402
from udas_ray.data.scenes.files import write_source, write_target  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

SOURCE_SIZE, TARGET_SIZE = (1052, 1914), (1024, 2048)  # GTA5's and Cityscapes' (H, W)
SAMPLE_S = 1.0
GIB = 2 ** 30

# What a CPU needs changed, nothing else: the recipe, batch, crops, K views and resolutions are the config's.
CPU_CHANGES = ["scaling.use_gpu=false", "scaling.num_workers=1", "scaling.cpus_per_worker=1",
               "scaling.data_workers=1", "scaling.data_cpus=0.5", "scaling.ray_num_cpus=2",
               "pseudo.actors=1", "pseudo.cpus_per_actor=1", "style.actors=1", "style.cpus_per_actor=1",
               "model.name=deeplabv2_tiny", "model.pretrained=null", "model.discriminator_ndf=16"]


def step_changes(steps: int) -> list[str]:
    return [f"train.steps={steps}", f"self_training.steps={steps}", f"train.eval_every={steps}",
            f"train.checkpoint_every={steps}", f"train.log_every={max(1, steps // 3)}"]


# A process's role, from the title Ray gives it (first match wins); the job process itself is "job".
ROLES = [("pseudo-label actors", ("TeacherPredictor",)),
         ("Train workers", ("RayTrainWorker", "TrainController", "TrainWorker")),
         ("Ray Data workers", ("MapWorker", "MapBatches", "ReadFiles", "SplitCoordinator", "Map(", "ray::Read")),
         ("driver actor", ("ray::Pipeline",)),
         ("idle Ray workers", ("ray::IDLE",))]
OTHER = "Ray's own processes"


def role_of(cmdline: str) -> str:
    for role, marks in ROLES:
        if any(m in cmdline for m in marks):
            return role
    return OTHER


def make_pair(data: Path, n_source: int, n_train: int, n_val: int, seed: int = 0) -> tuple[Path, Path]:
    """The full-size pair (written once per counts; the generator is atomic and idempotent)."""
    source = write_source(data / f"gta5_{n_source}", num_images=n_source, size=SOURCE_SIZE, seed=seed)
    target = write_target(data / f"cityscapes_{n_train}_{n_val}", num_train=n_train, num_val=n_val,
                          size=TARGET_SIZE, seed=seed)
    return Path(source), Path(target)


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def running_stage(run_dir: Path) -> str | None:
    try:
        stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    except (OSError, ValueError, KeyError):
        return None
    running = [name for name, e in stages.items() if e.get("status") == "running"]
    return running[-1] if running else None


# Polls the object store from a process of its own: Ray's GCS client aborts the process that holds
# it once the GCS is gone for 60 s, which it is as soon as the job ends.
POLLER = """
import glob, json, sys, time
from pathlib import Path
from ray._private.internal_api import get_memory_info_reply, get_state_from_address
state = None
while True:
    try:
        if state is None:
            ports = glob.glob(sys.argv[1])
            if ports:
                state = get_state_from_address("127.0.0.1:" + Path(ports[0]).read_text().strip())
        if state is not None:
            s = get_memory_info_reply(state, timeout_seconds=5).store_stats
            print(json.dumps({"used": s.object_store_bytes_used, "spilled": s.spilled_bytes_total,
                              "fallback": s.object_store_bytes_fallback}), flush=True)
    except Exception:
        state = None
    time.sleep(1.0)
"""


class ObjectStore:
    """The object store's figures from the GCS of the Ray the job started with ``RAY_TMPDIR=ray_tmp``
    (its sessions are in ``ray_tmp/ray``), read by a poller process; the latest reading."""

    def __init__(self, ray_tmp: Path):
        pattern = str(ray_tmp / "ray" / "session_latest" / "gcs_server_port_*")
        self.proc = subprocess.Popen([sys.executable, "-c", POLLER, pattern], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.latest = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.latest = json.loads(line)

    def stats(self) -> dict | None:
        return self.latest

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Monitor(threading.Thread):
    """Samples the job's process tree, its object store and its run folder until stopped."""

    def __init__(self, pid: int, run_dir: Path, ray_tmp: Path):
        super().__init__(daemon=True)
        self.pid, self.run_dir, self.store = pid, run_dir, ObjectStore(ray_tmp)
        self.stop = threading.Event()
        self.stages: dict[str, dict] = {}  # stage (or "outside stages") -> its peaks
        self.disk: dict[str, int] = {}
        self._last, self._bytes = None, 0

    def _sample(self) -> None:
        stage = running_stage(self.run_dir) or "outside stages"
        if stage != self._last:  # disk written since the last change of stage belongs to the last one
            now = folder_bytes(self.run_dir)
            if self._last is not None:
                self.disk[self._last] = self.disk.get(self._last, 0) + now - self._bytes
            self._last, self._bytes = stage, now
        row = self.stages.setdefault(stage, {"peak_rss_per_process": {}, "peak_rss_tree": 0,
                                             "peak_object_store": 0, "spilled": 0, "fallback": 0})
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        tree = 0
        for p in procs:
            try:
                rss, cmd = p.memory_info().rss, " ".join(p.cmdline())
            except psutil.Error:
                continue
            tree += rss
            role = "job" if p.pid == self.pid else role_of(cmd)
            peaks = row["peak_rss_per_process"]
            peaks[role] = max(peaks.get(role, 0), rss)
        row["peak_rss_tree"] = max(row["peak_rss_tree"], tree)
        store = self.store.stats()
        if store:
            row["peak_object_store"] = max(row["peak_object_store"], store["used"])
            row["spilled"] = max(row["spilled"], store["spilled"])
            row["fallback"] = max(row["fallback"], store["fallback"])

    def run(self) -> None:
        while not self.stop.is_set():
            self._sample()
            self.stop.wait(SAMPLE_S)
        self._sample()
        self.store.close()
        if self._last is not None:
            self.disk[self._last] = self.disk.get(self._last, 0) + folder_bytes(self.run_dir) - self._bytes


def run_job(cmd: list[str], run_dir: Path, ray_tmp: Path, log: Path) -> tuple[float, Monitor, int]:
    env = {**JOB_ENV, "RAY_TMPDIR": str(ray_tmp)}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        monitor = Monitor(proc.pid, run_dir, ray_tmp)
        monitor.start()
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            monitor.stop.set()
            monitor.join()
    return time.perf_counter() - start, monitor, rc


def cityscapes_eval(target: Path, predictions: Path) -> dict:
    """cityscapesscripts' evalPixelLevelSemanticLabeling over ``predictions`` as written: the class
    IoU only (its instance-level iIoU needs gtFine instanceIds, which the generated pair lacks)."""
    if importlib.util.find_spec("cityscapesscripts") is None:
        return {"ran": False, "why": "cityscapesscripts is not installed (pip install cityscapesscripts)"}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**JOB_ENV, "CITYSCAPES_DATASET": str(target), "CITYSCAPES_RESULTS": str(predictions)}
        export = Path(tmp) / "result.json"
        code = ("import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as e; "
                f"e.args.evalInstLevelScore = False; e.args.exportFile = {str(export)!r}; e.main()")
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        miou = json.loads(export.read_text())["averageScoreClasses"] if export.is_file() else None
    return {"ran": True, "accepted": done.returncode == 0 and miou is not None,
            "class_miou": None if miou is None else round(100 * miou, 2),
            "tail": done.stdout.strip().splitlines()[-1:] + done.stderr.strip().splitlines()[-3:]}


def rehearse(counts: tuple[int, int, int], args, work: Path) -> dict:
    print(f"[rehearsal] pair of {counts[0]} source / {counts[1]} target-train / {counts[2]} val images", flush=True)
    t0 = time.perf_counter()
    source, target = make_pair(args.data, *counts)
    generate_s = time.perf_counter() - t0
    tag = "_".join(map(str, counts))
    run_dir, ray_tmp = work / f"run_{tag}", Path(tempfile.mkdtemp(prefix="udas-rh-"))  # Ray's socket paths are short
    overrides = [f"data.source.root={source}", f"data.target.root={target}", f"run.dir={run_dir}", "run.fresh=true",
                 *CPU_CHANGES, *step_changes(args.steps), *args.overrides]
    cmd = [sys.executable, "jobs/self_train.py", "--config", "conf/gta5_cityscapes.yaml", *overrides]
    print("[rehearsal] running:", " ".join(cmd), flush=True)
    try:
        wall, monitor, rc = run_job(cmd, run_dir, ray_tmp, work / f"job_{tag}.log")
        if rc != 0:
            sys.exit(f"[rehearsal] the job failed (exit {rc}); its log: {work / f'job_{tag}.log'}")
        spill_dirs = glob.glob(str(ray_tmp / "**" / "ray_spilled_objects*"), recursive=True)
        spill_dir_bytes = sum(folder_bytes(Path(d)) for d in spill_dirs)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    phases = breakdown(run_dir, wall)
    pred_dir = work / f"predict_{tag}"
    t0 = time.perf_counter()
    pred = subprocess.Popen([sys.executable, "jobs/predict.py", "--run", str(run_dir), "--split", "val", "--out",
                             str(pred_dir)], cwd=REPO, env=JOB_ENV)
    predict_peak = 0
    while pred.poll() is None:
        try:
            predict_peak = max(predict_peak, psutil.Process(pred.pid).memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    if pred.returncode != 0:
        sys.exit(f"[rehearsal] predict failed (exit {pred.returncode})")
    predict = {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_gib": round(predict_peak / GIB, 2),
               "files": len(list(pred_dir.rglob("*.png"))), "cityscapes_evaluator": cityscapes_eval(target, pred_dir)}
    summary = json.loads((run_dir / "summary.json").read_text())
    stages = {}
    for name, row in monitor.stages.items():
        stages[name] = {"peak_rss_gib": {k: round(v / GIB, 2) for k, v in sorted(row["peak_rss_per_process"].items())},
                        "peak_rss_tree_gib": round(row["peak_rss_tree"] / GIB, 2),
                        "peak_object_store_mib": round(row["peak_object_store"] / 2 ** 20, 1),
                        "spilled_mib": round(row["spilled"] / 2 ** 20, 1),
                        "fallback_mib": round(row["fallback"] / 2 ** 20, 1),
                        "disk_written_mib": round(monitor.disk.get(name, 0) / 2 ** 20, 1),
                        **({"wall_s": phases["stages"][name]["wall_s"]} if name in phases["stages"] else {}),
                        **({"phases_s": phases["stages"][name]["in_training_process_s"]}
                           if "in_training_process_s" in phases["stages"].get(name, {}) else {})}
    return {"images": {"source": counts[0], "target_train": counts[1], "target_val": counts[2]},
            "generate_s": round(generate_s, 1), "job_wall_s": round(wall, 1), "stages": stages,
            "spill_dir_mib": round(spill_dir_bytes / 2 ** 20, 1), "run_dir_mib": round(folder_bytes(run_dir) / 2 ** 20, 1),
            "predict": predict, "miou": {row["name"]: round(row["miou"], 2) for row in summary["stages"]},
            "overrides": overrides}


def table(result: dict) -> str:
    roles = sorted({r for run in result["runs"] for s in run["stages"].values() for r in s["peak_rss_gib"]})
    lines = []
    for run in result["runs"]:
        n = run["images"]
        lines += [f"\n{n['source']} source / {n['target_train']} target-train / {n['target_val']} val: job "
                  f"{run['job_wall_s']:.0f} s, run folder {run['run_dir_mib']:.0f} MiB, spill folder "
                  f"{run['spill_dir_mib']:.0f} MiB, predict {run['predict']['wall_s']:.0f} s at "
                  f"{run['predict']['peak_rss_gib']} GiB; {evaluator_line(run)}", "",
                  "| stage | wall s | tree GiB | " + " | ".join(roles) + " | object store MiB | spilled MiB | disk MiB |",
                  "|---" * (len(roles) + 6) + "|"]
        for name, s in run["stages"].items():
            cells = [name, f"{s.get('wall_s', 0):.0f}", f"{s['peak_rss_tree_gib']:.2f}",
                     *(f"{s['peak_rss_gib'][r]:.2f}" if r in s["peak_rss_gib"] else "" for r in roles),
                     f"{s['peak_object_store_mib']:.0f}", f"{s['spilled_mib']:.0f}", f"{s['disk_written_mib']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    if "growth" in result:
        lines += ["", "2N against N, largest per-process peak change: " + ", ".join(
            f"{k} {v:+.2f} GiB" for k, v in result["growth"].items())]
    return "\n".join(lines)


def evaluator_line(run: dict) -> str:
    ev = run["predict"]["cityscapes_evaluator"]
    if not ev.get("ran"):
        return f"Cityscapes evaluator not run ({ev.get('why')})"
    last = [name for name in run["miou"] if name != "oracle"][-1]  # the stage predict uses
    verdict = "accepted the predictions as written" if ev["accepted"] else "refused the predictions"
    return (f"the Cityscapes evaluator {verdict}, class mIoU {ev.get('class_miou')} "
            f"({last}'s own full-resolution score: {run['miou'][last]})")


def growth(small: dict, big: dict) -> dict:
    """Per role, the largest rise of a stage's per-process peak from N to 2N images (GiB)."""
    out = {}
    for name, s in big["stages"].items():
        for role, gib in s["peak_rss_gib"].items():
            base = small["stages"].get(name, {}).get("peak_rss_gib", {}).get(role)
            if base is not None:
                out[role] = round(max(out.get(role, -1e9), gib - base), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default="60,60,12", help="source, target-train and target-val counts")
    p.add_argument("--double", action="store_true", help="run again with twice every count")
    p.add_argument("--steps", type=int, default=24, help="training steps per stage")
    p.add_argument("--data", type=Path, default=REPO / "data" / "rehearsal", help="where the pair is written")
    p.add_argument("--work", type=Path, default=None, help="run folders, logs, predictions (default: a temp dir)")
    p.add_argument("--out", default=str(RESULTS / "rehearsal.json"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    try:
        counts = tuple(int(x) for x in args.images.split(","))
        assert len(counts) == 3 and min(counts) > 0
    except (ValueError, AssertionError):
        sys.exit(f"--images {args.images}: three positive counts, e.g. 60,60,12")
    work = args.work or Path(tempfile.mkdtemp(prefix="rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {**metadata(), "command": " ".join(sys.argv), "steps": args.steps, "cpu_changes": CPU_CHANGES,
              "runs": []}
    for size in ([counts, tuple(2 * c for c in counts)] if args.double else [counts]):
        result["runs"].append(rehearse(size, args, work))
        write_result(result, args.out)  # what has finished, should the next size fail
    if args.double:
        result["growth"] = growth(*result["runs"])
    print(table(result))
    write_result(result, args.out)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
