"""The `Robot` seam and the simulated Meta-World robot behind it.

Example (what a robot actor does with any robot, real or simulated):

    obs = robot.reset(seed=7)
    fb = robot.send_action(action)          # reward, success, truncated
    obs = robot.get_observation()
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
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


TASK_SETS = ("mt10", "mt50")
SAWYER_ACTIONS = 4  # Meta-World's action: end-effector xyz delta and gripper


@dataclasses.dataclass(frozen=True)
class MetaWorldConfig:
    """A simulated Sawyer arm on Meta-World v3 tasks (metaworld 3.1.1, V2 reward).

    `task` is one task (`push-v3`), a task set (`mt10`, `mt50`) or a comma-separated list
    (`reach-v3,push-v3`). With more than one task the
    observation carries a one-hot of the task after Meta-World's 39 numbers, so one shared policy
    knows what to do.

    `kind=pusht` picks the PushT robot instead (`actors.pusht`, gym-pusht): `task` is then
    `pusht` (agent position and a 96×96 camera) or `pusht-state` (agent and block pose), and an
    episode succeeds at `success_coverage` of the goal covered. `kind=mixed` runs robots of
    different embodiments in one run (`actors.mixed`, padding with masks): `task` lists Meta-World
    and PushT tasks (`push-v3,pusht-state`). `make_robot` builds any kind.
    """

    task: str = "push-v3"
    max_episode_steps: int = 200
    kind: str = "metaworld"  # metaworld | pusht | mixed
    success_coverage: float = 0.95  # kind=pusht only

    def __post_init__(self) -> None:
        if self.kind == "mixed":
            for task in self.tasks:
                from actors.pusht import PUSHT_TASKS

                if task not in PUSHT_TASKS:
                    MetaWorldConfig(task, self.max_episode_steps)  # checks the name
            return
        if self.kind == "pusht":
            from actors.pusht import PUSHT_TASKS

            if self.task not in PUSHT_TASKS or not 0.0 < self.success_coverage <= 1.0:
                raise ValueError(f"robot.kind=pusht: robot.task must be one of "
                                 f"{', '.join(PUSHT_TASKS)} (got {self.task!r}) and "
                                 f"robot.success_coverage in (0, 1]")
            return
        if self.kind != "metaworld":
            raise ValueError(f"robot.kind={self.kind!r}: use metaworld, pusht or mixed")
        import metaworld

        names = metaworld.env_dict.ALL_V3_ENVIRONMENTS
        wrong = [t for t in self.task.split(",") if t not in names]
        if self.task not in TASK_SETS and wrong:
            raise ValueError(f"robot.task={self.task!r}: {wrong[0]!r} is not a Meta-World v3 "
                             f"task; pick mt10, mt50 or tasks such as "
                             f"{', '.join(sorted(names)[:6])}, ...")
        if not 1 <= self.max_episode_steps <= 500:
            raise ValueError(f"robot.max_episode_steps must be in [1, 500], got "
                             f"{self.max_episode_steps}")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names, in the benchmark's order."""
        if self.kind == "pusht":
            return (self.task,)
        if self.kind == "mixed":
            return tuple(self.task.split(","))
        import metaworld

        sets = {"mt10": metaworld.env_dict.MT10_V3, "mt50": metaworld.env_dict.MT50_V3}
        return tuple(sets[self.task]) if self.task in sets else tuple(self.task.split(","))

    @property
    def obs_dim(self) -> int:
        if self.kind == "mixed":
            from actors.mixed import mixed_dims

            return mixed_dims(self.tasks)[0]
        if self.kind == "pusht":
            from actors.pusht import PUSHT_TASKS

            return PUSHT_TASKS[self.task]
        n = len(self.tasks)
        return 39 + (n if n > 1 else 0)

    @property
    def action_dim(self) -> int:
        if self.kind == "mixed":
            from actors.mixed import mixed_dims

            return mixed_dims(self.tasks)[1]
        return 2 if self.kind == "pusht" else SAWYER_ACTIONS


def make_robot(config: MetaWorldConfig, robot_id: str,
               tasks: Sequence[str] | None = None) -> Any:
    """The robot `config.kind` names: a `MetaWorldRobot`, a `PushTRobot` or a `MixedRobot` (all
    have `expert_action` and `pin_task`)."""
    if config.kind == "mixed":
        from actors.mixed import MixedRobot

        return MixedRobot(config.tasks, robot_id, tasks, config.max_episode_steps,
                          config.success_coverage)
    if config.kind == "pusht":
        from actors.pusht import PushTRobot

        return PushTRobot(config.task, config.max_episode_steps, robot_id,
                          config.success_coverage)
    return MetaWorldRobot(config, robot_id, tasks)


