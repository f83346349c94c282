"""`build_learner`: the one way a `Learner` is made from config, in one process or in a Ray actor.

Example (what `fleet.run.serial.SerialRun` and `fleet.remote.learner`'s actor both do):

    learner = build_learner(LearnerParts(policy_cfg, base_state, AlgorithmConfig(name="td"),
                                         RewardConfig("world_model"), LearnerConfig(),
                                         run_dir / "checkpoints", demos=demos_dir),
                            source=buffer, sink=weights, reward_weights=reward_hub)
    metrics = learner.step()

It builds the policy (from the base's `policy_state`, if given) on the chosen device, the
algorithm through the registry (`algorithms.make_algorithm`), reads the demonstrations when
the algorithm declares it needs them (`DataNeeds.demos`: TD's offline phase), and the reward
model (`rewards.base.make_reward`), which adopts a learned reward's published weights from
`reward_weights` before each update. Only the launcher differs between the two paths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

import buffers.demos
from algorithms import AlgorithmConfig, data_needs, make_algorithm
from algorithms.factory import make_policy
from algorithms.policy import PolicyConfig
from buffers.feed import ChunkSource
from buffers.rate import RateSource
from buffers.records import RolloutChunk
from learner.loop import Learner, LearnerConfig, TaskSink, WeightSink
from rewards.base import RewardConfig, make_reward
from rewards.trainer import WeightSource


@dataclasses.dataclass(frozen=True)
class LearnerParts:
    """The configs a learner is built from: plain data, so it crosses process boundaries.

    state: the base policy's `policy_state()`; None keeps the fresh initialisation.
    demos: a buffer directory of demonstrations (the base's, from `fleet.pretrain`); read only
      for an algorithm that declares `DataNeeds.demos`, and a missing directory means none.
    tasks: every task the robots run; the learner's task table (`learner.task_sampling`)
      weighs them.
    """

    policy: PolicyConfig
    state: Mapping[str, np.ndarray] | None
    algorithm: AlgorithmConfig
    reward: RewardConfig
    config: LearnerConfig
    checkpoint_dir: Path
    seed: int = 0
    demos: Path | None = None
    tasks: tuple[str, ...] = ()  # the robots' tasks, for `learner.task_sampling`


def device(choice: str) -> str:
    """`learner.device`: auto is a GPU when this process sees one, else the CPU."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def build_learner(parts: LearnerParts, source: ChunkSource, sink: WeightSink,
                  reward_weights: WeightSource | None = None,
                  rate: RateSource | None = None, task_sink: TaskSink | None = None) -> Learner:
    """A `Learner` reading chunks from `source` and publishing weights to `sink`; `rate`: the
    buffer's rate limiter, for an algorithm that declares a rate (`DataNeeds.rate`);
    `task_sink`: where the task table goes, with `learner.task_sampling` on."""
    torch.manual_seed(parts.seed)
    policy = make_policy(parts.policy)
    if parts.state is not None:
        policy.load_policy_state(dict(parts.state))
    policy.to(device(parts.config.device))
    algorithm = make_algorithm(parts.algorithm, policy)
    demos = read_demos(parts.demos) if data_needs(parts.algorithm).demos else []
    return Learner(policy, algorithm, make_reward(parts.reward), source, sink, parts.config,
                   Path(parts.checkpoint_dir), demos, reward_weights, rate, parts.tasks,
                   task_sink)


def read_demos(root: Path | None) -> list[RolloutChunk]:
    """Every demo of the base's demonstration buffer at `root` (`buffers.demos.read_demos`:
    checked whole against what was written); none without one."""
    return [] if root is None else buffers.demos.read_demos(Path(root))
