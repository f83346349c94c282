"""An append-only log of records in segment files, safe against crashes.

Example:

    log = SegmentLog(Path("runs/x/buffer"), segment_bytes=64 << 20, fsync="interval_ms")
    positions = log.append([b"payload", ...])     # durable per the fsync policy on return
    payload = log.read(positions[0])

On disk: `segment-000000.log`, `segment-000001.log`, ... Each record is a 16-byte frame header
(magic, frame version, flags, payload length, checksum of the payload) and the payload. Frame
version 2 (written now) checksums with CRC-32C (Castagnoli, hardware-accelerated by the `crc32c`
package: ~12 GB/s here); version 1 frames, written before, carry zlib's CRC-32 and still read.
A segment may hold both (an old log appended to after an upgrade). Opening
scans every segment: a torn tail of the last segment (a crash mid-append) is truncated away; a
damaged record elsewhere is reported and skipped, or refused when `strict`. Reads check the CRC
again, so damage done after opening is caught too.

A sealed segment (one that rotation closed) never changes again. `trusted` lets an opener that
kept its own checked index of a sealed segment skip rescanning it; `on_seal` is called after a
segment is sealed and made durable, so that index can be written.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from crc32c import crc32c

MAGIC = b"FLTR"
FRAME = struct.Struct("<4sHHII")  # magic, version, flags, length, checksum
VERSION = 2  # the frame version written: 2 = CRC-32C
CHECKSUMS: dict[int, Callable[[Any], int]] = {1: zlib.crc32, 2: crc32c}  # readable versions
FSYNC_POLICIES = ("always", "interval_ms", "never")
_IOV_MAX = 1024  # buffers per writev (Linux's IOV_MAX)


class CorruptLogError(IOError):
    """Damage found in a log opened in strict mode."""


@dataclasses.dataclass(frozen=True)
class Position:
    segment: int
    offset: int  # of the frame header
    length: int  # of the payload


@dataclasses.dataclass
class Recovery:
    """What opening the log found."""

    corrupt_records: int = 0
    torn_bytes: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)


def _segment_path(root: Path, n: int) -> Path:
    return root / f"segment-{n:06d}.log"


def _parse(data: bytes, offset: int) -> int | None:
    """Payload length of a valid record at `offset`, else None."""
    if offset + FRAME.size > len(data):
        return None
    magic, version, _flags, length, crc = FRAME.unpack_from(data, offset)
    end = offset + FRAME.size + length
    checksum = CHECKSUMS.get(version)
    if magic != MAGIC or checksum is None or end > len(data):
        return None
    if checksum(memoryview(data)[offset + FRAME.size:end]) != crc:
        return None
    return int(length)


@dataclasses.dataclass(frozen=True)
class SegmentScan:
    """What one segment file holds: valid records, damage skipped, and where an unrecoverable
    tail begins (a torn write, if this is the newest segment)."""

    records: list[tuple[int, int]]  # (offset, payload length)
    damaged: list[int]  # offsets of damaged records that valid records follow
    tail_at: int | None
    size: int


def scan_segment(data: bytes) -> SegmentScan:
    """Read a segment without changing it; used on open and by `verify_log`."""
    records: list[tuple[int, int]] = []
    damaged: list[int] = []
    offset = 0
    while offset < len(data):
        length = _parse(data, offset)
        if length is not None:
            records.append((offset, length))
            offset += FRAME.size + length
            continue
        nxt = _resync(data, offset + 1)
        if nxt is None:
            return SegmentScan(records, damaged, offset, len(data))
        damaged.append(offset)
        offset = nxt
    return SegmentScan(records, damaged, None, len(data))


def _resync(data: bytes, start: int) -> int | None:
    """Offset of the next valid record after damage, if any."""
    at = data.find(MAGIC, start)
    while at != -1:
        if _parse(data, at) is not None:
            return at
        at = data.find(MAGIC, at + 1)
    return None


def verify_log(root: Path) -> dict[str, Any]:
    """Records, damaged records and torn bytes of a log, without modifying anything."""
    segments = sorted(Path(root).glob("segment-*.log"))
    records = corrupt = torn = 0
    notes: list[str] = []
    for i, path in enumerate(segments):
        found = scan_segment(path.read_bytes())
        records += len(found.records)
        corrupt += len(found.damaged)
        notes += [f"{path.name}: damaged record at byte {o}" for o in found.damaged]
        if found.tail_at is None:
            continue
        if i == len(segments) - 1:
            torn = found.size - found.tail_at
            notes.append(f"{path.name}: torn tail of {torn} bytes (a crash mid-append)")
        else:
            corrupt += 1
            notes.append(f"{path.name}: damaged from byte {found.tail_at} on")
    return {"segments": len(segments), "records": records, "corrupt_records": corrupt,
            "torn_bytes": torn, "notes": notes}


def sync_dir(path: Path) -> None:
    """fsync a directory, so that names created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentLog:
    def __init__(self, root: Path, segment_bytes: int = 64 << 20, fsync: str = "interval_ms",
                 fsync_interval_ms: int = 200, strict: bool = False,
                 trusted: Mapping[int, list[Position]] | None = None,
                 on_seal: Callable[[int], None] | None = None, read_only: bool = False,
                 version: int = VERSION) -> None:
        """`version` is the frame version appends write (1 only to make old-format logs in
        tests); every version in `CHECKSUMS` is read."""
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync={fsync!r}: use one of {', '.join(FSYNC_POLICIES)}")
        if version not in CHECKSUMS:
            raise ValueError(f"frame version {version}: this build reads {sorted(CHECKSUMS)}")
        self.version = version
        self.root = Path(root)
        self.read_only = read_only  # for inspecting a log that a live writer may be appending to
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_ms / 1000
        self.strict = strict
        self.recovery = Recovery()
        self.positions: list[Position] = []
        self._readers: dict[int, int] = {}
        self.on_seal = on_seal
        self.scanned: list[int] = []  # segments read in full on open (no trusted index)
        self.damaged: dict[int, int] = {}  # damaged records found per scanned segment
        segments = sorted(int(p.stem.split("-")[1]) for p in self.root.glob("segment-*.log"))
        for i, n in enumerate(segments):
            last = i == len(segments) - 1
            if trusted is not None and n in trusted and not last:
                self.positions += trusted[n]
            else:
                self._scan(n, last)
                self.scanned.append(n)
        self._segment = segments[-1] if segments else 0
        self._fd = -1 if read_only else os.open(_segment_path(self.root, self._segment),
                                                os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0 if read_only else os.fstat(self._fd).st_size
        self._last_sync = time.monotonic()
        self._dirty = False

    def _scan(self, n: int, last: bool) -> None:
        path = _segment_path(self.root, n)
        found = scan_segment(path.read_bytes())
        self.positions += [Position(n, offset, length) for offset, length in found.records]
        for offset in found.damaged:
            if self.strict:
                raise CorruptLogError(f"{path.name}: damaged record at byte {offset}")
            self.recovery.corrupt_records += 1
            self.damaged[n] = self.damaged.get(n, 0) + 1
            self.recovery.notes.append(f"{path.name}: damaged record at byte {offset} skipped")
        if found.tail_at is None:
            return
        if not last:  # damage runs to the end of an older segment: nothing more to recover
            if self.strict:
                raise CorruptLogError(f"{path.name}: damaged from byte {found.tail_at} on")
            self.recovery.corrupt_records += 1
            self.damaged[n] = self.damaged.get(n, 0) + 1
            self.recovery.notes.append(f"{path.name}: damaged from byte {found.tail_at} on, "
                                       "skipped")
            return
        self.recovery.torn_bytes += found.size - found.tail_at
        self.recovery.notes.append(f"{path.name}: torn tail of {found.size - found.tail_at} "
                                   f"bytes at {found.tail_at} "
                                   + ("left in place (read-only)" if self.read_only
                                      else "truncated"))
        if self.read_only:
            return
        with open(path, "r+b") as f:  # a crash mid-append: drop the partial record
            f.truncate(found.tail_at)
            os.fsync(f.fileno())

    def append(self, payloads: Sequence[bytes]) -> list[Position]:
        """Write records; on return they are durable as the fsync policy promises."""
        if self.read_only:
            raise PermissionError("this log was opened read-only")
        out = []
        iov: list[bytes] = []  # frames and payloads, written with one writev per batch
        for payload in payloads:
            if self._size > 0 and self._size + FRAME.size + len(payload) > self.segment_bytes:
                self._write(iov)
                self._rotate()
            iov += [FRAME.pack(MAGIC, self.version, 0, len(payload),
                               CHECKSUMS[self.version](payload)), payload]
            out.append(Position(self._segment, self._size, len(payload)))
            self._size += FRAME.size + len(payload)
        self._write(iov)
        self.positions += out
        self._dirty = True
        if self.fsync == "always" or (self.fsync == "interval_ms"
                                      and time.monotonic() - self._last_sync
                                      >= self.fsync_interval_s):
            self.sync()
        return out

    def _write(self, iov: list[bytes]) -> None:
        """Write `iov` in order, in as few syscalls as the kernel allows (no copies of large
        payloads); a short write (a full disk, a signal) goes on where it stopped."""
        at = 0
        while at < len(iov):
            batch = iov[at:at + _IOV_MAX]
            done = os.writev(self._fd, batch)
            for i, part in enumerate(batch):
                if done < len(part):
                    if done:  # resume inside this part
                        iov[at + i] = part[done:]
                    at += i
                    break
                done -= len(part)
            else:
                at += len(batch)
        iov.clear()

    def sync(self) -> None:
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def _rotate(self) -> None:
        self.sync()
        os.close(self._fd)
        sealed = self._segment
        self._segment += 1
        self._fd = os.open(_segment_path(self.root, self._segment),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        sync_dir(self.root)  # make the new file's name durable too
        if self.on_seal is not None:
            self.on_seal(sealed)

    def read(self, pos: Position) -> bytes:
        """The payload at `pos`; raises `CorruptLogError` if it no longer matches its CRC."""
        fd = self._readers.get(pos.segment)
        if fd is None:
            fd = self._readers[pos.segment] = os.open(_segment_path(self.root, pos.segment),
                                                      os.O_RDONLY)
        data = os.pread(fd, FRAME.size + pos.length, pos.offset)
        if _parse(data, 0) != pos.length:
            raise CorruptLogError(f"segment {pos.segment}: record at byte {pos.offset} is damaged")
        return data[FRAME.size:]

    def segment_size(self, n: int) -> int:
        return _segment_path(self.root, n).stat().st_size

    def drop_segment(self, n: int) -> None:
        """Delete sealed segment `n` and forget its records (retention)."""
        if n == self._segment:
            raise ValueError("the segment being written cannot be dropped")
        fd = self._readers.pop(n, None)
        if fd is not None:
            os.close(fd)
        _segment_path(self.root, n).unlink(missing_ok=True)
        self.positions = [p for p in self.positions if p.segment != n]

    def __iter__(self) -> Iterator[tuple[Position, bytes]]:
        for pos in list(self.positions):
            yield pos, self.read(pos)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def segments(self) -> int:
        return self._segment + 1

    @property
    def active(self) -> int:
        """The segment appends go to; every lower-numbered one is sealed."""
        return self._segment

    @property
    def bytes(self) -> int:
        return sum(FRAME.size + p.length for p in self.positions)

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
