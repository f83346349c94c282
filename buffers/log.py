"""An append-only log of records in segment files, safe against crashes.

Example:

    log = SegmentLog(Path("runs/x/buffer"), segment_bytes=64 << 20, fsync="interval_ms")
    positions = log.append([b"payload", ...])     # durable per the fsync policy (below)
    payload = log.read(positions[0])

On disk: `segment-000000.log`, `segment-000001.log`, ... Each record is a frame header and the
payload. Frame version 3 (written now) has a 20-byte header: magic, version, flags, payload
length, CRC-32C of the payload, and CRC-32C of those first 16 header bytes. Versions 1 (zlib
CRC-32) and 2 (CRC-32C) have the same fields without the header checksum (16 bytes); they are
still read, and a segment may hold several versions (an old log appended to after an upgrade).

Why the header checksum: a header that checks out tells exactly where its record ends, so a
record whose payload fails its checksum is skipped as one record, and a header whose payload
runs past the end of the newest segment is a torn append (a crash mid-write) cut off at that
header. Recovery never searches for records inside the payload of a record whose header holds,
so bytes inside a camera image that happen to (or are made to) look like a frame are never
adopted. Only after a damaged header does opening search forward for the next header that
checks out; in the newest segment, a search that ends in a torn tail drops what it found too
(out-of-order page writes at a power loss can leave a torn record's later pages without its
first), so the tail starts at the damage.

Opening scans every segment that has no trusted index: a torn tail of the newest segment is
truncated away; damage elsewhere is reported and skipped (counted per record: a damaged header
that hides how many records it spanned counts the frame magics in the damaged bytes, at least
one), or refused when `strict`. Reads check the checksums again, so damage done after opening is
caught too.

Durability (`fsync`): `always` fsyncs before `append` returns; `interval_ms` fsyncs once
`fsync_interval_ms` has passed since the last fsync, in `append` while appends flow and from a
background thread when none follows, so a record is durable at most one interval (plus the
fsync) after its append; `never` leaves it to the kernel (rotation and `close` fsync). Every
policy survives a process crash (the kernel holds what was written); only fsynced records are
promised to survive a power loss. `synced` is how far the log is known to be durable.

One writer: a writable log holds an exclusive `flock` on `writer.lock` in its directory (the
holder's pid is written in it), so a second writer fails at once with `LogLockedError` naming
that pid. `read_only` opens take no lock. Files in the directory that are not the log's own
(`segment-000001 (copy).log`, a stray `notes.txt`) are ignored and listed in `recovery.strays`.

A sealed segment (one that rotation closed) never changes again. `trusted` lets an opener that
kept its own checked index of a sealed segment skip rescanning it; `on_seal` is called after a
segment is sealed and made durable, so that index can be written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import itertools
import logging
import operator
import os
import re
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from crc32c import crc32c

log = logging.getLogger(__name__)

MAGIC = b"FLTR"
FRAME = struct.Struct("<4sHHIII")  # v3: magic, version, flags, length, checksum, header checksum
FRAME_V2 = struct.Struct("<4sHHII")  # v1, v2: magic, version, flags, length, checksum
VERSION = 3  # the frame version written: 3 = CRC-32C of the payload and of the header
CHECKSUMS: dict[int, Callable[[Any], int]] = {1: zlib.crc32, 2: crc32c, 3: crc32c}  # readable
HEADER_BYTES = {1: FRAME_V2.size, 2: FRAME_V2.size, 3: FRAME.size}
_PACK_V2, _PACK_U32 = FRAME_V2.pack, struct.Struct("<I").pack
_HEAD = functools.partial(_PACK_V2, MAGIC, VERSION, 0)  # (length, CRC): a v3 header but its CRC
FSYNC_POLICIES = ("always", "interval_ms", "never")
LOCK_NAME = "writer.lock"
_SEGMENT = re.compile(r"segment-(\d{6,})\.log")
# The log's own files. An owner's files (a demonstration buffer's manifest, `buffers.demos`)
# go in a subdirectory (`OWNER_DIR`), which the stray scan leaves alone as it does `rewards/`.
_OWN = re.compile(r"segment-\d{6,}\.(log|idx|idx\.tmp)|" + re.escape(LOCK_NAME))
OWNER_DIR = "owner"  # where whoever owns a log keeps its own files beside it
_IOV_MAX = 1024  # buffers per writev (Linux's IOV_MAX)


class CorruptLogError(IOError):
    """Damage found in a log opened in strict mode, or a record that fails its checksum."""


class LogLockedError(RuntimeError):
    """Another writer holds the log."""


class Position(NamedTuple):  # a named tuple: one is made per record appended
    segment: int
    offset: int  # of the frame header
    length: int  # of the payload


_POSITION = functools.partial(tuple.__new__, Position)  # from a tuple, without Python's __new__

@dataclasses.dataclass
class Recovery:
    """What opening the log found."""

    corrupt_records: int = 0
    torn_bytes: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)
    strays: list[str] = dataclasses.field(default_factory=list)  # files ignored


def _segment_path(root: Path, n: int) -> Path:
    return root / f"segment-{n:06d}.log"


def list_segments(root: Path) -> tuple[list[int], list[str]]:
    """The segment numbers in `root`, in order, and the names of files there that are not the
    log's own (ignored: a copy someone made, an editor's backup). Subdirectories are the
    owner's business (`rewards/`, `shard-00/`) and are not listed."""
    numbers, strays = [], []
    if not Path(root).is_dir():
        return [], []
    for entry in os.scandir(root):
        found = _SEGMENT.fullmatch(entry.name)
        if found and entry.is_file():
            numbers.append(int(found.group(1)))
        elif not entry.is_dir() and not _OWN.fullmatch(entry.name):
            strays.append(entry.name)
    return sorted(numbers), sorted(strays)


