"""Policies and their updates: pure torch, no Ray, no sockets, no files; and the algorithm
registry.

Example (what `learner.build` does with any algorithm):

    algorithm = make_algorithm(AlgorithmConfig(name="grpo"), policy)
    needs = data_needs(AlgorithmConfig(name="grpo"))     # DataNeeds(group_size=8): no policy
    batch = algorithm.prepare(chunks, rewards)
    metrics = algorithm.update(batch, train_actor=True)

Built-in algorithms are listed in `BUILTIN` (name -> module, class) and imported when named.
Each class declares what it needs from the data with `needs(config) -> buffers.feed.DataNeeds`,
and its config is the `AlgorithmConfig` field of the same name (`algorithm.ppo.*`, ...).
Third-party algorithms plug in through the entry-point group `fleet.algorithms`: the entry
point is a class with the same `needs` and `__init__(policy, config)`, given the
`algorithm.params` mapping as its config. A class that calls more on its policy than the
`algorithms.factory.Policy` contract declares those capabilities as `policy_needs` (TD:
`mean_chunk`); `check_policy` refuses a policy kind lacking one at config load. Nothing registers
itself on import.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from algorithms.dpo import DPOConfig
from algorithms.factory import CAPABILITIES, capabilities
from algorithms.grpo import GRPOConfig
from algorithms.ppo import PPOConfig
from algorithms.td import TDConfig
from buffers.feed import DataNeeds
from buffers.records import RolloutChunk

GROUP = "fleet.algorithms"


class Algorithm(Protocol):
    """An update rule over rollout chunks (PPO, GRPO, TD, DPO) that owns its optimisers.

        needs = type(algorithm).needs(algorithm.config)   # what the learner feeds it
        batch = algorithm.prepare(chunks, rewards)        # rewards: [T] per chunk
        metrics = algorithm.update(batch, train_actor=True)

    Optional: `policy_needs`, a class attribute: the policy capabilities it calls
    (`algorithms.factory.CAPABILITIES`), checked at config load (`check_policy`).
    """

    config: Any

    @staticmethod
    def needs(config: Any) -> DataNeeds: ...

    def prepare(self, chunks: Sequence[RolloutChunk], rewards: Sequence[np.ndarray]) -> Any: ...

    def update(self, batch: Any, train_actor: bool = True) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, object]: ...

    def load_state_dict(self, state: dict[str, object]) -> None: ...


class Offline(Protocol):
    """An algorithm whose `needs` declares `demos=True` has an offline phase, run once before
    its first update: `stats = algorithm.offline(demo_chunks, demo_rewards)`."""

    def offline(self, chunks: Sequence[RolloutChunk],
                rewards: Sequence[np.ndarray]) -> dict[str, float]: ...


class Holding(Protocol):
    """An algorithm whose `needs` declares `holds_batches=True` may return an empty batch from
    `prepare` while it keeps the data for a later update; `holding()` says what it holds:
    `metrics = algorithm.holding()`."""

    def holding(self) -> dict[str, float]: ...


class Continuous(Protocol):
    """An algorithm whose `needs` declares a `rate` trains continuously: the learner adds what
    arrives and takes the gradient steps the buffer's rate limiter grants.

        env_steps = algorithm.add(algorithm.prepare(chunks, rewards))
        metrics = algorithm.train(granted, train_actor=True)
    """

    def add(self, batch: Any) -> int: ...

    def train(self, steps: int, train_actor: bool = True) -> dict[str, float]: ...


BUILTIN: dict[str, tuple[str, str]] = {
    "ppo": ("algorithms.ppo", "PPO"), "grpo": ("algorithms.grpo", "GRPO"),
    "td": ("algorithms.td", "TD"), "dpo": ("algorithms.dpo", "DPO")}


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
    name: str = "ppo"  # a BUILTIN name or a `fleet.algorithms` entry point
    ppo: PPOConfig = PPOConfig()
    grpo: GRPOConfig = GRPOConfig()
    td: TDConfig = TDConfig()
    dpo: DPOConfig = DPOConfig()
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # a plug-in's config

    def __post_init__(self) -> None:
        if self.name not in BUILTIN and self.name not in _plugins():
            raise ValueError(f"algorithm.name={self.name!r}: use one of {', '.join(known())}")

    @property
    def group_size(self) -> int:
        """Episodes per start state that robots must run in a row (the algorithm's
        `DataNeeds.group_size`: 1 unless GRPO or DPO)."""
        return data_needs(self).group_size


def known() -> list[str]:
    """Every algorithm name: the built-ins, then the installed plug-ins."""
    return sorted(BUILTIN) + sorted(set(_plugins()) - set(BUILTIN))


def _plugins() -> list[str]:
    return [ep.name for ep in metadata.entry_points(group=GROUP)]


def _resolve(config: AlgorithmConfig) -> tuple[Any, Any]:
    """(the algorithm class, its own config) for `config.name`."""
    if config.name in BUILTIN:
        module, cls = BUILTIN[config.name]
        return getattr(importlib.import_module(module), cls), getattr(config, config.name)
    for ep in metadata.entry_points(group=GROUP):
        if ep.name == config.name:
            return ep.load(), config.params
    raise ValueError(f"unknown algorithm {config.name!r}; known: {', '.join(known())}")


def data_needs(config: AlgorithmConfig) -> DataNeeds:
    """What the algorithm `config.name` declares it needs, without building it."""
    cls, own = _resolve(config)
    needs: DataNeeds = cls.needs(own)
    return needs


def check_policy(config: AlgorithmConfig, kind: str) -> None:
    """Refuses `policy.kind=kind` when its class lacks a capability the algorithm `config.name`
    declares it calls, at config load instead of at the first update.

        check_policy(AlgorithmConfig(name="td"), "hf")  # ValueError: ... has no mean_chunk ...
    """
    offered = capabilities(kind)
    lacking = sorted(_policy_needs(_resolve(config)[0]) - offered)
    if lacking:
        able = [name for name, (module, cls) in BUILTIN.items()
                if _policy_needs(getattr(importlib.import_module(module), cls)) <= offered]
        raise ValueError(
            f"policy.kind={kind} has no {lacking[0]} ({CAPABILITIES.get(lacking[0], 'unknown')})"
            f", which algorithm={config.name} calls: use algorithm={', '.join(able)}, or a "
            f"policy whose class declares it in `capabilities` (algorithms.factory)")


def _policy_needs(cls: Any) -> frozenset[str]:
    return frozenset(getattr(cls, "policy_needs", frozenset()))


def make_algorithm(config: AlgorithmConfig, policy: Any) -> Algorithm:
    """The update rule `config.name` names, around `policy` (already on its device)."""
    cls, own = _resolve(config)
    algorithm: Algorithm = cls(policy, own)
    return algorithm
