"""``make ui``: the MLflow UI over a run folder's tracking store, and the address of its runs table.

    python -m udas_ray.ui --run runs/default [--port 5000]

MLflow 3.17's UI opens, in a browser that has not been told otherwise, in its GenAI mode (traces,
an assistant panel); which mode it shows comes from the browser's local storage or the address's
``workflowType`` parameter, not from the server or the experiment. So this starts ``mlflow ui``,
waits until it answers, and prints the address of the experiment's runs table in "Model training"
mode (:func:`runs_url`), sorted by run name so the stages' nested runs are rows of their own
beside the job's parent run (sorted by date, the UI folds them under the parent). Ctrl-C, SIGTERM
or SIGHUP stop the server and every process it started, and free the port.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from udas_ray import cli
from udas_ray.errors import UdasError

# The UI's own URL parameters (mlflow/server/js: the workflow-type context and the search state).
RUNS_VIEW = {"workflowType": "machine_learning", "orderByKey": "tags.`mlflow.runName`", "orderByAsc": "true"}


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table, every run (stage runs included) a row, in training mode."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(RUNS_VIEW)}"


def serve(uri: str, artifacts: str | Path, host: str, port: int, **popen) -> subprocess.Popen:
    """``mlflow ui`` over ``uri`` in a process group of its own (stopped with its group)."""
    mlflow = Path(sys.executable).parent / "mlflow"
    return subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", uri, "--default-artifact-root", str(artifacts),
                             "--host", host, "--port", str(port)], start_new_session=True, **popen)


def wait_until_up(base: str, server: subprocess.Popen, timeout: float | None = None) -> None:
    """Until ``base/health`` answers OK; an error if the server exits or ``timeout`` s pass
    (None: no limit, a busy machine may take minutes)."""
    deadline = time.time() + timeout if timeout is not None else float("inf")
    while time.time() < deadline:
        if server.poll() is not None:
            raise UdasError(f"mlflow ui exited with status {server.returncode} before answering on {base}")
        try:
            if urllib.request.urlopen(f"{base}/health", timeout=2).read() == b"OK":
                return
        except OSError:
            time.sleep(1)
    raise UdasError(f"mlflow ui did not answer on {base}/health within {timeout:.0f} s")


def experiment_of(run_dir: Path) -> tuple[str, str]:
    """(tracking URI, experiment name) of a run folder, from its saved config when it has one."""
    from udas_ray.config import load_config
    from udas_ray.driver import CONFIG_FILE

    saved = run_dir / CONFIG_FILE
    cfg = load_config(saved if saved.is_file() else None, [f"run.dir={run_dir}"])
    return cfg.tracking_uri, cfg.mlflow.experiment


def stop(server: subprocess.Popen) -> None:
    """Stop a server :func:`serve` started: SIGTERM to its process group, SIGKILL if it lingers."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)  # our own server's process group only
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@cli.entry_point
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/default"), help="the run.dir whose store to show")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args(argv)
    run_dir = args.run.resolve()
    if not run_dir.is_dir():
        raise UdasError(f"{run_dir}: no such run folder; give the run.dir of a job (make ui RUN=...)")
    uri, experiment = experiment_of(run_dir)
    if not uri.startswith("sqlite:///"):
        raise UdasError(f"{run_dir}: its runs are tracked by {uri} (mlflow.tracking_uri); open that server's UI")
    from udas_ray import tracking

    exp_id = tracking.find_experiment(uri, experiment)
    base = f"http://{args.host}:{args.port}"
    server = serve(uri, run_dir / "mlartifacts", args.host, args.port)
    try:
        wait_until_up(base, server)
        print(f"MLflow UI of {run_dir}: " + (runs_url(base, exp_id) if exp_id else
              f"{base} (no experiment {experiment!r} in {uri} yet: run the pipeline first)"), flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(server)


if __name__ == "__main__":
    sys.exit(main())