def frame(payload: bytes, version: int = VERSION) -> bytes:
    """The header that precedes `payload` on disk."""
    if version < 3:
        return FRAME_V2.pack(MAGIC, version, 0, len(payload), CHECKSUMS[version](payload))
    head = FRAME_V2.pack(MAGIC, version, 0, len(payload), crc32c(payload))
    return head + struct.pack("<I", crc32c(head))


@dataclasses.dataclass(frozen=True)
class _Header:
    version: int
    size: int  # header bytes
    length: int  # payload bytes
    crc: int

    @property
    def trusted(self) -> bool:
        """Its own checksum holds: its length can be believed even if its payload is bad."""
        return self.version >= 3


def _header(data: bytes, offset: int) -> _Header | None:
    """The header at `offset` if it looks whole: a known version and magic, and for version 3
    its own checksum."""
    if offset + FRAME_V2.size > len(data):
        return None
    magic, version, _flags, length, crc = FRAME_V2.unpack_from(data, offset)
    if magic != MAGIC or version not in CHECKSUMS:
        return None
    size = HEADER_BYTES[version]
    if size > FRAME_V2.size:
        if offset + size > len(data):
            return None
        (head_crc,) = struct.unpack_from("<I", data, offset + FRAME_V2.size)
        if crc32c(memoryview(data)[offset:offset + FRAME_V2.size]) != head_crc:
            return None
    return _Header(version, size, int(length), int(crc))


def _parse(data: bytes, offset: int) -> _Header | None:
    """The header of a whole, valid record at `offset` (header and payload check out)."""
    head = _header(data, offset)
    return head if head is not None and _payload_ok(data, offset, head) else None


def _payload_ok(data: bytes, offset: int, head: _Header) -> bool:
    start = offset + head.size
    end = start + head.length
    return end <= len(data) and CHECKSUMS[head.version](memoryview(data)[start:end]) == head.crc


@dataclasses.dataclass(frozen=True)
class SegmentScan:
    """What one segment file holds: valid records, damage skipped, and where an unrecoverable
    tail begins (a torn write, if this is the newest segment)."""

    records: list[tuple[int, int, int]]  # (offset, header bytes, payload length)
    damaged: list[tuple[int, int]]  # (offset, records lost there) of damage records follow
    tail_at: int | None
    size: int

    @property
    def damaged_records(self) -> int:
        return sum(n for _, n in self.damaged)


def scan_segment(data: bytes, newest: bool = False) -> SegmentScan:
    """Read a segment without changing it; used on open and by `verify_log`. `newest`: the
    segment appends go to, whose end may be torn (see the module's docstring)."""
    records: list[tuple[int, int, int]] = []
    damaged: list[tuple[int, int]] = []
    searched: tuple[int, int, int] | None = None  # the last damaged header: (offset, counts)
    offset, tail_at = 0, None
    while offset < len(data):
        head = _header(data, offset)
        if head is not None:
            end = offset + head.size + head.length
            if _payload_ok(data, offset, head):
                records.append((offset, head.size, head.length))
                offset = end
                continue
            if head.trusted:  # its length holds: step over exactly this record
                if end > len(data):
                    tail_at = offset
                    break
                damaged.append((offset, 1))
                offset = end
                continue
        nxt = _resync(data, offset + 1)
        if nxt is None:
            tail_at = offset
            break
        searched = (offset, len(records), len(damaged))
        damaged.append((offset, _frames_in(data, offset, nxt)))
        offset = nxt
    if newest and tail_at is not None and searched is not None:
        tail_at, kept, kept_damage = searched  # found by searching, then torn: all torn
        records, damaged = records[:kept], damaged[:kept_damage]
    return SegmentScan(records, damaged, tail_at, len(data))


