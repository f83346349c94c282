"""The same robot loop and learner as `fleet train`, in one process with no Ray.

Example:

    parts = LearnerParts(policy_config, None, AlgorithmConfig(name="ppo"), RewardConfig("env"),
                         LearnerConfig(), Path("runs/serial/checkpoints"))
    run = SerialRun(robot, parts, WorkerConfig(horizon=1), root=Path("runs/serial"))
    run.train(env_steps=50_000)          # episodes, then an update whenever a batch is ready

Only the launcher differs from the distributed job (as in Acme): the learner is built by the
same `learner.build.build_learner` (every algorithm, its demos, every reward), a `RobotWorker`
streams chunks into a real on-disk `ReplayBuffer`, and the `Learner` reads them from it and
publishes weights the worker adopts between chunks. A learned reward is fitted by a
`rewards.trainer.RewardTrainer` after each episode. Used by benchmarks and tests; data is never
stale by more than one version here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from actors.operator import SimulatedOperator
from actors.robots.base import Robot, RobotFault
from actors.worker import Policy, RobotWorker, WorkerConfig
from algorithms import data_needs
from algorithms.policy import ChunkPolicy
from buffers.rate import RateLimiter
from buffers.store import ReplayBuffer
from learner.build import LearnerParts, build_learner, read_demos
from learner.loop import Learner
from rewards.base import make_reward
from rewards.trainer import RewardTrainer, trainable


class _LocalWeights:
    """`WeightSink` and `WeightSource` in one process: the learner's latest policy state."""

    def __init__(self) -> None:
        self.latest: tuple[int, dict[str, np.ndarray]] | None = None

    def publish(self, policy_version: int, state: dict[str, np.ndarray]) -> None:
        self.latest = (policy_version, state)

    def poll(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None:
        return self.latest if self.latest and self.latest[0] > have_version else None


class _BufferOutbox:
    """Inserts each chunk into the buffer at once."""

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer

    def put(self, record: bytes) -> None:
        result = self.buffer.insert([record])
        if result.refused:
            raise ValueError(f"the buffer refused a chunk: {result.refused[0][1]}")


class _LearnerFirst:
    """The rate limiter's admission in one process: while the robot's chunk is not admitted,
    the learner takes the gradient steps it is owed (it always is, when the limiter refuses:
    `buffers.rate` refuses limiters that could deadlock)."""

    def __init__(self, limiter: RateLimiter, learner: Learner,
                 metrics: list[dict[str, float]]) -> None:
        self.limiter, self.learner, self.metrics = limiter, learner, metrics

    def wait(self, steps: int, stop: threading.Event) -> None:
        while not self.limiter.admit(steps):
            metrics = self.learner.try_step()
            if metrics is None:
                raise RuntimeError("rate limiter: the robot is held and the learner is granted "
                                   "nothing (a deadlock the limiter should have refused)")
            self.metrics.append(metrics)


class SerialRun:
    def __init__(self, robot: Robot, learner: LearnerParts, worker: WorkerConfig, root: Path,
                 acting_policy: Policy | None = None,
                 operator: SimulatedOperator | None = None) -> None:
        """`learner`: what `build_learner` builds the learner from, as `fleet train`'s learner
        actor does; robots run groups when the algorithm declares them; `operator`: a simulated
        operator beside the robot, as `operator.simulated` gives each robot of `fleet train`."""
        self.buffer = ReplayBuffer(root / "buffer")
        weights = _LocalWeights()
        self.reward_trainer, reward_weights = _reward_trainer(learner, self.buffer)
        rate = data_needs(learner.algorithm).rate
        self.limiter = (RateLimiter(rate, worker.horizon * worker.calls_per_chunk)
                        if rate is not None else None)
        self.learner = build_learner(learner, self.buffer, weights, reward_weights,
                                     rate=self.limiter)
        # The robot acts with its own copy, as on a real fleet, so adoption is exercised too.
        acting = acting_policy or _copy(self.learner.policy)
        worker = dataclasses.replace(worker, group_size=learner.algorithm.group_size)
        self.metrics: list[dict[str, float]] = []
        admission = (_LearnerFirst(self.limiter, self.learner, self.metrics)
                     if self.limiter is not None else None)
        self.worker = RobotWorker(robot, acting, _BufferOutbox(self.buffer), weights, worker,
                                  operator=operator, admission=admission)

    def train(self, env_steps: int, every: int = 0,
              hook: Callable[[int], None] | None = None) -> None:
        """Episodes until `env_steps`, the learner updating whenever a batch is ready; `hook`
        (e.g. a held-out evaluation) is called with the env steps so far each time they pass
        a multiple of `every`."""
        episode, next_hook = 0, every
        while self.worker.stats.env_steps < env_steps:
            with contextlib.suppress(RobotFault):  # closed as truncated and logged; go on
                self.worker.run_episode(seed=self.worker.config.seed * 1_000_000 + episode)
            episode += 1
            if self.reward_trainer is not None:
                self.reward_trainer.step()
            while (metrics := self.learner.try_step()) is not None:
                self.metrics.append(metrics)
            if hook is not None and every and self.worker.stats.env_steps >= next_hook:
                hook(self.worker.stats.env_steps)
                next_hook = (self.worker.stats.env_steps // every + 1) * every

    def close(self) -> None:
        self.buffer.close()


def _reward_trainer(parts: LearnerParts, buffer: ReplayBuffer,
                    ) -> tuple[RewardTrainer | None, _LocalWeights | None]:
    """A learned reward's trainer over the buffer (`rewards.trainer`), and where it publishes
    for the learner's copy to adopt; (None, None) for a fixed reward."""
    model = make_reward(parts.reward, guard=False)
    if not trainable(model):
        return None, None
    hub = _LocalWeights()
    return RewardTrainer(model, buffer, hub, read_demos(parts.demos)), hub


def _copy(policy: ChunkPolicy) -> ChunkPolicy:
    """The acting twin; a deep copy works for every policy kind (`algorithms.factory`)."""
    return copy.deepcopy(policy).cpu()  # robots act on the CPU
