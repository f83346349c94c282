"""The weight hub on a real local Ray: publications in parts, the robots' non-blocking poll
(one request waiting at the hub), and the evaluator's blocking `newest`."""

import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from fleet.remote.weights import HubWeights, WeightHub, split  # noqa: E402


def state(value: float) -> dict[str, np.ndarray]:
    return {f"layer{i}": np.full(1000, value + i, np.float32) for i in range(5)}


def test_split_keeps_whole_arrays_in_order_within_the_part_size():
    parts = split(state(0.0), part_bytes=8000)  # two 4,000-byte arrays per part
    assert [list(p) for p in parts] == [["layer0", "layer1"], ["layer2", "layer3"], ["layer4"]]
    assert [list(p) for p in split(state(0.0), part_bytes=10)] == [[f"layer{i}"] for i in range(5)]
    assert len(split(state(0.0))) == 1


def test_poll_and_newest_get_every_part_of_the_newest_publication(local_ray):
    hub = WeightHub.remote()
    learner = HubWeights(hub, dtype="float16", part_bytes=4000)  # one array per part
    robot, evaluator = HubWeights(hub), HubWeights(hub)
    assert evaluator.newest() is None  # nothing published yet
    assert robot.poll(-1) is None  # asks, and returns at once
    learner.publish(3, state(1.0))
    deadline = time.monotonic() + 60
    got = None
    while got is None:
        assert time.monotonic() < deadline, "the waiting request was never answered"
        got = robot.poll(-1)
        time.sleep(0.01)
    version, weights = got
    assert version == 3 and set(weights) == set(state(0.0))
    assert weights["layer4"].dtype == np.float16 and weights["layer4"][0] == 5.0
    assert robot.adopt_latency_s >= 0
    assert robot.poll(3) is None  # nothing newer
    newest = evaluator.newest()
    assert newest is not None
    version, weights = newest
    assert version == 3 and weights["layer2"].dtype == np.float32
    assert np.array_equal(weights["layer2"], state(1.0)["layer2"])
    assert evaluator.newest(have_version=3) is None
    learner.publish(2, state(9.0))  # an older version never replaces a newer one
    assert (evaluator.newest() or (-1, {}))[0] == 3


def test_newest_waits_for_a_publication_newer_than_it_has(local_ray):
    hub = WeightHub.remote()
    learner, evaluator = HubWeights(hub), HubWeights(hub)
    learner.publish(1, state(0.0))
    waiting = hub.wait_newer.remote(1, 60.0)
    assert not ray.wait([waiting], timeout=0.2)[0]  # version 1 is not newer than 1
    learner.publish(2, state(2.0))
    version, _, _ = ray.get(waiting, timeout=60)
    assert version == 2
    assert evaluator.newest(have_version=2, timeout_s=0.1) is None  # timed out, nothing newer


def test_robots_in_one_process_share_one_request_at_the_hub(local_ray):
    hub = WeightHub.remote()
    robots = [HubWeights(hub) for _ in range(4)]  # four robots packed in this process
    assert all(r.poll(-1) is None for r in robots)
    HubWeights(hub).publish(1, state(1.0))
    deadline = time.monotonic() + 60
    got = [None] * 4
    while not all(got):
        assert time.monotonic() < deadline, "a robot never got the publication"
        got = [g or r.poll(-1) for g, r in zip(got, robots, strict=True)]
        time.sleep(0.01)
    assert [g[0] for g in got] == [1] * 4
    assert ray.get(hub.requests_so_far.remote()) == 1  # one request answered all four
    assert all(r.poll(1) is None for r in robots)  # what is newer than 1: again one request
    assert robots[2].poll(0) is not None  # a robot behind the others gets the newest at once
    HubWeights(hub).publish(2, state(2.0))
    while robots[0].poll(1) is None:
        assert time.monotonic() < deadline, "version 2 never came"
        time.sleep(0.01)
    assert ray.get(hub.requests_so_far.remote()) == 2
