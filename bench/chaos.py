"""`fleet bench chaos`: a fleet under a fault schedule, counting every chunk.

Phase 1 runs robots with no faults; phase 2, as long, kills the buffer server on a schedule
(Ray restarts it; robots spill and resend) and kills one robot actor (Ray restarts it and it
goes back to work on its own, resending what its predecessor had spilled). At the end robots
stop and flush, and every record in the buffer is counted.

The killed robot is counted too. At the first buffer kill it spills; it is then held still (a
console pause) until everything it sent is acknowledged, and killed with chunks in its spill
log, so what its dead incarnation produced is known exactly: acknowledged before the kill, or
spilled and resent by its successor (`killed_robot`; `resent_by_successor` is its whole spill
log, so records its predecessor had resent already come back, and are refused as duplicates).

value = env steps/s during the faults; baseline = env steps/s without faults, same run;
ratio = value / baseline. Also: faults injected, chunks produced (every robot, both
incarnations of the killed one) and stored, `duplicates` and `lost` (goal: both 0), buffer
recovery seconds (kill → next answered call; the kills that make robot-0 spill are not timed),
whether the killed robot resumed. Steps of the killed robot's dead incarnation count in value.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import statistics
import tempfile
import time
from typing import Any

import ray

from actors.robots.metaworld import MetaWorldConfig
from actors.worker import WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig
from buffers.codec import decode_chunk
from buffers.store import BufferConfig
from fleet.remote.buffer import BufferServer
from fleet.remote.robot import RobotLaunch, start_robot
from fleet.remote.weights import WeightHub

UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


def _steps(robots: list[Any]) -> int:
    total = 0
    for r in robots:
        with contextlib.suppress(*UNAVAILABLE):  # a robot being restarted counts as 0
            total += ray.get(r.stats.remote(), timeout=30)["env_steps"]
    return total


def _recover(buffer: Any) -> float:
    """Kill the buffer server and time how long until it answers again."""
    t0 = time.monotonic()
    ray.kill(buffer, no_restart=False)
    while True:
        try:
            ray.get(buffer.info.remote(), timeout=30)
            return time.monotonic() - t0
        except UNAVAILABLE:
            time.sleep(0.05)


def _wait(condition: Any, timeout_s: float = 120.0) -> bool:
    """Wait on state (an actor being restarted reads as not yet); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(*UNAVAILABLE):
            if condition():
                return True
        time.sleep(0.05)
    return False


def _kill_buffer_and_hold(buffer: Any, robot: Any) -> tuple[dict[str, Any], int]:
    """Kill the buffer server until `robot` spills (up to 3 tries), hold the robot still and
    wait for every ack of what it sent; its stats then are what a crash leaves behind. Its
    spill log may be empty (it resent everything before the hold): the count is exact anyway.
    Returns the stats and the number of buffer kills."""
    kills = 0
    while kills < 3:
        kills += 1
        spilled = ray.get(robot.stats.remote())["spilled"]
        ray.kill(buffer, no_restart=False)
        if _wait(lambda n=spilled: ray.get(robot.stats.remote())["spilled"] > n, 20.0):
            break
    ray.get(robot.control.remote({"cmd": "pause"}))
    _wait(lambda: ray.get(robot.stats.remote())["control"]["holding"], 60.0)
    state: dict[str, Any] = ray.get(robot.settle.remote(), timeout=300)
    return state, kills


def run(quick: bool) -> dict[str, object]:
    robots_n, phase_s, buffer_kills = (2, 8.0, 2) if quick else (4, 40.0, 6)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024**2,
             logging_level=logging.ERROR)
    tmp = tempfile.mkdtemp(prefix="fleet-chaos-")
    try:
        pcfg = PolicyConfig(hidden=64)
        buffer = BufferServer.remote(f"{tmp}/buffer", BufferConfig(fsync="interval_ms"))
        hub = WeightHub.remote()
        robots = [start_robot(RobotLaunch(
            f"robot-{i}", MetaWorldConfig(max_episode_steps=100), pcfg,
            WorkerConfig(calls_per_chunk=4, seed=i + 1), f"{tmp}/spill"),
            ChunkPolicy(pcfg).policy_state(), buffer, hub, num_cpus=0.25)
            for i in range(robots_n)]
        ray.get([r.start.remote() for r in robots])
        s0, t0 = _steps(robots), time.monotonic()
        time.sleep(phase_s)
        baseline = (_steps(robots) - s0) / (time.monotonic() - t0)
        s1, t1 = _steps(robots), time.monotonic()
        recovery = []
        dead: dict[str, Any] = {}
        more_kills = 0
        for k in range(buffer_kills):
            time.sleep(phase_s / (buffer_kills + 1))
            recovery.append(_recover(buffer))
            if k == 0:  # robot-0 dies holding a spill log (more buffer kills, not timed)
                dead, more_kills = _kill_buffer_and_hold(buffer, robots[0])
                ray.kill(robots[0], no_restart=False)
        time.sleep(phase_s / (buffer_kills + 1))
        # the dead incarnation's steps count too (its successor starts again from 0)
        value = (_steps(robots) + dead["env_steps"] - s1) / (time.monotonic() - t1)
        _wait(lambda: ray.get(robots[0].stats.remote(), timeout=30)["restarted"], 300.0)
        stats = ray.get([r.stop.remote() for r in robots], timeout=300)
        records, _ = ray.get(buffer.read.remote(0, 10**9))
        keys = [decode_chunk(r).key for r in records]
        produced = dead["chunks_sent"] + sum(s["chunks_sent"] for s in stats)
        stored = len(set(keys))
        killed = {"produced_before_kill": dead["chunks_sent"],
                  "spilled_at_kill": dead["pending_spill"],
                  "resent_by_successor": stats[0]["inherited"],
                  "produced_after_restart": stats[0]["chunks_sent"],
                  "stored": len({k for k in keys if k[0] == "robot-0"})}
        return {"bench": "chaos", "metric": "env_steps_per_s_under_faults",
                "value": round(value, 1), "unit": "env steps/s", "baseline": round(baseline, 1),
                "ratio": round(value / baseline, 3), "faults": buffer_kills + more_kills + 1,
                "buffer_kills": buffer_kills + more_kills, "robot_kills": 1, "robots": robots_n,
                "chunks_produced": produced, "chunks_stored": stored,
                "duplicates": len(keys) - len(set(keys)), "lost": produced - stored,
                "recovery_s_median": round(statistics.median(recovery), 3),
                "recovery_s_max": round(max(recovery), 3),
                "killed_robot_resumed": stats[0]["env_steps"] > 0, "killed_robot": killed,
                "spilled": sum(s["spilled"] for s in stats)}
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
