"""Gymnasium envs for the gym robot's tests. `Line-v0` reports `is_success`: a point on a line
moves by its action and ends the episode on reaching +1 (success) or -1 (a terminal failure).
`Goal-v0` observes a Dict (a uint8 camera and two state keys) and terminates on reaching its
goal without saying `is_success`.

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


class GoalEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """A Dict observation (a camera and two state keys, as goal-conditioned robotics envs
    give): a point moves by 0.25 x its action toward a goal at +0.5 and the episode terminates
    on reaching it, with no `is_success` in `info` (the robot's `termination=success` case)."""

    size = 24  # the camera: the point as a bright column of a black frame
    observation_space = gym.spaces.Dict({
        "position": gym.spaces.Box(-5.0, 5.0, (1,), np.float32),
        "goal": gym.spaces.Box(-5.0, 5.0, (1,), np.float32),
        "camera": gym.spaces.Box(0, 255, (size, size, 3), np.uint8)})
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, goal: float = 0.5) -> None:
        self.goal, self.x = goal, 0.0

    def _obs(self) -> dict[str, np.ndarray]:
        frame = np.zeros((self.size, self.size, 3), np.uint8)
        col = int(np.clip((self.x + 1.0) / 2.0 * (self.size - 1), 0, self.size - 1))
        frame[:, col] = 255
        return {"position": np.array([self.x], np.float32),
                "goal": np.array([self.goal], np.float32), "camera": frame}

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.3, 0.1))
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        self.x = float(np.clip(self.x + 0.25 * float(np.asarray(action).reshape(-1)[0]), -5, 5))
        reached = abs(self.x - self.goal) < 0.1
        return self._obs(), -abs(self.x - self.goal), reached, False, {}


gym.register("fleet-tests/Goal-v0", entry_point=GoalEnv, max_episode_steps=20)
