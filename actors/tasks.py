"""A robot's next training task, drawn from the learner's task table (`buffers.tasks`).

Example (what a simulated robot's actor does with `learner.task_sampling.enabled=true`):

    chooser = TaskChooser(robot, HubWeights(hub), seed=3)
    worker = RobotWorker(robot, policy, outbox, weights, config, choose_task=chooser)
    # before each training episode (each group, for GRPO): chooser() pins the drawn task

Before the learner's first table arrives the robot takes its tasks in turn, as without task
sampling. Held-out evaluation pins its own tasks and unpins after (`actors.evaluation`).
"""

from __future__ import annotations

import collections
from typing import Protocol

import numpy as np

from actors.robots.base import SimRobot
from buffers.tasks import pick


class TaskWeights(Protocol):
    """Where a robot reads the newest task table; None before the first. Never blocks.

        weights = source.task_weights()    # {"reach-v3": 0.05, "push-v3": 0.95} or None
    """

    def task_weights(self) -> dict[str, float] | None: ...


class TaskChooser:
    """Pins a simulated robot's next task, drawn from the newest table (see the module)."""

    def __init__(self, robot: SimRobot, source: TaskWeights, seed: int) -> None:
        self.robot, self.source = robot, source
        self.rng = np.random.default_rng(seed)
        self.chosen: collections.Counter[str] = collections.Counter()  # draws per task

    def __call__(self) -> None:
        weights = self.source.task_weights()
        if weights:
            task = pick(weights, self.rng)
            self.robot.pin_task(task)
            self.chosen[task] += 1
