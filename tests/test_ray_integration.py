"""Robot actors, the buffer actor and the weight hub on a real local Ray, with Meta-World."""

import time

import pytest

ray = pytest.importorskip("ray")

from actors.robots.metaworld import MetaWorldConfig  # noqa: E402
from actors.worker import WorkerConfig  # noqa: E402
from algorithms.policy import ChunkPolicy, PolicyConfig  # noqa: E402
from buffers.codec import decode_chunk  # noqa: E402
from buffers.store import BufferConfig  # noqa: E402
from fleet.remote.buffer import BufferServer  # noqa: E402
from fleet.remote.robot import RobotLaunch, start_robot  # noqa: E402
from fleet.remote.weights import HubWeights, WeightHub  # noqa: E402


def test_robots_stream_chunks_and_adopt_published_weights(local_ray, tmp_path):
    pcfg = PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32)
    policy = ChunkPolicy(pcfg)
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig(fsync="always"))
    hub = WeightHub.remote()
    robots = [start_robot(RobotLaunch(
        f"robot-{i}", MetaWorldConfig(max_episode_steps=40), pcfg,
        WorkerConfig(horizon=4, calls_per_chunk=4, seed=i + 1), str(tmp_path / "spill")),
        policy.policy_state(), buffer, hub, num_cpus=0.25) for i in range(2)]
    ray.get([r.start.remote() for r in robots])
    time.sleep(2.0)
    weights = HubWeights(hub, dtype="float16")  # half the bytes; robots cast back on load
    state = {k: v + 0.01 for k, v in policy.policy_state().items()}
    weights.publish(1, state)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(s["policy_version"] == 1 for s in ray.get([r.stats.remote() for r in robots])):
            break
        time.sleep(0.2)
    stats = ray.get([r.stop.remote() for r in robots])
    assert all(s["policy_version"] == 1 and s["error"] is None for s in stats)
    assert all(0 <= s["adopt_latency_s"] < 60 for s in stats)
    records, _ = ray.get(buffer.read.remote(0, 100_000))
    chunks = [decode_chunk(r) for r in records]
    # every chunk a robot sent was stored exactly once, and nothing was refused
    assert len(chunks) == sum(s["chunks_sent"] for s in stats) == sum(s["stored"] for s in stats)
    assert len({c.key for c in chunks}) == len(chunks)
    assert sum(s["refused"] for s in stats) == 0
    assert {c.policy_version for c in chunks} == {0, 1}
    assert {c.robot_id for c in chunks} == {"robot-0", "robot-1"}
    # a chunk is produced by one version: after adoption, a robot never goes back
    for rid in ("robot-0", "robot-1"):
        versions = [c.policy_version for c in chunks if c.robot_id == rid]
        assert versions == sorted(versions)
    info = ray.get(buffer.info.remote())
    assert info["records"] == len(chunks) and info["corrupt_records"] == 0
    steps = sum(s["env_steps"] for s in stats)
    assert info["steps"] == steps > 0

