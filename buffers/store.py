"""The persistent replay buffer: validated, idempotent ingest into a `SegmentLog`, plus an index.

Example:

    with ReplayBuffer("runs/x/buffer", BufferConfig(fsync="always")) as buf:
        result = buf.insert([encode_chunk(chunk)])    # stored / duplicates / refused
        records, cursor = buf.read(0, limit=256, min_policy_version=3)

The index lives in memory and is rebuilt from the segments on open, so it can never disagree
with them. Ingest is idempotent on `(robot_id, episode_id, chunk_seq)`: a resend after a fault
never duplicates; a record that breaks the schema is refused with its reason and changes nothing.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from buffers.codec import MAX_RECORD_BYTES, RecordError, decode_chunk
from buffers.log import FSYNC_POLICIES, Position, SegmentLog
from buffers.records import ChunkKey, RolloutChunk


@dataclasses.dataclass(frozen=True)
class BufferConfig:
    segment_bytes: int = 64 * 1024 * 1024  # a segment file rotates past this size
    fsync: str = "interval_ms"  # always | interval_ms | never: when an insert is durable
    fsync_interval_ms: int = 200
    max_record_bytes: int = MAX_RECORD_BYTES
    strict: bool = False  # refuse to open a log with damage in the middle

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"buffer.fsync={self.fsync!r}: use one of {', '.join(FSYNC_POLICIES)}")
        if self.segment_bytes < 4096:
            raise ValueError("buffer.segment_bytes must be at least 4096")
        if self.fsync_interval_ms < 0:
            raise ValueError("buffer.fsync_interval_ms must be >= 0")
        if not 1024 <= self.max_record_bytes <= MAX_RECORD_BYTES:
            raise ValueError(f"buffer.max_record_bytes must be in [1024, {MAX_RECORD_BYTES}]")


@dataclasses.dataclass(frozen=True)
class InsertResult:
    stored: int
    duplicates: int
    refused: tuple[tuple[int, str], ...] = ()  # (index in the batch, reason)


@dataclasses.dataclass(frozen=True)
class RecordMeta:
    """What the index keeps per record."""

    key: ChunkKey
    task: str
    policy_version: int
    num_steps: int
    outcome: str | None
    position: Position

    @staticmethod
    def of(chunk: RolloutChunk, position: Position) -> RecordMeta:
        end = chunk.episode_end
        return RecordMeta(chunk.key, chunk.task, chunk.policy_version, chunk.num_steps,
                          None if end is None else end.outcome, position)


class ReplayBuffer:
    def __init__(self, root: Path | str, config: BufferConfig = BufferConfig()) -> None:
        self.config = config
        self.log = SegmentLog(Path(root), config.segment_bytes, config.fsync,
                              config.fsync_interval_ms, config.strict)
        self.index: list[RecordMeta] = []
        self._keys: set[ChunkKey] = set()
        self.unreadable = 0
        for pos, payload in self.log:
            try:
                chunk = decode_chunk(payload, max_bytes=config.max_record_bytes)
            except RecordError:  # checksum fine but schema not: written by something else
                self.unreadable += 1
                continue
            self._add(RecordMeta.of(chunk, pos))

    def _add(self, meta: RecordMeta) -> None:
        self.index.append(meta)
        self._keys.add(meta.key)

    def insert(self, records: Sequence[bytes]) -> InsertResult:
        """Validate, drop duplicates, append; returns once durable per `config.fsync`."""
        fresh: list[tuple[bytes, RolloutChunk]] = []
        refused: list[tuple[int, str]] = []
        seen: set[ChunkKey] = set()
        duplicates = 0
        for i, record in enumerate(records):
            try:
                chunk = decode_chunk(record, max_bytes=self.config.max_record_bytes)
            except RecordError as e:
                refused.append((i, str(e)))
                continue
            if chunk.key in self._keys or chunk.key in seen:
                duplicates += 1
                continue
            seen.add(chunk.key)
            fresh.append((bytes(record), chunk))
        positions = self.log.append([r for r, _ in fresh]) if fresh else []
        for (_, chunk), pos in zip(fresh, positions, strict=True):
            self._add(RecordMeta.of(chunk, pos))
        return InsertResult(len(fresh), duplicates, tuple(refused))

    def read(self, cursor: int, limit: int, min_policy_version: int = 0) -> tuple[list[bytes], int]:
        """Up to `limit` records from index `cursor` on, in arrival order, skipping those older
        than `min_policy_version`. Returns them and the cursor to continue from."""
        out: list[bytes] = []
        i = max(cursor, 0)
        while i < len(self.index) and len(out) < limit:
            meta = self.index[i]
            if meta.policy_version >= min_policy_version:
                out.append(self.log.read(meta.position))
            i += 1
        return out, i

    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_steps(self) -> int:
        return sum(m.num_steps for m in self.index)

    def info(self) -> dict[str, Any]:
        versions = [m.policy_version for m in self.index]
        ends = [m.outcome for m in self.index if m.outcome is not None]
        return {
            "records": len(self.index), "steps": self.num_steps,
            "episodes": len({(m.key[0], m.key[1]) for m in self.index}),
            "episodes_ended": len(ends), "successes": ends.count("success"),
            "tasks": dict(collections.Counter(m.task for m in self.index)),
            "policy_version_min": min(versions, default=None),
            "policy_version_max": max(versions, default=None),
            "segments": self.log.segments, "bytes": self.log.bytes,
            "corrupt_records": self.log.recovery.corrupt_records + self.unreadable,
            "torn_bytes": self.log.recovery.torn_bytes, "notes": self.log.recovery.notes,
        }

    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
