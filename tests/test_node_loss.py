"""A node lost mid-stage, on a two-node Ray cluster simulated on this machine
(``ray.cluster_utils.Cluster``: a head node and a worker node of one CPU each, one file system).

The stage's two Train workers (0.75 CPU each, so one lands on each node) lose the worker node
after their first checkpoint. What is left (one CPU) cannot hold them again: the stage fails at
once with a line naming the lost node, where Ray Train alone would wait for the lost CPUs
forever. Once a node is added back, the same stage resumes from its last checkpoint.

On the same cluster the stage's model then labels the target set with two pseudo-label actors
(0.75 CPU each: one per node), once undisturbed and once losing the worker node mid-round.
Ray Data restarts the lost actor on the node left, once that node's own actor has finished and
left its CPU, and repeats the lost actor's batches there: the round ends whole and equals the
undisturbed one file by file.

The cluster runs once, in a child process (this file run as a script), for both tests: the
suite's own local Ray (``ray_session``) may already be connected in the test process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = 10


@pytest.fixture(scope="module")
def node_loss(tiny_data, tmp_path_factory):
    """The child's record of what happened, and the folder it worked in."""
    source, target = tiny_data
    tmp_path = tmp_path_factory.mktemp("node_loss")
    log = tmp_path / "cluster.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, __file__, str(tmp_path), str(source), str(target)], cwd=REPO,
                                 env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0)
    try:
        assert child.wait(timeout=480) == 0, log.read_text()[-4000:]
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            forget_killed_cluster(tmp_path / "address")
    return json.loads((tmp_path / "result.json").read_text()), tmp_path


def forget_killed_cluster(recorded: Path) -> None:
    """A killed child never reaches Cluster.shutdown, which deletes the address Cluster wrote to
    /tmp/ray/ray_current_cluster; left there, it sends every later bare ray.init() to a dead cluster."""
    from ray._common.utils import reset_ray_address
    from ray._private.utils import read_ray_address

    if recorded.exists() and read_ray_address() == recorded.read_text():
        reset_ray_address()


def test_a_lost_node_fails_the_stage_naming_it_then_the_stage_resumes_on_a_new_node(node_loss):
    result, tmp_path = node_loss

    # killed mid-stage: both workers were running, one on each node
    assert sorted(result["worker_nodes"]) == sorted([result["head"], result["lost"]])
    # the stage stopped with one line naming the node it lost, soon after (Ray Train alone would
    # try to restart the workers without end, 60 s a try)
    first = result["first"]
    assert first["error"] is not None, "the stage finished although its node was removed"
    assert result["lost"] in first["error"] and "scaling.num_workers" in first["error"], first["error"]
    assert first["seconds"] < 120
    # rerun with a node added back: the stage resumes from its last checkpoint and ends whole.
    # Not compared with an undisturbed run value for value: with two workers Ray Data hands
    # blocks to the workers by timing, so no two runs train on the same batches.
    metrics = result["second"]
    assert metrics["step"] == STEPS and metrics["resumed_from"] >= result["checkpointed"] > 0
    assert 0 <= metrics["miou"] <= 100
    assert json.loads((tmp_path / "lost" / "metrics.json").read_text())["step"] == STEPS
    assert (tmp_path / "lost" / "model.pt").is_file()


