"""Robot-side drivers for bridge tests, loaded by `fleet robot run --driver tests.bridge_drivers:X`.
"""

from __future__ import annotations

import os

import numpy as np

from actors.bridge.client import StepResult
from actors.bridge.sim_driver import RobotDriver, metaworld_driver


class DiesAtACallsFirstStep(RobotDriver):
    """Meta-World push-v3 at 400 Hz whose process dies (as under `kill -9`: no goodbye) in the
    middle of its 9th action: the first step of the third policy call with H = 4, the step a
    chunk used to be unable to close at (issue 19)."""

    def __init__(self) -> None:
        inner = metaworld_driver("push-v3", 400.0)
        super().__init__(inner.robot, 400.0)
        self.acts = 0

    def act(self, action: np.ndarray) -> StepResult:
        self.acts += 1
        if self.acts == 9:
            os._exit(9)
        return super().act(action)
