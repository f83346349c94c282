"""Ingest's check of a record: every rule `decode_chunk` enforces, read off the msgpack map
without building the chunk or inflating its observations.

Example:

    head = check_record(data, max_bytes=1 << 20)   # raises RecordError where decode_chunk would
    meta = RecordMeta.checked(head, position)      # what the buffer's index keeps

What it reads: the header fields; each array's dtype and shape against its byte count (a
compressed observation's against the size its lz4 frame claims, so camera frames pass through
still compressed); the shapes against each other; finiteness of actions, log-probabilities,
values and rewards (one numpy view of each column's bytes). The one thing it cannot see is an lz4
frame whose content falls short of or runs past its claim: `decode_chunk` refuses that record
when it is first read, and the buffer then drops it as damage (`ReplayBuffer.get`).
tests/test_decoder_fuzz.py holds the two to the same verdicts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from buffers.codec import (
    FINITE,
    MAX_RECORD_BYTES,
    MAX_STRING,
    RecordError,
    array_spec,
    body,
    frame_claim,
    raw_data,
    versioned,
)
from buffers.records import ChunkKey

_NAMES = ("robot_id", "embodiment", "task", "episode_id")  # non-empty
_FLOATS = (np.dtype("float32"), np.dtype("float64"))
_F32 = np.dtype("float32")
_BOOL = np.dtype("bool")
_ADD = np.add.reduce


@dataclasses.dataclass(frozen=True, slots=True)
class RecordHead:
    """What ingest learns from a checked record (the index's fields, `buffers.index`)."""

    key: ChunkKey
    task: str
    group: str
    policy_version: int
    num_steps: int
    intervened: int  # steps an operator acted
    outcome: str | None


def check_record(data: bytes, *, max_bytes: int = MAX_RECORD_BYTES) -> RecordHead:
    """Check a record as `decode_chunk` would, without decoding it; raises `RecordError`."""
    b = versioned(body(data, max_bytes))
    _check_header(b)
    specs = {k: array_spec(k, b[k]) for k in ("action", "policy_action", "logp", "value", "reward",
                                         "success", "intervened")}
    steps = _check_shapes(b, specs)
    budget = [max_bytes]
    for name, spec in b["obs"].items():
        field = f"obs.{name[:MAX_STRING]}"
        _, shape, size = array_spec(field, spec, obs=True)
        if "lz4" in spec:
            frame_claim(field, spec, size, budget)
        else:
            raw_data(field, spec, size)
        if not name or len(name) > MAX_STRING:
            raise RecordError(f"obs names must be non-empty strings of at most {MAX_STRING} "
                              "chars")
        if not shape or shape[0] != steps + 1:
            raise RecordError(f"obs.{name} must have {steps + 1} rows for {steps} steps")
    intervened = b["intervened"]["data"]
    end = b["episode_end"]
    return RecordHead((b["robot_id"], b["episode_id"], b["chunk_seq"]), b["task"], b["group"],
                      b["policy_version"], steps, len(intervened) - intervened.count(0),
                      None if end is None else end[0])


def _check_header(b: dict[str, Any]) -> None:
    for name in _NAMES:
        v = b[name]
        if not isinstance(v, str) or not v or len(v) > MAX_STRING:
            raise RecordError(f"{name} must be a non-empty string of at most {MAX_STRING} chars")
    for name in ("instruction", "group"):
        v = b[name]
        if not isinstance(v, str) or len(v) > MAX_STRING:
            raise RecordError(f"{name} must be a string of at most {MAX_STRING} chars")
    for name in ("chunk_seq", "policy_version", "horizon"):
        v = b[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 2**63:
            raise RecordError(f"{name} must be a non-negative integer, got {v!r}")
    if b["horizon"] < 1:
        raise RecordError("horizon must be >= 1")
    t = b["wall_time"]
    if not isinstance(t, float | int) or not math.isfinite(t):
        raise RecordError("wall_time must be a finite number")
    end = b["episode_end"]
    if end is not None and (end[0] not in ("success", "failure", "truncated")
                            or end[1] not in ("env", "human", "reward_model")):
        raise RecordError(f"bad episode_end {end!r}")


def _check_shapes(b: dict[str, Any], specs: dict[str, tuple[np.dtype, list[int], int]]) -> int:
    """The columns' shapes against each other, dtypes and finiteness; returns the step count."""
    for name, (_, _, size) in specs.items():
        raw_data(name, b[name], size)
    shape = specs["action"][1]
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise RecordError(f"action must be [T >= 1, A >= 1], got shape {tuple(shape)}")
    steps, adim = shape
    horizon = b["horizon"]
    calls = -(-steps // horizon)
    want = {"policy_action": [calls, horizon, adim], "logp": [calls], "value": [calls],
            "reward": [steps], "success": [steps], "intervened": [steps]}
    for name, w in want.items():
        if specs[name][1] != w:
            raise RecordError(f"{name} must have shape {tuple(w)} for {steps} steps, got "
                              f"{tuple(specs[name][1])}")
    for name in ("success", "intervened"):
        if specs[name][0] != _BOOL:
            raise RecordError(f"{name} must be bool")
    dtypes = [specs[name][0] for name in FINITE]
    if not all(d in _FLOATS for d in dtypes):
        raise RecordError(f"{FINITE[[d in _FLOATS for d in dtypes].index(False)]} must be "
                          "finite floats (found NaN, inf or a non-float)")
    if dtypes.count(_F32) == len(FINITE) and _finite(np.frombuffer(  # the usual case: one sum
            b"".join([b[name]["data"] for name in FINITE]), _F32)):
        return int(steps)
    for name, dtype in zip(FINITE, dtypes, strict=True):
        if not _finite(np.frombuffer(b[name]["data"], dtype)):
            raise RecordError(f"{name} must be finite floats (found NaN, inf or a non-float)")
    return int(steps)


def _finite(arr: np.ndarray) -> bool:
    """A finite sum proves every element finite (any NaN or inf makes it NaN or inf); the exact
    check runs only when the sum is not finite (damage, or a sum that overflows)."""
    with np.errstate(all="ignore"):
        return math.isfinite(_ADD(arr)) or bool(np.isfinite(arr).all())
