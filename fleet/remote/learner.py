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

from algorithms.factory import make_policy
from algorithms.grpo import GRPO
from algorithms.policy import ChunkPolicy, PolicyConfig
from algorithms.ppo import PPO
from buffers.demos import read_demos
from buffers.records import RolloutChunk
from fleet.remote import actor, one_thread
from fleet.remote.buffer import BufferSource
from fleet.remote.weights import HubWeights
from learner.loop import Interrupted, Learner, LearnerConfig
from rewards.base import RewardConfig, make_reward


def _algorithm(net: ChunkPolicy, config: Any) -> Any:
    """The update rule `config.name` names (an `AlgorithmConfig`), around `net`."""
    if config.name == "grpo":
        return GRPO(net, config.grpo)
    if config.name == "td":
        from algorithms.td import TD

        return TD(net, config.td)
    if config.name == "dpo":
        from algorithms.dpo import DPO

        return DPO(net, config.dpo)
    return PPO(net, config.ppo)


class LearnerActorImpl:
    """The learner in its own process (on a GPU node, when a cluster has one)."""

    def __init__(self, policy: PolicyConfig, state: dict[str, np.ndarray], algorithm: Any,
                 reward: RewardConfig, config: LearnerConfig, checkpoint_dir: str,
                 buffer: Any, hub: Any, seed: int, demos: str | None = None,
                 reward_hub: Any = None) -> None:
        """`demos`: a buffer directory of demonstrations (the base's, from `fleet.run.pretrain`)
        for an algorithm with an offline phase (TD). `reward_hub`: where a
        `fleet.remote.reward.RewardTrainer` publishes the reward model's weights; the learner
        adopts each new version before its next update."""
        import torch

        one_thread()
        torch.manual_seed(seed)
        net = make_policy(policy)
        net.load_policy_state(state)
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        net.to(device)
        algo = _algorithm(net, algorithm)
        offline_demos: list[RolloutChunk] = []
        if hasattr(algo, "offline") and demos is not None:
            offline_demos = read_demos(Path(demos))  # all that was written, or it raises
        self.learner = Learner(net, algo, make_reward(reward), BufferSource(buffer),
                               HubWeights(hub, config.publish_dtype), config,
                               Path(checkpoint_dir), offline_demos)
        self.reward_source = HubWeights(reward_hub) if reward_hub is not None else None

    def step(self) -> dict[str, float]:
        """One update; {} if `interrupt` stopped it while it waited for data."""
        if self.reward_source is not None:
            from fleet.remote.reward import adopt

            adopt(self.learner.reward, self.reward_source)
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
