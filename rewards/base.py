"""The `RewardModel` seam and its registry.

Example (what the learner does with any reward model):

    reward = make_reward(RewardConfig(name="env"))
    per_step = reward.score(chunk)                # [T]
    key = (reward.name, reward.version)           # labels are cached by this key

Third-party models plug in through the entry-point group `fleet.rewards` (a factory taking the
`params` mapping of `RewardConfig`). Nothing registers itself on import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from buffers.records import RolloutChunk


class RewardModel(Protocol):
    """Scores the steps of a rollout chunk."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def score(self, chunk: RolloutChunk) -> np.ndarray:
        """Per-step rewards [T] for the chunk's T steps."""
        ...


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    name: str = "env"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _env(params: Mapping[str, Any]) -> RewardModel:
    from rewards.env import EnvReward

    return EnvReward(**params)


BUILTIN: dict[str, Callable[[Mapping[str, Any]], RewardModel]] = {"env": _env}


def make_reward(config: RewardConfig) -> RewardModel:
    """A built-in model by name, else one from the `fleet.rewards` entry-point group."""
    if config.name in BUILTIN:
        return BUILTIN[config.name](config.params)
    for ep in metadata.entry_points(group="fleet.rewards"):
        if ep.name == config.name:
            factory: Callable[..., RewardModel] = ep.load()
            return factory(**config.params)
    known = sorted(BUILTIN) + sorted(ep.name for ep in metadata.entry_points(group="fleet.rewards"))
    raise ValueError(f"unknown reward {config.name!r}; known: {', '.join(known)}")
