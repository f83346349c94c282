"""The record codec: a rollout chunk as a msgpack map whose large observations are lz4 frames.

Example:

    data = encode_chunk(chunk)         # bytes, safe to send or store
    chunk = decode_chunk(data)         # raises RecordError on anything malformed
    head = check_record(data)          # ingest (buffers.check): the same checks, no arrays

Format version 3 is a bare msgpack map; version 4 is version 3 plus `aux`, a map of per-call
arrays (`RolloutChunk.aux`, raw like the columns), and is written only for a chunk that has
some, so a record without `aux` stays byte for byte what version 3 wrote. Each array is
`{dtype, shape, data}` (raw bytes) or,
for an observation that lz4 makes at least 10% smaller (camera frames; float state rarely),
`{dtype, shape, lz4}` (one lz4 frame that states its size). Columns (actions, rewards, ...) are
always raw, so their finiteness is checked without inflating anything. Versions 1 and 2 were one
lz4 frame around the whole map; they still decode (the envelope is told by the lz4 magic).

Decoding trusts nothing: the compressed size, the decompressed size (lz4 frames carry sizes that
lie, FACTS.md), msgpack lengths, dtypes (an allowlist), shapes against byte counts and against
each other, and finiteness of actions and rewards are all checked before use. Nothing is
unpickled. The schema's rules are stated once, in `buffers.schema`. Ingest
(`buffers.check.check_record`) reads the same rules off the msgpack map and
checks a compressed observation from its metadata: the size its frame claims must be exactly
its shape's bytes; the frame itself is inflated (and refused if it lies) when it is decoded.
"""

from __future__ import annotations

from typing import Any

import lz4.frame
import msgpack
import numpy as np

from buffers.layout import decode_by_layout, learn
from buffers.records import EpisodeEnd, RolloutChunk
from buffers.schema import (
    COLUMNS,
    FINITE,
    HEADER,
    MAX_AUX,
    MAX_STRING,
    STAMPS,
    RecordError,
    check_aux,
    check_columns,
    check_finite,
    check_header,
    check_obs,
)

__all__ = ["COLUMNS", "FINITE", "HEADER", "MAX_STRING", "RecordError", "decode_chunk",
           "encode_chunk", "validate_chunk"]  # the schema's names, still importable from here
FORMAT_VERSION = 4  # 4 added `aux` (written only when a chunk has some; else 3 is written);
# 3: bare msgpack, lz4 per observation; 2 added `group` (1 decodes, group "")
VERSIONS = (1, 2, 3, 4)
COMPRESS_MIN_BYTES = 4096  # smaller observations are stored raw without trying
COMPRESS_KEEP = 0.9  # keep the lz4 frame only if it is at most this fraction of the raw bytes
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
MAX_RECORD_BYTES = 64 * 1024 * 1024  # decompressed, and so also compressed
DTYPES = frozenset({"float32", "float64", "uint8", "bool", "int32", "int64"})
_NAME = {np.dtype(n): n for n in DTYPES}  # dtype.name is slow; these lookups are the hot path
_DTYPE = {n: np.dtype(n) for n in DTYPES}
_FLOATS = (np.dtype("float32"), np.dtype("float64"))
_FIELDS = frozenset({"v", "obs", *HEADER, *COLUMNS})
_FIELDS_AUX = _FIELDS | {"aux"}  # version 4


def _pack_array(a: np.ndarray) -> dict[str, Any]:
    name = _NAME.get(a.dtype)
    if name is None:
        raise RecordError(f"dtype {a.dtype} is not allowed ({', '.join(sorted(DTYPES))})")
    return {"dtype": name, "shape": list(a.shape), "data": a.tobytes()}


def _pack_obs(a: np.ndarray) -> dict[str, Any]:
    """An observation, as an lz4 frame when that pays (>= 10% smaller), else raw."""
    spec = _pack_array(a)
    raw = spec["data"]
    if len(raw) >= COMPRESS_MIN_BYTES:
        frame = lz4.frame.compress(raw, compression_level=0, store_size=True)
        if len(frame) <= COMPRESS_KEEP * len(raw):
            del spec["data"]
            spec["lz4"] = bytes(frame)
    return spec


