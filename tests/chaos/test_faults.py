"""Faults on a real local Ray: kill the buffer server and robot actors mid-run.

Each test asserts exact counts: every chunk a robot produced is stored exactly once.
"""

import os
import time

import pytest

ray = pytest.importorskip("ray")

from actors.robots.metaworld import MetaWorldConfig  # noqa: E402
from actors.worker import WorkerConfig  # noqa: E402
from algorithms.policy import ChunkPolicy, PolicyConfig  # noqa: E402
from buffers.codec import decode_chunk  # noqa: E402
from buffers.log import LogLockedError, lock_writer, verify_log  # noqa: E402
from buffers.store import BufferConfig  # noqa: E402
from fleet.remote.buffer import BufferServer  # noqa: E402
from fleet.remote.outbox import MAX_IN_FLIGHT  # noqa: E402
from fleet.remote.robot import RobotLaunch, start_robot  # noqa: E402
from fleet.remote.weights import WeightHub  # noqa: E402

pytestmark = pytest.mark.chaos



def fleet_of(tmp_path, n, calls_per_chunk=2):
    pcfg = PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32)
    # a restart waits at the log's writer lock as long as a test keeps it (`buffer_down`)
    config = BufferConfig(fsync="always", lock_wait_s=600.0)
    buffer = BufferServer.remote(str(tmp_path / "buffer"), config)
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
    wait_for(lambda: steps(robots) > 100, what="robots at work")
    for _ in range(2):
        ray.kill(buffer, no_restart=False)  # Ray restarts it; it reopens its log from disk
        before = steps(robots)
        wait_for(lambda n=before: steps(robots) > n + 100,  # working through the outage
                 what="robots stepping while the buffer restarts")
    stats = ray.get([r.stop.remote() for r in robots])
    records, _ = ray.get(buffer.read.remote(0, 10**6))
    keys = [decode_chunk(r).key for r in records]
    produced = sum(s["chunks_sent"] for s in stats)
    assert produced == len(records)  # lost = 0
    assert len(set(keys)) == len(keys)  # duplicates = 0
    assert sum(s["refused"] for s in stats) == 0
    assert all(s["error"] is None for s in stats)


UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


def wait_for(condition, timeout_s=300.0, what="condition"):
    """Wait on state; the deadline only turns a hang into a failure (generous: a restarted
    actor imports torch and Meta-World again, on a loaded machine in minutes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except UNAVAILABLE:
            pass  # an actor being restarted
        assert time.monotonic() < deadline, f"{what} not reached in {timeout_s} s"
        time.sleep(0.05)


def buffer_down(buffer, root):
    """Kill the buffer server and keep it down: Ray restarts it, and the restart waits at its
    log's writer lock (`buffers.log.lock_writer`), which this takes first. Returns the lock's fd;
    `os.close(fd)` lets the buffer come back (its retried calls then run)."""
    while True:
        ray.kill(buffer, no_restart=False)
        try:
            return lock_writer(root, wait_s=30.0)  # the killed server lets go as it exits
        except LogLockedError:  # the restarted server took it first: it is up, kill it again
            wait_for(lambda: ray.get(buffer.info.remote()) is not None, what="the buffer back")


def robot_state(robot):
    return ray.get(robot.stats.remote())


def hold(robot):
    ray.get(robot.control.remote({"cmd": "pause"}))
    wait_for(lambda: robot_state(robot)["control"]["holding"], what="a hold")


def test_a_killed_robots_chunks_are_stored_once_by_its_successor(local_ray, tmp_path):
    """The killed robot is counted too: every chunk its dead incarnation produced (acknowledged
    before the kill, or spilled and resent by the new incarnation) and every chunk the new one
    produced is stored exactly once. Each step waits on state: robot-0 is killed held still, with
    a spill log whose first records it had resent and the buffer stored (so its successor's
    resend of the whole log must be refused as duplicates) and whose others only the successor
    sends."""
    buffer, robots = fleet_of(tmp_path, 2)
    root = tmp_path / "buffer"
    wait_for(lambda: steps(robots) > 100, what="robots at work")
    # 1. the buffer down: robot-0 fills its calls in flight, then spills more than one resend's
    #    worth; held still; the buffer back, every call it sent acknowledged, its spill log kept
    lock = buffer_down(buffer, root)
    # acks that came before the kill free room for one resend at most: more than twice that
    wait_for(lambda: robot_state(robots[0])["pending_spill"] > 2 * MAX_IN_FLIGHT,
             what="robot-0 spilling")
    hold(robots[0])
    os.close(lock)
    first = ray.get(robots[0].settle.remote())
    assert first["pending_spill"] > MAX_IN_FLIGHT
    # 2. the buffer down again; robot-0 let go: its first put resends the oldest spilled records
    #    (as many as fit in flight) and spills the rest, as nothing is acknowledged; held still;
    #    the buffer back: those resent records are stored
    lock = buffer_down(buffer, root)
    ray.get(robots[0].control.remote({"cmd": "resume"}))
    wait_for(lambda: robot_state(robots[0])["insert_calls"] > first["insert_calls"],
             what="robot-0 resending its spill log")
    hold(robots[0])
    os.close(lock)
    dead = ray.get(robots[0].settle.remote())  # what a crash now leaves: its spill log
    resent = first["pending_spill"] + (dead["spilled"] - first["spilled"]) - dead["pending_spill"]
    assert 0 < resent <= MAX_IN_FLIGHT and dead["pending_spill"] > 0
    # 3. robot-0 killed; its successor resends the whole spill log, then works on
    ray.kill(robots[0], no_restart=False)
    # (acknowledged, oldest first: a monotonic count; `pending_spill == 0` is an instant that a
    # robot spilling again under load may never show to a poll)
    wait_for(lambda: (lambda s: s["restarted"] and s["env_steps"] > 100
                      and s["stored"] + s["duplicates"] >= s["inherited"] > 0
                      )(robot_state(robots[0])),
             what="robot-0 back, its predecessor's spill resent and acknowledged")
    stats = ray.get([r.stop.remote() for r in robots])
    records, _ = ray.get(buffer.read.remote(0, 10**6))
    keys = [decode_chunk(r).key for r in records]
    assert len(set(keys)) == len(keys)  # duplicates = 0
    assert all(s["error"] is None and s["refused"] == 0 for s in stats)
    # the successor resends its predecessor's whole spill log: what was resent already comes
    # back as duplicates, refused idempotently
    assert stats[0]["inherited"] >= dead["pending_spill"] + resent
    assert stats[0]["duplicates"] >= resent
    # lost = 0, the killed robot included: what both incarnations produced is all there
    assert sum(k[0] == "robot-0" for k in keys) == dead["chunks_sent"] + stats[0]["chunks_sent"]
    assert sum(k[0] == "robot-1" for k in keys) == stats[1]["chunks_sent"]


def test_corrupt_segment_of_a_live_run_is_detected_and_reported(local_ray, tmp_path):
    buffer, robots = fleet_of(tmp_path, 2)
    wait_for(lambda: steps(robots) > 100, what="robots at work")
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
