"""Robots of different embodiments behind one shape, so one shared policy trains on all of them in
the same run: padding with masks. `robot=mixed`.

Example:

    robot = MixedConfig("push-v3,pusht-state").make("mixed-0")  # Sawyer (39, 4), PushT (6, 2)
    obs = robot.reset(seed=1)          # task seed % 2: pusht-state
    obs["state"]                       # [39 + 2]: PushT's 6 numbers, zeros, one-hot of the task
    obs["action_mask"]                 # [4]: 1, 1, 0, 0 (PushT acts with the first 2 numbers)
    robot.send_action(np.zeros(4))     # the padded numbers are dropped

How it works. Each task is a Meta-World v3 task (embodiment `sawyer`) or a PushT task
(`pusht`, `pusht-state`). Every observation's state is padded with zeros to the largest state
size and followed by a one-hot of the task (the policy's only way to tell bodies apart); every
action has the largest action size, of which an embodiment executes its first `action_dim`
numbers. `obs["action_mask"]` (float32 [A], 1 where a number is executed) is recorded in every
chunk like any observation; with `policy.mask_key=action_mask` the policy's log-probability
counts only executed numbers, so PPO's ratios and GRPO's KL ignore the padding (BC fits the
padding to the expert's zeros). Per-task advantage normalisation (PPO's default) keeps a
body whose rewards are larger from drowning the others. Camera images are not padded: mixed
runs are state-only (`pusht-state`, not `pusht`).

The alternative, a head per embodiment, needs no masks but splits the policy's output layer
and the learner's batches by body; padding keeps one tensor shape through buffer, sampler and
learner unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from actors.robots.base import Feedback, Observation, RobotSpec, SimRobot, check_kind
from actors.robots.metaworld import MetaWorldConfig
from actors.robots.pusht import PUSHT_TASKS, PushTConfig

MASK_KEY = "action_mask"


@dataclasses.dataclass(frozen=True)
class MixedConfig:
    """Meta-World and PushT tasks in one run (`push-v3,pusht-state`), state-only;
    `success_coverage` is the PushT tasks' bar."""

    task: str = "push-v3,pusht-state"
    max_episode_steps: int = 200
    success_coverage: float = 0.95
    kind: str = "mixed"

    def __post_init__(self) -> None:
        check_kind(self, "mixed")
        if "pusht" in self.tasks:
            raise ValueError("robot.kind=mixed is state-only: use pusht-state, not pusht")
        for task in self.tasks:
            self.sub_config(task)  # checks the name, the step limit and the coverage

    def sub_config(self, task: str) -> MetaWorldConfig | PushTConfig:
        """The config of the one-embodiment robot that runs `task`."""
        if task in PUSHT_TASKS:
            return PushTConfig(task, self.max_episode_steps, self.success_coverage)
        return MetaWorldConfig(task, self.max_episode_steps)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.task.split(","))

    @property
    def obs_dim(self) -> int:
        """The largest state, then a one-hot of the task."""
        return max(self.sub_config(t).obs_dim for t in self.tasks) + len(self.tasks)

    @property
    def action_dim(self) -> int:
        return max(self.sub_config(t).action_dim for t in self.tasks)

    @property
    def has_expert(self) -> bool:
        return True  # each embodiment's own

    def make(self, robot_id: str, tasks: Sequence[str] | None = None) -> MixedRobot:
        return MixedRobot(self, robot_id, tasks)


class MixedRobot:
    """Several embodiments, one padded shape; task `seed % len(tasks)` runs for episode `seed`
    (or the pinned one), as `MetaWorldRobot` takes turns between tasks."""

    def __init__(self, config: MixedConfig | None = None, robot_id: str = "mixed-0",
                 tasks: Sequence[str] | None = None) -> None:
        self.config = config = config or MixedConfig()
        self._all = config.tasks
        self.tasks = tuple(tasks) if tasks is not None else self._all
        unknown = [t for t in self.tasks if t not in self._all]
        if unknown or not self.tasks:
            raise ValueError(f"robot {robot_id}: tasks {unknown or '[]'} not in {config.task}")
        self.obs_dim, self.action_dim = config.obs_dim, config.action_dim
        self._robot_id = robot_id
        self._robots: dict[str, SimRobot] = {}  # built on first use: held-out runs pin any task
        self._pinned: str | None = None
        self._task = self.tasks[0]
        self._rng = np.random.default_rng()
        self.spec = self._spec()

    def _inner(self) -> SimRobot:
        if self._task not in self._robots:
            self._robots[self._task] = self.config.sub_config(self._task).make(self._robot_id)
        return self._robots[self._task]

    def _spec(self) -> RobotSpec:
        inner = self._inner().spec
        return dataclasses.replace(inner, obs_dim=self.obs_dim, action_dim=self.action_dim,
                                   task=self._task)

    def pin_task(self, task: str | None) -> None:
        if task is not None and task not in self._all:
            raise ValueError(f"unknown task {task!r}; this mixed robot knows {self._all}")
        self._pinned = task

    def reset(self, seed: int | None = None) -> Observation:
        seed = int(self._rng.integers(2**31)) if seed is None else seed
        self._task = self._pinned or self.tasks[seed % len(self.tasks)]
        self.spec = self._spec()
        self._inner().reset(seed)
        return self.get_observation()

    def get_observation(self) -> Observation:
        inner = self._inner()
        state = inner.get_observation()["state"]
        padded = np.zeros(self.obs_dim, np.float32)
        padded[:len(state)] = state
        padded[self.obs_dim - len(self._all) + self._all.index(self._task)] = 1.0
        mask = np.zeros(self.action_dim, np.float32)
        mask[:inner.spec.action_dim] = 1.0
        return {"state": padded, MASK_KEY: mask}

    def send_action(self, action: np.ndarray) -> Feedback:
        inner = self._inner()
        return inner.send_action(np.asarray(action)[:inner.spec.action_dim])

    def expert_action(self) -> np.ndarray:
        inner = self._inner()
        out = np.zeros(self.action_dim, np.float32)
        out[:inner.spec.action_dim] = inner.expert_action()
        return out

    def close(self) -> None:
        for robot in self._robots.values():
            robot.close()