def encode_chunk(chunk: RolloutChunk) -> bytes:
    validate_chunk(chunk)
    body: dict[str, Any] = {"v": 4 if chunk.aux else 3}
    # the arrays first, the header last: ingest checks a record laid out like the last one of
    # its stream byte for byte up to the header (buffers.check); readers take any order
    body["obs"] = {k: _pack_obs(v) for k, v in chunk.obs.items()}
    for name in COLUMNS:
        body[name] = _pack_array(getattr(chunk, name))
    if chunk.aux:
        body["aux"] = {k: _pack_array(v) for k, v in chunk.aux.items()}
    for name in HEADER[:-1]:
        if name not in STAMPS:
            body[name] = getattr(chunk, name)
    end = chunk.episode_end
    body["episode_end"] = None if end is None else [end.outcome, end.source]
    for name in STAMPS:  # last: what changes from one record of a stream to the next
        body[name] = getattr(chunk, name)
    return msgpack.packb(body, use_bin_type=True)


def decode_chunk(data: bytes, *, max_bytes: int = MAX_RECORD_BYTES,
                 checked: bool = True) -> RolloutChunk:
    """Parse and check a record; raises `RecordError` saying which part is wrong.

    Example: `chunk = decode_chunk(payload, max_bytes=1 << 20)`. Sizes are checked before any
    allocation they would drive: nothing bigger than `max_bytes` is ever inflated.
    `checked=False` skips only the schema check (`validate_chunk`), for records this process
    already validated when they were stored and whose CRC still holds (the sampler's reads).
    A record laid out like one already checked (`buffers.layout`) is checked and built from
    that layout: the same verdict and the same chunk, without parsing each array's spec."""
    chunk = decode_by_layout(data, max_bytes)
    if chunk is not None:
        return chunk
    b = body(data, max_bytes)
    chunk = _from_body(b, max_bytes, checked)
    if checked:
        learn(data, b, chunk)  # the next record laid out like this one takes the short way
    return chunk


