"""A byte-bounded LRU cache of decoded records, so hot records are decoded once.

Example:

    cache = DecodedCache(max_bytes=256 << 20)
    chunk = cache.get(position)
    if chunk is None:
        chunk = cache.put(position, decode_chunk(log.read(position)))

A record's size is the bytes of its arrays (what decoding allocated). The least recently used
records are evicted until the total is under `max_bytes`; a record larger than the whole budget
is returned but not kept.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable

from buffers.records import RolloutChunk


def chunk_bytes(c: RolloutChunk) -> int:
    return (sum(a.nbytes for a in c.obs.values()) + c.action.nbytes + c.policy_action.nbytes
            + c.logp.nbytes + c.value.nbytes + c.reward.nbytes + c.success.nbytes
            + c.intervened.nbytes)


class DecodedCache:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("cache max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: collections.OrderedDict[Hashable, tuple[RolloutChunk, int]] = (
            collections.OrderedDict())

    def get(self, key: Hashable) -> RolloutChunk | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: Hashable, chunk: RolloutChunk) -> RolloutChunk:
        size = chunk_bytes(chunk)
        if size > self.max_bytes or key in self._items:
            return chunk
        self._items[key] = (chunk, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._items.popitem(last=False)
            self.bytes -= evicted
        return chunk

    def discard(self, key: Hashable) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    def __len__(self) -> int:
        return len(self._items)
