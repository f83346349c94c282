"""A stub-dynamics robot for capacity tests: a point mass pushed toward a goal, cheap to step.
`robot=stub`.

Example:

    robot = StubConfig(obs_dim=16, action_dim=4, control_hz=10.0).make("stub-0")
    obs = robot.reset(seed=0)                       # {"state": float32[obs_dim]}
    fb = robot.send_action(np.zeros(4, np.float32))

The first `action_dim` numbers of the state are the position, the next `action_dim` the goal
(when obs_dim allows), the rest zeros. An action in [-1, 1] moves the position by
`step_size * action`; the reward is minus the distance to the goal, success is being within
`tolerance` of it, and the episode truncates after `max_episode_steps`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from actors.robots.base import Feedback, Observation, RobotSpec, check_kind, one_task


@dataclasses.dataclass(frozen=True)
class StubConfig:
    obs_dim: int = 16
    action_dim: int = 4
    control_hz: float = 10.0
    max_episode_steps: int = 100
    step_size: float = 0.1
    tolerance: float = 0.1
    task: str = "reach-point"
    kind: str = "stub"

    def __post_init__(self) -> None:
        check_kind(self, "stub")
        if self.obs_dim < 1 or self.action_dim < 1:
            raise ValueError("stub robot: obs_dim and action_dim must be >= 1")
        if not self.control_hz > 0:
            raise ValueError(f"stub robot: control_hz must be > 0, got {self.control_hz}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return (self.task,)

    @property
    def has_expert(self) -> bool:
        return True  # straight at the goal

    def make(self, robot_id: str, tasks: Sequence[str] | None = None) -> StubRobot:
        one_task(self, tasks)
        return StubRobot(self, robot_id)


class StubRobot:
    """Implements the `Robot` protocol with point-mass dynamics toward a random goal."""

    def __init__(self, config: StubConfig | None = None, robot_id: str = "stub-0") -> None:
        self.config = config or StubConfig()
        c = self.config
        self.spec = RobotSpec(robot_id=robot_id, embodiment="stub", task=c.task,
                              obs_dim=c.obs_dim, action_dim=c.action_dim, control_hz=c.control_hz)
        self._rng = np.random.default_rng()
        self._pos = np.zeros(c.action_dim, np.float32)
        self._goal = np.zeros(c.action_dim, np.float32)
        self._t = 0

    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        d = self.config.action_dim
        self._pos = self._rng.uniform(-1.0, 1.0, d).astype(np.float32)
        self._goal = self._rng.uniform(-1.0, 1.0, d).astype(np.float32)
        self._t = 0
        return self.get_observation()

    def get_observation(self) -> Observation:
        state = np.zeros(self.config.obs_dim, np.float32)
        both = np.concatenate([self._pos, self._goal])[: self.config.obs_dim]
        state[: both.size] = both
        return {"state": state}

    def send_action(self, action: np.ndarray) -> Feedback:
        c = self.config
        a = np.clip(np.asarray(action, np.float32).reshape(c.action_dim), -1.0, 1.0)
        self._pos = np.clip(self._pos + c.step_size * a, -1.5, 1.5).astype(np.float32)
        self._t += 1
        dist = float(np.linalg.norm(self._pos - self._goal))
        success = dist < c.tolerance
        truncated = not success and self._t >= c.max_episode_steps
        return Feedback(-dist, success, truncated)

    def expert_action(self) -> np.ndarray:
        """The action straight toward the goal (clipped), for tests and demos."""
        delta = (self._goal - self._pos) / self.config.step_size
        return np.clip(delta, -1.0, 1.0).astype(np.float32)

    def pin_task(self, task: str | None) -> None:
        """One task only: accepted for held-out evaluation, which pins every robot's task."""
        if task not in (None, self.spec.task):
            raise ValueError(f"unknown task {task!r} for stub robot {self.spec.task}")

    def close(self) -> None:
        pass
