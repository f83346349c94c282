"""Several replay buffers side by side, records keyed by robot: one log per shard.

Example:

    buf = ShardedBuffer("runs/x/buffer", BufferConfig(shards=4))   # shard-00/ ... shard-03/
    buf.insert(records)                        # each record goes to its robot's shard
    records, cursor = buf.read(cursor, limit=256, min_policy_version=3)   # all shards merged

Each shard is a complete `ReplayBuffer` in its own directory: its own segments, index, torn-tail
truncation, damage reports and retention (the byte cap applies per shard), so a damaged shard
never holds back the others on reopen. A robot always lands in the same shard (CRC-32C of its
id), so its episodes stay whole and idempotent ingest works per shard.

A merged cursor packs one cursor per shard (`CURSOR_BITS` bits each, shard 0 lowest), so it is a
plain int that a learner can checkpoint, and with one shard it equals that shard's cursor.
Reads take records from the shards in turn (round robin), each shard in its arrival order.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crc32c import crc32c

from buffers.check import RecordHead, check_records
from buffers.log import list_segments
from buffers.store import BufferConfig, InsertResult, ReplayBuffer

CURSOR_BITS = 48


def shard_dir(root: Path, k: int) -> Path:
    return Path(root) / f"shard-{k:02d}"


def shard_of(robot_id: str, shards: int) -> int:
    """The shard robot `robot_id` writes to: stable across processes and runs."""
    return crc32c(robot_id.encode()) % shards


def is_sharded(root: Path | str) -> bool:
    return shard_dir(Path(root), 0).is_dir()


class ShardedBuffer:
    def __init__(self, root: Path | str, config: BufferConfig, *, read_only: bool = False) -> None:
        self.root = Path(root)
        found = sorted(self.root.glob("shard-*"))
        n = config.shards if not read_only or not found else len(found)
        if list_segments(self.root)[0]:
            raise ValueError(f"{self.root} holds an unsharded buffer; open it with shards=1")
        if found and len(found) != n:
            raise ValueError(f"{self.root} holds {len(found)} shards, config asks for {n}: robots "
                             "would move between shards; keep buffer.shards as it was")
        self.shards: list[ReplayBuffer] = []
        try:
            for k in range(n):
                self.shards.append(ReplayBuffer(shard_dir(self.root, k), config,
                                                read_only=read_only))
        except BaseException:  # e.g. another writer holds one shard: let go of the others
            self.close()
            raise

    def insert(self, records: Sequence[bytes]) -> InsertResult:
        """Check each record once, route it to its robot's shard; durable on return."""
        routed: dict[int, list[tuple[bytes, RecordHead]]] = collections.defaultdict(list)
        where: dict[int, list[int]] = collections.defaultdict(list)  # batch index per shard item
        limit = self.shards[0].config.max_record_bytes
        passed, refused = check_records(records, max_bytes=limit)
        for i, head in passed:
            k = shard_of(head.key[0], len(self.shards))
            routed[k].append((bytes(records[i]), head))
            where[k].append(i)
        stored = duplicates = conflicts = 0
        for k, items in routed.items():
            s, d, c = self.shards[k].insert_decoded(items)
            stored, duplicates, conflicts = stored + s, duplicates + d, conflicts + len(c)
            refused += [(where[k][j], reason) for j, reason in c]
        return InsertResult(stored, duplicates, tuple(sorted(refused)), conflicts)

    def unpack(self, cursor: int) -> list[int]:
        mask = (1 << CURSOR_BITS) - 1
        return [(cursor >> (CURSOR_BITS * k)) & mask for k in range(len(self.shards))]

    @staticmethod
    def pack(cursors: Sequence[int]) -> int:
        return sum(c << (CURSOR_BITS * k) for k, c in enumerate(cursors))

    def read(self, cursor: int, limit: int, min_policy_version: int = 0) -> tuple[list[bytes], int]:
        """Up to `limit` records after the merged `cursor`, the shards taken in turn."""
        cursors = self.unpack(cursor)
        out: list[bytes] = []
        live = list(range(len(self.shards)))
        while live and len(out) < limit:
            for k in list(live):
                got, cursors[k] = self.shards[k].read(cursors[k], 1, min_policy_version)
                if not got:
                    live.remove(k)
                    continue
                out += got
                if len(out) == limit:
                    break
        return out, self.pack(cursors)

    @property
    def end(self) -> int:
        return self.pack([s.end for s in self.shards])

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def info(self) -> dict[str, Any]:
        """The shards' infos summed (counters added, dicts merged), plus each shard's own."""
        parts = [s.info() for s in self.shards]
        merged: dict[str, Any] = {}
        for part in parts:
            for key, value in part.items():
                if key.startswith("policy_version_"):
                    pick = min if key.endswith("min") else max
                    known = [v for v in (merged.get(key), value) if v is not None]
                    merged[key] = pick(known) if known else None
                elif isinstance(value, bool) or value is None:
                    merged.setdefault(key, value)
                elif isinstance(value, int | float):
                    merged[key] = merged.get(key, 0) + value
                elif isinstance(value, dict):
                    into = merged.setdefault(key, {})
                    for k, v in value.items():
                        into[k] = into.get(k, 0) + v
                elif isinstance(value, list):
                    merged.setdefault(key, [])
                    merged[key] += [x for x in value if x not in merged[key]] \
                        if key == "reward_labels" else value
        merged["shards"] = len(self.shards)
        merged["per_shard"] = [{"records": p["records"], "corrupt_records": p["corrupt_records"],
                                "torn_bytes": p["torn_bytes"]} for p in parts]
        return merged

    def close(self) -> None:
        for s in self.shards:
            s.close()

    def __enter__(self) -> ShardedBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_buffer(root: Path | str, config: BufferConfig = BufferConfig(), *,
                read_only: bool = False) -> ReplayBuffer | ShardedBuffer:
    """A sharded buffer where `config.shards > 1` or the directory already holds shards (a
    read-only opener finds them by itself), else a single `ReplayBuffer`."""
    if config.shards > 1 or is_sharded(root):
        return ShardedBuffer(root, config, read_only=read_only)
    return ReplayBuffer(root, config, read_only=read_only)