def body(data: bytes, max_bytes: int) -> Any:
    """The record's msgpack map, unchecked: out of its lz4 envelope for versions 1 and 2."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RecordError(f"a record must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise RecordError(f"record of {len(data)} bytes exceeds the limit of {max_bytes}")
    if data[:4] == _LZ4_MAGIC:  # versions 1 and 2: one lz4 frame around the map
        return _unpack(_inflate(bytes(data), max_bytes), max_bytes)
    return _unpack(data, max_bytes)


def _inflate(data: bytes, max_bytes: int) -> bytes:
    try:
        claimed = lz4.frame.get_frame_info(data)["content_size"]  # 0 when the frame omits it
        if claimed > max_bytes:
            raise RecordError(f"lz4 frame claims {claimed} bytes, over the record limit of "
                              f"{max_bytes}")
        if claimed and _inflated_bound(data) <= max_bytes:
            # One shot (2.5x faster than the streaming decompressor on camera records). Safe
            # only because the frame's blocks cannot inflate past the bound just checked, even
            # where the header lies; lz4 refuses content that differs from the claim.
            try:
                raw, used = lz4.frame.decompress(data, return_bytes_read=True)
            except RuntimeError as e:
                raise RecordError("lz4 frame is truncated, or larger than its header or the "
                                  f"record limit ({e})") from e
            if used != len(data):  # bytes smuggled after the frame would pass every other check
                raise RecordError(f"{len(data) - used} bytes follow the lz4 frame")
            return bytes(raw)
        dec = lz4.frame.LZ4FrameDecompressor()  # no claim: stream, capped at the record limit
        raw = dec.decompress(data, max_length=max_bytes)
    except RuntimeError as e:
        raise RecordError(f"bad lz4 frame: {e}") from e
    if not dec.eof:
        raise RecordError("lz4 frame is truncated, or larger than its header or the record limit")
    if dec.unused_data:  # bytes smuggled after the frame would pass every other check
        raise RecordError(f"{len(dec.unused_data)} bytes follow the lz4 frame")
    return raw


_BLOCK_MAX = {4: 64 << 10, 5: 256 << 10, 6: 1 << 20, 7: 4 << 20}  # lz4 frame BD ids


def _inflated_bound(data: bytes) -> int:
    """The most bytes an lz4 frame's blocks can inflate to (block count times the block size
    its descriptor declares), by walking the block headers without inflating anything; a huge
    number for a frame this walk does not understand, so the caller takes the careful path."""
    unknown = 1 << 62
    if len(data) < 7:
        return unknown
    flg, bd = data[4], data[5]
    block_max = _BLOCK_MAX.get(bd >> 4 & 7)
    if block_max is None or flg >> 6 != 1:
        return unknown
    at = 7 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0)
    extra = 4 if flg & 0x10 else 0  # a block checksum after each block
    blocks = 0
    while at + 4 <= len(data):
        size = int.from_bytes(data[at:at + 4], "little") & 0x7FFFFFFF
        if size == 0:
            return blocks * block_max
        blocks += 1
        at += 4 + size + extra
    return unknown


def _unpack(raw: bytes, max_bytes: int) -> Any:
    try:  # unpackb, unlike Unpacker.unpack, refuses bytes after the first object
        return msgpack.unpackb(raw, raw=False, max_str_len=4096, max_bin_len=max_bytes,
                               max_array_len=64, max_map_len=64, max_ext_len=0,
                               strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.OutOfData, msgpack.FormatError,
            msgpack.StackError) as e:
        raise RecordError(f"bad msgpack body: {e}") from e


def array_spec(field: str, spec: Any, obs: bool = False) -> tuple[np.dtype, list[int], int]:
    """Check an array spec's keys, dtype and shape; returns (dtype, shape, its bytes). An
    observation (`obs`) may hold an lz4 frame in place of its raw data."""
    # The ingest hot path (8 arrays a record): exact-type checks and one loop, no generators.
    if type(spec) is not dict or len(spec) != 3 or "dtype" not in spec or "shape" not in spec or (
            "data" not in spec and not (obs and "lz4" in spec)):
        raise RecordError(f"{field}: an array needs exactly dtype, shape and data"
                          + (" (or lz4)" if obs else ""))
    dtype, shape = spec["dtype"], spec["shape"]
    np_dtype = _DTYPE.get(dtype) if type(dtype) is str else None
    if np_dtype is None:
        raise RecordError(f"{field}: dtype {dtype!r} is not allowed ({', '.join(sorted(DTYPES))})")
    if type(shape) is not list or len(shape) > 6:
        raise RecordError(f"{field}: bad shape {shape!r}")
    count = 1
    for d in shape:
        if type(d) is not int or not 0 <= d < 2**31:
            raise RecordError(f"{field}: bad shape {shape!r}")
        count *= d
    return np_dtype, shape, count * np_dtype.itemsize


def raw_data(field: str, spec: dict[str, Any], size: int) -> bytes:
    data = spec["data"]
    if type(data) is not bytes or len(data) != size:
        raise RecordError(f"{field}: {len(data) if isinstance(data, bytes) else 'no'} bytes do "
                          f"not fill shape {spec['shape']} of {spec['dtype']}")
    return data


def frame_claim(field: str, spec: dict[str, Any], size: int, budget: list[int]) -> bytes:
    """A compressed observation's lz4 frame, once the size it claims is exactly `size` and
    fits what the record may still inflate to (`budget`, charged here)."""
    frame = spec["lz4"]
    if type(frame) is not bytes:
        raise RecordError(f"{field}: lz4 must be bytes")
    try:
        claimed = lz4.frame.get_frame_info(frame)["content_size"]
    except RuntimeError as e:
        raise RecordError(f"{field}: bad lz4 frame: {e}") from e
    if claimed != size:
        raise RecordError(f"{field}: lz4 frame claims {claimed} bytes, shape {spec['shape']} of "
                          f"{spec['dtype']} needs {size}")
    if size > budget[0]:
        raise RecordError(f"{field}: inflates past the record limit")
    budget[0] -= size
    return frame


def _array(field: str, spec: Any, budget: list[int] | None = None) -> np.ndarray:
    """One array. `budget` ([bytes the record may still inflate to]) given: an observation,
    which may be an lz4 frame, inflated within that budget and refused if it lies."""
    dtype, shape, size = array_spec(field, spec, budget is not None)
    if budget is not None and "lz4" in spec:
        left = budget[0]
        data = _inflate(frame_claim(field, spec, size, budget), left)
        if len(data) != size:
            raise RecordError(f"{field}: lz4 frame holds {len(data)} bytes, not the {size} it "
                              "claims")
    else:
        data = raw_data(field, spec, size)
    return np.ndarray(shape, dtype, data)


def versioned(body: Any) -> dict[str, Any]:
    """The record map, once its version is known and its fields are exactly the schema's (a
    version 1 record gains `group` "")."""
    if not isinstance(body, dict):
        raise RecordError("a record body must be a map")
    if body.get("v") == 1:
        body = {**body, "v": 2, "group": ""}
    if body.get("v") not in VERSIONS or type(body.get("v")) is not int:
        raise RecordError(f"unsupported record format version {body.get('v')!r}")
    fields = _FIELDS_AUX if body["v"] == 4 else _FIELDS
    if body.keys() != fields:
        # key=repr: names may arrive as str and bytes, which do not compare
        missing, extra = sorted(fields - set(body)), sorted(set(body) - fields, key=repr)
        raise RecordError(f"record fields differ: missing {missing}, unknown {extra}")
    obs = body["obs"]
    if not isinstance(obs, dict) or not obs:
        raise RecordError("obs must be a non-empty map of arrays")
    if not all(isinstance(k, str) for k in obs):  # msgpack map keys may also arrive as bytes
        raise RecordError("obs names must be strings")
    if "aux" in body:  # version 4
        aux = body["aux"]
        if type(aux) is not dict or not aux or len(aux) > MAX_AUX or not all(
                type(k) is str for k in aux):
            raise RecordError(f"aux must be a map of 1 to {MAX_AUX} arrays with string names")
    end = body["episode_end"]
    if end is not None and not (isinstance(end, list) and len(end) == 2):
        raise RecordError("episode_end must be null or [outcome, source]")
    return body


def _from_body(body: Any, max_bytes: int, checked: bool) -> RolloutChunk:
    body = versioned(body)
    end = body["episode_end"]
    try:
        fields: dict[str, Any] = {k: body[k] for k in HEADER[:-1]}
        fields.update({k: _array(k, body[k]) for k in COLUMNS})
        budget = [max_bytes]
        fields["obs"] = {k: _array(f"obs.{k[:MAX_STRING]}", v, budget)
                         for k, v in body["obs"].items()}
        if "aux" in body:
            fields["aux"] = {k: _array(f"aux.{k[:MAX_STRING]}", v)
                             for k, v in body["aux"].items()}
        chunk = RolloutChunk(**fields, episode_end=None if end is None else EpisodeEnd(*end))
    except TypeError as e:
        raise RecordError(str(e)) from e
    if checked:
        validate_chunk(chunk)
    return chunk


def validate_chunk(chunk: RolloutChunk) -> None:
    """Raise `RecordError` unless the chunk's header and columns agree with the schema
    (`buffers.schema`)."""
    end = chunk.episode_end
    check_header(vars(chunk), None if end is None else (end.outcome, end.source))
    arrays = {name: getattr(chunk, name) for name in COLUMNS}
    try:
        steps = check_columns({k: (a.dtype, a.shape) for k, a in arrays.items()}, chunk.horizon)
    except AttributeError as e:
        raise RecordError(f"every column must be an array ({e})") from e
    for name, arr in chunk.obs.items():
        check_obs(name, arr.shape if isinstance(arr, np.ndarray) else (), steps)
    calls = len(chunk.policy_action)
    if len(chunk.aux) > MAX_AUX:
        raise RecordError(f"aux must be a map of 1 to {MAX_AUX} arrays with string names")
    for name, arr in chunk.aux.items():
        if not isinstance(arr, np.ndarray):
            raise RecordError(f"aux.{name} must be an array")
        check_aux(name, _NAME.get(arr.dtype, str(arr.dtype)), arr.shape, calls)
    check_finite([(name, arrays[name]) for name in FINITE] + [
        (f"aux.{k}", a) for k, a in chunk.aux.items() if a.dtype in _FLOATS])
