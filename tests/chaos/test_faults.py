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


UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


def wait_for(condition, timeout_s=120.0, what="condition"):
    """Wait on state; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except UNAVAILABLE:
            pass  # an actor being restarted
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s} s"
        time.sleep(0.05)


def spill_then_hold(buffer, robot):
    """Make `robot` spill (its buffer killed, so sends go unanswered), hold it still and wait
    until everything it sent is acknowledged: what a crash now leaves is exactly its spill log.
    Its stats then: `chunks_sent` it produced, `pending_spill` its successor must resend."""
    for _ in range(5):
        spilled = ray.get(robot.stats.remote())["spilled"]
        ray.kill(buffer, no_restart=False)  # Ray restarts it; meanwhile the robot spills
        wait_for(lambda n=spilled: ray.get(robot.stats.remote())["spilled"] > n, what="a spill")
        ray.get(robot.control.remote({"cmd": "pause"}))
        wait_for(lambda: ray.get(robot.stats.remote())["control"]["holding"], what="a hold")
        state = ray.get(robot.settle.remote())  # sent ones acknowledged; spilled ones stay
        if state["pending_spill"] > 0:
            return state
        ray.get(robot.control.remote({"cmd": "resume"}))  # it resent them all first: again
    raise AssertionError("robot never held with chunks in its spill log")


def test_a_killed_robots_chunks_are_stored_once_by_its_successor(local_ray, tmp_path):
    """The killed robot is counted too: every chunk its dead incarnation produced (acknowledged
    before the kill, or spilled and resent by the new incarnation) and every chunk the new one
    produced is stored exactly once."""
    buffer, robots = fleet_of(tmp_path, 2)
    wait_for(lambda: steps(robots) > 100, what="robots at work")
    dead = spill_then_hold(buffer, robots[0])
    ray.kill(robots[0], no_restart=False)
    wait_for(lambda: (lambda s: s["restarted"] and s["env_steps"] > 100
                      and s["pending_spill"] == 0)(ray.get(robots[0].stats.remote())),
             what="robot-0 back, its predecessor's spill resent")
    stats = ray.get([r.stop.remote() for r in robots])
    records, _ = ray.get(buffer.read.remote(0, 10**6))
    keys = [decode_chunk(r).key for r in records]
    assert len(set(keys)) == len(keys)  # duplicates = 0
    assert all(s["error"] is None and s["refused"] == 0 for s in stats)
    # the successor resends its predecessor's whole spill log: what was resent already comes
    # back as duplicates, refused idempotently
    assert stats[0]["inherited"] >= dead["pending_spill"] > 0
    assert stats[0]["duplicates"] >= stats[0]["inherited"] - dead["pending_spill"]
    # lost = 0, the killed robot included: what both incarnations produced is all there
    assert sum(k[0] == "robot-0" for k in keys) == dead["chunks_sent"] + stats[0]["chunks_sent"]
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
