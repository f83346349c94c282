"""Any simulated `actors.robots.base.Robot` behind the bridge, so the real-robot path runs end to
end with a simulator where the hardware would be.

    driver = RobotDriver(MetaWorldRobot(MetaWorldConfig(task="push-v3")), control_hz=50.0)
    BridgeClient(driver, config).run(stop)       # what `fleet robot run --metaworld push-v3` does

The robot side then needs the simulator's packages (metaworld, gymnasium) besides the bridge's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actors.bridge.client import Driver, DriverSpec, Observation, StepResult


class RobotDriver(Driver):
    """Adapts the `Robot` protocol (reset / send_action / get_observation) to a bridge `Driver`."""

    def __init__(self, robot: Any, control_hz: float | None = None,
                 execution: str = "step") -> None:
        self.robot = robot
        s = robot.spec
        self.spec = DriverSpec(s.embodiment, s.task, {"state": ("float32", (s.obs_dim,))},
                               s.action_dim, control_hz or s.control_hz,
                               s.action_low, s.action_high, execution)

    def reset(self, seed: int | None) -> None:
        self.robot.reset(seed)

    def observe(self) -> Observation:
        obs: Observation = self.robot.get_observation()
        return obs

    def act(self, action: np.ndarray) -> StepResult:
        fb = self.robot.send_action(action)
        return StepResult(fb.reward, fb.success, fb.failed, fb.truncated)

    def close(self) -> None:
        close = getattr(self.robot, "close", None)
        if close is not None:
            close()


def metaworld_driver(task: str, control_hz: float, execution: str = "step") -> RobotDriver:
    """A Meta-World robot (one task, v3 names) for `fleet robot run --metaworld TASK`."""
    from actors.robots.metaworld import MetaWorldConfig, MetaWorldRobot

    return RobotDriver(MetaWorldRobot(MetaWorldConfig(task=task)), control_hz, execution)
