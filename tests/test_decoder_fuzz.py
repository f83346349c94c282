"""Every decoder of bytes from outside raises only its own error type (issue 17): buffer records
(`RecordError`), console request bodies (`BodyError`) and bridge frames (`ProtocolError`, also
fuzzed in test_bridge_decoder.py). Small hypothesis runs here; `fleet bench fuzz` feeds each
decoder 1 M inputs."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import lz4.frame
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import fuzz
from buffers.check import check_record
from buffers.codec import RecordError, decode_chunk, encode_chunk
from buffers.records import EpisodeEnd
from fleet.console.bodies import MAX_BODY, MAX_DEPTH, BodyError, parse_body
from tests.chunks import make_chunk

# map keys as msgpack may deliver them: str and bytes mixed (they do not even sort together)
keys = st.text(max_size=8) | st.binary(max_size=4)
leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(
    max_size=20) | st.binary(max_size=40)
trees = st.recursive(leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    keys, c, max_size=4), max_leaves=12)
_CHUNK = make_chunk(np.random.default_rng(3), T=5, H=2, A=3, camera=True,
                    end=EpisodeEnd("success"))
# a flat image lz4 shrinks, so the record also holds a compressed observation (format v3)
RECORD = msgpack.unpackb(encode_chunk(dataclasses.replace(_CHUNK, obs={
    **_CHUNK.obs, "wrist": np.zeros((6, 16, 16, 3), np.uint8)})))
assert "lz4" in RECORD["obs"]["wrist"]


def framed(tree: object) -> bytes:
    return bytes(lz4.frame.compress(msgpack.packb(tree, use_bin_type=True), store_size=True))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(RECORD)), st.booleans(), keys, trees),
                min_size=1, max_size=3))
def test_records_with_odd_fields_raise_only_record_error(changes):
    """Fields replaced, array specs changed, names added (str or bytes): a chunk or a
    `RecordError`, which is what lets the buffer skip and report a bad record."""
    body = dict(RECORD)
    for field, inner, key, value in changes:
        if inner and isinstance(body[field], dict):
            body[field] = {**body[field], key: value}
        elif inner:
            body[key] = value
        else:
            body[field] = value
    for record in (framed(body), msgpack.packb(body, use_bin_type=True)):  # v2 and v3 envelopes
        assert_same_verdict(record)


def verdict(fn, record):
    try:
        fn(record)
    except RecordError as e:
        return str(e)
    return None


def assert_same_verdict(record: bytes) -> None:
    """Ingest's check (read off the msgpack map) and the full decode accept the same records;
    only an lz4 frame whose content differs from its claim gets past the check alone."""
    decoded, checked = verdict(decode_chunk, record), verdict(check_record, record)
    if decoded is None:
        assert checked is None, checked
    elif checked is None:
        assert "lz4 frame" in decoded, decoded


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_records_with_damaged_msgpack_raise_only_record_error(data):
    raw = bytearray(msgpack.packb(RECORD, use_bin_type=True))
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    with contextlib.suppress(RecordError):
        decode_chunk(bytes(lz4.frame.compress(bytes(raw[:cut]), store_size=True)))
    assert_same_verdict(bytes(raw[:cut]))


def test_a_record_whose_field_names_mix_str_and_bytes_is_refused():
    with pytest.raises(RecordError, match="unknown"):
        decode_chunk(framed({**RECORD, "zz": 1, b"yy": 2}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=10), c, max_size=5),
    max_leaves=30)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_json_bodies_give_an_object_or_body_error(value):
    try:
        body = parse_body(json.dumps(value).encode())
    except BodyError as e:
        assert e.status in (400, 413)
    else:
        assert isinstance(body, dict) and body == value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600) | st.text(alphabet='[]{}",:\\ 0123456789.eE-+aNnIt',
                                         max_size=300).map(str.encode))
def test_any_bytes_give_an_object_or_body_error(raw):
    with contextlib.suppress(BodyError):
        assert isinstance(parse_body(raw), dict)


@pytest.mark.parametrize("raw, status, words", [
    (b"[" * 3000, 400, "nests deeper"),  # json would raise RecursionError past ~1000
    (b'{"a": ' * 50 + b"1" + b"}" * 50, 400, "nests deeper"),
    (b'{"action": [1e999, 0]}', 400, "finite"),
    (b'{"action": [NaN]}', 400, "NaN"),
    (b'{"action": [' + b"9" * 400 + b"]}", 400, "out of range"),  # was a 502 from numpy
    (b'{"on": true, "on": false}', 400, "twice"),
    (b'["estop"]', 400, "object"),
    (b"\xff\xfe", 400, "UTF-8"),
    (b"x" * (MAX_BODY + 1), 413, "at most"),
])
def test_named_refusals(raw, status, words):
    with pytest.raises(BodyError, match=words) as e:
        parse_body(raw)
    assert e.value.status == status


def test_what_commands_send_is_accepted():
    assert parse_body(b"") == {}
    assert parse_body(b'{"action": [0.5, -1, 2e-3], "operator": "ana"}') == {
        "action": [0.5, -1, 0.002], "operator": "ana"}
    assert parse_body(b'{"text": "[[[{{{ not nesting"}') == {"text": "[[[{{{ not nesting"}
    assert parse_body(b'{"a": {"b": [1]}}') == {"a": {"b": [1]}}  # depth MAX_DEPTH
    assert MAX_DEPTH == 3
    with pytest.raises(BodyError) as e:
        parse_body(b"{}", "application/x-www-form-urlencoded")
    assert e.value.status == 415


def test_a_small_fuzz_bench_run_finds_nothing_unexpected():
    line = fuzz.run(True, per_decoder=1500, seed=7)
    assert line["unexpected"] == 0, line["unexpected_examples"]
    assert all(d["inputs"] == 1500 and d["accepted"] > 0 and d["refused"] > 0  # type: ignore
               for d in line["decoders"].values())  # type: ignore[attr-defined]
