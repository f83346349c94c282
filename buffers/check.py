"""Ingest's check of a record: every rule `decode_chunk` enforces, read off the msgpack map
without building the chunk or inflating its observations.

Example:

    head = check_record(data, max_bytes=1 << 20)   # raises RecordError where decode_chunk would
    meta = RecordMeta.checked(head, position)      # what the buffer's index keeps
    passed, refused = check_records(batch)         # the same per record, finiteness per batch

A record laid out like one already checked takes `buffers.layout`'s short way; anything else
(and every refusal) this module's full check.

What it reads: the header fields; each array's dtype and shape against its byte count (a
compressed observation's against the size its lz4 frame claims, so camera frames pass through
still compressed); the shapes against each other; finiteness of actions, log-probabilities,
values, rewards and float `aux` arrays (one numpy view of each column's bytes). The rules
themselves are `buffers.schema`'s, which `decode_chunk` applies too; only how an array is read
differs. The one thing it cannot see is an lz4 frame whose content falls short of or runs past
its claim: `decode_chunk` refuses that record when it is first read, and the buffer then drops
it as damage (`ReplayBuffer.get`). tests/test_decoder_fuzz.py holds the two to the same
verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from buffers.codec import (
    MAX_RECORD_BYTES,
    array_spec,
    body,
    frame_claim,
    raw_data,
    versioned,
)
from buffers.layout import RecordHead, fast, fast_run, file_layout, runs
from buffers.schema import (
    COLUMNS,
    FINITE,
    MAX_STRING,
    RecordError,
    check_aux,
    check_columns,
    check_finite,
    check_header,
    check_obs,
)

__all__ = ["RecordHead", "check_record", "check_records"]

_F32 = np.dtype("float32")
_ADD = np.add.reduce


def check_record(data: bytes, *, max_bytes: int = MAX_RECORD_BYTES) -> RecordHead:
    """Check a record as `decode_chunk` would, without decoding it; raises `RecordError`.

    A record laid out like one already checked (same fields, dtypes, shapes and horizon: a
    robot's stream) is checked against that record's layout (`_Layout`), without parsing its
    arrays; anything that does not match it exactly takes the full check, whose verdict is
    the only one ever raised."""
    got = fast(data, max_bytes)
    if got is not None:
        head, finite, dtype = got
        with np.errstate(all="ignore"):  # a finite sum proves every element finite
            if math.isfinite(_ADD(np.frombuffer(finite, dtype))):
                return head
    return _check_full(data, max_bytes)


def check_records(records: Sequence[bytes], *, max_bytes: int = MAX_RECORD_BYTES
                  ) -> tuple[list[tuple[int, RecordHead]], list[tuple[int, str]]]:
    """`check_record` over a batch: ((index, head) of each record that passes, (index,
    reason) of each refused), in batch order. The same verdicts; the finiteness of records
    that match a known layout is summed once for the whole batch, and a run of records of
    one robot's stream laid out alike is checked at once (`buffers.layout.fast_run`)."""
    heads: list[RecordHead | None] = []
    finite: dict[np.dtype, list[bytes]] = {}
    which: dict[np.dtype, list[int]] = {}
    for run in runs(records):
        if len(run) > 1:
            at_once = fast_run(run, max_bytes)
            if at_once is not None:
                heads += at_once
                continue
        for data in run:
            _fast_one(data, max_bytes, heads, finite, which)
    with np.errstate(all="ignore"):
        for dtype, parts in finite.items():
            if not math.isfinite(_ADD(np.frombuffer(b"".join(parts), dtype))):
                for i in which[dtype]:  # one of them is not finite: the full check finds it
                    heads[i] = None
    if None not in heads:  # the usual batch: every record known
        return list(enumerate(heads)), []  # type: ignore[arg-type]
    passed: list[tuple[int, RecordHead]] = []
    refused: list[tuple[int, str]] = []
    for i, known in enumerate(heads):
        if known is not None:
            passed.append((i, known))
            continue
        try:
            passed.append((i, _check_full(records[i], max_bytes)))
        except RecordError as e:
            refused.append((i, str(e)))
    return passed, refused


def _fast_one(data: bytes, max_bytes: int, heads: list[RecordHead | None],
              finite: dict[np.dtype, list[bytes]], which: dict[np.dtype, list[int]]) -> None:
    """`fast` on one record: its head (None: the full check decides) goes on `heads`, the
    bytes whose finiteness is left to check on `finite` (by dtype), its index on `which`."""
    got = fast(data, max_bytes)
    if got is None:
        heads.append(None)
        return
    head, values, dtype = got
    parts = finite.get(dtype)
    if parts is None:
        parts = finite[dtype] = []
        which[dtype] = []
    parts.append(values)
    which[dtype].append(len(heads))
    heads.append(head)


def _check_full(data: bytes, max_bytes: int) -> RecordHead:
    """Every rule, off the record's whole msgpack map; learns the record's layout."""
    b = versioned(body(data, max_bytes))
    end = b["episode_end"]
    check_header(b, end)
    specs = {k: array_spec(k, b[k]) for k in COLUMNS}
    for name, (_, _, size) in specs.items():
        raw_data(name, b[name], size)
    steps = check_columns(specs, b["horizon"])
    budget = [max_bytes]
    for name, spec in b["obs"].items():
        field = f"obs.{name[:MAX_STRING]}"
        _, shape, size = array_spec(field, spec, obs=True)
        if "lz4" in spec:
            frame_claim(field, spec, size, budget)
        else:
            raw_data(field, spec, size)
        check_obs(name, shape, steps)
    if "aux" in b:
        _check_aux(b["aux"], specs["logp"][1][0])
    _check_finite(b, [specs[name][0] for name in FINITE])
    intervened = b["intervened"]["data"]
    if type(data) is bytes:
        file_layout(data, b, steps, max_bytes - budget[0])
    return RecordHead((b["robot_id"], b["episode_id"], b["chunk_seq"]), b["task"], b["group"],
                      b["policy_version"], steps, len(intervened) - intervened.count(0),
                      None if end is None else end[0])


def _check_aux(aux: dict[str, Any], calls: int) -> None:
    for name, spec in aux.items():
        field = f"aux.{name[:MAX_STRING]}"
        dtype, shape, size = array_spec(field, spec)
        data = raw_data(field, spec, size)
        check_aux(name, dtype.name, shape, calls)
        if dtype.kind == "f":
            check_finite([(f"aux.{name}", np.frombuffer(data, dtype))])


def _check_finite(b: dict[str, Any], dtypes: list[np.dtype]) -> None:
    """Every value of the `FINITE` columns (their dtypes already checked to be floats)."""
    if dtypes.count(_F32) == len(FINITE):  # the usual case: one sum over them all
        joined = np.frombuffer(b"".join([b[name]["data"] for name in FINITE]), _F32)
        with np.errstate(all="ignore"):  # a finite sum proves every element finite
            if math.isfinite(_ADD(joined)):
                return
    check_finite([(name, np.frombuffer(b[name]["data"], dtype))
                  for name, dtype in zip(FINITE, dtypes, strict=True)])
