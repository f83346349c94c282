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
from buffers import check, codec, layout
from buffers.check import check_record
from buffers.codec import MAX_RECORD_BYTES, RecordError, decode_chunk, encode_chunk
from buffers.records import EpisodeEnd
from fleet.console.bodies import MAX_BODY, MAX_DEPTH, BodyError, parse_body
from tests.chunks import make_chunk
from tests.test_codec import _claiming

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


# --- ingest's layout fast path (buffers.check): the same verdicts as the full check ---------
def _stream_records() -> list[bytes]:
    """Records as one robot sends them: a state stream, a camera stream whose frames lz4
    shrinks (so each record's length differs), and a stream with float and int `aux`."""
    rng = np.random.default_rng(5)
    out = []
    for seq in range(3):
        chunk = make_chunk(rng, T=8, H=4, A=2, D=5, chunk_seq=seq)
        out.append(encode_chunk(chunk))
        flat = np.full((9, 16, 16, 3), seq, np.uint8)
        out.append(encode_chunk(dataclasses.replace(chunk, episode_id="cam", obs={
            **chunk.obs, "wrist": flat, "front": flat})))
        out.append(encode_chunk(dataclasses.replace(chunk, episode_id="aux", aux={
            "path": rng.standard_normal((2, 3)).astype(np.float32),
            "ids": np.arange(2, dtype=np.int64)})))
    return out


STREAM = _stream_records()


def fast_and_full(record: bytes):
    """(check_record's verdict, the full check's): a head or the error's text."""
    out = []
    for fn in (check_record, lambda r: check._check_full(r, MAX_RECORD_BYTES)):
        try:
            out.append(fn(record))
        except RecordError as e:
            out.append(str(e))
    return out


def test_records_of_a_stream_take_the_layout_path_and_agree_with_the_full_check():
    for record in STREAM:
        check_record(record)  # the first of each stream files its layout
    for record in STREAM:
        assert layout.fast(record, MAX_RECORD_BYTES) is not None
        filed = next(lay for lay in layout._LAYOUTS[record[:layout._KEY_BYTES]]
                     if lay.parse(record, MAX_RECORD_BYTES) is not None)
        assert filed.headers  # and its header up to the stamps (episode, seq, version, time)
        fast, full = fast_and_full(record)
        assert fast == full and isinstance(fast, layout.RecordHead)
        chunk = decode_chunk(record)
        assert fast.key == chunk.key and fast.num_steps == chunk.num_steps
        assert fast.intervened == int(chunk.intervened.sum())
    # a record laid out as the encoder wrote before (header first) still checks, the full way
    old = msgpack.unpackb(STREAM[0])
    header_first = msgpack.packb({k: old[k] for k in sorted(old, key=lambda k: k in (
        "obs", "aux") or k in RECORD_COLUMNS)}, use_bin_type=True)
    assert layout.fast(header_first, MAX_RECORD_BYTES) is None
    assert fast_and_full(header_first)[0] == check_record(STREAM[0])


RECORD_COLUMNS = ("action", "policy_action", "logp", "value", "reward", "success", "intervened")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_stream_records_get_the_full_checks_verdict(data):
    """Bytes changed anywhere (the skeleton, the arrays, the header at the end), cut short or
    grown: the layout path accepts only what the full check accepts, with the same head."""
    for record in STREAM:
        check_record(record)
    raw = bytearray(data.draw(st.sampled_from(STREAM)))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.sampled_from(["any", "start", "end"]))
        lo, hi = {"any": (0, len(raw) - 1), "start": (0, min(400, len(raw) - 1)),
                  "end": (max(0, len(raw) - 200), len(raw) - 1)}[where]
        raw[data.draw(st.integers(lo, hi))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(1, len(raw)))] + data.draw(st.binary(max_size=8))
    fast, full = fast_and_full(bytes(raw))
    assert fast == full
    assert_same_verdict(bytes(raw))


