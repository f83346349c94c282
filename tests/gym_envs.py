"""A gymnasium env that reports `is_success`, for the gym robot's tests: a point on a line moves
by its action and ends the episode on reaching +1 (success) or -1 (a terminal failure).

    robot = GymConfig("tests.gym_envs:fleet-tests/Line-v0").make("g0")   # imports this module

Importing this module registers the env, as gymnasium packages do.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class LineEnv(gym.Env[np.ndarray, np.ndarray]):
    observation_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, start: float = 0.0) -> None:
        self.start = start
        self.x = start

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.x = self.start
        return np.array([self.x], np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.x += float(np.asarray(action).reshape(-1)[0])
        success, failure = self.x >= 1.0, self.x <= -1.0
        return (np.array([self.x], np.float32), self.x, success or failure, False,
                {"is_success": success})


gym.register("fleet-tests/Line-v0", entry_point=LineEnv, max_episode_steps=50)
