"""Faults on a real local Ray: kill the buffer server and robot actors mid-run.

Each test asserts exact counts: every chunk a robot produced is stored exactly once.
"""

import time

import pytest

ray = pytest.importorskip("ray")

from actors.robots.metaworld import MetaWorldConfig  # noqa: E402
from actors.worker import WorkerConfig  # noqa: E402
from algorithms.policy import ChunkPolicy, PolicyConfig  # noqa: E402
from buffers.codec import decode_chunk  # noqa: E402
from buffers.log import verify_log  # noqa: E402
from buffers.store import BufferConfig  # noqa: E402
from fleet.remote.buffer import BufferServer  # noqa: E402
from fleet.remote.robot import RobotLaunch, start_robot  # noqa: E402
from fleet.remote.weights import WeightHub  # noqa: E402

pytestmark = pytest.mark.chaos



def fleet_of(tmp_path, n, calls_per_chunk=2):
    pcfg = PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32)
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig(fsync="always"))
    hub = WeightHub.remote()
    robots = [start_robot(RobotLaunch(
        f"robot-{i}", MetaWorldConfig(max_episode_steps=40), pcfg,
        WorkerConfig(calls_per_chunk=calls_per_chunk, seed=i + 1), str(tmp_path / "spill")),
        ChunkPolicy(pcfg).policy_state(), buffer, hub, num_cpus=0.25) for i in range(n)]
    ray.get([r.start.remote() for r in robots])
    return buffer, robots


def steps(robots):
    return sum(s["env_steps"] for s in ray.get([r.stats.remote() for r in robots]))


def test_killed_buffer_server_loses_and_duplicates_nothing(local_ray, tmp_path):
    buffer, robots = fleet_of(tmp_path, 2)
    time.sleep(2.0)
    for _ in range(2):
        ray.kill(buffer, no_restart=False)  # Ray restarts it; it reopens its log from disk
        before = steps(robots)
        time.sleep(2.0)
        assert steps(robots) > before  # robots kept working through the outage
    stats = ray.get([r.stop.remote() for r in robots])
    records, _ = ray.get(buffer.read.remote(0, 10**6))
    keys = [decode_chunk(r).key for r in records]
    produced = sum(s["chunks_sent"] for s in stats)
    assert produced == len(records)  # lost = 0
    assert len(set(keys)) == len(keys)  # duplicates = 0
    assert sum(s["refused"] for s in stats) == 0
    assert all(s["error"] is None for s in stats)


def test_killed_robot_actor_is_restarted_and_resumes(local_ray, tmp_path):
    buffer, robots = fleet_of(tmp_path, 2)
    time.sleep(1.5)
    ray.kill(robots[0], no_restart=False)
    deadline = time.monotonic() + 60
    while True:  # the restarted actor starts from zero and works again on its own
        try:  # (the old incarnation may answer before the kill lands: wait for the new one)
            now = ray.get(robots[0].stats.remote())
            if now["restarted"] and now["env_steps"] > 100:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            pass  # still restarting
        assert time.monotonic() < deadline, "robot-0 did not come back"
        time.sleep(0.2)
    stats = ray.get([r.stop.remote() for r in robots])
    records, _ = ray.get(buffer.read.remote(0, 10**6))
    keys = [decode_chunk(r).key for r in records]
    assert len(set(keys)) == len(keys)
    assert all(s["error"] is None for s in stats)
    # what the surviving robot produced is all there, exactly once
    assert sum(k[0] == "robot-1" for k in keys) == stats[1]["chunks_sent"]


def test_corrupt_segment_of_a_live_run_is_detected_and_reported(local_ray, tmp_path):
    buffer, robots = fleet_of(tmp_path, 2)
    time.sleep(2.0)
    stats = ray.get([r.stop.remote() for r in robots])
    stored = sum(s["chunks_sent"] for s in stats)
    ray.kill(buffer, no_restart=True)  # the server goes away; its files stay
    segment = sorted((tmp_path / "buffer").glob("segment-*.log"))[0]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the log
    segment.write_bytes(bytes(data))
    assert verify_log(tmp_path / "buffer")["corrupt_records"] == 1
    reopened = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig())
    info = ray.get(reopened.info.remote())
    assert info["corrupt_records"] == 1 and info["records"] == stored - 1
