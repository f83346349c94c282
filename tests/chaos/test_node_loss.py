"""Lose a worker node of a local multi-node cluster: its robots are rescheduled elsewhere."""

import time

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from actors.robots.metaworld import MetaWorldConfig  # noqa: E402
from actors.worker import WorkerConfig  # noqa: E402
from algorithms.policy import ChunkPolicy, PolicyConfig  # noqa: E402
from buffers.codec import decode_chunk  # noqa: E402
from buffers.store import BufferConfig  # noqa: E402
from fleet.remote.buffer import BufferServer  # noqa: E402
from fleet.remote.robot import RobotLaunch, start_robot  # noqa: E402
from fleet.remote.weights import WeightHub  # noqa: E402

pytestmark = pytest.mark.chaos
UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
               ray.exceptions.GetTimeoutError)


def test_robots_on_a_lost_node_come_back_on_another(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "object_store_memory": 200 * 1024**2})
    worker = cluster.add_node(num_cpus=1, object_store_memory=100 * 1024**2)
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        pcfg = PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32)
        head_id = ray.get_runtime_context().get_node_id()
        buffer = BufferServer.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            head_id, soft=False)).remote(str(tmp_path / "buffer"), BufferConfig())
        hub = WeightHub.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            head_id, soft=False)).remote()
        on_worker = NodeAffinitySchedulingStrategy(worker.node_id, soft=True)
        robots = [start_robot(RobotLaunch(
            f"robot-{i}", MetaWorldConfig(max_episode_steps=40), pcfg,
            WorkerConfig(calls_per_chunk=2, seed=i + 1), str(tmp_path / "spill")),
            ChunkPolicy(pcfg).policy_state(), buffer, hub, num_cpus=0.25,
            scheduling_strategy=on_worker) for i in range(2)]
        ray.get([r.start.remote() for r in robots])
        before = ray.get([r.stats.remote() for r in robots])
        assert {s["node_id"] for s in before} == {worker.node_id}
        cluster.remove_node(worker)  # the node dies with its robot processes
        deadline = time.monotonic() + 120
        while True:  # restarted on the head node, working again on their own
            try:
                now = ray.get([r.stats.remote() for r in robots], timeout=10)
                if all(s["env_steps"] > 50 for s in now):
                    break
            except UNAVAILABLE:
                pass
            assert time.monotonic() < deadline, "robots were not rescheduled"
            time.sleep(0.5)
        assert {s["node_id"] for s in now} == {head_id}
        stats = ray.get([r.stop.remote() for r in robots])
        records, _ = ray.get(buffer.read.remote(0, 10**6))
        keys = [decode_chunk(r).key for r in records]
        assert len(keys) == len(set(keys))  # no duplicates across the move
        assert all(s["error"] is None for s in stats)
    finally:
        ray.shutdown()
        cluster.shutdown()
