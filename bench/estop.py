"""`fleet bench estop_latency`: from an operator's e-stop (the API call) to every robot holding.

A small fleet of Meta-World robots paced at their control rate (80 Hz, as hardware steps) runs on
a local Ray with the console on loopback. Each trial arms the fleet, waits until every robot is
stepping again, then POSTs /api/fleet/estop and times until every robot is observed holding: the
reply reports each robot's `holding` (the actor answers once its loop has stopped stepping); a
robot not yet holding is polled through GET /api/robots. Then each robot is checked to take no
step while held.

value = p99 seconds e-stop → all holding over the trials (goal ≤ 0.1); baseline = p99 seconds of
a bare HTTP round trip to the same server (GET /api/robots, which asks every robot for its
stats); ratio = value / baseline. Also: median, max, and steps taken while held (goal 0).

`--half-open N`: the same trials while N slow and half-open connections are held open to the
console (`bench.slow_clients`: half send a request line and stop, half trickle header bytes;
cut connections are opened again), the load an unauthenticated client can put on it.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from actors.robots.metaworld import MetaWorldConfig
from actors.worker import WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig
from bench.common import result
from bench.slow_clients import SlowClients
from buffers.store import BufferConfig
from fleet.console.client import request
from fleet.console.server import ConsoleConfig, ConsoleServer, RayRobots
from fleet.remote import get, local_ray
from fleet.remote.buffer import BufferServer
from fleet.remote.robot import RobotLaunch, start_robot
from fleet.remote.weights import WeightHub

PACE_HZ = 80.0  # Meta-World's control rate (frame_skip 5 at 2.5 ms)


def _robots(url: str) -> list[dict[str, Any]]:
    status, view = request(url, "GET", "/api/robots")
    if status != 200:
        raise RuntimeError(f"GET /api/robots: {status} {view}")
    rows: list[dict[str, Any]] = view["robots"]
    return rows


def _stepping(url: str, timeout_s: float = 30.0) -> dict[str, int]:
    """Wait until every robot has taken a step since this was called; their step counts."""
    start = {r["robot_id"]: r.get("env_steps") or 0 for r in _robots(url)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = {r["robot_id"]: r.get("env_steps") or 0 for r in _robots(url)}
        if all(now[k] > start[k] for k in start):
            return now
        time.sleep(0.01)
    raise RuntimeError("robots did not step after arm")


def _trial(url: str) -> tuple[float, int]:
    """One e-stop: (seconds until every robot was seen holding, steps taken while held)."""
    assert request(url, "POST", "/api/fleet/arm", {}, operator="bench")[0] == 200
    _stepping(url)
    t0 = time.perf_counter()
    status, reply = request(url, "POST", "/api/fleet/estop", {}, operator="bench")
    if status != 200:
        raise RuntimeError(f"estop: {status} {reply}")
    holding = {r["robot_id"] for r in reply["robots"] if r.get("holding")}
    while len(holding) < len(reply["robots"]):
        holding |= {r["robot_id"] for r in _robots(url) if r.get("holding")}
    latency = time.perf_counter() - t0
    held = {r["robot_id"]: r["env_steps"] for r in _robots(url)}
    time.sleep(0.05)
    moved = sum(r["env_steps"] - held[r["robot_id"]] for r in _robots(url))
    return latency, moved


def run(quick: bool, half_open: int = 0) -> dict[str, object]:
    robots_n, trials = (2, 20) if quick else (4, 100)
    with tempfile.TemporaryDirectory(prefix="bench-estop-", ignore_cleanup_errors=True) as t, \
            local_ray(num_cpus=2):  # Ray shuts down first, then the folder goes
        tmp = Path(t)
        pcfg = PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32)
        buffer = BufferServer.remote(str(tmp / "buffer"), BufferConfig())
        hub = WeightHub.remote()
        handles = {f"robot-{i}": start_robot(RobotLaunch(
            f"robot-{i}", MetaWorldConfig(max_episode_steps=200), pcfg,
            WorkerConfig(calls_per_chunk=4, seed=i + 1), str(tmp / "spill"), pace_hz=PACE_HZ),
            ChunkPolicy(pcfg).policy_state(), buffer, hub, num_cpus=0.25) for i in range(robots_n)}
        server = ConsoleServer(ConsoleConfig(port=0), RayRobots(handles), tmp).start()
        url = f"http://127.0.0.1:{server.port}"
        load: dict[str, int] = {}
        try:
            get([h.start.remote() for h in handles.values()])
            _stepping(url, timeout_s=120)
            with SlowClients("127.0.0.1", server.port, n=half_open) if half_open else (
                    contextlib.nullcontext()) as slow:
                latencies, moved = zip(*[_trial(url) for _ in range(trials)], strict=True)
                bare = []
                for _ in range(trials):
                    t0 = time.perf_counter()
                    _robots(url)
                    bare.append(time.perf_counter() - t0)
                if slow is not None:
                    load = {"half_open": half_open, "load_opened": slow.opened,
                            "load_cut_by_server": slow.dropped, "load_refused": slow.refused}
            get([h.stop.remote() for h in handles.values()])
        finally:
            server.stop()
    value, baseline = float(np.percentile(latencies, 99)), float(np.percentile(bare, 99))
    out = result("estop_latency", "p99 seconds from the e-stop API call to every robot holding",
                 value, "s", baseline, robots=robots_n, trials=trials, pace_hz=PACE_HZ,
                 median_s=round(statistics.median(latencies), 4),
                 max_s=round(max(latencies), 4),
                 baseline_median_s=round(statistics.median(bare), 4),
                 steps_while_held=int(sum(moved)), goal_s=0.1, **load)
    # seconds need more digits than result()'s one decimal
    out.update(value=round(value, 4), baseline=round(baseline, 4),
               ratio=round(value / baseline, 3) if baseline else None)
    return out
