"""Online training of a learned reward model, and the learner's side that adopts its weights.

Example (one process; `fleet.remote.reward` runs the same class in a Ray actor):

    trainer = RewardTrainer(make_reward(cfg, guard=False), source, sink, demos)
    trainer.step()                  # read new chunks; fit and publish once enough episodes
    adopt(learner_reward, weights)  # the learner's copy loads the newest version

A *trainable* reward model declares `LearnsOnline` (`rewards.world_model`,
`rewards.progress`). The trainer reads every chunk from its source (its own cursor), assembles
finished episodes (`rewards.episodes.EpisodePool`, the newest `keep_episodes`), and once it holds
`min_episodes` of them calls the model's `fit_online` with those and the base's successful
demonstrations, which are never pushed out (the model decides how to fit them: its labels, a
longer first fit), and publishes `(version, weights)`: the version is the number of fits, so
labels are keyed by (reward name, version).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import Any, Protocol, TypeGuard

import numpy as np

from buffers.codec import decode_chunk
from buffers.feed import ChunkSource
from buffers.records import RolloutChunk
from rewards.episodes import Episode, EpisodePool, whole_episodes


class WeightSource(Protocol):
    """Where a trainer's versioned weights are picked up: `got = source.poll(have_version)`."""

    def poll(self, have_version: int) -> tuple[int, dict[str, np.ndarray]] | None: ...


class WeightSink(Protocol):
    """Where a trainer publishes: `sink.publish(version, model.weights())`."""

    def publish(self, policy_version: int, state: dict[str, np.ndarray]) -> None: ...


class FitSchedule(Protocol):
    """When a trainer fits: the config fields every online-learning model's config carries."""

    @property
    def min_episodes(self) -> int: ...  # finished fleet episodes before the first fit

    @property
    def keep_episodes(self) -> int: ...  # the newest this many fleet episodes are fitted on

    @property
    def fit_every_s(self) -> float: ...  # the Ray trainer's pause between fits


class LearnsOnline(abc.ABC):
    """The fit contract of a reward model trained online; subclassing it is the declaration.

    Example (what `RewardTrainer` does, the only caller of `fit_online`):

        stats = model.fit_online(fleet_episodes, demo_episodes, first=fits == 0)
        sink.publish(fits + 1, model.weights())
        learner_copy.load_weights(version, state)   # `adopt`
    """

    config: FitSchedule

    @abc.abstractmethod
    def fit_online(self, fleet: Sequence[Episode], demos: Sequence[Episode],
                   first: bool) -> dict[str, float]:
        """Fit on the fleet's finished episodes and the base's successful demonstrations
        (`first`: no version published yet); returns the fit's statistics."""

    @abc.abstractmethod
    def weights(self) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def load_weights(self, version: int | str, state: dict[str, np.ndarray]) -> None: ...


def trainable(model: object) -> TypeGuard[LearnsOnline]:
    """Whether `model` declares the online fit contract `LearnsOnline`."""
    return isinstance(model, LearnsOnline)


def adopt(reward: Any, source: WeightSource) -> bool:
    """Load the newest weights `source` has for `reward`, if newer than its version; True if
    it did. The learner calls this before each update."""
    got = source.poll(int(reward.version))
    if got is None:
        return False
    reward.load_weights(*got)
    return True


class RewardTrainer:
    def __init__(self, model: LearnsOnline, source: ChunkSource, sink: WeightSink,
                 demos: Sequence[RolloutChunk] = ()) -> None:
        if not trainable(model):
            raise ValueError(f"reward {type(model).__name__} does not declare LearnsOnline")
        self.model, self.source, self.sink = model, source, sink
        self.min_episodes = model.config.min_episodes
        self.pool = EpisodePool(model.config.keep_episodes)
        # successful demos (progress from t=0), kept apart: the pool keeps only the newest
        # episodes, and a progress model whose demos were pushed out has no success to learn
        # progress from (seen on PushT: after 128 fleet episodes its delta loss was 0)
        self.demo_episodes = whole_episodes(demos)
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
        t0 = time.monotonic()
        self.last = self.model.fit_online(fleet, self.demo_episodes, first=self.fits == 0)
        self.fits += 1
        self.sink.publish(self.fits, self.model.weights())
        self.last.update(fit_s=time.monotonic() - t0, episodes=self.demos + len(fleet))
        return True

    def stats(self) -> dict[str, Any]:
        return {"version": self.fits, "episodes_seen": self.pool.added, "demos": self.demos,
                **self.last}
