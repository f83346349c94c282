"""Finished episodes assembled from rollout chunks, and the training targets learned rewards
use: progress toward success and the episode's outcome.

Example (what a reward trainer does with chunks read from the buffer):

    pool = EpisodePool(keep=256)
    pool.add(chunks)                      # any order, any robots; unfinished episodes wait
    episodes = pool.finished()            # [[chunk, ...], ...] each complete and in order
    progress, success = targets(episodes[0])  # [T + 1] each, per observation

Terms: an episode is *successful* when its end says so (env or human) or a step carries the
env's success flag; `T_s` is the number of steps up to and including its first success step.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import numpy as np

from buffers.records import RolloutChunk

Episode = list[RolloutChunk]


def first_success(episode: Sequence[RolloutChunk]) -> int | None:
    """Steps until success (`T_s`), or None for a failed or truncated episode."""
    flags = np.concatenate([np.asarray(c.success, bool) for c in episode])
    end = episode[-1].episode_end
    if end is not None and end.source == "human":
        return len(flags) if end.outcome == "success" else None  # a human label overrides
    hits = np.flatnonzero(flags)
    if hits.size:
        return int(hits[0]) + 1
    return len(flags) if end is not None and end.outcome == "success" else None


def targets(episode: Sequence[RolloutChunk]) -> tuple[np.ndarray, np.ndarray]:
    """Per observation [T + 1]: progress `min(t / T_s, 1)` on a successful episode (NaN, unknown,
    on a failed one) and the outcome (1.0 successful, 0.0 not) on every observation."""
    T = sum(len(c.action) for c in episode)
    t_s = first_success(episode)
    if t_s is None:
        return np.full(T + 1, np.nan, np.float32), np.zeros(T + 1, np.float32)
    progress = np.minimum(np.arange(T + 1, dtype=np.float32) / max(t_s, 1), 1.0)
    return progress, np.ones(T + 1, np.float32)


def observations(episode: Sequence[RolloutChunk], key: str) -> np.ndarray:
    """obs[key] of the whole episode [T + 1, ...]: each chunk's last obs is the next's first."""
    parts = [np.asarray(c.obs[key])[:len(c.action)] for c in episode]
    return np.concatenate([*parts, np.asarray(episode[-1].obs[key])[-1:]])


def whole_episodes(chunks: Sequence[RolloutChunk]) -> list[Episode]:
    """Every finished episode among `chunks` (e.g. the base's demonstrations), none dropped."""
    pool = EpisodePool(max(1, len(chunks)))
    pool.add(chunks)
    return pool.finished()


class EpisodePool:
    """Collects chunks into episodes; keeps the newest `keep` finished ones."""

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self._open: dict[tuple[str, str], dict[int, RolloutChunk]] = {}
        self._done: collections.deque[Episode] = collections.deque(maxlen=keep)
        self.added = 0  # finished episodes ever

    def add(self, chunks: Iterable[RolloutChunk]) -> int:
        """Returns how many episodes this call finished."""
        before = self.added
        for c in chunks:
            parts = self._open.setdefault((c.robot_id, c.episode_id), {})
            parts[c.chunk_seq] = c
            ends = [s for s, p in parts.items() if p.episode_end is not None]
            if ends and len(parts) == max(ends) + 1:  # every chunk up to the end is here
                self._done.append([parts[s] for s in sorted(parts)])
                del self._open[(c.robot_id, c.episode_id)]
                self.added += 1
        while len(self._open) > 4 * self.keep:  # episodes that never end (a robot was lost)
            del self._open[next(iter(self._open))]
        return self.added - before

    def finished(self) -> list[Episode]:
        return list(self._done)
