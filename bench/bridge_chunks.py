"""`fleet bench bridge_chunks`: env steps/s of a bridged simulated robot, chunk vs step execution.

value = env steps/s of `RobotWorker` driving a Meta-World push-v3 robot in its own process over
the CURVE bridge on loopback, the robot registered with `execution: "chunk"` (each policy call's
chunk of H = 4 actions goes out in one `action` message and runs open loop); baseline = the same
with `execution: "step"` (one action per message, a round trip per step), measured in the same
run, the two modes taking turns. The policy is the default `ChunkPolicy` (inference in the worker),
episodes are 200 steps, and the robot runs at the protocol's fastest rate (10 kHz: no pacing), so
what shows is what each mode costs the loop; at a real robot's control rate both reach that rate
as long as a round trip plus inference fits within a control period. `null_*` fields: the same with
a robot that does nothing (only the bridge and the policy). Both processes share this machine's
cores with whatever else runs (`loadavg`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np
import torch
import zmq

from actors.bridge.client import Driver, DriverSpec, StepResult
from actors.bridge.gateway import Gateway, GatewayConfig
from actors.evaluation import Collected
from actors.worker import RobotWorker, WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig
from bench.bridge import run_client

HZ, LIMIT = 10_000.0, 200  # no pacing; steps per episode


class NullArm(Driver):
    """A Meta-World-sized robot that does nothing and ends its episodes at LIMIT steps."""

    def __init__(self, execution: str) -> None:
        self.spec = DriverSpec("null", "push-v3", {"state": ("float32", (39,))}, 4, HZ,
                               execution=execution)
        self._obs, self._t = np.zeros(39, np.float32), 0

    def reset(self, seed: int | None) -> None:
        self._t = 0

    def observe(self) -> dict[str, np.ndarray]:
        return {"state": self._obs}

    def act(self, action: np.ndarray) -> StepResult:
        self._t += 1
        return StepResult(0.0, truncated=self._t >= LIMIT)


def _robot(endpoint: str, keys: tuple[bytes, bytes, bytes], kind: str, execution: str,
           stop: Any) -> None:
    if kind == "metaworld":
        from actors.bridge.sim_driver import RobotDriver
        from actors.robots.metaworld import MetaWorldConfig, MetaWorldRobot

        driver: Driver = RobotDriver(MetaWorldRobot(MetaWorldConfig(max_episode_steps=LIMIT)),
                                     HZ, execution)
    else:
        driver = NullArm(execution)
    run_client(driver, endpoint, keys, stop)


def _steps_per_s(kind: str, execution: str, steps: int, ctx: Any) -> float:
    server, robot_keys = zmq.curve_keypair(), zmq.curve_keypair()
    stop = ctx.Event()
    with Gateway(GatewayConfig("tcp://127.0.0.1:*"), server, {robot_keys[0]: "bench-0"}) as gw:
        proc = ctx.Process(target=_robot, args=(gw.endpoint, (server[0], *robot_keys), kind,
                                                execution, stop))
        proc.start()
        try:
            robot = gw.robot("bench-0", timeout_s=120)
            assert robot.spec.execution == execution
            sink = Collected()
            worker = RobotWorker(robot, ChunkPolicy(PolicyConfig()), sink, sink, WorkerConfig())
            worker.run_episode(seed=0)  # warm-up
            t0, start, n = time.perf_counter(), worker.stats.env_steps, 1
            while worker.stats.env_steps - start < steps:
                worker.run_episode(seed=n)
                n += 1
            return (worker.stats.env_steps - start) / (time.perf_counter() - t0)
        finally:
            stop.set()
            proc.join(timeout=10)


def run(quick: bool) -> dict[str, object]:
    torch.set_num_threads(1)
    steps, repeats = (1000, 3) if quick else (4000, 5)
    ctx = mp.get_context("spawn")  # a fresh process, as on a robot: no inherited zmq state
    got: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):  # the modes take turns, so a change in load hits both
        for kind in ("metaworld", "null"):
            for execution in ("step", "chunk"):
                rate = _steps_per_s(kind, execution, steps, ctx)
                got.setdefault((kind, execution), []).append(round(rate, 1))
    med = {k: float(np.median(v)) for k, v in got.items()}
    chunk, step = med[("metaworld", "chunk")], med[("metaworld", "step")]
    return {"bench": "bridge_chunks", "metric": "env_steps_per_s", "value": round(chunk, 1),
            "unit": "env steps/s", "baseline": round(step, 1), "ratio": round(chunk / step, 2),
            "task": "push-v3", "horizon": 4, "steps_per_run": steps,
            "runs_chunk": got[("metaworld", "chunk")], "runs_step": got[("metaworld", "step")],
            "null_chunk": round(med[("null", "chunk")], 1),
            "null_step": round(med[("null", "step")], 1),
            "null_ratio": round(med[("null", "chunk")] / med[("null", "step")], 2),
            "null_runs_chunk": got[("null", "chunk")], "null_runs_step": got[("null", "step")],
            "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]),
            "cpus": os.cpu_count()}
