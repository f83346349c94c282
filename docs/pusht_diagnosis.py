"""Why PushT's BC base is 0%: the scripted expert's success, and a state-only BC base's best
coverage, on gym-pusht's own reset and on the near variant (robot.start_offset). State only, so
it runs in a minute or two on a loaded CPU; prints one JSON line per measurement.

    PYTHONPATH=. python docs/pusht_diagnosis.py expert [start_offset=0] [steps=300]
    PYTHONPATH=. python docs/pusht_diagnosis.py bc robot.start_offset=60 pretrain.demos=50 ...

`expert`: 20 episodes (seeds 1000-1019) of the noiseless expert, run to the step limit without
stopping at success; the share whose best coverage reaches each bar. `bc`: a chunk_mlp BC base
on `pusht-state` (demos kept at robot.success_coverage, default 0.8) run open-loop on held-out
seeds 900000-900019 for the step limit; the share whose best coverage reaches each bar.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import numpy as np
import torch

from actors.execution import ChunkExecution
from actors.robots import make_robot
from actors.robots.pusht import PushTConfig
from fleet.config import load_config
from fleet.run.pretrain import behaviour_clone, collect_task_demos

BARS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def shares(best: list[float]) -> dict[str, float]:
    b = np.array(best)
    return {str(th): float((b >= th).mean()) for th in BARS}


def expert(start_offset: float, steps: int) -> dict:
    robot = PushTConfig("pusht-state", steps, 1.0, start_offset).make("x")
    best = []
    for seed in range(1000, 1020):
        robot.reset(seed=seed)
        b = 0.0
        for _ in range(steps):
            robot.send_action(robot.expert_action())
            b = max(b, robot.coverage())
        best.append(b)
    return {"what": "expert", "start_offset": start_offset, "steps": steps,
            "reach_share": shares(best), "mean_best_coverage": float(np.mean(best))}


def bc(overrides: list[str]) -> dict:
    torch.set_num_threads(1)
    cfg = load_config(["robot=pusht", "robot.task=pusht-state", "policy=chunk_mlp",
                       "robot.success_coverage=0.8", *overrides])
    t0 = time.time()
    demos = collect_task_demos(cfg)
    policy, steps, loss = behaviour_clone(cfg, demos)
    robot = make_robot(cfg.robot, "e")

    def plan(obs: dict) -> np.ndarray:
        return policy.act(obs["state"], deterministic=True)[0]

    best = []
    for seed in range(900_000, 900_020):
        obs = robot.reset(seed)
        run = ChunkExecution("open_loop", cfg.policy.horizon)
        b = 0.0
        for _ in range(cfg.robot.max_episode_steps):
            a = run.next(functools.partial(plan, obs))
            robot.send_action(np.clip(a, -1, 1))
            obs = robot.get_observation()
            b = max(b, robot.coverage())
        best.append(b)
    return {"what": "state_bc", "overrides": overrides, "demos": len(demos), "demo_steps": steps,
            "bc_loss": loss, "reach_share": shares(best),
            "mean_best_coverage": float(np.mean(best)), "wall_s": time.time() - t0}


if __name__ == "__main__":
    args = sys.argv[2:]
    if sys.argv[1] == "expert":
        kv = dict(a.split("=", 1) for a in args)
        out = expert(float(kv.get("start_offset", 0)), int(kv.get("steps", 300)))
    else:
        out = bc(args)
    print(json.dumps({**out, "loadavg": os.getloadavg()}))