def _resync(data: bytes, start: int) -> int | None:
    """Offset of the next record after a damaged header: a version-3 header that checks out,
    or an older frame whose payload does."""
    at = data.find(MAGIC, start)
    while at != -1:
        head = _header(data, at)
        if head is not None and (head.trusted or _parse(data, at) is not None):
            return at
        at = data.find(MAGIC, at + 1)
    return None


def _frames_in(data: bytes, start: int, stop: int) -> int:
    """Records a damaged run most likely held: frame magics followed by a known version."""
    found, at = 0, data.find(MAGIC, start, stop)
    while at != -1:
        if at + 6 <= len(data) and struct.unpack_from("<H", data, at + 4)[0] in CHECKSUMS:
            found += 1
        at = data.find(MAGIC, at + 1, stop)
    return max(found, 1)


def verify_log(root: Path) -> dict[str, Any]:
    """Records, damaged records and torn bytes of a log, without modifying anything."""
    numbers, strays = list_segments(Path(root))
    records = corrupt = torn = 0
    notes = [f"{name}: not a file of the log, ignored" for name in strays]
    for i, n in enumerate(numbers):
        path = _segment_path(Path(root), n)
        last = i == len(numbers) - 1
        found = scan_segment(path.read_bytes(), newest=last)
        records += len(found.records)
        corrupt += found.damaged_records
        notes += [f"{path.name}: damaged record at byte {o}" for o, _ in found.damaged]
        if found.tail_at is None:
            continue
        if last:
            torn = found.size - found.tail_at
            notes.append(f"{path.name}: torn tail of {torn} bytes (a crash mid-append)")
        else:
            corrupt += 1
            notes.append(f"{path.name}: damaged from byte {found.tail_at} on")
    return {"segments": len(numbers), "records": records, "corrupt_records": corrupt,
            "torn_bytes": torn, "notes": notes, "stray_files": strays}


