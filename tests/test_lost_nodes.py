"""What a stage does about a lost node, without a cluster: the nodes are fakes of ``ray.nodes()``
entries (the two-node cluster itself is tests/test_node_loss.py)."""

import threading

import pytest

from udas_ray import lost_nodes
from udas_ray.errors import UdasError


def node(node_id: str, cpus: float, gpus: float = 0) -> dict:
    return {"NodeID": node_id, "NodeManagerAddress": f"10.0.0.{len(node_id)}", "Alive": True,
            "Resources": {"CPU": cpus, "GPU": gpus}}


def test_workers_that_fit_counts_whole_workers_per_node():
    nodes = [node("a", 4), node("b", 1.5), node("c", 8, gpus=1)]
    assert lost_nodes.workers_that_fit(nodes, {"CPU": 1.5}) == 2 + 1 + 5
    assert lost_nodes.workers_that_fit(nodes, {"CPU": 2, "GPU": 1}) == 1  # only c has a GPU
    assert lost_nodes.workers_that_fit(nodes, {"CPU": 2, "GPU": 0}) == 2 + 0 + 4  # a zero need is no need
    assert lost_nodes.workers_that_fit([], {"CPU": 1}) == 0


@pytest.fixture
def cluster(monkeypatch):
    """A fake cluster of a head (2 CPUs) and a worker node (4 CPUs); ``cluster.remove(id)``."""
    class Fake:
        nodes = {"head": node("head", 2), "worker": node("worker", 4)}

        def remove(self, node_id):
            del self.nodes[node_id]

    fake = Fake()
    monkeypatch.setattr(lost_nodes, "alive_nodes", lambda: dict(fake.nodes))
    monkeypatch.setattr(lost_nodes, "POLL_S", 0.05)
    return fake


def test_watch_nodes_passes_results_through_in_order(cluster):
    assert list(lost_nodes.watch_nodes(iter([1, 2, 3]), "pseudo", {"CPU": 1}, "pseudo.cpus_per_actor")) == [1, 2, 3]


def test_watch_nodes_hands_on_an_error_of_the_pool(cluster):
    def failing():
        yield 1
        raise ValueError("a batch failed")

    watched = lost_nodes.watch_nodes(failing(), "pseudo", {"CPU": 1}, "pseudo.cpus_per_actor")
    assert next(watched) == 1
    with pytest.raises(ValueError, match="a batch failed"):
        next(watched)


def blocked_after_first(release: threading.Event):
    """A pool's output that gives one result, then waits (for its lost actors) until released."""
    yield "first"
    release.wait(timeout=30)
    yield "second"


def test_a_lost_node_whose_actors_the_rest_cannot_hold_stops_the_round_naming_it(cluster):
    release = threading.Event()
    watched = lost_nodes.watch_nodes(blocked_after_first(release), "pseudo round_1", {"CPU": 3},
                                     "pseudo.cpus_per_actor")
    assert next(watched) == "first"
    cluster.remove("worker")  # the head's 2 CPUs cannot hold a 3-CPU actor
    try:
        with pytest.raises(UdasError) as caught:
            next(watched)
    finally:
        release.set()
    message = str(caught.value)
    assert message.startswith("[pseudo round_1] lost Ray node worker (10.0.0.6, 4 CPUs)")
    assert "pseudo.cpus_per_actor" in message and "3 CPU" in message and "\n" not in message


def test_a_lost_node_the_rest_can_make_up_for_lets_the_round_wait_for_its_retries(cluster):
    release = threading.Event()
    watched = lost_nodes.watch_nodes(blocked_after_first(release), "pseudo", {"CPU": 1}, "pseudo.cpus_per_actor")
    assert next(watched) == "first"
    cluster.remove("worker")  # the head holds a 1-CPU actor: Ray Data restarts the lost one there
    threading.Timer(0.3, release.set).start()  # several node checks pass before the retried batch arrives
    assert list(watched) == ["second"]


def test_a_caller_that_stops_early_closes_the_pool_output(cluster):
    closed = threading.Event()

    def output():
        try:
            for i in range(100):
                yield i
        finally:
            closed.set()  # what closing Ray Data's iterator does: the pool shuts down

    watched = lost_nodes.watch_nodes(output(), "pseudo", {"CPU": 1}, "pseudo.cpus_per_actor")
    assert next(watched) == 0
    watched.close()  # the round ended early (an error while writing, say)
    assert closed.wait(timeout=5)


def test_a_failed_look_at_the_cluster_is_a_warning_not_the_end_of_the_round(cluster, monkeypatch, caplog):
    def unreachable():
        raise ConnectionError("GCS unreachable")

    monkeypatch.setattr(lost_nodes, "alive_nodes", unreachable)
    nodes = {"worker": "worker (10.0.0.6, 4 CPUs)"}
    with caplog.at_level("WARNING", logger="udas_ray"):
        lost_nodes.check_lost(nodes, "pseudo round_1", {"CPU": 1}, "pseudo.cpus_per_actor")  # no raise
    assert "[pseudo round_1] could not list the cluster's nodes (GCS unreachable)" in caplog.text
