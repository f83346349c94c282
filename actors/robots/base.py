"""The `Robot` seam, the `SimRobot` that Fleet simulates, and what a robot's config offers.

Example (what a robot actor does with any robot, real or simulated):

    obs = robot.reset(seed=7)
    fb = robot.send_action(action)          # reward, success, truncated
    obs = robot.get_observation()

and what training, evaluation and pretraining do with a simulated one, whatever its kind:

    robot = config.make("robot-0", tasks=config.tasks[:1])     # a SimRobot
    robot.pin_task(task)                    # held-out episodes of one task
    action = robot.expert_action()          # BC demos (when config.has_expert)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

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
    # "step": the robot takes one action per `send_action`; "chunk": it runs a policy call's
    # whole chunk open loop once given it (`ChunkRobot.start_chunk`), as a bridged robot that
    # registered `execution: "chunk"` does (docs/protocol.md, `register`)
    execution: str = "step"

    def __post_init__(self) -> None:
        if self.execution not in ("step", "chunk"):
            raise ValueError(f"robot {self.robot_id}: execution must be 'step' or 'chunk', got "
                             f"{self.execution!r}")


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


class RobotFault(Exception):
    """A robot could not finish a step: it died, was lost, e-stopped, refused, or sent bad data.

    The worker closes the episode as truncated with the steps that ran, names the robot in the
    log and its stats, and the robot rejoins (`RobotWorker.run`). Any exception a robot raises
    from `reset`, `send_action` or `get_observation` reaches the worker as one of these.
    """


@runtime_checkable
class Robot(Protocol):
    """One robot. `get_observation` is separate from `send_action`, as in LeRobot."""

    spec: RobotSpec

    def reset(self, seed: int | None = None) -> Observation: ...

    def get_observation(self) -> Observation: ...

    def send_action(self, action: np.ndarray) -> Feedback: ...

    def close(self) -> None: ...


@runtime_checkable
class ChunkRobot(Robot, Protocol):
    """A robot that runs a policy call's chunk open loop (`spec.execution == "chunk"`): the whole
    chunk goes out at once, then each `send_action` (given that step's action) returns its step.

        robot.start_chunk(chunk, policy_version)        # [H, A], sent whole
        for action in chunk:
            fb = robot.send_action(action)              # step i's feedback, as it arrives
            if fb.done: break                           # the robot drops the rest
    """

    def start_chunk(self, chunk: np.ndarray, policy_version: int) -> None: ...


@runtime_checkable
class SimRobot(Robot, Protocol):
    """A robot Fleet simulates from a `RobotConfig`: held-out evaluation pins its task, and BC
    pretraining and the simulated operator ask its scripted expert.

    A kind without an expert (gym) says so with `RobotConfig.has_expert = False`; callers read
    that flag before they ask, and its `expert_action` raises.
    """

    def pin_task(self, task: str | None) -> None:
        """Run only `task` (one of the config's `tasks`) from the next reset on; None: take
        turns again."""
        ...

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action [action_dim] at the current state (it may leave [-1, 1]:
        `send_action` clips)."""
        ...


class RobotConfig(Protocol):
    """`robot.*`: a frozen dataclass per kind (`actors.robots.KINDS`), validated when built.

    Callers read these and never branch on `kind`: `tasks` are dealt to robots
    (`assign_tasks`), `obs_dim` and `action_dim` shape the policy, `make` builds one robot.
    """

    __dataclass_fields__: ClassVar[dict[str, Any]]  # a dataclass: saved and loaded as plain data

    @property
    def kind(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def tasks(self) -> tuple[str, ...]: ...

    @property
    def obs_dim(self) -> int: ...

    @property
    def action_dim(self) -> int: ...

    @property
    def has_expert(self) -> bool: ...

    def make(self, robot_id: str, tasks: Sequence[str] | None = None) -> SimRobot: ...


def check_kind(config: RobotConfig, kind: str) -> None:
    """Refuse a config built with another kind's name (`MetaWorldConfig(kind="pusht")`)."""
    if config.kind != kind:
        raise ValueError(f"{type(config).__name__} is robot.kind={kind}, not {config.kind!r}; "
                         f"build that kind with actors.robots.robot_config")


def one_task(config: RobotConfig, tasks: Sequence[str] | None) -> None:
    """Refuse tasks that a single-task kind was not configured with."""
    if tasks is not None and tuple(tasks) != config.tasks:
        raise ValueError(f"robot.kind={config.kind} runs only {config.task!r}, not {list(tasks)}")
