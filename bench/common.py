"""What every benchmark result records about the machine, and the check that keeps its FLOP
rates honest. Imported by the bench scripts as ``common`` (they run as ``python bench/<x>.py``).

A result is only comparable with the CPU, library versions and thread counts it was measured
with, so :func:`metadata` goes into every results JSON. A rate of dense math above what this
machine's best matmul reaches (:func:`machine_peak`: bench/peak.py's JSON when present, else a
short measurement) means a miscounted figure, not a fast one: :func:`check_peak` stops the
benchmark with both numbers instead of writing it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import sys
from pathlib import Path

import torch
import yaml

from udas_ray import flops

RESULTS = Path(__file__).parent / "results"
PEAK_FILE = RESULTS / "peak.json"
SPEED_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
               "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16")


def cpu_info() -> dict:
    """CPU model name, logical CPU count, and which of SPEED_FLAGS /proc/cpuinfo lists (first processor)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "logical_cpus": os.cpu_count(),
            "flags": [f for f in SPEED_FLAGS if f in flags],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def metadata(**threads) -> dict:
    """Date, CPU, torch/Ray/Python versions and this process's torch threads, plus ``threads``:
    the torch threads of the benchmark's other processes, named by the caller."""
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_info(), "torch": torch.__version__, "ray": ray_version, "python": platform.python_version(),
        "torch_threads": {"this_process_intra_op": torch.get_num_threads(),
                          "this_process_inter_op": torch.get_num_interop_threads(),
                          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), **threads},
    }


def machine_peak(threads: int, path: Path = PEAK_FILE) -> dict:
    """This machine's peak GFLOP/s for ``threads`` torch threads: bench/peak.py's result if it
    was measured with at least that many threads, else a 2 s matmul measured now."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("threads", 0) >= threads:
            return {"gflops_per_s": saved["peak_gflops_per_s"], "threads": saved["threads"],
                    "from": f"{path.name} ({saved.get('peak_from')}, {saved.get('date')})"}
    peak = flops.measure_peak(threads, seconds=2.0, size=2048)
    return {"gflops_per_s": round(peak, 1), "threads": threads, "from": "matmul 2048x2048 measured by this run"}


def peak_violations(figures: dict[str, float], peak: float) -> list[str]:
    """One line per figure whose GFLOP/s exceed ``peak``."""
    return [f"{name}: {value:.1f} GFLOP/s exceeds the machine's measured peak of {peak:.1f} GFLOP/s"
            for name, value in figures.items() if value > peak]


def check_peak(figures: dict[str, float], peak: dict, out: dict) -> None:
    """Exit non-zero, naming both numbers, if any figure's GFLOP/s exceed the peak: the FLOP
    count or the rate behind it is wrong, so ``out`` is printed but not written."""
    bad = peak_violations(figures, peak["gflops_per_s"])
    if bad:
        print(json.dumps(out, indent=1))
        print("\n".join(["FAILED: impossible FLOP rate, result not written", *bad,
                         f"(peak from {peak['from']})"]), file=sys.stderr)
        sys.exit(1)


def write_result(out: dict, path: str | Path) -> Path:
    """The result as JSON at ``path`` (bench/results/<name>.json by default), and on stdout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return path


def windows_after_warmup(history: list[dict]) -> list[dict]:
    """A stage's log windows (``history.jsonl`` records with a rate) after the first, which holds
    the warm-up; the first alone if it is the only one."""
    windows = [h for h in history if "steps_per_s" in h]
    return windows[1:] or windows


def mean_of(rows: list[dict], key: str) -> float | None:
    """Mean of ``key`` over the rows that have it (None: none has it)."""
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else None


def mean_std(values: list[float]) -> str:
    """A table cell: 'm' for one value, 'm ± s' (sample std) for more, one decimal."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def final_stage(rows: dict) -> str:
    """The last round, or the ema stage when it ran instead of rounds."""
    rounds = [k for k in rows if k.startswith("round_")]
    return rounds[-1] if rounds else "ema"


def write_between_markers(doc: Path, text: str, name: str = "ablation") -> None:
    """Put ``text`` between the document's ``name`` markers (replacing what was there)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    marked, found = re.subn(f"({re.escape(start)}\n).*?({re.escape(end)})",
                            lambda m: m.group(1) + text + "\n" + m.group(2), doc.read_text(), flags=re.S)
    if not found:
        raise SystemExit(f"{doc}: no {start} / {end} markers to write the table between")
    doc.write_text(marked)


def recorded_baselines(run_dir: Path) -> bool | None:
    """``run.baselines`` of the run started in ``run_dir``, or None if none was."""
    from udas_ray.driver import CONFIG_FILE

    path = run_dir / CONFIG_FILE
    return bool(yaml.safe_load(path.read_text())["run"]["baselines"]) if path.is_file() else None
