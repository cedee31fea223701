"""bench/gpu_check.py, the one command run on a GPU node, kept from rotting: its --cpu mode runs
every check (teachers at each precision, in-process and on a Train worker, full-resolution
evaluation, pseudo-labels, udas-predict) on the CPU, tiny, in a process of its own (its own Ray)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TEACHER = {"precision", "mode", "device", "steps_per_s", "images_per_s", "flops_per_step", "gflops_per_s",
           "mfu_vs_fp32_peak", "mfu_vs_bf16_peak", "peak_memory_bytes", "data_wait_share", "final_val_miou"}


def test_the_cpu_mode_of_the_gpu_check_passes_every_check(tmp_path):
    out = tmp_path / "x.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--cpu", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    checks = result["checks"]
    assert result["ok"] and not result["failed"] and result["mode"] == "cpu"
    assert {name for name, c in checks.items() if not c["ok"]} == set()
    assert set(checks) == {"data", "ray", "peak", "teacher_fp32", "teacher_bf16", "teacher_bf16_worker",
                           "eval_full_fp32", "eval_full_bf16", "pseudo", "predict", "tracking_off"}
    assert {"torch", "ray", "python", "cuda", "gpu", "cpu", "settings"} <= set(result)
    assert set(checks["peak"]["gflops_per_s"]) == {"fp32", "bf16"} and min(checks["peak"]["gflops_per_s"].values()) > 0
    for name in ("teacher_fp32", "teacher_bf16", "teacher_bf16_worker"):
        teacher = checks[name]
        assert TEACHER <= set(teacher), name
        assert teacher["device"] == "cpu" and teacher["flops_per_step"] > 0 and not teacher["mlflow_imported"]
        assert min(teacher[k] for k in ("steps_per_s", "images_per_s", "gflops_per_s", "mfu_vs_bf16_peak")) > 0
    assert checks["teacher_bf16"]["mode"] == "in_process" and checks["teacher_bf16_worker"]["mode"] == "one Train worker"
    for precision in ("fp32", "bf16"):  # scored against the labels at their own 128x256, not the 64x128 input
        assert checks[f"eval_full_{precision}"]["label_size"] == [128, 256] and checks[f"eval_full_{precision}"]["images_per_s"] > 0
    assert checks["pseudo"]["images"] == 8 and checks["pseudo"]["images_per_s_whole_round"] > 0
    assert checks["predict"]["images"] == 4 and checks["predict"]["output_sizes"] == [[128, 256]]
    assert checks["predict"]["images_per_s"] > 0 and checks["predict"]["device"] == "cpu"
