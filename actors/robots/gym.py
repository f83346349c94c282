"""Any gymnasium environment with a Box action space as a robot: `robot=gym robot.task=<id>`.

Example:

    config = GymConfig("InvertedPendulum-v5", kwargs={"reset_noise_scale": 0.02})
    robot = config.make("gym-0")
    obs = robot.reset(seed=3)                     # {"state": float32[obs_dim]}, flattened
    fb = robot.send_action(np.zeros(config.action_dim, np.float32))

`task` is any registered id; `module:Id` imports `module` first, which is how a package
registers its envs (`gym_pusht:gym_pusht/PushT-v0`), in the driver and in every Ray worker.
`kwargs` go to `gymnasium.make`, then each of `wrappers` wraps the env in order
(`TimeAwareObservation`, `{name: ClipReward, kwargs: {max_reward: 1.0}}`, `my_pkg:MyWrapper`).
Actions in [-1, 1] are scaled to the env's bounds.

Observations: a Box (or any space gymnasium can flatten) becomes `obs["state"]`. A Dict space
is split by its keys: every image (a uint8 Box [H, W, C], C of 1, 3 or 4) is a camera column
under its own key (`obs["pixels"]`, as PushT's; `policy.image_key=<key>` lets a policy see it),
and every other key is flattened into `obs["state"]`, in the space's key order.

Outcomes: an episode succeeds when the env reports `info["is_success"]` (or `info["success"]`,
as Meta-World does). A termination without it is a failure (a terminal state such as a fallen
pole) by default, or a success with `termination=success` (an env that ends the episode on
reaching its goal, as MountainCarContinuous does); the time limit is a truncation. There is
no scripted expert (`has_expert` is False): `fleet train` starts from the freshly initialised
policy, or from `policy.checkpoint`.
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
    termination: str = "failure"  # what a termination without info["is_success"] is: or success
    # gymnasium wrappers applied in order after `make`: "Name" (gymnasium.wrappers.Name) or
    # "module:Name", or {"name": ..., "kwargs": {...}}
    wrappers: tuple[Any, ...] = ()
    kind: str = "gym"

    def __post_init__(self) -> None:
        check_kind(self, "gym")
        object.__setattr__(self, "wrappers", tuple(
            {"name": w} if isinstance(w, str) else w for w in self.wrappers))
        for w in self.wrappers:
            if not (isinstance(w, Mapping) and isinstance(w.get("name"), str)
                    and set(w) <= {"name", "kwargs"}
                    and isinstance(w.get("kwargs", {}), Mapping)):
                raise ValueError(f"robot.wrappers: {w!r} is not a wrapper name or "
                                 f"{{name: ..., kwargs: {{...}}}}")
        if self.termination not in ("failure", "success"):
            raise ValueError(f"robot.termination={self.termination!r}: failure or success (what "
                             f"an episode that terminates without info['is_success'] counts as)")
        limit = _registered(self.task).max_episode_steps
        if self.max_episode_steps is None and limit is None:
            raise ValueError(f"robot.task={self.task!r} registers no time limit: set "
                             f"robot.max_episode_steps")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"robot.max_episode_steps must be >= 1, got "
                             f"{self.max_episode_steps}")
        self._dims  # noqa: B018 -- builds the env once: a Discrete action space or an
        # observation without a state part is refused here, at config time, not in a robot

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


def wrapper(name: str) -> Any:
    """A gymnasium wrapper class by name: `Name` in `gymnasium.wrappers`, or `module:Name`."""
    module, _, attr = name.rpartition(":")
    try:
        found = getattr(importlib.import_module(module or "gymnasium.wrappers"), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"robot.wrappers: no wrapper {name!r} ({e})") from e
    return found


def is_image(space: Any) -> bool:
    """A camera: a uint8 Box [H, W, C] with C of 1, 3 or 4."""
    import gymnasium as gym

    shape: tuple[int, ...] = tuple(space.shape or ())
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(shape) == 3
            and shape[-1] in (1, 3, 4))


class GymRobot:
    """A gymnasium env as a robot (see the module's docstring)."""

    def __init__(self, config: GymConfig | None = None, robot_id: str = "gym-0") -> None:
        import gymnasium as gym

        self.config = config = config or GymConfig()
        self._env: Any = gym.make(config.task, max_episode_steps=config.max_episode_steps,
                                  **config.kwargs)
        for w in config.wrappers:
            try:
                cls = wrapper(w["name"])
                self._env = cls(self._env, **w.get("kwargs", {}))
            except ValueError:
                self._env.close()
                raise
            except Exception as e:  # a wrapper that cannot wrap this env: say which and why
                self._env.close()
                raise ValueError(f"robot.wrappers: {w['name']}: {type(e).__name__}: {e}") from e
        space = self._env.action_space
        try:
            if not isinstance(space, gym.spaces.Box):
                raise ValueError(f"robot.task={config.task}: only Box action spaces are "
                                 f"supported, not {space}")
            self._layout(self._env.observation_space)
        except ValueError:
            self._env.close()
            raise
        self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
        obs_dim = sum(gym.spaces.flatdim(s) for s in self._state.values())
        self.spec = RobotSpec(robot_id=robot_id, embodiment="gym", task=config.task,
                              obs_dim=obs_dim, action_dim=int(np.prod(space.shape)))
        self._obs: dict[str, np.ndarray] = {"state": np.zeros(obs_dim, np.float32)}

    def _layout(self, space: Any) -> None:
        """Split the observation space: `_state` (name -> space, flattened into obs["state"];
        name None: the whole observation) and `cameras` (key -> uint8 image space)."""
        import gymnasium as gym

        self._state: dict[str | None, Any] = {None: space}
        self.cameras: dict[str, Any] = {}
        if isinstance(space, gym.spaces.Dict):
            self.cameras = {k: s for k, s in space.spaces.items() if is_image(s)}
            self._state = {k: s for k, s in space.spaces.items() if k not in self.cameras}
        if "state" in self.cameras or not self._state:
            raise ValueError(f"robot.task={self.config.task}: its observation space {space} "
                             f"needs a non-image part for obs['state'] (and no camera named "
                             f"'state')")

    def _observe(self, obs: Any) -> None:
        import gymnasium as gym

        parts = [np.asarray(gym.spaces.flatten(s, obs if k is None else obs[k]), np.float32)
                 for k, s in self._state.items()]
        self._obs = {"state": np.concatenate(parts).ravel(),
                     **{k: np.array(obs[k], np.uint8) for k in self.cameras}}

    def reset(self, seed: int | None = None) -> Observation:
        obs, _ = self._env.reset(seed=seed)
        self._observe(obs)
        return self.get_observation()

    def get_observation(self) -> Observation:
        return {k: v.copy() for k, v in self._obs.items()}

    def send_action(self, action: np.ndarray) -> Feedback:
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        scaled = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        obs, reward, terminated, truncated, info = self._env.step(scaled)
        self._observe(obs)
        success = bool(info.get("is_success", info.get("success", False)))
        if terminated and self.config.termination == "success":
            success = True
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
