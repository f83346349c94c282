"""The learner in its own actor (on a GPU node, when a cluster has one).

Example:

    learner = LearnerActor.remote(pcfg, base_state, cfg.algorithm, cfg.reward, cfg.learner,
                                  "runs/x/checkpoints", buffer, hub, seed=0)
    metrics = ray.get(learner.step.remote())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from algorithms import AlgorithmConfig, data_needs
from algorithms.policy import PolicyConfig
from fleet.remote import actor, one_thread
from fleet.remote.buffer import BufferSource
from fleet.remote.weights import HubWeights
from learner.build import LearnerParts, build_learner
from learner.loop import Interrupted, LearnerConfig
from rewards.base import RewardConfig


class LearnerActorImpl:
    """The learner in its own process (on a GPU node, when a cluster has one)."""

    def __init__(self, policy: PolicyConfig, state: dict[str, np.ndarray],
                 algorithm: AlgorithmConfig, reward: RewardConfig, config: LearnerConfig,
                 checkpoint_dir: str, buffer: Any, hub: Any, seed: int, demos: str | None = None,
                 reward_hub: Any = None, tasks: tuple[str, ...] = ()) -> None:
        """Built as in one process (`learner.build`). `demos`: a buffer directory of
        demonstrations (the base's, from `fleet.run.pretrain`), for an algorithm that declares
        it needs them (TD). `reward_hub`: where a `fleet.remote.reward.RewardTrainer` publishes
        the reward model's weights; the learner adopts each new version before its next
        update. `tasks`: the robots' tasks, for `learner.task_sampling` (the table goes to the
        hub with each weight set)."""
        one_thread()
        parts = LearnerParts(policy, state, algorithm, reward, config, Path(checkpoint_dir),
                             seed, Path(demos) if demos is not None else None, tuple(tasks))
        source, weights = BufferSource(buffer), HubWeights(hub, config.publish_dtype)
        self.learner = build_learner(
            parts, source, weights, HubWeights(reward_hub) if reward_hub is not None else None,
            rate=source if data_needs(algorithm).rate is not None else None, task_sink=weights)

    def step(self) -> dict[str, float]:
        """One update; {} if `interrupt` stopped it while it waited for data."""
        try:
            return self.learner.step()
        except Interrupted:
            return {}

    def interrupt(self) -> None:
        self.learner.interrupt()

    def restore(self, path: str) -> int:
        """Continue from a checkpoint; returns its policy_version."""
        self.learner.load_checkpoint(Path(path))
        return self.learner.policy_version

    def checkpoint(self, extra: dict[str, Any]) -> str:
        return str(self.learner.save_checkpoint(extra))

    def policy_state(self) -> tuple[int, dict[str, np.ndarray]]:
        return self.learner.policy_version, self.learner.policy.policy_state()


LearnerActor: Any = actor(LearnerActorImpl, num_cpus=0.5, max_concurrency=2)