def test_a_batch_refuses_its_non_finite_record_alone():
    for record in STREAM:
        check_record(record)
    chunk = decode_chunk(STREAM[3])
    action = chunk.action.copy()
    action[1, 0] = np.nan
    body = msgpack.unpackb(STREAM[3])
    body["action"]["data"] = action.tobytes()
    bad = msgpack.packb(body, use_bin_type=True)
    assert layout.fast(bad, MAX_RECORD_BYTES) is not None  # its layout matches; only NaN
    passed, refused = check.check_records([*STREAM[:3], bad, *STREAM[4:]])
    assert [i for i, _ in passed] == [i for i in range(len(STREAM)) if i != 3]
    assert refused == [(3, "action must be finite floats (found NaN, inf or a non-float)")]
    assert [h for _, h in passed] == [check_record(r) for i, r in enumerate(STREAM) if i != 3]


def test_every_odd_header_value_and_frame_claim_gets_the_full_checks_verdict():
    """Each header field (the part the layout path unpacks and checks on its own) given each
    of the fuzzer's odd values, and a camera frame that claims another size: same verdicts."""
    for record in STREAM:
        check_record(record)
    odd = [*fuzz._VALUES, -1, 2**63, 2**64 - 1, 4, 3, 1.5, True, ["success", "env"],
           ["success", "nobody"], ["success"], ("x" * 257), "é" * 256]
    seen = set()
    for record in (STREAM[0], STREAM[1]):
        body = msgpack.unpackb(record)
        for field in ("robot_id", "embodiment", "task", "episode_id", "chunk_seq",
                      "policy_version", "wall_time", "horizon", "instruction", "group",
                      "episode_end"):
            for value in odd:
                changed = msgpack.packb({**body, field: value}, use_bin_type=True)
                fast, full = fast_and_full(changed)
                assert fast == full, (field, value)
                seen.add(isinstance(fast, str))
    assert seen == {True, False}  # both verdicts were reached
    body = msgpack.unpackb(STREAM[1])
    wrist = body["obs"]["wrist"]
    for frame in (lz4.frame.compress(b"\0" * 100, store_size=True),
                  lz4.frame.compress(b"\0" * 100, store_size=False), b"\4\x22\x4d\x18", b""):
        changed = msgpack.packb({**body, "obs": {**body["obs"], "wrist": {**wrist, "lz4": frame}}},
                                use_bin_type=True)
        fast, full = fast_and_full(changed)
        assert fast == full and isinstance(fast, str), frame


def test_a_version_1_map_is_never_taken_as_a_layout():
    """Version 1 had no `group` (decoding gives ""): a bare v1 map that carries one anyway
    must not teach ingest a layout that would read the group from its bytes."""
    body = msgpack.unpackb(STREAM[0])
    v1 = msgpack.packb({**body, "v": 1, "group": "r/1"}, use_bin_type=True)
    for _ in range(2):
        fast, full = fast_and_full(v1)
        assert fast == full and fast.group == "" == decode_chunk(v1).group


def same_chunk(a, b) -> bool:
    """Two decoded chunks hold the same fields, arrays equal in dtype, shape and values."""
    def same(x, y):
        if isinstance(x, np.ndarray):
            return (isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape
                    and np.array_equal(x, y) and not x.flags.writeable and not y.flags.writeable)
        if isinstance(x, dict):
            return list(x) == list(y) and all(same(x[k], y[k]) for k in x)
        return type(x) is type(y) and x == y
    return all(same(getattr(a, f.name), getattr(b, f.name))
               for f in dataclasses.fields(a))


def test_a_stream_record_decodes_from_its_layout_to_the_same_chunk():
    for record in STREAM:
        check_record(record)
    ended = msgpack.packb({**msgpack.unpackb(STREAM[0]), "episode_end": ["truncated", "human"]},
                          use_bin_type=True)
    for record in [*STREAM, ended]:
        by_layout = layout.decode_by_layout(record, MAX_RECORD_BYTES)
        body = msgpack.unpackb(record)
        plain = codec._from_body(body, MAX_RECORD_BYTES, True)  # the decoder's own way
        assert same_chunk(decode_chunk(record), plain)
        if any("lz4" in spec for spec in body["obs"].values()):  # decode_chunk inflates them
            assert by_layout is None
        else:
            assert by_layout is not None and same_chunk(by_layout, plain)
    # a camera frame whose header claims its shape's bytes but which holds fewer: ingest's
    # check cannot see it (buffers/layout.py), decoding refuses it
    body = msgpack.unpackb(STREAM[1])
    size = lz4.frame.get_frame_info(body["obs"]["wrist"]["lz4"])["content_size"]
    liar = _claiming(lz4.frame.compress(b"\0" * (size - 48), store_size=True), size)
    record = msgpack.packb({**body, "obs": {**body["obs"], "wrist": {
        **body["obs"]["wrist"], "lz4": liar}}}, use_bin_type=True)
    assert layout.fast(record, MAX_RECORD_BYTES) is not None
    assert layout.decode_by_layout(record, MAX_RECORD_BYTES) is None
    with pytest.raises(RecordError, match="lz4 frame"):
        decode_chunk(record)


