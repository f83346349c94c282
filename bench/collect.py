"""`fleet bench collect`: one robot's collection loop, against the raw simulator.

value = env steps/s of `RobotWorker` on Meta-World push-v3 (policy inference per chunk, chunking,
encoding, streaming to an in-memory outbox); baseline = the same robot stepped with the same
kind of actions and no Fleet code around it, in the same run and process.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from actors.evaluation import Collected
from actors.robots.metaworld import MetaWorldConfig, MetaWorldRobot
from actors.worker import RobotWorker, WorkerConfig
from algorithms.policy import ChunkPolicy, PolicyConfig


def run(quick: bool) -> dict[str, object]:
    torch.set_num_threads(1)
    steps, repeats = (4000, 3) if quick else (20000, 5)
    robot = MetaWorldRobot(MetaWorldConfig(max_episode_steps=200))
    policy = ChunkPolicy(PolicyConfig())
    sink = Collected()
    worker = RobotWorker(robot, policy, sink, sink, WorkerConfig())
    rng = np.random.default_rng(0)
    ours, raw = [], []
    for rep in range(repeats):
        t0, start = time.perf_counter(), worker.stats.env_steps
        n = 0
        while worker.stats.env_steps - start < steps:
            worker.run_episode(seed=rep * 1000 + n)
            n += 1
        ours.append((worker.stats.env_steps - start) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        robot.reset(rep)
        for _ in range(steps):
            if robot.send_action(rng.uniform(-1, 1, 4).astype(np.float32)).truncated:
                robot.reset(None)
        raw.append(steps / (time.perf_counter() - t0))
    ours.sort()
    raw.sort()
    return {"bench": "collect", "metric": "steps_per_s", "value": round(ours[len(ours) // 2], 1),
            "unit": "env steps/s", "baseline": round(raw[len(raw) // 2], 1),
            "ratio": round(ours[len(ours) // 2] / raw[len(raw) // 2], 3), "task": "push-v3",
            "chunks_streamed": len(sink.records)}