def sync_dir(path: Path) -> None:
    """fsync a directory, so that names created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_writer(root: Path, wait_s: float = 0.0) -> int:
    """Take the exclusive writer lock of the log in `root`, waiting up to `wait_s` for another
    holder to let go; the fd returned holds it until closed."""
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        waited = f" (waited {wait_s:g} s)" if wait_s else ""
        raise LogLockedError(
            f"{root} is already open for writing by pid {holder}{waited}; a log has one writer. "
            "Stop that process, or open read-only (fleet buffer info/verify/export, "
            "ReplayBuffer(..., read_only=True))") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class SegmentLog:
    def __init__(self, root: Path, segment_bytes: int = 64 << 20, fsync: str = "interval_ms",
                 fsync_interval_ms: int = 200, strict: bool = False,
                 trusted: Mapping[int, list[Position]] | None = None,
                 on_seal: Callable[[int], None] | None = None, read_only: bool = False,
                 version: int = VERSION, lock_wait_s: float = 0.0) -> None:
        """`version` is the frame version appends write (older ones only to make old-format
        logs in tests); every version in `CHECKSUMS` is read. `lock_wait_s`: how long to wait
        for another writer to let go before `LogLockedError` (a restarted process whose
        predecessor is still exiting)."""
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync={fsync!r}: use one of {', '.join(FSYNC_POLICIES)}")
        if version not in CHECKSUMS:
            raise ValueError(f"frame version {version}: this build reads {sorted(CHECKSUMS)}")
        self.version = version
        self.root = Path(root)
        self.read_only = read_only  # for inspecting a log that a live writer may be appending to
        self._lock_fd = -1
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock_writer(self.root, lock_wait_s)  # before the scan: it truncates
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
        try:
            self._open(trusted)
        except BaseException:
            self._unlock()
            raise
        self._last_sync = time.monotonic()
        self._dirty = False
        self.synced = (self._segment, self._size)  # (segment, bytes) known to be durable
        self._io = threading.Lock()  # appends and rotation vs the background fsync
        self._closed = threading.Event()
        self._kick = threading.Event()  # set by appends for the background fsync
        self._sync_error: OSError | None = None
        self._flusher: threading.Thread | None = None
        if fsync == "interval_ms" and not read_only:
            self._flusher = threading.Thread(  # holds no reference: a dropped log is collected
                target=_flush_loop, args=(weakref.ref(self), self._kick, self._closed),
                daemon=True, name=f"fsync {self.root.name}")
            self._flusher.start()

    def _open(self, trusted: Mapping[int, list[Position]] | None) -> None:
        segments, strays = list_segments(self.root)
        self.recovery.strays = strays
        self.recovery.notes += [f"{name}: not a file of the log, ignored" for name in strays]
        for name in strays:
            log.warning("%s: %s is not a file of the log; ignored", self.root, name)
        for i, n in enumerate(segments):
            last = i == len(segments) - 1
            if trusted is not None and n in trusted and not last:
                self.positions += trusted[n]
            else:
                self._scan(n, last)
                self.scanned.append(n)
        self._segment = segments[-1] if segments else 0
        self._fd = -1 if self.read_only else os.open(_segment_path(self.root, self._segment),
                                                     os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                                     0o644)
        self._size = 0 if self.read_only else os.fstat(self._fd).st_size

    def _scan(self, n: int, last: bool) -> None:
        path = _segment_path(self.root, n)
        found = scan_segment(path.read_bytes(), newest=last)
        self.positions += [Position(n, offset, length) for offset, _, length in found.records]
        for offset, count in found.damaged:
            if self.strict:
                raise CorruptLogError(f"{path.name}: damaged record at byte {offset}")
            self._damage(n, count, f"{path.name}: damaged record at byte {offset} skipped")
        if found.tail_at is None:
            return
        if not last:  # damage runs to the end of an older segment: nothing more to recover
            if self.strict:
                raise CorruptLogError(f"{path.name}: damaged from byte {found.tail_at} on")
            self._damage(n, 1, f"{path.name}: damaged from byte {found.tail_at} on, skipped")
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

    def _damage(self, n: int, records: int, note: str) -> None:
        self.recovery.corrupt_records += records
        self.damaged[n] = self.damaged.get(n, 0) + records
        self.recovery.notes.append(note)

    def append(self, payloads: Sequence[bytes]) -> list[Position]:
        """Write records; on return they are durable as the fsync policy promises."""
        if self.read_only:
            raise PermissionError("this log was opened read-only")
        if self._sync_error is not None:
            raise self._sync_error
        out = []
        iov: list[bytes] = []  # frames and payloads, written with one writev per batch
        version, header = self.version, HEADER_BYTES[self.version]
        with self._io:
            lengths = list(map(len, payloads))
            if version == VERSION and self._size + sum(lengths) + header * len(
                    lengths) <= self.segment_bytes:  # the usual batch: no rotation inside it
                out = self._frames(payloads, lengths, iov)
                payloads = ()
            for payload in payloads:
                n = len(payload)
                if self._size > 0 and self._size + header + n > self.segment_bytes:
                    self._write(iov)
                    self._rotate()
                if version == VERSION:  # frame(), inline: this loop runs once per record
                    head = _PACK_V2(MAGIC, VERSION, 0, n, crc32c(payload))
                    iov.append(head + _PACK_U32(crc32c(head)))
                else:
                    iov.append(frame(payload, version))
                iov.append(payload)
                out.append(Position(self._segment, self._size, n))
                self._size += header + n
            self._write(iov)
            self.positions += out
            self._dirty = True
            if self.fsync == "always" or (self.fsync == "interval_ms"
                                          and time.monotonic() - self._last_sync
                                          >= self.fsync_interval_s):
                self._sync()  # while appends flow; the fsync thread covers quiet periods
        if self._flusher is not None:
            self._kick.set()
        return out

    def _frames(self, payloads: Sequence[bytes], lengths: list[int], iov: list[bytes]
                ) -> list[Position]:
        """`append`'s loop for a batch that fits in the segment, in steps per batch rather
        than per record (maps, no Python code per record): the frames, `iov` as frame,
        payload, frame, ..., and the positions."""
        heads = list(map(_HEAD, lengths, map(crc32c, payloads)))  # up to the header's CRC
        frames = list(map(operator.add, heads, map(_PACK_U32, map(crc32c, heads))))
        iov += [b""] * (2 * len(frames))
        iov[0::2], iov[1::2] = frames, payloads
        sizes = list(map(operator.add, lengths, itertools.repeat(FRAME.size)))
        offsets = itertools.accumulate(sizes, initial=self._size)
        self._size += sum(sizes)
        return list(map(_POSITION, zip(itertools.repeat(self._segment), offsets, lengths)))

    def _write(self, iov: list[bytes]) -> None:
        """Write `iov` in order, in as few syscalls as the kernel allows (no copies of large
        payloads); a short write (a full disk, a signal) goes on where it stopped."""
        if not iov:
            return
        if len(iov) <= _IOV_MAX:  # the usual batch: one writev that writes it all
            done = os.writev(self._fd, iov)
            if done == sum(map(len, iov)):
                iov.clear()
                return
            iov[:] = _after(iov, done)
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
        """Make every record appended so far durable now."""
        with self._io:
            self._sync()

    def _sync(self) -> None:  # holding self._io
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self.synced = (self._segment, self._size)
        self._last_sync = time.monotonic()

    def _sync_in_background(self) -> None:
        """fsync a duplicate of the segment's fd outside the lock, so appends go on meanwhile
        (and a rotation may close the original)."""
        with self._io:
            if not self._dirty or self._fd < 0:
                return
            fd, upto = os.dup(self._fd), (self._segment, self._size)
            self._dirty = False
        try:
            os.fsync(fd)
        except OSError as e:  # the next append raises it: a lost fsync must not pass silently
            log.error("%s: fsync failed: %s", self.root, e)
            self._sync_error = e
        finally:
            os.close(fd)
        with self._io:
            self._last_sync = time.monotonic()
            if self._sync_error is None:
                self.synced = max(self.synced, upto)

    def _rotate(self) -> None:  # holding self._io
        self._sync()
        os.close(self._fd)
        sealed = self._segment
        self._segment += 1
        self._fd = os.open(_segment_path(self.root, self._segment),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        sync_dir(self.root)  # make the new file's name durable too
        self.synced = (self._segment, 0)
        if self.on_seal is not None:
            self.on_seal(sealed)

    def read(self, pos: Position) -> bytes:
        """The payload at `pos`; raises `CorruptLogError` if it no longer matches its CRC."""
        fd = self._readers.get(pos.segment)
        if fd is None:
            fd = self._readers[pos.segment] = os.open(_segment_path(self.root, pos.segment),
                                                      os.O_RDONLY)
        # a version-3 header is the longest; an older one reads 4 bytes past its record
        data = os.pread(fd, FRAME.size + pos.length, pos.offset)
        head = _parse(data, 0)
        if head is None or head.length != pos.length:
            raise CorruptLogError(f"segment {pos.segment}: record at byte {pos.offset} is damaged")
        return data[head.size:head.size + head.length]

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
    def end(self) -> tuple[int, int]:
        """(segment, bytes) written so far: `synced` reaches it once all of it is durable."""
        return (self._segment, self._size)

    @property
    def bytes(self) -> int:
        return sum(FRAME.size + p.length for p in self.positions)  # old frames: 4 bytes fewer

    def close(self) -> None:
        self._closed.set()
        self._kick.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()
        self._flusher = None
        if self._fd >= 0:
            with self._io:
                self._sync()
                os.close(self._fd)
                self._fd = -1
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        self._unlock()

    def __del__(self) -> None:  # a log dropped without close() still lets go of its lock
        with contextlib.suppress(Exception):
            self.close()

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the fd releases the flock
            self._lock_fd = -1


def _after(parts: list[bytes], done: int) -> list[bytes]:
    """What is left of `parts` once their first `done` bytes are written."""
    for i, part in enumerate(parts):
        if done < len(part):
            return [part[done:], *parts[i + 1:]]
        done -= len(part)
    return []


def _flush_loop(ref: weakref.ReferenceType[SegmentLog], kick: threading.Event,
                closed: threading.Event) -> None:
    """`interval_ms`: fsync at most one interval after an append, whether or not another
    append follows (a quiet robot's last batch must not wait for the next one). While appends
    flow, `append` itself syncs once an interval has passed, as before this thread existed, so
    the fsync cadence of a busy log is unchanged and no fsync runs beside its writes."""
    while True:
        kick.wait()
        log = ref()
        if closed.is_set() or log is None:
            return
        delay = log._last_sync + log.fsync_interval_s - time.monotonic()
        del log  # wait holding no reference
        if delay > 0:
            if closed.wait(delay):
                return
            continue  # look again: an append may have synced meanwhile
        kick.clear()  # appends after this point set it again
        # close() sets `closed` before `kick`: if its kick was just cleared, this sees closed
        # (and close() syncs itself); otherwise the next wait sees its kick
        log = ref()
        if closed.is_set() or log is None:
            return
        log._sync_in_background()
        del log