def assign_tasks(tasks: Sequence[str], num_robots: int, i: int) -> tuple[str, ...]:
    """Robot `i`'s tasks, dealt round robin: one each when robots outnumber tasks, else every
    `num_robots`-th task (robot 1 of 4 on MT10 runs tasks 1, 5 and 9 in turn)."""
    if num_robots >= len(tasks):
        return (tasks[i % len(tasks)],)
    return tuple(tasks[i::num_robots])


class MetaWorldRobot:
    """Meta-World tasks as one robot. `reset(seed)` fixes object and goal positions by the seed.

    A robot with several tasks runs them in turn, task `seed % len(tasks)` for episode `seed`
    (a GRPO group, which repeats a seed, stays on one task); `pin_task` holds one task, for
    per-task evaluation. Meta-World's own wrappers ignore `reset(seed=...)`, so the env is
    reseeded here before every reset: the same seed gives the same episode start on every
    process, which held-out evaluation relies on.
    """

    def __init__(self, config: MetaWorldConfig, robot_id: str = "sim-0",
                 tasks: Sequence[str] | None = None) -> None:
        warnings.filterwarnings("ignore", module="gymnasium")
        self.config = config
        self._all = config.tasks
        self.tasks = tuple(tasks) if tasks is not None else self._all
        unknown = [t for t in self.tasks if t not in self._all]
        if unknown or not self.tasks:
            raise ValueError(f"robot {robot_id}: tasks {unknown or '[]'} not in {config.task}")
        self._envs: dict[str, Any] = {}
        self._experts: dict[str, Any] = {}
        self._pinned: str | None = None
        self._rng = np.random.default_rng()
        self._steps = 0
        self._task = self.tasks[0]
        self._obs = np.zeros(39, np.float32)
        self.spec = RobotSpec(robot_id=robot_id, embodiment="sawyer", task=self._task,
                              obs_dim=config.obs_dim, action_dim=SAWYER_ACTIONS)

    def _env(self, task: str) -> Any:
        if task not in self._envs:
            import metaworld  # registers the envs in this process (Ray workers have their own)

            env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[task]()
            env._partially_observable = False  # the goal is part of the observation
            del env.sawyer_observation_space  # cached with the goal hidden; step() clips to it
            # Draw start states from the env's own generator, which reset() below reseeds; a
            # frozen vector would loop forever in tasks that resample until object and goal are
            # apart.
            env._freeze_rand_vec = False
            env.seeded_rand_vec = True
            env._set_task_called = True
            self._envs[task] = env
        return self._envs[task]

    def pin_task(self, task: str | None) -> None:
        """Run only `task` from now on (None: back to taking turns)."""
        if task is not None and task not in self._all:
            raise ValueError(f"unknown task {task!r} for robot.task={self.config.task}")
        self._pinned = task

    def reset(self, seed: int | None = None) -> Observation:
        seed = int(self._rng.integers(2**31)) if seed is None else seed
        self._task = self._pinned or self.tasks[seed % len(self.tasks)]
        if self._task != self.spec.task:
            self.spec = dataclasses.replace(self.spec, task=self._task)
        env = self._env(self._task)
        env.seed(seed)
        obs, _ = env.reset()
        self._steps = 0
        self._obs = np.asarray(obs, np.float32)
        return self.get_observation()

    def get_observation(self) -> Observation:
        if len(self._all) == 1:
            return {"state": self._obs.copy()}
        one_hot = np.zeros(len(self._all), np.float32)
        one_hot[self._all.index(self._task)] = 1.0
        return {"state": np.concatenate([self._obs, one_hot])}

    def send_action(self, action: np.ndarray) -> Feedback:
        act = np.clip(np.asarray(action, np.float64), self.spec.action_low, self.spec.action_high)
        obs, reward, _, _, info = self._env(self._task).step(act)
        self._steps += 1
        self._obs = np.asarray(obs, np.float32)
        return Feedback(float(reward), bool(info["success"]),
                        self._steps >= self.config.max_episode_steps)

    def expert_action(self) -> np.ndarray:
        """The task's scripted expert (Meta-World's hand-written policy) at the current state."""
        import metaworld.policies

        if self._task not in self._experts:
            experts: Any = metaworld.policies.ENV_POLICY_MAP
            self._experts[self._task] = experts[self._task]()
        action = self._experts[self._task].get_action(self._obs.astype(np.float64))
        return np.asarray(action, np.float32)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()


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
