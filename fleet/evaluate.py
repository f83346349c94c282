"""Held-out evaluation: the same (task, seed) episodes before and after post-training.

Example:

    success = pretrain_and_measure(load_config([]), Console())          # `fleet pretrain`
    per_task = by_task(episodes, run_episodes(worker, robot, episodes))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Console

from actors.robots import make_robot
from actors.robots.base import RobotConfig, SimRobot
from actors.worker import RobotWorker, WorkerConfig
from fleet.config import Config
from fleet.pretrain import pretrained_base

Episode = tuple[str, int]  # (task, seed)


def held_out(robot: RobotConfig, episodes: int, first_seed: int) -> list[Episode]:
    """`episodes` fresh seeds per task, task after task; training seeds never reach them."""
    return [(task, first_seed + i) for task in robot.tasks for i in range(episodes)]


def run_episodes(worker: RobotWorker, robot: SimRobot,
                 episodes: Sequence[Episode]) -> list[bool]:
    """Run held-out episodes with the worker's current weights; nothing is streamed."""
    results = []
    try:
        for task, seed in episodes:
            robot.pin_task(task)
            results += worker.evaluate([seed])
    finally:
        robot.pin_task(None)
    return results


def eval_execution(cfg: Config) -> dict[str, Any]:
    """`WorkerConfig` fields for how held-out episodes run their chunks (`eval.execution`)."""
    return {"execution": cfg.eval.execution, "replan_every": cfg.eval.replan_every,
            "ensemble_decay": cfg.eval.ensemble_decay}


def by_task(episodes: Sequence[Episode], success: Sequence[bool]) -> dict[str, float]:
    """Success rate per task, in the order tasks first appear."""
    tasks = list(dict.fromkeys(task for task, _ in episodes))
    return {t: float(np.mean([s for (task, _), s in zip(episodes, success, strict=True)
                              if task == t])) for t in tasks}


class _Nowhere:
    """Outbox and weight source for a robot that only evaluates."""

    def put(self, record: bytes) -> None:
        raise RuntimeError("an evaluating robot streams nothing")

    def poll(self, have_version: int) -> None:
        return None


def pretrain_and_measure(cfg: Config, console: Console) -> float:
    policy, info = pretrained_base(cfg, log=console.print)
    robot = make_robot(cfg.robot, "eval-0")
    worker = RobotWorker(robot, policy, _Nowhere(), _Nowhere(),
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
