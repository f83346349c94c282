"""The `Robot` seam and the simulated Meta-World robot behind it.

Example (what a robot actor does with any robot, real or simulated):

    obs = robot.reset(seed=7)
    fb = robot.send_action(action)          # reward, success, truncated
    obs = robot.get_observation()
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Protocol

import numpy as np

from buffers.records import Outcome

Observation = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """What a robot is: its identity, body and interfaces. Observations hold `state` [obs_dim]."""

    robot_id: str
    embodiment: str
    task: str
    obs_dim: int
    action_dim: int
    action_low: float = -1.0
    action_high: float = 1.0
    control_hz: float = 80.0  # Meta-World: frame_skip 5 at 2.5 ms


@dataclasses.dataclass(frozen=True)
class Feedback:
    """What the world said after one action."""

    reward: float
    success: bool
    truncated: bool  # the episode hit its step limit
    failed: bool = False  # the episode ended in a terminal failure (e.g. a pole fell)

    @property
    def done(self) -> bool:
        return self.success or self.failed or self.truncated

    @property
    def outcome(self) -> Outcome:
        return "success" if self.success else "failure" if self.failed else "truncated"


class Robot(Protocol):
    """One robot. `get_observation` is separate from `send_action`, as in LeRobot."""

    spec: RobotSpec

    def reset(self, seed: int | None = None) -> Observation: ...

    def get_observation(self) -> Observation: ...

    def send_action(self, action: np.ndarray) -> Feedback: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class MetaWorldConfig:
    """A simulated Sawyer arm on one Meta-World v3 task (metaworld 3.1.1, V2 reward)."""

    task: str = "push-v3"
    max_episode_steps: int = 200

    def __post_init__(self) -> None:
        import metaworld

        names = metaworld.env_dict.ALL_V3_ENVIRONMENTS
        if self.task not in names:
            raise ValueError(f"robot.task={self.task!r} is not a Meta-World v3 task; pick one of "
                             f"{', '.join(sorted(names)[:6])}, ...")
        if not 1 <= self.max_episode_steps <= 500:
            raise ValueError(f"robot.max_episode_steps must be in [1, 500], got "
                             f"{self.max_episode_steps}")


class MetaWorldRobot:
    """A Meta-World task as a robot. `reset(seed)` fixes object and goal positions by the seed.

    Meta-World's own wrappers ignore `reset(seed=...)`, so the env is reseeded here before every
    reset: the same seed gives the same episode start on every process, which held-out evaluation
    relies on.
    """

    def __init__(self, config: MetaWorldConfig, robot_id: str = "sim-0") -> None:
        import metaworld  # registers the envs in this process (Ray workers have their own registry)

        warnings.filterwarnings("ignore", module="gymnasium")
        self.config = config
        self._env: Any = metaworld.env_dict.ALL_V3_ENVIRONMENTS[config.task]()
        self._env._partially_observable = False  # the goal is part of the observation
        del self._env.sawyer_observation_space  # cached with the goal hidden; step() clips to it
        # Draw start states from the env's own generator, which reset() below reseeds; a frozen
        # vector would loop forever in tasks that resample until object and goal are apart.
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._env._set_task_called = True
        self._rng = np.random.default_rng()
        self._steps = 0
        self._obs = np.zeros(39, np.float32)
        self.spec = RobotSpec(robot_id=robot_id, embodiment="sawyer", task=config.task,
                              obs_dim=39, action_dim=4)

    def reset(self, seed: int | None = None) -> Observation:
        self._env.seed(int(self._rng.integers(2**31)) if seed is None else seed)
        obs, _ = self._env.reset()
        self._steps = 0
        self._obs = np.asarray(obs, np.float32)
        return self.get_observation()

    def get_observation(self) -> Observation:
        return {"state": self._obs.copy()}

    def send_action(self, action: np.ndarray) -> Feedback:
        act = np.clip(np.asarray(action, np.float64), self.spec.action_low, self.spec.action_high)
        obs, reward, _, _, info = self._env.step(act)
        self._steps += 1
        self._obs = np.asarray(obs, np.float32)
        return Feedback(float(reward), bool(info["success"]),
                        self._steps >= self.config.max_episode_steps)

    def expert_action(self) -> np.ndarray:
        """The task's scripted expert (Meta-World's hand-written policy) at the current state."""
        import metaworld.policies

        if not hasattr(self, "_expert"):
            experts: Any = metaworld.policies.ENV_POLICY_MAP
            self._expert = experts[self.config.task]()
        return np.asarray(self._expert.get_action(self._obs.astype(np.float64)), np.float32)

    def close(self) -> None:
        self._env.close()


@dataclasses.dataclass(frozen=True)
class GymConfig:
    """Any gymnasium environment with a Box action space, by id."""

    env_id: str = "InvertedPendulum-v5"
    max_episode_steps: int | None = None  # None keeps the env's own limit


class GymRobot:
    """A gymnasium env as a robot. Actions in [-1, 1] are scaled to the env's bounds. `success`
    is the env's `info["is_success"]` when it reports one; any other termination is a failure
    (a terminal state), and the env's time limit a truncation."""

    def __init__(self, config: GymConfig, robot_id: str = "gym-0") -> None:
        import gymnasium as gym

        self._env: Any = gym.make(config.env_id, max_episode_steps=config.max_episode_steps)
        space = self._env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"{config.env_id}: only Box action spaces are supported")
        self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
        obs_dim = int(np.prod(self._env.observation_space.shape or (1,)))
        self.spec = RobotSpec(robot_id=robot_id, embodiment="gym", task=config.env_id,
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

    def close(self) -> None:
        self._env.close()
