"""What an algorithm needs from the buffer (`DataNeeds`), and the learner's feed that serves it.

Example:

    needs = DataNeeds(group_size=8)                  # GRPO's declaration (`algorithms`)
    feed = ChunkFeed(source, needs, batch_calls=1024, max_staleness=2)
    taken = feed.take(policy_version=7)              # None: not enough usable data yet
    if taken is not None:
        chunks, dropped = taken                      # complete groups of complete episodes

Terms (see `buffers.sampling` for staleness): a *usable* chunk is one `oldest_usable` allows;
the feed reads chunks in arrival order from its `cursor` on, drops those no longer usable
(counted in `dropped`), and hands each remaining chunk to the learner exactly once: the oldest
first, at least `batch_calls` policy calls per batch. With `group_size` G > 1 only complete
groups of G complete episodes are handed out (`buffers.groups`); the rest waits for its
missing chunks. `replay=True` makes every chunk usable however stale: the algorithm keeps its
own replay and corrects for age in its targets (TD).

This is the chunk stream `fleet train` runs. `buffers.sampler` draws fixed-length windows
instead (Reverb-style presets); it is not on the learner's path (see its docstring).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from buffers.codec import decode_chunk
from buffers.groups import complete_groups
from buffers.rate import StepRatio
from buffers.records import RolloutChunk
from buffers.sampling import oldest_usable


@dataclasses.dataclass(frozen=True)
class DataNeeds:
    """What an algorithm asks of the data, declared once per algorithm (`needs(config)`).

    group_size: G > 1: complete groups of G episodes from one start state, which robots then
      run in a row (GRPO's advantages, DPO's pairs); 1: any chunks.
    replay: True: every chunk ever stored, however stale (the algorithm replays them itself);
      False: only chunks within the learner's `max_staleness`.
    demos: the base's demonstrations go to the algorithm's `offline(chunks, rewards)` phase
      before the first update.
    holds_batches: the algorithm may keep a batch's data for a later update (GRPO's dynamic
      sampling, DPO's preference set): `prepare` then returns an empty batch, the learner makes
      no update and no new version, and reports the algorithm's `holding()` metrics.
    rate: gradient steps per env step, held by the buffer's rate limiter (`buffers.rate`):
      the learner trains continuously (`add` what arrives, `train` what it is granted) and
      robots wait when it is behind.
    """

    group_size: int = 1
    replay: bool = False
    demos: bool = False
    holds_batches: bool = False
    rate: StepRatio | None = None

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size={self.group_size}: must be >= 1 (1: no groups)")
        if self.rate is not None and (not self.replay or self.group_size > 1):
            raise ValueError("a rate limit (gradient steps per env step) needs replay=True and "
                             "no groups: an on-policy algorithm trains once per batch")

    def max_staleness(self, bound: int) -> int | None:
        """The staleness limit for this algorithm, given the learner's `max_staleness`."""
        return None if self.replay else bound


class ChunkSource(Protocol):
    """Where the learner reads rollout chunks, in arrival order (a `ReplayBuffer`, or the
    buffer actor through `fleet`).

        records, cursor = source.read(cursor, limit=256, min_policy_version=5)
    """

    def read(self, cursor: int, limit: int, min_policy_version: int = 0) -> tuple[list[bytes], int]:
        ...


class ChunkFeed:
    """Usable chunks from a `ChunkSource`, each handed out once, batched as `needs` declares."""

    def __init__(self, source: ChunkSource, needs: DataNeeds, batch_calls: int,
                 max_staleness: int, cursor: int = 0) -> None:
        if batch_calls < 1:
            raise ValueError(f"batch_calls={batch_calls}: must be >= 1")
        self.source, self.needs, self.batch_calls = source, needs, batch_calls
        self.max_staleness = needs.max_staleness(max_staleness)
        self.cursor = cursor  # the source's records before it have been read
        self.pending: list[RolloutChunk] = []  # read, usable, not handed out yet
        self._dropped = 0  # chunks dropped as stale since the last batch

    def take(self, policy_version: int) -> tuple[list[RolloutChunk], int] | None:
        """(chunks worth at least `batch_calls` calls, chunks dropped as stale since the last
        batch), or None when the source holds too few usable chunks yet: call again later."""
        oldest = oldest_usable(policy_version, self.max_staleness)
        self._dropped += self._drop_older_than(oldest)
        while True:
            batch, rest = self._select(self.pending)
            if sum(c.num_calls for c in batch) >= self.batch_calls:
                self.pending = rest
                dropped, self._dropped = self._dropped, 0
                return batch, dropped
            records, self.cursor = self.source.read(self.cursor, 512, oldest)
            if not records:
                return None
            self.pending += [decode_chunk(r) for r in records]

    def take_any(self, policy_version: int, most_calls: int) -> tuple[list[RolloutChunk], int]:
        """Whatever usable chunks have arrived, oldest first, with no minimum (at most about
        `most_calls` calls' worth; the rest stays pending), and the chunks dropped as stale:
        the read of a learner that trains continuously (`DataNeeds.rate`). No groups."""
        oldest = oldest_usable(policy_version, self.max_staleness)
        self._dropped += self._drop_older_than(oldest)
        if sum(c.num_calls for c in self.pending) < most_calls:
            records, self.cursor = self.source.read(self.cursor, 512, oldest)
            self.pending += [decode_chunk(r) for r in records]
        calls = np.cumsum([c.num_calls for c in self.pending])
        take = int(np.searchsorted(calls, most_calls)) + 1
        batch, self.pending = self.pending[:take], self.pending[take:]
        dropped, self._dropped = self._dropped, 0
        return batch, dropped

    def _drop_older_than(self, oldest: int) -> int:
        usable = [c for c in self.pending if c.policy_version >= oldest]
        dropped = len(self.pending) - len(usable)
        self.pending = usable
        return dropped

    def _select(self, chunks: list[RolloutChunk]) -> tuple[list[RolloutChunk], list[RolloutChunk]]:
        """The chunks to hand out next (oldest first, at least `batch_calls` calls if there are
        that many), and the rest."""
        if self.needs.group_size > 1:
            groups, rest = complete_groups(chunks, self.needs.group_size)
            return [c for g in groups for ep in g for c in ep], rest
        calls = np.cumsum([c.num_calls for c in chunks])
        take = int(np.searchsorted(calls, self.batch_calls)) + 1
        return chunks[:take], chunks[take:]
