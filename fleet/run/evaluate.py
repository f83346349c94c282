"""`fleet pretrain`: build (or load) the base and measure it on the held-out episodes.

Example:

    success = pretrain_and_measure(load_config([]), Console())
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console

from actors.evaluation import Nowhere, by_task, held_out, run_episodes
from actors.robots import make_robot
from actors.worker import RobotWorker, WorkerConfig
from fleet.config import Config
from fleet.run.pretrain import pretrained_base


def eval_execution(cfg: Config) -> dict[str, Any]:
    """`WorkerConfig` fields for how held-out episodes run their chunks (`eval.execution`)."""
    return {"execution": cfg.eval.execution, "replan_every": cfg.eval.replan_every,
            "ensemble_decay": cfg.eval.ensemble_decay}


def pretrain_and_measure(cfg: Config, console: Console) -> float:
    policy, info = pretrained_base(cfg, log=console.print)
    robot = make_robot(cfg.robot, "eval-0")
    worker = RobotWorker(robot, policy, Nowhere(), Nowhere(),
                         WorkerConfig(cfg.policy.horizon, **eval_execution(cfg)))
    episodes = held_out(cfg.robot, cfg.eval.episodes, cfg.eval.seed)
    results = run_episodes(worker, robot, episodes)
    per_task = by_task(episodes, results)
    if len(per_task) > 1:
        for task, rate in per_task.items():
            console.print(f"  {task:28s} {rate:.0%}")
    success = float(np.mean(results))
    console.print(f"base policy {info['path']} ({'cached' if info['cached'] else 'new'}, "
                  f"{info['demos']} demos): {success:.0%} success on {cfg.eval.episodes} held-out "
                  f"episodes per task of {cfg.robot.task}")
    return success
