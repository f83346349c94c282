"""The buffer's index: what it knows about each record without decoding it, and its files.

Example:

    meta = RecordMeta.of(chunk, position)           # one per stored record
    meta = RecordMeta.checked(check_record(data), position)   # the same, at ingest
    save_index(root, 3, size=seg_size, index=SegmentIndex(metas, damaged=0, first=1200))
    index = load_index(root, 3, size=seg_size) or rebuild()     # None: rebuild from the segment

Each sealed segment `segment-000003.log` gets `segment-000003.idx` beside it: a CRC-32 and a
msgpack list of its records' metadata, plus the segment's size when it was sealed. The index is
a cache, never the truth: it is written to a temporary file and renamed over the old one (so it
is replaced atomically), and one that is missing, damaged, from another format, or written for a
segment of a different size is ignored and rebuilt from the segment itself.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import msgpack
import numpy as np

from buffers.check import RecordHead
from buffers.log import Position, sync_dir
from buffers.records import ChunkKey, RolloutChunk

INDEX_VERSION = 1
_HEAD = struct.Struct("<4sII")  # magic, crc32 of the body, body length
_MAGIC = b"FLTI"


class RecordMeta(NamedTuple):
    """What the index keeps per record: enough to select and sample it without decoding. A
    named tuple (one is made per record stored): the head's fields and the position."""

    key: ChunkKey
    task: str
    group: str  # start-state group (for GRPO and pairs), "" if none
    policy_version: int
    num_steps: int
    intervened: int  # steps an operator acted; a demonstration has all of them
    outcome: str | None  # set on the record that ends its episode
    position: Position

    @staticmethod
    def of(chunk: RolloutChunk, position: Position) -> RecordMeta:
        end = chunk.episode_end
        return RecordMeta(chunk.key, chunk.task, chunk.group, chunk.policy_version,
                          chunk.num_steps, int(np.count_nonzero(chunk.intervened)),
                          None if end is None else end.outcome, position)

    @staticmethod
    def checked(head: RecordHead, position: Position) -> RecordMeta:
        """From ingest's check (`buffers.check`), which agrees with `of` on the decoded chunk."""
        return RecordMeta(*head, position)  # the head's fields are the meta's first ones

    @property
    def episode(self) -> tuple[str, str]:
        return (self.key[0], self.key[1])

    def _row(self) -> list[Any]:
        p = self.position
        return [*self.key, self.task, self.group, self.policy_version, self.num_steps,
                self.intervened, self.outcome, p.offset, p.length]

    @staticmethod
    def _from_row(segment: int, row: list[Any]) -> RecordMeta:
        robot, episode, seq, task, group, version, steps, intervened, outcome, off, n = row
        return RecordMeta((str(robot), str(episode), int(seq)), str(task), str(group),
                          int(version), int(steps), int(intervened),
                          None if outcome is None else str(outcome),
                          Position(segment, int(off), int(n)))


def index_path(root: Path, segment: int) -> Path:
    return root / f"segment-{segment:06d}.idx"


assert RecordHead._fields == RecordMeta._fields[:-1], "RecordMeta.checked copies them in order"


@dataclasses.dataclass(frozen=True)
class SegmentIndex:
    """A sealed segment's records; `first` is the cursor of its first record, so that cursors
    stay the same after older segments are deleted by retention."""

    metas: list[RecordMeta]
    damaged: int
    first: int


def save_index(root: Path, segment: int, size: int, index: SegmentIndex) -> None:
    """Write the index of a sealed segment atomically: temp file, fsync, rename, fsync dir."""
    body = msgpack.packb({"v": INDEX_VERSION, "segment": segment, "size": size,
                          "damaged": index.damaged, "first": index.first,
                          "records": [m._row() for m in index.metas]},
                         use_bin_type=True)
    path = index_path(root, segment)
    tmp = path.with_suffix(".idx.tmp")
    with open(tmp, "wb") as f:
        f.write(_HEAD.pack(_MAGIC, zlib.crc32(body), len(body)) + body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    sync_dir(root)


def load_index(root: Path, segment: int, size: int) -> SegmentIndex | None:
    """The records and damage count of a sealed segment, or None if its index can't be trusted."""
    try:
        data = index_path(root, segment).read_bytes()
        magic, crc, length = _HEAD.unpack_from(data)
        body = data[_HEAD.size:]
        if magic != _MAGIC or len(body) != length or zlib.crc32(body) != crc:
            return None
        doc = msgpack.unpackb(body, raw=False)
        if doc["v"] != INDEX_VERSION or doc["segment"] != segment or doc["size"] != size:
            return None  # stale: written for a different segment of the same name
        metas = [RecordMeta._from_row(segment, r) for r in doc["records"]]
        return SegmentIndex(metas, int(doc["damaged"]), int(doc["first"]))
    except (OSError, ValueError, KeyError, TypeError, struct.error, msgpack.UnpackException):
        return None
