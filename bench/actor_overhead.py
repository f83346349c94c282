"""`fleet bench actor_overhead`: what one robot actor's full loop costs over the env and policy.

value = env steps/s of one `RobotActor` (a real Ray actor: Meta-World push-v3, its local policy
copy called once per chunk of H actions, chunking, encoding, streaming every rollout chunk to a
real `BufferServer` actor that stores it on disk, non-blocking weight polls); baseline = the same
env and the same policy stepped raw in one process (reset, one `policy.act` per H steps, clip,
`send_action`, `get_observation`), nothing else. Both use one torch thread. The two are measured
in alternating windows (the actor is stopped while the baseline runs), so load from the rest of
the machine falls on both alike; value and baseline are medians over the windows. Goal: ratio
>= 0.95. On a shared, loaded machine wall-clock windows swing by 10% or more, so the result also
carries `cpu_ratio`: the baseline's CPU seconds per env step over the actor process's (all its
threads, Ray's included; the buffer's own process excluded), medians over the same windows.
`--quick`: 4 windows of 2.5 s each (10 of 5 s without).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.robots import make_robot
from actors.robots.base import Robot
from actors.worker import WorkerConfig
from algorithms.factory import make_policy
from bench.common import result
from fleet.config import load_config
from fleet.remote import RAY_SYSTEM_CONFIG, get, local_ray
from fleet.run.pretrain import policy_config


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_rate(robot: Robot, policy: Any, horizon: int, seconds: float,
             seed: int) -> tuple[float, float]:
    """(env steps/s, CPU seconds per step) of env + policy with nothing around them."""
    obs, n, chunk = robot.reset(seed), 0, np.zeros((0, 0), np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    while True:
        for i in range(horizon):
            if i == 0:
                chunk = policy.act(obs["state"])[0]
            fb = robot.send_action(np.clip(chunk[i], -1.0, 1.0))
            obs = robot.get_observation()
            n += 1
            if fb.done:
                seed += 1
                obs = robot.reset(seed)
                break
        if time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0), (time.process_time() - c0) / n


def actor_rate(actor: Any, pid: int, seconds: float, warmup_s: float = 0.5
               ) -> tuple[float, float]:
    """(env steps/s, CPU seconds per step) of the running actor's loop over a window, after
    `warmup_s`."""
    get(actor.start.remote())
    time.sleep(warmup_s)
    s0, t0 = get(actor.stats.remote())["env_steps"], time.perf_counter()
    c0 = cpu_seconds(pid)
    time.sleep(seconds)
    s1, t1 = get(actor.stats.remote())["env_steps"], time.perf_counter()
    c1 = cpu_seconds(pid)
    stats = get(actor.stop.remote())
    if stats["error"]:
        raise RuntimeError(f"the robot actor failed: {stats['error']}")
    return (s1 - s0) / (t1 - t0), (c1 - c0) / max(1, s1 - s0)


def chunks_per_call(stats: dict[str, Any]) -> float:
    """Chunks per `insert` call the robot's outbox made (1 before calls were batched)."""
    return round(stats["chunks_sent"] / max(1, stats.get("insert_calls", stats["chunks_sent"])),
                 2)


def run(quick: bool) -> dict[str, object]:
    from fleet.remote.buffer import BufferServer
    from fleet.remote.robot import RobotLaunch, start_robot
    from fleet.remote.weights import WeightHub

    windows, seconds = (4, 2.5) if quick else (10, 5.0)
    cfg = load_config(["logger.wandb=disabled"])
    pcfg = policy_config(cfg)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policy = make_policy(pcfg)
    robot = make_robot(cfg.robot, "baseline")
    with local_ray(num_cpus=2, system_config=RAY_SYSTEM_CONFIG), \
            tempfile.TemporaryDirectory(prefix="bench-actor-overhead-") as tmp:
        buffer = BufferServer.remote(str(Path(tmp) / "buffer"), cfg.buffer)
        launch = RobotLaunch("robot-0", cfg.robot, pcfg,
                             WorkerConfig(pcfg.horizon, cfg.fleet.calls_per_chunk, seed=1),
                             str(Path(tmp) / "spill"),
                             outbox_linger_s=cfg.fleet.outbox_linger_s)
        actor = start_robot(launch, policy.policy_state(), buffer, WeightHub.remote(),
                            num_cpus=0)
        pid = get(actor.__ray_call__.remote(lambda _: os.getpid()))  # constructed too
        raw_rate(robot, policy, pcfg.horizon, 1.0, 0)  # warm caches
        ours, raw, ours_cpu, raw_cpu = [], [], [], []
        for w in range(windows):
            rate, cpu = actor_rate(actor, pid, seconds)
            ours.append(rate)
            ours_cpu.append(cpu)
            rate, cpu = raw_rate(robot, policy, pcfg.horizon, seconds, 1000 * w)
            raw.append(rate)
            raw_cpu.append(cpu)
        batching = chunks_per_call(get(actor.stats.remote()))
        stored = get(buffer.info.remote())
        get(buffer.close.remote())
    value, base = statistics.median(ours), statistics.median(raw)
    return result("actor_overhead", "env steps/s", value, "steps/s", base, task=cfg.robot.task,
                  horizon=pcfg.horizon, calls_per_chunk=cfg.fleet.calls_per_chunk,
                  outbox_linger_s=cfg.fleet.outbox_linger_s,
                  windows_s=seconds, actor_windows=[round(x, 1) for x in ours],
                  baseline_windows=[round(x, 1) for x in raw],
                  cpu_ratio=round(statistics.median(raw_cpu) / statistics.median(ours_cpu), 3),
                  cpu_us_per_step={"actor": round(1e6 * statistics.median(ours_cpu), 1),
                                   "baseline": round(1e6 * statistics.median(raw_cpu), 1)},
                  chunks_per_insert=batching, buffer_records=int(stored["records"]),
                  buffer_steps=int(stored["steps"]),
                  load_avg_1m_at_end=round(os.getloadavg()[0], 1))  # others' load on the machine
