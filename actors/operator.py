"""A simulated operator: a scripted expert that takes over a robot that is getting nowhere.

Example (what `RobotWorker` does with one, step by step):

    op = SimulatedOperator(OperatorConfig(simulated=True), robot.expert_action)
    op.begin_episode()
    action = op.action() if op.active else policy_action     # flag the step when active
    op.observe(fb.reward)

It stands in for a person at a console, so the value of interventions can be measured with no
one present: when the episode's reward has not improved for `stall_steps` steps, the expert
takes over until the episode ends; a takeover starts only while the robot's taken-over steps
are below `budget` of all its steps. Taken-over steps are flagged `intervened` in the rollout
chunks; the learner treats them as demonstrations (HG-DAgger), not as the policy's own actions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    simulated: bool = False  # a scripted expert takes over stalled robots (simulators only)
    budget: float = 0.1  # at most this fraction of a robot's env steps is taken over
    stall_steps: int = 40  # no reward gain for this many steps counts as stalled
    min_gain: float = 0.01  # a gain smaller than this (in env reward units) is no gain

    def __post_init__(self) -> None:
        if not 0.0 <= self.budget <= 1.0:
            raise ValueError(f"operator.budget must be in [0, 1], got {self.budget}")
        if self.stall_steps < 1 or self.min_gain < 0:
            raise ValueError("operator.stall_steps must be >= 1 and operator.min_gain >= 0")


class SimulatedOperator:
    def __init__(self, config: OperatorConfig, expert: Callable[[], np.ndarray]) -> None:
        self.config = config
        self.expert = expert
        self.steps = 0  # every step this robot took
        self.taken = 0  # steps the operator took
        self.takeovers = 0
        self.begin_episode()

    def begin_episode(self) -> None:
        self.active = False
        self._best = -np.inf
        self._since_gain = 0

    def action(self) -> np.ndarray:
        """The expert's action for the current observation (call only while `active`)."""
        self.taken += 1
        return np.clip(self.expert(), -1.0, 1.0).astype(np.float32)

    def observe(self, reward: float) -> None:
        """After each step: track progress and decide whether to take over from the next step."""
        self.steps += 1
        if reward > self._best + self.config.min_gain:
            self._best, self._since_gain = reward, 0
            return
        self._since_gain += 1
        within_budget = self.taken < self.config.budget * self.steps
        if not self.active and self._since_gain >= self.config.stall_steps and within_budget:
            self.active = True
            self.takeovers += 1
