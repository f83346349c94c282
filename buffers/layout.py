"""Ingest's layout path: a record laid out like one already checked is checked (and decoded)
against that record's layout, without parsing each array's spec.

Example (buffers.check and buffers.codec use it; nothing else needs to):

    got = fast(data, max_bytes)            # (head, finite bytes, dtype), or None: full check
    heads = fast_run(run, max_bytes)       # the same for a run of records alike, or None
    chunk = decode_by_layout(data, max_bytes)   # decode_chunk's chunk, or None: decode it
    learn(data, body, chunk)               # file the layout of a record just validated

A record `encode_chunk` writes is one msgpack map: `v`, the observations, the columns, `aux`
(version 4), then the header fields, the `STAMPS` last. Everything before the header is the
same bytes for every record of one robot's stream except the arrays' contents (and a compressed
frame's length): its skeleton. A record that passed the full check leaves its layout here: the
skeleton's pieces, where each array's bytes lie, and what the full check concluded from them
(steps, horizon, bytes the frames claim), and its header up to the stamps. A later record is
checked against them with a few byte comparisons, the size each lz4 frame claims, the stamps
(unpacked and checked on their own, `schema.check_stamps`) and one sum for finiteness: the
same rules, the same verdict (tests/test_decoder_fuzz.py and `fleet bench fuzz` hold the two
paths to it); any difference at all sends it through the full check (`buffers.check`).

A batch holds runs of such records of one length (a robot's chunks): `fast_run` checks a run
at once, as numpy rows: the first record as above, the others against it byte for byte except
in their arrays' contents and their stamps' numbers, read as columns (`_Layout.parse_run`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from functools import partial
from itertools import chain, repeat
from typing import Any, NamedTuple

import lz4.frame
import msgpack
import numpy as np

from buffers.records import ChunkKey, EpisodeEnd, RolloutChunk
from buffers.schema import (
    COLUMNS,
    FINITE,
    HEADER,
    STAMPS,
    RecordError,
    check_header,
    check_stamps,
)

_ADD = np.add.reduce
_NEW = tuple.__new__  # a named tuple from a tuple, without its Python-level __new__


class RecordHead(NamedTuple):
    """What ingest learns from a checked record (the index's fields, `buffers.index`). A named
    tuple: one is made per record at ingest, at a third of a frozen dataclass's cost."""

    key: ChunkKey
    task: str
    group: str
    policy_version: int
    num_steps: int
    intervened: int  # steps an operator acted
    outcome: str | None


def fast(data: bytes, max_bytes: int) -> tuple[RecordHead, bytes, np.dtype] | None:
    """(head, the bytes whose finiteness is left to check, their dtype) of a record that
    matches a layout filed under its first bytes and passes every other rule, else None."""
    for layout in _filed_under(data, max_bytes):
        got = layout.parse(data, max_bytes)
        if got is not None:
            return got
    return None


def _filed_under(data: bytes, max_bytes: int) -> tuple[_Layout, ...]:
    """The layouts filed under `data`'s first bytes; none for a record too large or not `bytes`."""
    if type(data) is bytes and len(data) <= max_bytes:
        return _LAYOUTS.get(data[:_KEY_BYTES], ())
    return ()


def runs(records: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    """`records` cut into runs of consecutive records of one length and first bytes (a
    robot's stream), for `fast_run`; each alone unless every one is `bytes`."""
    if set(map(type, records)) != {bytes}:  # a bytearray or memoryview among them
        yield from ([r] for r in records)
        return
    if len(set(map(len, records))) == 1 == len(set(map(_FIRST_BYTES, records))):
        yield records  # the usual batch: one robot's records, all alike
        return
    start = 0
    for i in range(1, len(records) + 1):
        if i == len(records) or len(records[i]) != len(records[start]) or (
                records[i][:_KEY_BYTES] != records[start][:_KEY_BYTES]):
            yield records[start:i]
            start = i


def fast_run(run: Sequence[bytes], max_bytes: int) -> list[RecordHead] | None:
    """The heads of `run`, records of one length whose first bytes are alike (a batch from
    one robot's stream), if all of them match a known fixed layout and pass every rule,
    finiteness included (`_Layout.parse_run`); None if any might not: check each alone."""
    for layout in _filed_under(run[0], max_bytes):
        heads = layout.parse_run(run, max_bytes)
        if heads is not None:
            return heads
    return None


def decode_by_layout(data: bytes, max_bytes: int) -> RolloutChunk | None:
    """`decode_chunk`'s chunk for a record that matches a known layout (its verdict: every
    rule holds), built from the layout without parsing the arrays' specs; None otherwise."""
    if type(data) is bytes and len(data) <= max_bytes:
        for layout in _LAYOUTS.get(data[:_KEY_BYTES], ()):
            chunk = layout.decode(data, max_bytes)
            if chunk is not None:
                return chunk
    return None


def learn(data: bytes, b: dict[str, Any], chunk: RolloutChunk) -> None:
    """File the layout of `data`, which `decode_chunk` just decoded and validated into `chunk`
    from its msgpack map `b` (its verdict is `check_record`'s)."""
    if type(data) is bytes and isinstance(b, dict) and b.get("v") in (3, 4):
        inflates = sum(a.nbytes for k, a in chunk.obs.items() if "lz4" in b["obs"][k])
        file_layout(data, b, chunk.num_steps, inflates)


_KEY_BYTES = 24  # layouts are filed under a record's first bytes (never past the first array)
_FIRST_BYTES = operator.itemgetter(slice(0, _KEY_BYTES))
_MAX_LAYOUTS = 64  # keys kept
_MAX_PER_KEY = 8  # layouts per key, the newest first (the step counts an episode ends on)
_LAYOUTS: dict[bytes, tuple[_Layout, ...]] = {}
_HEADER_MAP = b"\x8b"  # a fixmap of the 11 header fields (`HEADER`)
_HEADER_KEYS = frozenset(HEADER)
_STAMPS_MAP = b"\x84"  # a fixmap of the 4 `STAMPS`
_STAMP_KEYS = frozenset(STAMPS)
_HEAD_KEY_BYTES = 40  # header templates are filed under the header's first bytes (robot_id)
_MAX_HEADERS = 4096  # robots kept per layout (each with up to 4 episode ends)
_HEADER_BUDGET = [1 << 16]  # headers all layouts may still file (~250 B each); then start over
_RAW, _LZ4 = 0, 1


class _Layout:
    """One record's skeleton: `pieces` = (bytes before the array, kind, its bytes (raw) or the
    bytes its frame must claim (lz4), read for finiteness, is the intervened column)."""

    __slots__ = (
        "arrays",
        "body_end",
        "dtype",
        "finite",
        "fixed",
        "headers",
        "horizon",
        "inflates",
        "intervened",
        "pieces",
        "runs",
        "skeleton",
        "steps",
    )

    def __init__(self, pieces: list[tuple[bytes, int, int, bool, bool]], horizon: int,
                 steps: int, inflates: int, dtype: np.dtype,
                 arrays: list[tuple[str, str | None, np.dtype, tuple[int, ...]]]) -> None:
        self.pieces, self.horizon, self.steps = pieces, horizon, steps
        self.arrays = arrays  # per piece: (field, name in obs/aux or None, dtype, shape)
        self.inflates, self.dtype = inflates, dtype  # frames' claims; the finite columns' dtype
        self.fixed = all(kind == _RAW for _, kind, _, _, _ in pieces)
        skeleton, finite, at, intervened = [], [], 0, slice(0)
        for gap, _, size, fin, inter in pieces:  # where everything lies when nothing moves
            skeleton.append(slice(at, at + len(gap)))
            at += len(gap)
            if fin:
                finite.append(slice(at, at + size))
            if inter:
                intervened = slice(at, at + size)
            at += size
        self.skeleton = (operator.itemgetter(*skeleton), tuple(g for g, *_ in pieces))
        self.finite = operator.itemgetter(*finite, slice(0, 0))  # always a tuple
        self.intervened, self.body_end = intervened, at
        self.runs: dict[tuple[Any, ...], np.ndarray] = {}  # see `parse_run`
        # robot -> (header up to its stamps, (robot_id, task, group, outcome)), newest first
        self.headers: dict[bytes, tuple[tuple[bytes, tuple[str, str, str, str | None]], ...]] = {}

    def parse(self, data: bytes, max_bytes: int) -> tuple[RecordHead, bytes, np.dtype] | None:
        """(head, the finite columns' bytes, their dtype) if the record has this layout and
        passes every rule but finiteness (the caller's: one sum), else None."""
        if self.fixed:
            getter, gaps = self.skeleton
            end = self.body_end
            if len(data) <= end or getter(data) != gaps:
                return None
            finite = b"".join(self.finite(data))
            intervened = data[self.intervened]
        else:
            walked = self._walk(data, max_bytes)
            if walked is None:
                return None
            end, finite, intervened = walked
        stamped = self._stamped(data, end)
        if stamped is not None:
            _, (robot, task, group, outcome), t = stamped
            return RecordHead((robot, t["episode_id"], t["chunk_seq"]), task, group,
                              t["policy_version"], self.steps,
                              len(intervened) - intervened.count(0), outcome), finite, self.dtype
        try:  # msgpack's default limits are the input's length: a small map here
            h = msgpack.unpackb(_HEADER_MAP + data[end:])
        except Exception:  # any fault: the full check says what it is
            return None
        if h.keys() != _HEADER_KEYS or h["horizon"] != self.horizon or type(
                h["horizon"]) is not int:
            return None
        end_ = h["episode_end"]
        if end_ is not None and not (type(end_) is list and len(end_) == 2):
            return None
        try:
            check_header(h, end_)
        except RecordError:
            return None
        outcome = None if end_ is None else end_[0]
        self._file_header(data, end, (h["robot_id"], h["task"], h["group"], outcome))
        return RecordHead((h["robot_id"], h["episode_id"], h["chunk_seq"]), h["task"],
                          h["group"], h["policy_version"], self.steps,
                          len(intervened) - intervened.count(0), outcome), finite, self.dtype

    def parse_run(self, run: Sequence[bytes], max_bytes: int) -> list[RecordHead] | None:
        """`parse` of each record of `run` (two or more of this fixed layout's records of one
        length, from one robot's stream), finiteness included, at once: the head of each, or
        None where any record of the run might differ (the caller then checks each alone).

        The first record is checked as `parse` checks it (skeleton, a filed header template,
        its stamps unpacked and checked); every other must have the same skeleton and a header
        equal to the first's byte for byte except in its stamps' number values (chunk_seq,
        policy_version, wall_time, encoded as the first's are), which are read for the whole
        run as numpy columns (one row per header); finiteness is one sum over the run: the
        same rules, so the same verdicts as record by record. Only the headers are copied."""
        first = run[0]
        end = self.body_end
        getter, gaps = self.skeleton
        if not self.fixed or len(first) <= end or getter(first) != gaps:
            return None
        stamped = self._stamped(first, end)
        if stamped is None:
            return None
        at, known, t = stamped
        numbers = _numbers(first, at)
        size = len(first)
        if numbers is None or size > max_bytes:
            return None
        if list(map(getter, run)).count(gaps) != len(run):
            return None
        # each record's header as a row: all but its stamps' numbers must equal the first's
        rows = np.frombuffer(b"".join([r[end:] for r in run]), np.uint8).reshape(len(run), -1)
        same = self.runs.get((size, *numbers))
        if same is None:
            same = self._same_bytes(size, numbers)
        fixed = rows & same  # the numbers' bytes zeroed
        if not (fixed == fixed[0]).all():
            return None
        finite = np.frombuffer(b"".join(chain.from_iterable(map(self.finite, run))), self.dtype)
        with np.errstate(all="ignore"):  # a finite sum proves every element finite
            if not math.isfinite(_ADD(finite)):
                return None
        values = {}
        for name, p, tag, width in numbers:
            column = _stamp_column(rows, p - end, tag, width)
            if column is None:
                return None
            values[name] = column.tolist()
        flags = list(map(operator.itemgetter(self.intervened), run))
        joined = b"".join(flags)
        acted = repeat(0) if joined.count(0) == len(joined) else map(  # the usual: none acted
            operator.sub, map(len, flags), map(operator.methodcaller("count", 0), flags))
        robot, task, group, outcome = known
        keys = zip(repeat(robot), repeat(t["episode_id"]), values["chunk_seq"])
        return list(map(partial(_NEW, RecordHead), zip(
            keys, repeat(task), repeat(group), values["policy_version"], repeat(self.steps),
            acted, repeat(outcome))))

    def _template(self, data: bytes, end: int
                  ) -> tuple[int, tuple[str, str, str, str | None]] | None:
        """(where the stamps begin, what the header says) of a header filed as a template
        (`_file_header`) that `data` starts with at `end`."""
        for template, known in self.headers.get(data[end:end + _HEAD_KEY_BYTES], ()):
            if data.startswith(template, end):
                return end + len(template), known
        return None

    def _same_bytes(self, size: int, numbers: list[tuple[str, int, int, int]]) -> np.ndarray:
        """A mask of the bytes in which the headers of records of `size` bytes whose stamps'
        numbers lie at `numbers` must equal their run's first record's (0xFF; from the
        header's start): all but the numbers' bytes (0)."""
        end = self.body_end
        mask = np.full(size - end, 0xFF, np.uint8)  # the header's bytes
        for _, at, _, width in numbers:
            mask[at - end + (width > 0):at - end + 1 + width] = 0  # a fixint is its own tag
        if len(self.runs) >= 16:
            self.runs.clear()
        self.runs[(size, *numbers)] = mask
        return mask

    def _stamped(self, data: bytes, end: int) -> tuple[int, tuple[str, str, str, str | None],
                                                        dict[str, Any]] | None:
        """(where its stamps begin, what the template says, the stamps) of a record whose
        header up to its stamps is a filed template and whose stamps pass their checks."""
        found = self._template(data, end)
        if found is None:
            return None
        at, known = found
        try:
            t = msgpack.unpackb(_STAMPS_MAP + data[at:])
        except Exception:  # any fault: the full check says what it is
            return None
        if t.keys() != _STAMP_KEYS:
            return None
        try:
            check_stamps(t)
        except RecordError:
            return None
        return at, known, t

    def _file_header(self, data: bytes, end: int, known: tuple[str, str, str, str | None]
                     ) -> None:
        """Keep the header of `data` (which just passed `check_header`) up to its stamps, if
        they are its last fields, for `_stamped`."""
        try:
            at = end
            for _ in range(len(HEADER) - len(STAMPS)):
                at = _skip(data, _skip(data, at))
            if msgpack.unpackb(_STAMPS_MAP + data[at:]).keys() != _STAMP_KEYS:
                return
        except (IndexError, ValueError, msgpack.UnpackException):
            return
        key = data[end:end + _HEAD_KEY_BYTES]
        if len(self.headers) >= _MAX_HEADERS and key not in self.headers:
            self.headers = {}
        _HEADER_BUDGET[0] -= 1
        if _HEADER_BUDGET[0] < 0:  # bounded memory, whatever robots and layouts arrive
            _HEADER_BUDGET[0] = 1 << 16
            for layouts in list(_LAYOUTS.values()):
                for layout in layouts:
                    layout.headers = {}
        # a new tuple, never one changed in place: another thread may be reading the old one
        self.headers[key] = ((data[end:at], known), *self.headers.get(key, ())[:3])

    def decode(self, data: bytes, max_bytes: int) -> RolloutChunk | None:
        """The chunk `decode_chunk` makes of `data`, if `data` has this layout and passes every
        rule, else None. Only layouts without compressed observations: a camera record's cost
        is inflating its frames, which `decode_chunk` does (and checks) itself."""
        if not self.fixed:
            return None
        got = self.parse(data, max_bytes)
        if got is None:
            return None
        _, finite, dtype = got
        with np.errstate(all="ignore"):  # a finite sum proves every element finite
            if not math.isfinite(_ADD(np.frombuffer(finite, dtype))):
                return None
        at, fields = 0, dict[str, Any]()
        obs: dict[str, np.ndarray] = {}
        aux: dict[str, np.ndarray] = {}
        for (gap, _, size, _, _), (field, name, dt, shape) in zip(self.pieces, self.arrays,
                                                                  strict=True):
            start = at + len(gap)
            at = start + size
            # its own bytes (as msgpack gives each array), read-only like the decoder's
            array = np.frombuffer(data[start:at], dt).reshape(shape)
            if name is None:
                fields[field] = array
            else:
                (obs if field == "obs" else aux)[name] = array
        h = msgpack.unpackb(_HEADER_MAP + data[at:])
        end = h.pop("episode_end")
        fields.update(h)
        if aux:
            fields["aux"] = aux
        return RolloutChunk(**fields, obs=obs, episode_end=None if end is None else EpisodeEnd(
            *end))

    def _walk(self, data: bytes, max_bytes: int) -> tuple[int, bytes, bytes] | None:
        """A layout with compressed observations, whose lengths move what follows them."""
        if self.inflates > max_bytes:
            return None
        at, finite, intervened = 0, [], b""
        for gap, kind, size, fin, inter in self.pieces:
            stop = at + len(gap)
            if data[at:stop] != gap:
                return None
            if kind == _RAW:
                at = stop + size
                if fin:
                    finite.append(data[stop:at])
                elif inter:
                    intervened = data[stop:at]
                continue
            tag = data[stop:stop + 1]  # a bin of any length, holding one lz4 frame
            wide = _BIN.get(tag)
            if wide is None:
                return None
            start = stop + 1 + wide
            at = start + int.from_bytes(data[stop + 1:start], "big")
            try:
                claimed = lz4.frame.get_frame_info(data[start:min(at, start + 32)])
            except Exception:  # the full check names the fault
                return None
            if claimed["content_size"] != size:
                return None
        if at >= len(data):
            return None
        return at, b"".join(finite), intervened


_BIN = {b"\xc4": 1, b"\xc5": 2, b"\xc6": 4}  # msgpack bin 8/16/32: bytes of its length

# the stamps a run reads as columns, by their msgpack key; each number's encoding: the bytes
# after its tag and how they read (a positive fixint, tag < 0x80, is its own value)
_NUMBERS = {msgpack.packb(k): k for k in ("chunk_seq", "policy_version", "wall_time")}
_EPISODE_KEY = msgpack.packb("episode_id")
_UINTS = {0xCC: (1, ">u1"), 0xCD: (2, ">u2"), 0xCE: (4, ">u4"), 0xCF: (8, ">u8")}
_FLOATS = {0xCA: (4, ">f4"), 0xCB: (8, ">f8")}  # wall_time only
_ENCODINGS = {**_UINTS, **_FLOATS}


def _numbers(data: bytes, at: int) -> list[tuple[str, int, int, int]] | None:
    """(name, where its value starts, its tag, bytes after the tag) of each number among the
    stamps that start at `at` and end `data` (a map's 4 entries, checked by `_stamped`), if
    each is written in a way `_stamp_column` reads; else None."""
    out = []
    try:
        for _ in range(len(STAMPS)):
            key_end = _skip(data, at)
            key = data[at:key_end]
            at = key_end
            if key == _EPISODE_KEY:
                at = _skip(data, at)
                continue
            name, tag = _NUMBERS.get(key), data[at]
            if name is None:
                return None
            if tag < 0x80:
                width = 0
            elif tag in _UINTS or (tag in _FLOATS and name == "wall_time"):
                width = _ENCODINGS[tag][0]
            else:
                return None
            out.append((name, at, tag, width))
            at += 1 + width
    except (IndexError, ValueError):
        return None
    return out if at == len(data) and len(out) == 3 else None


def _stamp_column(rows: np.ndarray, at: int, tag: int, width: int) -> np.ndarray | None:
    """One stamp's number in each of `rows` (records, one a row), written as `_numbers` found
    it in the first; None if any of them is not, or breaks the stamps' rules."""
    if width == 0:
        column = rows[:, at]
        return column if (column < 0x80).all() else None
    dtype = _ENCODINGS[tag][1]
    column = np.ascontiguousarray(rows[:, at + 1:at + 1 + width]).view(dtype)[:, 0]
    if tag in _FLOATS:
        return column if np.isfinite(column).all() else None
    return column if tag != 0xCF or (column < 2**63).all() else None


def file_layout(data: bytes, b: dict[str, Any], steps: int, inflates: int) -> None:
    """File the layout of `data`, which just passed the full check (its map is `b`), if it
    has the form `encode_chunk` writes (header fields last, specs keyed dtype, shape, data)."""
    if b["v"] not in (3, 4) or data[:4] == b"\x04\x22\x4d\x18":  # versions 1 and 2 (a
        return  # version 1 map gains `group` "": not what its bytes say), or an lz4 envelope
    dtypes = {np.dtype(b[name]["dtype"]) for name in FINITE}
    aux = b.get("aux", {})
    dtypes |= {np.dtype(s["dtype"]) for s in aux.values() if s["dtype"] == "float32"}
    if len(dtypes) != 1:
        return
    where: list[tuple[str, str | None]] = []
    try:
        pieces = _pieces(data, b, where)
    except (IndexError, ValueError, KeyError):
        return
    if pieces is None:
        return
    specs = [b[field] if name is None else b[field][name] for field, name in where]
    arrays = [(field, name, np.dtype(spec["dtype"]), tuple(spec["shape"]))
              for (field, name), spec in zip(where, specs, strict=True)]
    layout = _Layout(pieces, b["horizon"], steps, inflates, dtypes.pop(), arrays)
    key = data[:_KEY_BYTES]
    known = _LAYOUTS.get(key, ())
    if any(k.pieces == layout.pieces and k.horizon == layout.horizon for k in known):
        return
    if len(_LAYOUTS) >= _MAX_LAYOUTS and key not in _LAYOUTS:
        _LAYOUTS.clear()  # a stream whose layout changes all the time: start over
    # a new tuple, never one changed in place: another thread may be reading the old one
    _LAYOUTS[key] = (layout, *known[:_MAX_PER_KEY - 1])


_SPEC = (b"\x83\xa5dtype", b"\xa5shape")  # how encode_chunk writes an array spec's first keys


def _pieces(data: bytes, b: dict[str, Any], where: list[tuple[str, str | None]]
            ) -> list[tuple[bytes, int, int, bool, bool]] | None:
    """The pieces of `data` (see `_Layout`); `where` gets each one's array: (field, name in
    `obs` or `aux`, or None for a column)."""
    at, count = _map_head(data, 0)
    if count != len(b) or len(b) - len(HEADER) < 1:
        return None
    pieces: list[tuple[bytes, int, int, bool, bool]] = []
    gap_from = 0
    for _ in range(count - len(HEADER)):  # everything before the header fields
        key_end = _skip(data, at)
        key = msgpack.unpackb(data[at:key_end], raw=False)
        at = key_end
        if key == "v":
            at = _skip(data, at)
        elif key in ("obs", "aux"):
            at, n = _map_head(data, at)
            for _ in range(n):
                name_end = _skip(data, at)
                name = msgpack.unpackb(data[at:name_end], raw=False)
                finite = key == "aux" and b["aux"][name]["dtype"] == "float32"
                at, gap_from = _spec(data, name_end, gap_from, pieces, key == "obs", finite,
                                     False)
                where.append((key, name))
        elif key in COLUMNS:
            at, gap_from = _spec(data, at, gap_from, pieces, False, key in FINITE,
                                 key == "intervened")
            where.append((key, None))
        else:
            return None
    if at != gap_from:  # the header must follow the last array's bytes
        return None
    for _ in range(len(HEADER)):
        key_end = _skip(data, at)
        if msgpack.unpackb(data[at:key_end], raw=False) not in _HEADER_KEYS:
            return None
        at = _skip(data, key_end)
    if at != len(data):
        return None
    return pieces


def _spec(data: bytes, at: int, gap_from: int, pieces: list[tuple[bytes, int, int, bool, bool]],
          obs: bool, finite: bool, intervened: bool) -> tuple[int, int]:
    """One `{dtype, shape, data | lz4}` at `at`; appends its piece, returns (end, end)."""
    if not data.startswith(_SPEC[0], at):
        raise ValueError("not encode_chunk's spec")
    at = _skip(data, at + len(_SPEC[0]))  # the dtype string
    if not data.startswith(_SPEC[1], at):
        raise ValueError("not encode_chunk's spec")
    at = _skip(data, at + len(_SPEC[1]))  # the shape
    if data.startswith(b"\xa4data", at):
        start = at + 5 + 1 + _BIN[data[at + 5:at + 6]]
        end = _skip(data, at + 5)
        pieces.append((data[gap_from:start], _RAW, end - start, finite, intervened))
    elif obs and data.startswith(b"\xa3lz4", at):
        end = _skip(data, at + 4)
        frame = data[at + 4 + 1 + _BIN[data[at + 4:at + 5]]:end]
        size = lz4.frame.get_frame_info(frame)["content_size"]
        pieces.append((data[gap_from:at + 4], _LZ4, size, False, False))
    else:
        raise ValueError("not encode_chunk's spec")
    return end, end


def _map_head(data: bytes, at: int) -> tuple[int, int]:
    t = data[at]
    if 0x80 <= t <= 0x8F:
        return at + 1, t & 0x0F
    if t == 0xDE:
        return at + 3, int.from_bytes(data[at + 1:at + 3], "big")
    raise ValueError("not a map")


_FIXED = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,
          0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}
_SIZED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin, str: bytes of the length


def _skip(data: bytes, at: int) -> int:
    """Where the msgpack object at `at` ends (for the types a record holds)."""
    t = data[at]
    if t <= 0x7F or t >= 0xE0:
        return at + 1
    if t <= 0x8F:
        n, at = 2 * (t & 0x0F), at + 1
    elif t <= 0x9F:
        n, at = t & 0x0F, at + 1
    elif t <= 0xBF:
        return at + 1 + (t & 0x1F)
    elif t in _FIXED:
        return at + _FIXED[t]
    elif t in _SIZED:
        w = _SIZED[t]
        return at + 1 + w + int.from_bytes(data[at + 1:at + 1 + w], "big")
    elif t == 0xDC:
        n, at = int.from_bytes(data[at + 1:at + 3], "big"), at + 3
    elif t == 0xDE:
        n, at = 2 * int.from_bytes(data[at + 1:at + 3], "big"), at + 3
    else:
        raise ValueError(f"msgpack type {t:#x} is not in a record")
    for _ in range(n):
        at = _skip(data, at)
    return at
