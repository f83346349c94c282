"""Held-out evaluation: the same (task, seed) episodes before and after post-training.

Example:

    episodes = held_out(cfg.robot, episodes=50, first_seed=900_000)   # [(task, seed), ...]
    success = run_episodes(worker, robot, episodes)                   # one bool per episode
    by_task(episodes, success)                                        # {"push-v3": 0.96}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actors.robots.base import RobotConfig, SimRobot
from actors.worker import RobotWorker

Episode = tuple[str, int]  # (task, seed)


def held_out(robot: RobotConfig, episodes: int, first_seed: int) -> list[Episode]:
    """`episodes` fresh seeds per task of the robot config `robot` (its `tasks`), task after
    task; training seeds never reach them."""
    return [(task, first_seed + i) for task in robot.tasks for i in range(episodes)]


def run_episodes(worker: RobotWorker, robot: SimRobot,
                 episodes: Sequence[Episode]) -> list[bool]:
    """Run held-out episodes on a simulated robot (it can `pin_task`) with the worker's current
    weights; nothing is streamed."""
    results = []
    try:
        for task, seed in episodes:
            robot.pin_task(task)
            results += worker.evaluate([seed])
    finally:
        robot.pin_task(None)
    return results


def by_task(episodes: Sequence[Episode], success: Sequence[bool]) -> dict[str, float]:
    """Success rate per task, in the order tasks first appear."""
    tasks = list(dict.fromkeys(task for task, _ in episodes))
    return {t: float(np.mean([s for (task, _), s in zip(episodes, success, strict=True)
                              if task == t])) for t in tasks}


class Nowhere:
    """Outbox and weight source for a robot that only evaluates."""

    def put(self, record: bytes) -> None:
        raise RuntimeError("an evaluating robot streams nothing")

    def poll(self, have_version: int) -> None:
        return None
