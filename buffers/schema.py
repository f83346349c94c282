"""The rollout record's schema, stated once: the rules a record's header and columns obey.

Example (the two places that enforce them, on different inputs):

    check_header(fields)                      # a name -> value map: a chunk's or a msgpack map's
    steps = check_columns(columns, horizon)   # {column name: (dtype, shape, ...)}
    check_aux(name, dtype, shape, calls)      # one per-call `aux` array

`buffers.codec.validate_chunk` calls these on a built `RolloutChunk`; ingest
(`buffers.check.check_record`) calls them on the record's msgpack map, without building arrays.
Only how each reads an array differs (a numpy array there, a `{dtype, shape, data}` spec here),
so the schema itself, and its error messages, cannot drift apart. Terms: `buffers.records`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


class RecordError(ValueError):
    """A record that breaks the format or the schema. Its message says which part."""


MAX_STRING = 256
NAMES = ("robot_id", "embodiment", "task", "episode_id")  # non-empty strings
TEXTS = ("instruction", "group")  # strings, may be empty
COUNTERS = ("chunk_seq", "policy_version", "horizon")  # non-negative integers (horizon >= 1)
HEADER = ("robot_id", "embodiment", "task", "episode_id", "chunk_seq", "policy_version",
          "wall_time", "horizon", "instruction", "group", "episode_end")
# what changes from one record of a robot's stream to the next (written last, `buffers.codec`)
STAMPS = ("episode_id", "chunk_seq", "policy_version", "wall_time")
COLUMNS = ("action", "policy_action", "logp", "value", "reward", "success", "intervened")
FINITE = ("action", "policy_action", "logp", "value", "reward")  # floats, every one finite
FLAGS = ("success", "intervened")  # bool
OUTCOMES = ("success", "failure", "truncated")
SOURCES = ("env", "human", "reward_model")
AUX_DTYPES = frozenset({"float32", "int32", "int64"})  # per-call data: floats or ids
MAX_AUX = 16  # named arrays in `aux`
_FLOATS = (np.dtype("float32"), np.dtype("float64"))
_BOOL = np.dtype("bool")
_NUMBER = (float, int)
_ADD = np.add.reduce


def check_header(h: Mapping[str, Any], end: Sequence[Any] | None) -> None:
    """The header fields of `HEADER` in `h` (a msgpack map, or a chunk's `vars`), and the
    episode's end as None or an (outcome, source) pair."""
    for name in NAMES:
        _name(name, h[name])
    for name in TEXTS:
        v = h[name]
        if not isinstance(v, str) or len(v) > MAX_STRING:
            raise RecordError(f"{name} must be a string of at most {MAX_STRING} chars")
    _counters(h, COUNTERS)
    if h["horizon"] < 1:
        raise RecordError("horizon must be >= 1")
    _wall_time(h["wall_time"])
    if end is not None and (end[0] not in OUTCOMES or end[1] not in SOURCES):
        raise RecordError(f"bad episode_end {end!r}")


def check_stamps(h: Mapping[str, Any]) -> None:
    """`check_header`'s rules for the `STAMPS` fields alone: for a record whose other header
    fields are, byte for byte, those of a record that passed `check_header` (ingest)."""
    _name("episode_id", h["episode_id"])
    _counters(h, ("chunk_seq", "policy_version"))
    _wall_time(h["wall_time"])


def _name(name: str, v: Any) -> None:
    if not isinstance(v, str) or not v or len(v) > MAX_STRING:
        raise RecordError(f"{name} must be a non-empty string of at most {MAX_STRING} chars")


def _counters(h: Mapping[str, Any], names: Sequence[str]) -> None:
    for name in names:
        v = h[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 2**63:
            raise RecordError(f"{name} must be a non-negative integer, got {v!r}")


def _wall_time(t: Any) -> None:
    if not isinstance(t, _NUMBER) or not math.isfinite(t):
        raise RecordError("wall_time must be a finite number")


def column_shapes(steps: int, horizon: int, adim: int) -> dict[str, tuple[int, ...]]:
    """What each column's shape must be for `steps` steps of `adim` action numbers."""
    calls = -(-steps // horizon)
    return {"policy_action": (calls, horizon, adim), "logp": (calls,), "value": (calls,),
            "reward": (steps,), "success": (steps,), "intervened": (steps,)}


def check_columns(columns: Mapping[str, Sequence[Any]], horizon: int
                  ) -> int:
    """Every column of `COLUMNS` by its (dtype, shape, ...) (finiteness is the caller's, it
    reads the values); returns the step count T."""
    shape = columns["action"][1]
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise RecordError(f"action must be [T >= 1, A >= 1], got shape {tuple(shape)}")
    steps, adim = shape
    for name, want in column_shapes(steps, horizon, adim).items():
        got = tuple(columns[name][1])
        if got != want:
            raise RecordError(f"{name} must have shape {want} for {steps} steps, got {got}")
    for name in FLAGS:
        if columns[name][0] != _BOOL:
            raise RecordError(f"{name} must be bool")
    for name in FINITE:
        if columns[name][0] not in _FLOATS:
            raise RecordError(not_finite(name))
    return int(steps)


def check_obs(name: Any, shape: Sequence[int], steps: int) -> None:
    """One observation: a name, and `T + 1` rows."""
    if type(name) is not str or not name or len(name) > MAX_STRING:
        raise RecordError(f"obs names must be non-empty strings of at most {MAX_STRING} chars")
    if len(shape) < 1 or shape[0] != steps + 1:
        raise RecordError(f"obs.{name} must have {steps + 1} rows for {steps} steps")


def check_aux(name: Any, dtype: str, shape: Sequence[int], calls: int) -> None:
    """One per-call `aux` array: a name, an allowed dtype, one row per call (`[K, ...]`)."""
    if type(name) is not str or not name or len(name) > MAX_STRING:
        raise RecordError(f"aux names must be non-empty strings of at most {MAX_STRING} chars")
    if dtype not in AUX_DTYPES:
        raise RecordError(f"aux.{name}: dtype {dtype} is not allowed "
                          f"({', '.join(sorted(AUX_DTYPES))})")
    if len(shape) < 1 or shape[0] != calls:
        raise RecordError(f"aux.{name} must have {calls} rows (one per call), got shape "
                          f"{tuple(shape)}")


def not_finite(name: str) -> str:
    return f"{name} must be finite floats (found NaN, inf or a non-float)"


def check_finite(named: Iterable[tuple[str, np.ndarray]]) -> None:
    """Raise `RecordError` naming the first array that holds a NaN or inf. A finite sum proves
    every element finite (any NaN or inf makes it NaN or inf); the exact check runs only when
    the sum is not finite (damage, or a sum that overflows)."""
    with np.errstate(all="ignore"):  # once: entering it costs as much as a small sum
        for name, arr in named:
            if not math.isfinite(_ADD(arr, axis=None)) and not np.isfinite(arr).all():
                raise RecordError(not_finite(name))
