"""The `RewardModel` seam and its registry.

Example (what the learner does with any reward model):

    reward = make_reward(RewardConfig(name="env"))
    per_step = reward.score(chunk)                # [T]
    key = (reward.name, reward.version)           # labels are cached by this key

Third-party models plug in through the entry-point group `fleet.rewards` (a factory taking the
`params` mapping of `RewardConfig`). Nothing registers itself on import.

Optional, for learned rewards: `ready` (False: the learner skips batches until it is fitted).
A model that learns online declares it by subclassing `rewards.trainer.LearnsOnline` (its fit
contract): a `rewards.trainer` trainer fits it and the learner's copy adopts each new version. The
built-in `world_model` and `progress` do; `env`, `sparse_success`, `sum`, `shaped` and `hf_vl`
(a frozen checkpoint) do not, nor does `rewards.classifier` (fitted offline on labelled chunks).
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


def _sparse(params: Mapping[str, Any]) -> RewardModel:
    from rewards.sparse import SparseSuccess

    return SparseSuccess(**params)


def _term(spec: Mapping[str, Any]) -> RewardModel:
    return _make(RewardConfig(spec["name"], spec.get("params", {})))


def _sum(params: Mapping[str, Any]) -> RewardModel:
    from rewards.compose import WeightedSum

    terms = list(params["terms"])
    return WeightedSum([_term(t) for t in terms], [t.get("weight", 1.0) for t in terms])


def _shaped(params: Mapping[str, Any]) -> RewardModel:
    from rewards.compose import Shaped, state_potential

    potential = state_potential(int(params.get("index", 0)), float(params.get("scale", 1.0)),
                                str(params.get("key", "state")))
    return Shaped(_term(params["base"]), potential, float(params.get("gamma", 0.99)))


def _world_model(params: Mapping[str, Any]) -> RewardModel:
    from rewards.world_model import WorldModelConfig, WorldModelReward

    return WorldModelReward(WorldModelConfig(**params))


def _progress(params: Mapping[str, Any]) -> RewardModel:
    from rewards.progress import ProgressConfig, ProgressReward

    return ProgressReward(ProgressConfig(**params))


def _hf_vl(params: Mapping[str, Any]) -> RewardModel:
    from rewards.hf_vl import HFVisionLanguageReward

    return HFVisionLanguageReward(**params)


BUILTIN: dict[str, Callable[[Mapping[str, Any]], RewardModel]] = {
    "env": _env, "sparse_success": _sparse, "sum": _sum, "shaped": _shaped,
    "world_model": _world_model, "progress": _progress, "hf_vl": _hf_vl}


def make_reward(config: RewardConfig, guard: bool = True) -> RewardModel:
    """A built-in model by name, else one from the `fleet.rewards` entry-point group, wrapped in
    `rewards.guard.Guarded` (a raising, NaN or wrong-shaped score is contained) unless
    `guard=False`."""
    model = _make(config)
    if not guard:
        return model
    from rewards.guard import Guarded

    return Guarded(model)


def _make(config: RewardConfig) -> RewardModel:
    if config.name in BUILTIN:
        return BUILTIN[config.name](config.params)
    for ep in metadata.entry_points(group="fleet.rewards"):
        if ep.name == config.name:
            factory: Callable[..., RewardModel] = ep.load()
            return factory(**config.params)
    known = sorted(BUILTIN) + sorted(ep.name for ep in metadata.entry_points(group="fleet.rewards"))
    raise ValueError(f"unknown reward {config.name!r}; known: {', '.join(known)}")
