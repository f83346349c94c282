"""Online training of a learned reward model, and the learner's side that adopts its weights.

Example (one process; `fleet.remote.reward` runs the same class in a Ray actor):

    trainer = RewardTrainer(make_reward(cfg, guard=False), source, sink, demos)
    trainer.step()                  # read new chunks; fit and publish once enough episodes
    adopt(learner_reward, weights)  # the learner's copy loads the newest version

A *trainable* reward model has `fit(episodes) -> dict`, `weights() -> {name: array}` and
`load_weights(version, state)` (`rewards.world_model`, `rewards.progress`). The trainer reads
every chunk from its source (its own cursor), assembles finished episodes
(`rewards.episodes.EpisodePool`, the newest `keep_episodes`), and once it holds `min_episodes`
of them fits the model on those and the base's successful demonstrations, which are never
pushed out (`fit_steps` each time; the first fit `first_fit_steps` where the model's config has
them, so version 1, the first the learner trains on, is fitted on the base's own episodes before
the policy moves), and publishes `(version, weights)`: the version is the number of fits, so
labels are keyed by (reward name, version).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from buffers.codec import decode_chunk
from buffers.feed import ChunkSource
from buffers.records import RolloutChunk
from rewards.episodes import EpisodePool


class WeightSource(Protocol):
    """Where a trainer's versioned weights are picked up: `got = source.poll(have_version)`."""

    def poll(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None: ...


class WeightSink(Protocol):
    """Where a trainer publishes: `sink.publish(version, model.weights())`."""

    def publish(self, policy_version: int, state: dict[str, np.ndarray]) -> None: ...


def trainable(model: Any) -> bool:
    return all(hasattr(model, m) for m in ("fit", "weights", "load_weights"))


def adopt(reward: Any, source: WeightSource) -> bool:
    """Load the newest weights `source` has for `reward`, if newer than its version; True if
    it did. The learner calls this before each update."""
    got = source.poll(int(reward.version))
    if got is None:
        return False
    reward.load_weights(*got)
    return True


class RewardTrainer:
    def __init__(self, model: Any, source: ChunkSource, sink: WeightSink,
                 demos: Sequence[RolloutChunk] = ()) -> None:
        if not trainable(model):
            raise ValueError(f"reward {model.name!r} has no fit/weights/load_weights")
        self.model, self.source, self.sink = model, source, sink
        self.min_episodes = model.config.min_episodes
        self.pool = EpisodePool(model.config.keep_episodes)
        # successful demos (progress from t=0), kept apart: the pool keeps only the newest
        # episodes, and a progress model whose demos were pushed out has no success to learn
        # progress from (seen on PushT: after 128 fleet episodes its delta loss was 0)
        demo_pool = EpisodePool(max(1, len(demos)))
        demo_pool.add(demos)
        self.demo_episodes = demo_pool.finished()
        self.demos = len(self.demo_episodes)
        self.cursor, self.fits = 0, 0
        self.last: dict[str, float] = {}

    def step(self) -> bool:
        """Read new chunks; fit and publish when enough episodes are in. True if it fitted."""
        while True:
            records, self.cursor = self.source.read(self.cursor, 512)
            self.pool.add(decode_chunk(r) for r in records)
            if len(records) < 512:
                break
        fleet = self.pool.finished()
        if len(fleet) < self.min_episodes:
            return False  # the demos alone carry no failures to learn from
        episodes = self.demo_episodes + fleet
        t0 = time.monotonic()
        first = int(getattr(self.model.config, "first_fit_steps", 0) or 0)
        if getattr(self.model.config, "labels", "outcome") == "self":  # the fleet's unlabelled
            self.last = self.model.fit(fleet, demos=self.demo_episodes)  # (rewards.world_model)
        elif self.fits == 0 and first:  # a longer first fit (rewards.progress)
            self.last = self.model.fit(episodes, first)
        else:
            self.last = self.model.fit(episodes)
        self.fits += 1
        self.sink.publish(self.fits, self.model.weights())
        self.last.update(fit_s=time.monotonic() - t0, episodes=len(episodes))
        return True

    def stats(self) -> dict[str, Any]:
        return {"version": self.fits, "episodes_seen": self.pool.added, "demos": self.demos,
                **self.last}