def test_a_pseudo_label_round_that_loses_a_node_ends_on_the_node_left_with_the_same_labels(node_loss):
    result, tmp_path = node_loss
    lost = result["pseudo"]
    assert "lost" in lost, "the round ended before its actors had both started"
    # lost mid-round: the two actors ran one on each node, and images were left to label
    assert sorted(lost["actor_nodes"]) == sorted([result["head"], lost["lost"]])
    assert 1 <= lost["staged_at_loss"] < lost["images"]
    # the round ended by itself on the node left, soon after
    assert lost["error"] is None, lost["error"]
    assert lost["seconds"] < 120
    # ... whole: the same files, byte for byte, as the round that lost nothing
    undisturbed, disturbed = tmp_path / "pseudo" / "undisturbed", tmp_path / "pseudo" / "round_1"
    assert files(disturbed).keys() == files(undisturbed).keys()
    assert len(list((disturbed / "labels").glob("*.png"))) == lost["images"]
    assert files(disturbed) == files(undisturbed)
    assert not any(p.name.startswith(".") for p in disturbed.parent.iterdir())  # no staging folder left, of either round


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- the child
def lose_worker_node(cluster, node, storage: Path, result: dict) -> None:
    """After the stage's first checkpoint: freeze its worker on the head (so the stage cannot
    end before the node is gone), remove the worker node, let the survivor go on."""
    from ray._private import state

    from udas_ray.stages.loop import checkpointed_step

    deadline = time.monotonic() + 300
    while not (storage / "checkpoint_manager_snapshot.json").is_file():
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    head = cluster.head_node.node_id
    workers = [a for a in state.actors().values() if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"]
    result["worker_nodes"] = [a["Address"]["NodeID"] for a in workers]
    survivors = [a["Pid"] for a in workers if a["Address"]["NodeID"] == head]
    for pid in survivors:
        os.kill(pid, signal.SIGSTOP)
    try:
        result["lost"] = node.node_id
        say("removing the worker node; last checkpoint at step", checkpointed_step(storage.parent, storage.name))
        cluster.remove_node(node)
        result["removed_at"] = time.monotonic()
        say("removed")
    finally:
        for pid in survivors:
            os.kill(pid, signal.SIGCONT)


def lose_node_mid_round(cluster, node, staging: Path, result: dict, ended: threading.Event) -> None:
    """Once the round has labelled an image: freeze its pseudo-label actors as they come up (so
    the round cannot end first), remove ``node`` once both are frozen, kill what ran there and
    let the head's actor go on."""

    def staged() -> int:
        return len(list((staging / "pred").glob("*.conf.png")))

    frozen, seen = {}, 0
    deadline = time.monotonic() + 300
    try:
        while len(frozen) < 2:
            if ended.is_set():
                return  # the round ended first: the test finds no lost node in the record
            assert time.monotonic() < deadline, "the two pseudo-label actors did not both label an image"
            if staged() > seen:  # an actor that runs labelled an image: freeze every one that runs
                for actor in pseudo_label_actors():
                    if actor["State"] == "ALIVE" and actor["Pid"] not in frozen:
                        os.kill(actor["Pid"], signal.SIGSTOP)
                        frozen[actor["Pid"]] = actor["Address"]["NodeID"]
                seen = staged()
            time.sleep(0.01)
        result.update(actor_nodes=list(frozen.values()), staged_at_loss=staged(), lost=node.node_id)
        say("removing the worker node;", result["staged_at_loss"], "images labelled")
        cluster.remove_node(node)
        result["removed_at"] = time.monotonic()
        say("removed")
    finally:  # the head's actor first: remove_node may have taken the other one already
        for pid, node_id in sorted(frozen.items(), key=lambda item: item[1] == node.node_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if node_id == node.node_id else signal.SIGCONT)


def pseudo_label_actors() -> list[dict]:
    """Every pseudo-label actor the cluster has known (``ray._private.state.actors()`` entries)."""
    from ray._private import state

    return [a for a in state.actors().values() if "TeacherPredictor" in a["ActorClassName"]]


def label_losing_a_node(cluster, node, cfg, teacher: Path, tmp: Path) -> dict:
    """Pseudo-labels by two actors, one per node: a round that loses nothing, then one that
    loses ``node`` mid-round."""
    from udas_ray.data.splits import load_splits
    from udas_ray.stages import pseudo

    cfg = cfg.override({"pseudo.actors": 2, "pseudo.cpus_per_actor": 0.75, "pseudo.batch_size": 1})
    split = load_splits(cfg).target_train
    pseudo.run_pseudo_labels(cfg, split, teacher, tmp / "pseudo" / "undisturbed")
    say("an undisturbed pseudo-label round done")
    deadline = time.monotonic() + 120
    while any(a["State"] != "DEAD" for a in pseudo_label_actors()):
        assert time.monotonic() < deadline, "the undisturbed round's actors are still there"
        time.sleep(0.1)  # none of them may be taken for the next round's
    result, ended = {"images": len(split)}, threading.Event()
    loser = threading.Thread(target=lose_node_mid_round,
                             args=(cluster, node, tmp / "pseudo" / ".round_1.staging", result, ended))
    loser.start()
    started = time.monotonic()
    try:
        pseudo.run_pseudo_labels(cfg, split, teacher, tmp / "pseudo" / "round_1")
        error = None
    except Exception as exc:  # whatever it is, the test shows it
        error = f"{type(exc).__name__}: {exc}"
    ended.set()
    loser.join()
    result.update(error=error, seconds=time.monotonic() - result.pop("removed_at", started))
    restarted = sum(1 for a in pseudo_label_actors() if a["NumRestarts"])
    say("the round that lost a node ended:", error, "; pseudo-label actors restarted:", restarted)
    return result


def say(*what) -> None:
    print(f"[node-loss test {time.strftime('%H:%M:%S')}]", *what, flush=True)


def main(tmp: Path, source: str, target: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from udas_ray.config import load_config
    from udas_ray.data.splits import load_splits
    from udas_ray.errors import UdasError
    from udas_ray.stages import kinds, segment
    from udas_ray.stages.loop import checkpointed_step

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    (tmp / "address").write_text(cluster.address)  # for the parent to forget, should it kill this process
    try:
        worker = cluster.add_node(num_cpus=1)
        say("two nodes up")
        # as a job's Ray: udas_ray.cluster.setup_worker quiets Ray Train's per-second chatter
        ray.init(address=cluster.address, runtime_env={"worker_process_setup_hook": "udas_ray.cluster.setup_worker"})
        cfg = load_config(None, [
            "data.source.format=gta5", f"data.source.root={source}", "data.target.format=cityscapes",
            f"data.target.root={target}", "data.target.labeled=2", "data.image_size=[32,64]",
            f"train.steps={STEPS}", "train.batch_size=2", f"train.eval_every={STEPS}", "train.checkpoint_every=2",
            "train.log_every=5", "train.peak_gflops=100", f"run.dir={tmp / 'run'}", "run.baselines=false",
            # two workers that do not fit on one node; what is left after losing one holds only one
            "scaling.num_workers=2", "scaling.cpus_per_worker=0.75", "scaling.data_workers=1",
            "scaling.data_cpus=0.25", "scaling.max_failures=1",
        ])
        spec = kinds.build_spec(cfg, load_splits(cfg), "source_only", "lost", tmp / "lost")
        storage = tmp / "ray"
        result = {"head": cluster.head_node.node_id}
        loser = threading.Thread(target=lose_worker_node, args=(cluster, worker, storage / "lost", result))
        loser.start()
        started = time.monotonic()
        try:
            segment.run_on_ray(cfg, spec, storage)
            error = None
        except UdasError as exc:
            error = str(exc)
        result["first"] = {"error": error, "seconds": time.monotonic() - result.get("removed_at", started)}
        say("the stage ended:", error)
        loser.join()
        result["checkpointed"] = checkpointed_step(storage, "lost")
        replacement = cluster.add_node(num_cpus=1)  # as an autoscaler would bring
        say("a node added")
        result["second"] = segment.run_on_ray(cfg, spec, storage)
        say("the stage resumed and ended")
        result["second"].pop("confusion", None)
        result["pseudo"] = label_losing_a_node(cluster, replacement, cfg, tmp / "lost" / "model.pt", tmp)
        (tmp / "result.json").write_text(json.dumps(result))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
