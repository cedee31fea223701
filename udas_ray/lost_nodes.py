"""A stage that loses a node it was running on.

Ray Train restarts the stage's worker group from its last checkpoint (``scaling.max_failures``
times), which works when the nodes left can hold the group. When they cannot, Ray 2.60 waits
for the lost CPUs without end: each restart gives up after ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``
(60 s) and is retried without limit (``FailureConfig.controller_failure_limit`` defaults to -1).
:class:`LostNodeCheck`, a Ray Train callback on the stage's controller, stops the stage instead
with one line naming the lost node; rerun once the cluster has the CPUs again, the stage resumes
from its last checkpoint.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Iterable, Iterator

import ray
from ray.exceptions import RayActorError
from ray.train import UserCallback

from udas_ray.errors import UdasError

log = logging.getLogger("udas_ray")
# How long to wait for the GCS to list a node dead after one of its workers was reported dead
# because of it (Ray reports such a worker once it knows; the wait is for other orders).
SETTLE_S = 3.0
POLL_S = 5.0  # how often watch_nodes looks at the nodes while no result arrives


def alive_nodes() -> dict[str, dict]:
    """The cluster's live nodes by node ID (``ray.nodes()`` entries)."""
    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def workers_that_fit(nodes, per_worker: dict[str, float]) -> int:
    """How many workers needing ``per_worker`` (each within one node) the ``nodes`` could hold
    if nothing else ran on them: more workers than this can never be placed."""
    needs = {k: v for k, v in per_worker.items() if v > 0}
    total = 0
    for node in nodes:
        have = node.get("Resources", {})
        total += min((int(have.get(k, 0.0) / v + 1e-6) for k, v in needs.items()), default=0)
    return total


def describe(node: dict) -> str:
    cpus = node.get("Resources", {}).get("CPU", 0)
    return f"{node['NodeID']} ({node.get('NodeManagerAddress', '?')}, {cpus:g} CPU{'' if cpus == 1 else 's'})"


def described_alive_nodes() -> dict[str, str]:
    """The live nodes at this moment, node ID -> :func:`describe` text: what a stage remembers at
    its start, to name a node it loses later."""
    return {node_id: describe(node) for node_id, node in alive_nodes().items()}


def _actor_died(error: BaseException) -> bool:
    error = getattr(error, "health_check_failure", error)  # Ray Train's wrapper of a failed poll
    return isinstance(error, RayActorError)


class LostNodeCheck(UserCallback):
    """Built in the driver when the stage starts (it records the live nodes then); runs on the
    stage's Train controller. After a worker died: if a node of the start is gone and the
    nodes left cannot hold ``num_workers`` workers, raise a :class:`UdasError` naming it, which
    ends the stage (Ray Train does not retry an error of its controller's callbacks)."""

    def __init__(self, stage: str, num_workers: int, per_worker: dict[str, float]):
        self.stage, self.num_workers, self.per_worker = stage, num_workers, dict(per_worker)
        self.nodes = described_alive_nodes()

    def after_exception(self, run_context, worker_exceptions: dict) -> None:
        died = [e for e in worker_exceptions.values() if _actor_died(e)]
        if not died:
            return  # an error of the training code: Ray Train's failure policy decides
        # a worker killed alone (its node alive) costs no wait
        deadline = time.monotonic() + (SETTLE_S if any("node" in str(e).lower() for e in died) else 0.0)
        while True:
            alive = alive_nodes()
            lost = [node_id for node_id in self.nodes if node_id not in alive]
            if lost or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if not lost:
            return  # a worker died, not its node: Ray Train restarts the group
        names = ", ".join(self.nodes[node_id] for node_id in lost)
        fit = workers_that_fit(alive.values(), self.per_worker)
        if fit >= self.num_workers:
            log.warning("[%s] lost Ray node %s; the nodes left can hold its %d Train workers: resuming there from its "
                        "last checkpoint", self.stage, names, self.num_workers)
            self.nodes = {node_id: text for node_id, text in self.nodes.items() if node_id in alive}
            return
        need = ", ".join(f"{v:g} {k}" for k, v in self.per_worker.items())
        raise UdasError(
            f"[{self.stage}] lost Ray node {names} mid-stage; the {len(alive)} node(s) left can hold {fit} of its "
            f"{self.num_workers} Train workers ({need} each): add a node, or lower scaling.num_workers or "
            "scaling.cpus_per_worker, and rerun to resume the stage from its last checkpoint")


def watch_nodes(results: Iterable, what: str, per_actor: dict[str, float], setting: str) -> Iterator:
    """Yield ``results`` (an actor pool's output, read in a thread). While none arrive, every
    POLL_S seconds: if a node alive at the start is gone and the nodes left cannot hold one
    actor needing ``per_actor``, raise a :class:`UdasError` naming the node and ``setting`` (the
    key that sets ``per_actor``).

    When the caller stops early (an error, a break, this check), the reading thread stops at its
    next result and closes ``results``, which shuts the pool down; a pool that never gives
    another result (the lost node's case) dies with the job."""
    nodes = described_alive_nodes()
    inbox: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()
    end = object()

    def hand_over(entry) -> bool:
        while not stop.is_set():
            try:
                inbox.put(entry, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def read():
        it = iter(results)
        try:
            for item in it:
                if not hand_over((item, None)):
                    return
            hand_over((end, None))
        except BaseException as exc:  # handed to the consuming side, raised there
            hand_over((end, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    threading.Thread(target=read, daemon=True, name=f"{what} results").start()
    try:
        while True:
            try:
                item, error = inbox.get(timeout=POLL_S)
            except queue.Empty:
                check_lost(nodes, what, per_actor, setting)
                continue
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()


def check_lost(nodes: dict[str, str], what: str, per_actor: dict[str, float], setting: str) -> None:
    """Raise a one-line :class:`UdasError` if one of ``nodes`` (id -> description) is gone and
    no node left can hold an actor needing ``per_actor``. A failed look at the cluster is a
    warning: the pool may well be making progress."""
    try:
        alive = alive_nodes()
    except Exception as exc:
        log.warning("[%s] could not list the cluster's nodes (%s); looking again in %g s", what, exc, POLL_S)
        return
    lost = [node_id for node_id in nodes if node_id not in alive]
    if lost and workers_that_fit(alive.values(), per_actor) == 0:
        need = ", ".join(f"{v:g} {k}" for k, v in per_actor.items() if v > 0)
        raise UdasError(f"[{what}] lost Ray node {', '.join(nodes[n] for n in lost)}; no node left can hold an actor "
                        f"({need}): add a node or lower {setting}, and rerun")