def _run_records() -> list[bytes]:
    """A robot's batch: records of one length and layout (`buffers.layout.fast_run`), with
    interventions, numbers of each msgpack width (seq 5 and 200, versions 0 and 70000)."""
    rng = np.random.default_rng(11)
    out = []
    for seq, version in ((5, 0), (6, 1), (7, 0), (200, 70000), (201, 70000), (202, 70001)):
        out.append(encode_chunk(make_chunk(rng, T=8, H=4, A=2, D=5, episode_id="run",
                                           chunk_seq=seq, policy_version=version,
                                           robot_id="run-robot")))
    return out


RUN = _run_records()


def per_record_verdicts(records: list[bytes]) -> list[object]:
    out: list[object] = []
    for record in records:
        try:
            out.append(check._check_full(record, MAX_RECORD_BYTES))
        except RecordError as e:
            out.append(str(e))
    return out


def batch_verdicts(records: list[bytes]) -> list[object]:
    passed, refused = check.check_records(records)
    verdicts: dict[int, object] = {**dict(passed), **dict(refused)}
    return [verdicts[i] for i in range(len(records))]


def test_a_run_of_a_stream_is_checked_at_once_with_the_same_heads():
    for record in RUN:
        check_record(record)  # files the layout and the robot's header
    calls = []
    for first, second in ((0, 3), (3, 6)):  # one msgpack width for seq and version in each
        run = RUN[first:second]
        assert len({len(r) for r in run}) == 1
        for lay in layout._LAYOUTS[run[0][:layout._KEY_BYTES]]:
            heads = lay.parse_run(run, MAX_RECORD_BYTES)
            if heads is not None:
                calls.append(heads)
        assert batch_verdicts(run) == per_record_verdicts(run)
    assert [h for heads in calls for h in heads] == per_record_verdicts(RUN)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_damaged_record_in_a_run_gets_its_own_verdict_and_the_rest_theirs(data):
    """A byte changed anywhere in one record of a run (its arrays, skeleton, stamps: a NaN, a
    negative or too wide number, another episode), or the stamps' values swapped for odd
    ones: every record gets the verdict it gets alone."""
    for record in RUN:
        check_record(record)
    run = list(RUN[:3] if data.draw(st.booleans()) else RUN[3:])
    k = data.draw(st.integers(0, len(run) - 1))
    if data.draw(st.booleans()):
        raw = bytearray(run[k])
        for _ in range(data.draw(st.integers(1, 3))):
            where = data.draw(st.sampled_from(["any", "end"]))
            lo = 0 if where == "any" else len(raw) - 60
            raw[data.draw(st.integers(lo, len(raw) - 1))] = data.draw(st.integers(0, 255))
        run[k] = bytes(raw)
    else:
        body = msgpack.unpackb(run[k])
        field = data.draw(st.sampled_from(["episode_id", "chunk_seq", "policy_version",
                                           "wall_time"]))
        body[field] = data.draw(st.sampled_from(
            [*fuzz._VALUES, -1, 2**63, 2**64 - 1, 127, 128, float("nan"), float("inf"), 1.5,
             "run", "ruN", "", 3]))
        run[k] = msgpack.packb(body, use_bin_type=True)
    assert batch_verdicts(run) == per_record_verdicts(run)


def test_a_batch_with_other_buffer_types_gets_the_same_verdicts():
    """A memoryview or bytearray among a run's records: each is checked alone, same heads."""
    for record in RUN:
        check_record(record)
    mixed = [RUN[0], memoryview(RUN[1]), bytearray(RUN[2])]
    assert batch_verdicts(mixed) == per_record_verdicts(list(RUN[:3]))
