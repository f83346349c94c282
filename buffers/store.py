"""The persistent replay buffer: validated, idempotent ingest into a `SegmentLog`, plus an index.

Example:

    with ReplayBuffer("runs/x/buffer", BufferConfig(fsync="always")) as buf:
        result = buf.insert([encode_chunk(chunk)])    # stored / duplicates / refused
        records, cursor = buf.read(0, limit=256, min_policy_version=3)
        chunk = buf.get(buf.records()[-1])            # decoded, through the LRU cache

The index lives in memory; each sealed segment's part is also saved beside it (`buffers.index`)
so reopening need not decode weeks of data, and is rebuilt from the segment whenever that file
is missing or doubtful. Ingest is idempotent on `(robot_id, episode_id, chunk_seq)`: a resend
of the same bytes after a fault is a duplicate and changes nothing; a record with a stored key
but different bytes is a conflict: refused (the first one stays), counted in `info()` and
logged; a record that breaks the schema is refused with its reason and changes nothing. A
cursor is a record's place in arrival order; it stays valid when retention deletes older
segments.

Damage found after opening (a record of a sealed segment whose saved index spared it the scan,
or bytes changed since) is found when the record is first read: it is counted once, dropped
from the index (and from the segment's saved index, so a reopen agrees) and its key is freed,
so the robot's resend of it is stored again. A resend whose stored copy turns out damaged
replaces it the same way.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from buffers.cache import DecodedCache
from buffers.check import RecordHead, check_record, check_records
from buffers.codec import MAX_RECORD_BYTES, RecordError, decode_chunk
from buffers.index import RecordMeta, SegmentIndex, index_path, load_index, save_index
from buffers.log import FSYNC_POLICIES, CorruptLogError, Position, SegmentLog, list_segments
from buffers.records import ChunkKey, RolloutChunk
from buffers.relabel import RewardColumns
from buffers.stats import Counts

__all__ = ["BufferConfig", "InsertResult", "RecordMeta", "ReplayBuffer"]

log = logging.getLogger(__name__)
_META = functools.partial(tuple.__new__, RecordMeta)  # from a tuple, without Python's __new__
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)

@dataclasses.dataclass(frozen=True)
class BufferConfig:
    segment_bytes: int = 64 * 1024 * 1024  # a segment file rotates past this size
    fsync: str = "interval_ms"  # always | interval_ms | never: when an insert is durable
    fsync_interval_ms: int = 200
    max_record_bytes: int = MAX_RECORD_BYTES
    strict: bool = False  # refuse to open a log with damage in the middle (rescans all)
    max_bytes: int = 0  # retention: cap on segment bytes on disk, oldest go first; 0 = no cap
    cache_bytes: int = 256 * 1024 * 1024  # LRU cache of decoded records
    shards: int = 1  # >1: that many logs under shard-NN/, records keyed by robot (buffers.shards)
    lock_wait_s: float = 0.0  # wait this long for another writer to let go (a restarted server)

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"buffer.fsync={self.fsync!r}: use one of {', '.join(FSYNC_POLICIES)}")
        if self.segment_bytes < 4096:
            raise ValueError("buffer.segment_bytes must be at least 4096")
        if self.fsync_interval_ms < 0:
            raise ValueError("buffer.fsync_interval_ms must be >= 0")
        if self.lock_wait_s < 0:
            raise ValueError("buffer.lock_wait_s must be >= 0")
        if not 1024 <= self.max_record_bytes <= MAX_RECORD_BYTES:
            raise ValueError(f"buffer.max_record_bytes must be in [1024, {MAX_RECORD_BYTES}]")
        if self.max_bytes and self.max_bytes < 2 * self.segment_bytes:
            raise ValueError("buffer.max_bytes must be 0 (no cap) or at least two segments "
                             "(2 * buffer.segment_bytes): the segment being written is never "
                             "deleted")
        if self.cache_bytes < 0:
            raise ValueError("buffer.cache_bytes must be >= 0")
        if not 1 <= self.shards <= 64:
            raise ValueError("buffer.shards must be in [1, 64]")


@dataclasses.dataclass(frozen=True)
class InsertResult:
    stored: int
    duplicates: int
    refused: tuple[tuple[int, str], ...] = ()  # (index in the batch, reason)
    conflicts: int = 0  # of `refused`: a stored key with different bytes


class ReplayBuffer:
    def __init__(self, root: Path | str, config: BufferConfig = BufferConfig(), *,
                 read_only: bool = False) -> None:
        """`read_only` opens without truncating, saving indices or deleting anything: safe
        beside a live writer (`fleet buffer info`); `insert` then raises."""
        self.root = Path(root)
        self.read_only = read_only
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.cache = DecodedCache(config.cache_bytes)
        self.rewards = RewardColumns(self.root / "rewards", config.fsync, read_only=read_only)
        self.index: list[RecordMeta | None] = []  # by cursor - self._base; None once deleted
        self._base = 0
        self._keys: dict[ChunkKey, RecordMeta] = {}
        self._segments: dict[int, list[RecordMeta]] = {}
        self._first: dict[int, int] = {}  # segment -> cursor of its first record
        self._damaged: dict[int, int] = collections.Counter()
        self._unsealed: list[int] = []
        self._sealed_sizes: dict[int, int] = {}
        self.counts = Counts()
        self.conflicts = 0  # records refused: their key is stored with different bytes
        self.conflict_notes: list[str] = []  # the first few
        self.retention_notes: list[str] = []
        saved = {} if config.strict else self._saved_indices()  # strict: rescan every byte
        trusted = {n: [m.position for m in ix.metas] for n, ix in saved.items()}
        self.log = SegmentLog(self.root, config.segment_bytes, config.fsync,
                              config.fsync_interval_ms, config.strict, trusted=trusted,
                              on_seal=self._unsealed.append, read_only=read_only,
                              lock_wait_s=config.lock_wait_s)
        self._build(saved)
        self._enforce_retention()

    def _saved_indices(self) -> dict[int, SegmentIndex]:
        numbers, _ = list_segments(self.root)
        saved = {}
        for n in numbers[:-1]:  # the newest is always scanned
            found = load_index(self.root, n, (self.root / f"segment-{n:06d}.log").stat().st_size)
            if found is not None:
                saved[n] = found
        return saved

    def _build(self, saved: dict[int, SegmentIndex]) -> None:
        by_segment: dict[int, list[Position]] = collections.defaultdict(list)
        for pos in self.log.positions:
            by_segment[pos.segment].append(pos)
        for n in sorted(set(by_segment) | set(self.log.scanned) | set(saved)):
            if n in saved:
                metas, first = saved[n].metas, saved[n].first
                self._damaged[n] = saved[n].damaged
            else:
                metas, first = self._decode_segment(n, by_segment[n]), self._cursor_end
                self._damaged[n] += self.log.damaged.get(n, 0)
                if n != self.log.active:
                    self._unsealed.append(n)  # its index was missing or doubtful: rebuild it
            self._place(n, metas, first)
        self._save_unsealed()

    def _decode_segment(self, n: int, positions: list[Position]) -> list[RecordMeta]:
        metas = []
        for pos in positions:
            try:
                head = check_record(self.log.read(pos), max_bytes=self.config.max_record_bytes)
            except (RecordError, CorruptLogError):  # checksum fine but schema not
                self._damaged[n] += 1
                continue
            metas.append(RecordMeta.checked(head, pos))
        return metas

    @property
    def _cursor_end(self) -> int:
        return self._base + len(self.index)

    def _place(self, n: int, metas: list[RecordMeta], first: int) -> None:
        if not self.index:
            self._base = first
        gap = first - self._cursor_end
        self.index += [None] * max(gap, 0)  # records deleted by retention before this segment
        self._first[n] = self._cursor_end
        self._segments[n] = list(metas)
        self.index += metas
        self._keys.update((m.key, m) for m in metas)
        for m in metas:
            self.counts.update(m, +1)

    def _save_unsealed(self) -> None:
        if self.read_only:
            self._unsealed.clear()
        for n in self._unsealed:
            if n in self._segments:
                save_index(self.root, n, self.log.segment_size(n),
                           SegmentIndex(self._segments[n], self._damaged[n], self._first[n]))
        self._unsealed.clear()

    def insert(self, records: Sequence[bytes]) -> InsertResult:
        """Validate, drop duplicates, append; returns once durable per `config.fsync`."""
        # every rule of the schema, read off the msgpack map; nothing is inflated
        passed, refused = check_records(records, max_bytes=self.config.max_record_bytes)
        if not refused and set(map(type, records)) == {bytes}:  # the usual batch, as it is
            decoded = list(zip(records, map(_SECOND, passed), strict=True))
        else:
            decoded = [(bytes(records[i]), head) for i, head in passed]
        stored, duplicates, conflicts = self.insert_decoded(decoded)
        if conflicts:
            schema = {j for j, _ in refused}
            where = [i for i in range(len(records)) if i not in schema]  # of each decoded one
            refused = sorted(refused + [(where[j], reason) for j, reason in conflicts])
        return InsertResult(stored, duplicates, tuple(refused), len(conflicts))

    def insert_decoded(self, decoded: Sequence[tuple[bytes, RecordHead]]
                       ) -> tuple[int, int, list[tuple[int, str]]]:
        """Store records that `check_record` just returned `head` for: what `insert` does
        after checking, for callers that checked already (`ShardedBuffer`).
        Returns (stored, duplicates, conflicts as (index in `decoded`, reason))."""
        fresh: list[tuple[bytes, RecordHead]] = []
        seen: dict[ChunkKey, bytes] = {}
        duplicates = 0
        conflicts: list[tuple[int, str]] = []
        keys = list(map(_FIRST, map(_SECOND, decoded)))
        if self._keys.keys().isdisjoint(keys) and len(set(keys)) == len(keys):
            fresh, decoded = list(decoded), ()  # the usual batch: every key new, none twice
        for i, (record, head) in enumerate(decoded):
            key = head.key
            fresh_key = key not in self._keys and key not in seen  # the common case, no call
            same = None if fresh_key else self._same(key, record, seen)
            if same is None:
                seen[key] = record
                fresh.append((record, head))
            elif same:
                duplicates += 1
            else:
                conflicts.append((i, self._conflict(key)))
        positions = self.log.append(list(map(_FIRST, fresh))) if fresh else []
        # each head's fields and its position (`RecordMeta.checked`, without Python per record)
        metas = list(map(_META, map(operator.add, map(_SECOND, fresh), zip(positions))))
        segment = positions[0].segment if positions else -1
        if positions and segment == positions[-1].segment and segment in self._segments:
            self._segments[segment] += metas  # the usual batch: what `_add` does, at once
            self.index += metas
            self._keys.update(zip(map(_FIRST, metas), metas, strict=True))
            self.counts.add(metas)
        else:  # the batch opens a segment
            for meta in metas:
                self._add(meta)
        self._save_unsealed()
        if fresh:
            self._enforce_retention()
        return len(fresh), duplicates, conflicts

    def _same(self, key: ChunkKey, record: bytes, seen: dict[ChunkKey, bytes]) -> bool | None:
        """None: `key` is new (or its stored copy was found damaged, so this resend repairs
        it); True: the same bytes are stored (an idempotent resend); False: different bytes."""
        if key in seen:
            return seen[key] == record
        meta = self._keys.get(key)
        if meta is None:
            return None
        try:  # only resends get here: one read of the stored copy
            return self.log.read(meta.position) == record
        except CorruptLogError:
            self._lost(meta)
            return None

    def _conflict(self, key: ChunkKey) -> str:
        self.conflicts += 1
        reason = (f"conflict: record {key} is stored already with different bytes; the stored "
                  "one is kept (a robot that reuses an episode id, or a resend that changed)")
        if len(self.conflict_notes) < 10:
            self.conflict_notes.append(reason)
        log.warning("%s: %s", self.root, reason)
        return reason

    def _lost(self, meta: RecordMeta) -> None:
        """Record `meta` failed its checksum on a read: count it once, forget it (a resend of
        its key is then stored again) and, in a sealed segment, save the index without it."""
        if self._keys.get(meta.key) is not meta:
            return  # counted already (or deleted by retention, or resent since)
        n = meta.position.segment
        del self._keys[meta.key]
        self.index[self._first[n] - self._base + self._segments[n].index(meta)] = None
        self._segments[n].remove(meta)
        self.counts.update(meta, -1)
        self.cache.discard(meta.position)
        self._damaged[n] += 1
        log.warning("%s: record %s in segment %d is damaged: dropped (a resend is stored)",
                    self.root, meta.key, n)
        if n != self.log.active and not self.read_only:
            save_index(self.root, n, self.log.segment_size(n),
                       SegmentIndex(self._segments[n], self._damaged[n], self._first[n]))

    def _add(self, meta: RecordMeta) -> None:
        n = meta.position.segment
        if n not in self._segments:
            self._segments[n], self._first[n] = [], self._cursor_end
        self._segments[n].append(meta)
        self.index.append(meta)
        self._keys[meta.key] = meta
        self.counts.update(meta, +1)

    def read(self, cursor: int, limit: int, min_policy_version: int = 0) -> tuple[list[bytes], int]:
        """Up to `limit` records from `cursor` on, in arrival order, skipping those older than
        `min_policy_version` and any found damaged. Returns them and the cursor to go on from."""
        out: list[bytes] = []
        i = max(cursor - self._base, 0)
        while i < len(self.index) and len(out) < limit:
            meta = self.index[i]
            i += 1
            if meta is None or meta.policy_version < min_policy_version:
                continue
            try:
                out.append(self.log.read(meta.position))
            except CorruptLogError:  # damaged since opening: skip, count it once, free its key
                self._lost(meta)
        return out, self._base + i

    @property
    def end(self) -> int:
        """The cursor after the newest record: how many records were ever stored here."""
        return self._cursor_end

    def since(self, cursor: int) -> list[tuple[int, RecordMeta]]:
        """(cursor, meta) of the stored records from `cursor` on, for samplers to catch up."""
        i = max(cursor - self._base, 0)
        return [(self._base + j, m) for j, m in enumerate(self.index[i:], i) if m is not None]

    def at(self, cursor: int) -> RecordMeta | None:
        """The record at `cursor`, or None if retention deleted it."""
        i = cursor - self._base
        return self.index[i] if 0 <= i < len(self.index) else None

    def records(self) -> list[RecordMeta]:
        """The index of every stored record, in arrival order."""
        return [m for m in self.index if m is not None]

    def get(self, meta: RecordMeta) -> RolloutChunk:
        """The decoded record; raises `CorruptLogError` if it was damaged since opening (and
        drops it, as `read` does)."""
        chunk = self.cache.get(meta.position)
        if chunk is None:
            try:
                payload = self.log.read(meta.position)
            except CorruptLogError:
                self._lost(meta)
                raise
            # validated when stored and its CRC checked just now: skip the schema check
            try:
                chunk = decode_chunk(payload, max_bytes=self.config.max_record_bytes,
                                     checked=False)
            except RecordError as e:  # a compressed observation whose frame lied at ingest
                self._lost(meta)
                raise CorruptLogError(f"record {meta.key}: {e}") from e
            chunk = self.cache.put(meta.position, chunk)
        return chunk

    def set_rewards(self, key: ChunkKey, name: str, version: str | int,
                    rewards: np.ndarray) -> None:
        """Label record `key`'s steps with reward model (name, version); observations untouched."""
        if key not in self._keys:
            raise KeyError(f"no record {key} in the buffer")
        self.rewards.set(key, name, version, rewards)

    def get_rewards(self, key: ChunkKey, name: str, version: str | int) -> np.ndarray | None:
        return self.rewards.get(key, name, version)

    def _enforce_retention(self) -> None:
        """Delete the oldest sealed segments until the log fits `max_bytes`; segments holding
        any operator-acted step (interventions, demonstrations) are pinned."""
        cap = self.config.max_bytes
        if not cap or self.read_only:
            return
        sizes = {n: self._segment_size(n) for n in self._segments}
        total = sum(sizes.values())
        for n in sorted(self._segments):
            if total <= cap:
                return
            if n == self.log.active or any(m.intervened for m in self._segments[n]):
                continue
            self._drop(n)
            total -= sizes[n]
        if total > cap:
            self.retention_notes = [f"retention: {total} bytes kept over the cap of {cap}: "
                                    "pinned segments and the active one are never deleted"]

    def _segment_size(self, n: int) -> int:
        if n == self.log.active:
            return self.log.segment_size(n)
        if n not in self._sealed_sizes:  # a sealed segment never changes: stat it once
            self._sealed_sizes[n] = self.log.segment_size(n)
        return self._sealed_sizes[n]

    def _drop(self, n: int) -> None:
        for j, meta in enumerate(self._segments.pop(n)):
            if self._keys.get(meta.key) is meta:  # a resend of a deleted record is stored again
                del self._keys[meta.key]
            self.counts.update(meta, -1)
            self.cache.discard(meta.position)
            self.index[self._first[n] - self._base + j] = None
        self.log.drop_segment(n)
        index_path(self.root, n).unlink(missing_ok=True)
        lead = next((i for i, m in enumerate(self.index) if m is not None), len(self.index))
        del self.index[:lead]  # free the slots of deleted records at the front, in one go
        self._base += lead

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def num_steps(self) -> int:
        return self.counts.steps

    def info(self) -> dict[str, Any]:
        """Counts (records, steps, episodes, per task, policy versions, ...) and damage found."""
        return {
            **self.counts.summary(), "segments": len(self._segments),
            "reward_labels": [f"{n}@{v}" for n, v in self.rewards.labels()],
            "corrupt_records": sum(self._damaged.values()),
            "torn_bytes": self.log.recovery.torn_bytes,
            "conflicts": self.conflicts, "stray_files": self.log.recovery.strays,
            "notes": self.log.recovery.notes + self.retention_notes + self.conflict_notes,
        }

    def close(self) -> None:
        self.log.close()
        self.rewards.close()

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
