"""One fake per seam: a deterministic robot with injectable faults, a scripted policy, a constant
reward, in-memory weights and outbox. Real classes are tested against these, never mocks."""

from __future__ import annotations

import dataclasses

import numpy as np

from actors.robots.base import Feedback, Observation, RobotSpec
from buffers.records import RolloutChunk


class FakeRobot:
    """A point that moves by its actions; succeeds after `succeed_after` steps if set.

    `fail_at_step` makes `send_action` raise there, as a dropped connection would;
    `nan_at_step` makes the observation after that step hold a NaN (bad data). Both count steps
    over the robot's life (`total_steps`), so a fault happens once.
    """

    def __init__(self, robot_id: str = "fake-0", obs_dim: int = 3, action_dim: int = 2,
                 max_steps: int = 10, succeed_after: int | None = None,
                 fail_at_step: int | None = None, nan_at_step: int | None = None) -> None:
        self.spec = RobotSpec(robot_id, "point", "reach", obs_dim, action_dim)
        self.max_steps, self.succeed_after = max_steps, succeed_after
        self.fail_at_step, self.nan_at_step = fail_at_step, nan_at_step
        self.steps = 0
        self.total_steps = 0
        self.x = np.zeros(obs_dim, np.float32)

    def reset(self, seed: int | None = None) -> Observation:
        self.steps = 0
        self.x = np.full(self.spec.obs_dim, float(seed or 0) % 7, np.float32)
        return self.get_observation()

    def get_observation(self) -> Observation:
        return {"state": self.x.copy()}

    def send_action(self, action: np.ndarray) -> Feedback:
        if self.fail_at_step is not None and self.total_steps == self.fail_at_step:
            self.total_steps += 1  # the failed step is spent: the next one runs
            raise ConnectionError("fake robot dropped")
        self.x[: self.spec.action_dim] += action
        if self.nan_at_step is not None and self.total_steps == self.nan_at_step:
            self.x[0] = np.nan
        self.steps += 1
        self.total_steps += 1
        success = self.succeed_after is not None and self.steps >= self.succeed_after
        return Feedback(float(-np.abs(self.x).sum()), success, self.steps >= self.max_steps)

    def close(self) -> None:
        pass


@dataclasses.dataclass
class ScriptedPolicy:
    """Always the same chunk; `version` shows which weights it was given."""

    horizon: int = 4
    action_dim: int = 2
    version: float = 0.0

    def act(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, float]:
        return np.full((self.horizon, self.action_dim), 0.1, np.float32), -1.0

    def load_policy_state(self, state: dict[str, np.ndarray]) -> None:
        self.version = float(state["version"])


class ListOutbox:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def put(self, record: bytes) -> None:
        self.records.append(record)


class ListWeights:
    """A `WeightSink` and `WeightSource` in one process."""

    def __init__(self) -> None:
        self.published: list[tuple[int, dict[str, np.ndarray]]] = []

    def publish(self, policy_version: int, state: dict[str, np.ndarray]) -> None:
        self.published.append((policy_version, state))

    def poll(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        if self.published and self.published[-1][0] > have_version:
            return self.published[-1]
        return None


@dataclasses.dataclass(frozen=True)
class ConstantReward:
    value: float = 1.0
    name: str = "constant"
    version: str = "1"

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        return np.full(chunk.num_steps, self.value, np.float32)
