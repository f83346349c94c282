"""Meta-World v3 (metaworld 3.0 or 3.1, V2 reward; results in docs/ are on 3.1.1) as a
simulated Sawyer arm: `robot.kind=metaworld`, the default.

Example:

    config = MetaWorldConfig(task="mt10")          # or push-v3, mt50, reach-v3,push-v3
    robot = config.make("robot-1", assign_tasks(config.tasks, num_robots=4, i=1))
    obs = robot.reset(seed=7)                      # {"state": float32[39 + 10]}
    fb = robot.send_action(robot.expert_action())

With `robot.camera=topdown` (e.g. `experiment=push_pixels`) the robot is seen by a synthetic
top-down camera, `obs["pixels"]` uint8 [96, 96, 3] drawn from the simulator's positions
(`actors.robots.topdown`), and `obs["state"]` holds only the hand (position, gripper): the
scripted expert still reads the simulator's full state.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from actors.robots.base import Feedback, Observation, RobotSpec, check_kind
from actors.robots.topdown import TopDownCamera

TASK_SETS = ("mt10", "mt50")
CAMERAS = ("none", "topdown")  # robot.camera
PROPRIO = 4  # with a camera, the state: hand position (3) and gripper opening (1)
SAWYER_ACTIONS = 4  # Meta-World's action: end-effector xyz delta and gripper


# Meta-World's private attributes that `seeded_goal_observable` sets (the same in 3.0.0 and 3.1.1).
PRIVATE = ("_partially_observable", "_freeze_rand_vec", "_set_task_called")


def seeded_goal_observable(env: Any) -> Any:
    """A Meta-World v3 env whose observation shows the goal and whose every `reset()` draws a
    fresh start state (object and goal positions) from the env's own generator, which
    `env.seed(seed)` reseeds: a seed is an episode.

    Meta-World has no public API for this, and this is the one place Fleet reaches into its
    private attributes: its public ways to build an env fix the start states (the
    `*-goal-observable` classes freeze the first one drawn; `MT1(...).train_tasks` with
    `set_task` hold 50), and its gymnasium ids wrap those. A Meta-World without these
    attributes is refused here, not run with settings that silently do nothing."""
    missing = [name for name in PRIVATE if not hasattr(env, name)]
    if missing:
        from importlib.metadata import version

        raise RuntimeError(f"metaworld {version('metaworld')} has no {', '.join(missing)}: "
                           f"Fleet runs on metaworld 3.0 and 3.1 (pyproject.toml)")
    env._partially_observable = False  # the goal is part of the observation
    del env.sawyer_observation_space  # cached with the goal hidden; step() clips to it
    # Start states from the env's own generator, which `env.seed` reseeds (`seeded_rand_vec`);
    # a frozen vector would loop forever in tasks that resample until object and goal are apart.
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env._set_task_called = True  # no `set_task`: its step() and reset() refuse to run without
    return env


@dataclasses.dataclass(frozen=True)
class MetaWorldConfig:
    """A simulated Sawyer arm on Meta-World v3 tasks.

    `task` is one task (`push-v3`), a task set (`mt10`, `mt50`) or a comma-separated list
    (`reach-v3,push-v3`). With more than one task the observation carries a one-hot of the task
    after Meta-World's 39 numbers, so one shared policy knows what to do.
    """

    task: str = "push-v3"
    max_episode_steps: int = 200
    # "none": the state is Meta-World's 39 numbers. "topdown": a synthetic top-down camera
    # (`actors.robots.topdown`, drawn from the simulator's true positions, not rendered) as
    # obs["pixels"] uint8 [96, 96, 3], and the state only the hand: position and gripper (4),
    # so the objects and the goal are seen in the pixels alone.
    camera: str = "none"
    kind: str = "metaworld"

    def __post_init__(self) -> None:
        check_kind(self, "metaworld")
        import metaworld

        names = metaworld.env_dict.ALL_V3_ENVIRONMENTS
        wrong = [t for t in self.task.split(",") if t not in names]
        if self.task not in TASK_SETS and wrong:
            raise ValueError(f"robot.task={self.task!r}: {wrong[0]!r} is not a Meta-World v3 "
                             f"task; pick mt10, mt50 or tasks such as "
                             f"{', '.join(sorted(names)[:6])}, ...")
        if self.camera not in CAMERAS:
            raise ValueError(f"robot.camera={self.camera!r}: use {' or '.join(CAMERAS)}")
        if not 1 <= self.max_episode_steps <= 500:
            raise ValueError(f"robot.max_episode_steps must be in [1, 500], got "
                             f"{self.max_episode_steps}")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The task names, in the benchmark's order."""
        import metaworld

        sets = {"mt10": metaworld.env_dict.MT10_V3, "mt50": metaworld.env_dict.MT50_V3}
        return tuple(sets[self.task]) if self.task in sets else tuple(self.task.split(","))

    @property
    def obs_dim(self) -> int:
        n = len(self.tasks)
        return (39 if self.camera == "none" else PROPRIO) + (n if n > 1 else 0)

    @property
    def action_dim(self) -> int:
        return SAWYER_ACTIONS

    @property
    def has_expert(self) -> bool:
        return True  # Meta-World's hand-written policies

    def make(self, robot_id: str, tasks: Sequence[str] | None = None) -> MetaWorldRobot:
        return MetaWorldRobot(self, robot_id, tasks)


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
        self._camera = None if config.camera == "none" else TopDownCamera()
        self.spec = RobotSpec(robot_id=robot_id, embodiment="sawyer", task=self._task,
                              obs_dim=config.obs_dim, action_dim=SAWYER_ACTIONS)

    def _env(self, task: str) -> Any:
        if task not in self._envs:
            import metaworld  # registers the envs in this process (Ray workers have their own)

            self._envs[task] = seeded_goal_observable(
                metaworld.env_dict.ALL_V3_ENVIRONMENTS[task]())
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
        state = self._obs.copy() if self._camera is None else self._obs[:PROPRIO].copy()
        if len(self._all) > 1:
            one_hot = np.zeros(len(self._all), np.float32)
            one_hot[self._all.index(self._task)] = 1.0
            state = np.concatenate([state, one_hot])
        if self._camera is None:
            return {"state": state}
        return {"state": state, "pixels": self._camera.draw(self._obs)}

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
