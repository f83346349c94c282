"""Real-time pacing: a simulated robot that steps at its control rate, as hardware does.

Example:

    robot = Paced(MetaWorldRobot(config), hz=20.0)   # send_action returns on a 50 ms grid
    robot.missed / robot.steps                        # the fraction of control deadlines missed

Deadlines sit on a fixed grid from the episode's start (not `sleep(period)` after each step), so
a slow step is caught up on by the next ones instead of drifting; a step that ends after its
deadline counts as missed and moves the grid on, as a real controller's next tick would.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from actors.robots.base import Feedback, Observation, Robot, RobotSpec


class Paced:
    """Wraps any `Robot`; everything but the timing of `send_action` is passed through."""

    def __init__(self, robot: Robot, hz: float | None = None) -> None:
        self.robot = robot
        self.hz = hz or robot.spec.control_hz
        if not self.hz > 0:
            raise ValueError(f"pacing needs a control rate > 0 Hz, got {self.hz}")
        self.period = 1.0 / self.hz
        self.steps = 0
        self.missed = 0
        self.enabled = True
        self._next = 0.0

    @contextlib.contextmanager
    def unpaced(self) -> Iterator[None]:
        """Run as fast as possible inside (held-out evaluation is not control)."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    @property
    def spec(self) -> RobotSpec:
        return self.robot.spec

    @spec.setter
    def spec(self, value: RobotSpec) -> None:
        self.robot.spec = value

    def reset(self, seed: int | None = None) -> Observation:
        obs = self.robot.reset(seed)
        self._next = time.monotonic() + self.period
        return obs

    def get_observation(self) -> Observation:
        return self.robot.get_observation()

    def send_action(self, action: np.ndarray) -> Feedback:
        fb = self.robot.send_action(action)
        if not self.enabled:
            return fb
        self.steps += 1
        now = time.monotonic()
        if now > self._next:
            self.missed += 1
            self._next = now + self.period
        else:
            time.sleep(self._next - now)
            self._next += self.period
        return fb

    def __getattr__(self, name: str) -> Any:  # expert_action, pin_task, ... of the robot inside
        return getattr(self.robot, name)

    def close(self) -> None:
        self.robot.close()
