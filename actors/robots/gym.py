"""Any gymnasium environment with a Box action space as a robot: `robot=gym robot.task=<id>`.

Example:

    config = GymConfig("InvertedPendulum-v5", kwargs={"reset_noise_scale": 0.02})
    robot = config.make("gym-0")
    obs = robot.reset(seed=3)                     # {"state": float32[obs_dim]}, flattened
    fb = robot.send_action(np.zeros(config.action_dim, np.float32))

`task` is any registered id; `module:Id` imports `module` first, which is how a package
registers its envs (`gym_pusht:gym_pusht/PushT-v0`), in the driver and in every Ray worker.
`kwargs` go to `gymnasium.make`. Actions in [-1, 1] are scaled to the env's bounds. An episode
succeeds when the env reports `info["is_success"]`; any other termination is a failure (a
terminal state such as a fallen pole), and the time limit a truncation. There is no scripted
expert (`has_expert` is False): `fleet train` starts from the freshly initialised policy.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from actors.robots.base import Feedback, Observation, RobotSpec, check_kind, one_task


@dataclasses.dataclass(frozen=True)
class GymConfig:
    """A gymnasium env by id; `max_episode_steps` None keeps the env's registered limit."""

    task: str = "InvertedPendulum-v5"
    max_episode_steps: int | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "gym"

    def __post_init__(self) -> None:
        check_kind(self, "gym")
        limit = _registered(self.task).max_episode_steps
        if self.max_episode_steps is None and limit is None:
            raise ValueError(f"robot.task={self.task!r} registers no time limit: set "
                             f"robot.max_episode_steps")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"robot.max_episode_steps must be >= 1, got "
                             f"{self.max_episode_steps}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return (self.task,)

    @property
    def obs_dim(self) -> int:
        return self._dims[0]

    @property
    def action_dim(self) -> int:
        return self._dims[1]

    @property
    def has_expert(self) -> bool:
        return False

    def make(self, robot_id: str, tasks: Sequence[str] | None = None) -> GymRobot:
        one_task(self, tasks)
        return GymRobot(self, robot_id)

    @functools.cached_property
    def _dims(self) -> tuple[int, int]:
        """(obs_dim, action_dim), read from a throw-away env once per config (the spaces are
        only known once the env is built)."""
        robot = GymRobot(self, "dims")
        robot.close()
        return robot.spec.obs_dim, robot.spec.action_dim


def _registered(task: str) -> Any:
    """The env's gymnasium spec, importing `module` of a `module:Id` first."""
    import gymnasium as gym

    module, _, env_id = task.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        return gym.spec(env_id)
    except (gym.error.Error, ImportError) as e:
        raise ValueError(f"robot.task={task!r} is not a gymnasium env id: {e}") from e


class GymRobot:
    """A gymnasium env as a robot (see the module's docstring)."""

    def __init__(self, config: GymConfig | None = None, robot_id: str = "gym-0") -> None:
        import gymnasium as gym

        self.config = config = config or GymConfig()
        self._env: Any = gym.make(config.task, max_episode_steps=config.max_episode_steps,
                                  **config.kwargs)
        space = self._env.action_space
        if not isinstance(space, gym.spaces.Box):
            self._env.close()
            raise ValueError(f"robot.task={config.task}: only Box action spaces are supported, "
                             f"not {space}")
        self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
        obs_dim = int(np.prod(self._env.observation_space.shape or (1,)))
        self.spec = RobotSpec(robot_id=robot_id, embodiment="gym", task=config.task,
                              obs_dim=obs_dim, action_dim=int(np.prod(space.shape)))
        self._obs = np.zeros(obs_dim, np.float32)

    def reset(self, seed: int | None = None) -> Observation:
        obs, _ = self._env.reset(seed=seed)
        self._obs = np.asarray(obs, np.float32).ravel()
        return self.get_observation()

    def get_observation(self) -> Observation:
        return {"state": self._obs.copy()}

    def send_action(self, action: np.ndarray) -> Feedback:
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        scaled = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        obs, reward, terminated, truncated, info = self._env.step(scaled)
        self._obs = np.asarray(obs, np.float32).ravel()
        success = bool(info.get("is_success", False))
        return Feedback(float(reward), success, bool(truncated) and not terminated,
                        failed=bool(terminated) and not success)

    def pin_task(self, task: str | None) -> None:
        """One task only: accepted for held-out evaluation, which pins every robot's task."""
        if task not in (None, self.spec.task):
            raise ValueError(f"unknown task {task!r} for gym robot {self.spec.task}")

    def expert_action(self) -> np.ndarray:
        raise NotImplementedError(f"robot.kind=gym ({self.spec.task}) has no scripted expert; "
                                  f"its config says has_expert=False")

    def close(self) -> None:
        self._env.close()
