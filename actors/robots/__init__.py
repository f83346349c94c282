"""Robot kinds, one module each, and their registry: `robot.kind` names a config class.

Example (what `fleet train` does, whatever the kind):

    config = robot_config({"kind": "pusht", "task": "pusht-state"})   # a PushTConfig
    robot = make_robot(config, "robot-1", assign_tasks(config.tasks, num_robots=4, i=1))
    obs = robot.reset(seed=7)

A kind is a module here that owns a frozen config dataclass (validated in `__post_init__`, with
the properties and `make` of `base.RobotConfig`) and its robot class (a `base.SimRobot`):
`metaworld` (the default), `pusht`, `mixed`, `gym`, `stub`. Adding one means its module, an
entry in `KINDS` (with its three-line loader, which lets mypy check the class against
`RobotConfig`), `configs/robot/<name>.yaml` and its test; `tests/test_robots.py` then checks its
contract from the YAML. Third-party kinds plug in through the entry-point group `fleet.robots`
(a name -> config class). Nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

from actors.robots.base import RobotConfig, SimRobot

DEFAULT_KIND = "metaworld"  # a `robot` without `kind` (configs/robot/push.yaml, mt10, mt50)


def _metaworld() -> type[RobotConfig]:
    from actors.robots.metaworld import MetaWorldConfig

    return MetaWorldConfig


def _pusht() -> type[RobotConfig]:
    from actors.robots.pusht import PushTConfig

    return PushTConfig


def _mixed() -> type[RobotConfig]:
    from actors.robots.mixed import MixedConfig

    return MixedConfig


def _gym() -> type[RobotConfig]:
    from actors.robots.gym import GymConfig

    return GymConfig


def _stub() -> type[RobotConfig]:
    from actors.robots.stub import StubConfig

    return StubConfig


KINDS: dict[str, Callable[[], type[RobotConfig]]] = {
    "metaworld": _metaworld, "pusht": _pusht, "mixed": _mixed, "gym": _gym, "stub": _stub}


def config_class(kind: str) -> type[RobotConfig]:
    """The config class of `kind`: a built-in one, else one from the `fleet.robots` group."""
    if kind in KINDS:
        return KINDS[kind]()
    for ep in metadata.entry_points(group="fleet.robots"):
        if ep.name == kind:
            cls: type[RobotConfig] = ep.load()
            return cls
    known = sorted(KINDS) + sorted(ep.name for ep in metadata.entry_points(group="fleet.robots"))
    raise ValueError(f"unknown robot kind {kind!r}; known: {', '.join(known)}")


def robot_config(data: Mapping[str, Any]) -> RobotConfig:
    """The config of `data["kind"]` (default metaworld) from plain data. `fleet.config` builds
    `robot` the same way, with its own type checks and messages."""
    cls: Any = config_class(data.get("kind", DEFAULT_KIND))
    config: RobotConfig = cls(**data)
    return config


def make_robot(config: RobotConfig, robot_id: str,
               tasks: Sequence[str] | None = None) -> SimRobot:
    """Robot `robot_id` of `config`'s kind, taking `tasks` (default: all of the config's) in
    turn."""
    return config.make(robot_id, tasks)


def assign_tasks(tasks: Sequence[str], num_robots: int, i: int) -> tuple[str, ...]:
    """Robot `i`'s tasks, dealt round robin: one each when robots outnumber tasks, else every
    `num_robots`-th task (robot 1 of 4 on MT10 runs tasks 1, 5 and 9 in turn)."""
    if num_robots >= len(tasks):
        return (tasks[i % len(tasks)],)
    return tuple(tasks[i::num_robots])
