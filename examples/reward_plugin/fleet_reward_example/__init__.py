"""A reward model from outside Fleet: negative gripper-to-goal distance, plus a success bonus.

Install it next to Fleet and select it by name:

    pip install -e examples/reward_plugin
    fleet train reward.name=goal_distance reward.params.scale=1.0

Fleet finds it through the `fleet.rewards` entry point in this package's pyproject.toml and
calls `make(**reward.params)`. A reward model needs only `name`, `version` and `score(chunk)`,
returning one reward per step; Fleet caches labels by (name, version), so bump `version`
whenever the scores would change.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class GoalDistance:
    """Meta-World observations hold the hand position in [0:3] and the goal in [36:39]."""

    scale: float = 1.0
    success_bonus: float = 10.0
    name: str = "goal_distance"
    version: str = "1"

    def score(self, chunk: Any) -> np.ndarray:
        after = chunk.obs["state"][1:]  # the observation after each step
        distance = np.linalg.norm(after[:, 0:3] - after[:, 36:39], axis=-1)
        bonus = self.success_bonus * chunk.success.astype(np.float32)
        return (-self.scale * distance + bonus).astype(np.float32)


def make(**params: Any) -> GoalDistance:
    return GoalDistance(**params)
