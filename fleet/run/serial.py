"""The same robot loop and learner as `fleet train`, in one process with no Ray.

Example:

    run = SerialRun(robot, policy, PPO(policy, PPOConfig()), EnvReward(), LearnerConfig(),
                    WorkerConfig(horizon=1), root=Path("runs/serial"))
    run.train(env_steps=50_000)          # episodes, then an update whenever a batch is ready

Only the launcher differs from the distributed job (as in Acme): a `RobotWorker` streams chunks
into a real on-disk `ReplayBuffer`, and the `Learner` reads them from it and publishes weights the
worker adopts between chunks. Used by benchmarks and tests; data is never stale by more than one
version here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from actors.robot import Robot
from actors.worker import Policy, RobotWorker, WorkerConfig
from algorithms.policy import ChunkPolicy
from algorithms.ppo import PPO
from buffers.codec import decode_chunk
from buffers.store import ReplayBuffer
from learner.loop import Learner, LearnerConfig
from rewards.base import RewardModel


class _LocalWeights:
    """`WeightSink` and `WeightSource` in one process: the learner's latest policy state."""

    def __init__(self) -> None:
        self.latest: tuple[int, dict[str, np.ndarray]] | None = None

    def publish(self, policy_version: int, state: dict[str, np.ndarray]) -> None:
        self.latest = (policy_version, state)

    def poll(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        return self.latest if self.latest and self.latest[0] > have_version else None


class _BufferOutbox:
    """Inserts each chunk into the buffer at once and counts the policy calls it holds."""

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer
        self.calls = 0

    def put(self, record: bytes) -> None:
        result = self.buffer.insert([record])
        if result.refused:
            raise ValueError(f"the buffer refused a chunk: {result.refused[0][1]}")
        self.calls += decode_chunk(record).num_calls


class SerialRun:
    def __init__(self, robot: Robot, policy: ChunkPolicy, algorithm: PPO, reward: RewardModel,
                 learner: LearnerConfig, worker: WorkerConfig, root: Path,
                 acting_policy: Policy | None = None) -> None:
        self.buffer = ReplayBuffer(root / "buffer")
        self.outbox = _BufferOutbox(self.buffer)
        weights = _LocalWeights()
        self.learner = Learner(policy, algorithm, reward, self.buffer, weights, learner,
                               root / "checkpoints")
        # The robot acts with its own copy, as on a real fleet, so adoption is exercised too.
        acting = acting_policy or _copy(policy)
        self.worker = RobotWorker(robot, acting, self.outbox, weights, worker)
        self.metrics: list[dict[str, float]] = []

    def train(self, env_steps: int) -> None:
        episode = 0
        while self.worker.stats.env_steps < env_steps:
            self.worker.run_episode(seed=self.worker.config.seed * 1_000_000 + episode)
            episode += 1
            # Calls stored but neither trained on nor dropped yet are what the learner can use.
            while (self.outbox.calls - self.learner.calls_consumed
                   >= self.learner.config.batch_calls):
                self.metrics.append(self.learner.step())

    def close(self) -> None:
        self.buffer.close()


def _copy(policy: ChunkPolicy) -> ChunkPolicy:
    """The acting twin; a deep copy works for every policy kind (`algorithms.factory`)."""
    return copy.deepcopy(policy).cpu()  # robots act on the CPU
