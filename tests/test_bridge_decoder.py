"""The decoder under attack: forged size claims are refused before anything that size is
allocated, and fuzzed messages (random bytes, mutated frames, wrong-typed fields anywhere) end in
a `Message` or a `ProtocolError`, never another exception. `test_bridge_protocol.py` holds the
round trips and the named refusals."""

from __future__ import annotations

import tracemalloc

import lz4.frame
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.bridge import protocol
from actors.bridge.protocol import MAX_BODY_BYTES, Message, ProtocolError, decode, encode

OBS = {"state": np.arange(3, dtype=np.float32)}
SPEC = {"embodiment": "gym", "task": "Pendulum-v1", "obs_dim": 3, "action_dim": 1,
        "action_low": -1.0, "action_high": 1.0, "control_hz": 50.0, "client": "test/1",
        "obs_spec": {"state": {"dtype": "float32", "shape": [3]}}}
BODIES = {
    "register": SPEC,
    "observation": {"obs": OBS, "reward": -1.5, "success": False, "failed": False,
                    "truncated": True, "step": 3, "executed": np.zeros(1, np.float32)},
    "action": {"chunk": np.full((4, 1), 0.5, np.float32), "policy_version": 7},
    "reset": {"seed": 11},
    "heartbeat": {"holding": True, "estop": False},
    "ack": {"heartbeat_ms": 500, "lost_after_ms": 3000},
    "error": {"code": "watchdog", "message": "holding still"},
}


def frame(obj: object) -> bytes:
    """A msgpack object in an lz4 frame that states its size, as the protocol asks."""
    return bytes(lz4.frame.compress(msgpack.packb(obj, use_bin_type=True), store_size=True))


def raw(kind: str = "reset", **over: object) -> dict[str, object]:
    return {"v": 1, "kind": kind, "robot_id": "arm-1", "seq": 1, "reply_to": 0,
            "deadline_ms": 1000, "body": protocol._packable(BODIES[kind]), **over}


@pytest.mark.parametrize("field, value", [
    ("kind", ["reset"]), ("kind", {"a": 1}), ("v", True), ("v", 1.0), ("seq", 2.0),
    ("body", [1, 2]), ("robot_id", b"arm-1"),
])
def test_wrong_typed_header_fields_are_refused(field, value):
    with pytest.raises(ProtocolError):
        decode(frame({**raw(), field: value}))


@pytest.mark.parametrize("dtype", [{"a": 1}, ["float32"], 4, None])
def test_wrong_typed_dtypes_are_refused(dtype):
    body = {"chunk": {"dtype": dtype, "shape": [1, 1], "data": b"\0" * 4}, "policy_version": 0}
    with pytest.raises(ProtocolError, match="dtype"):
        decode(frame(raw("action", body=body)))
    spec = {**SPEC, "obs_spec": {"state": {"dtype": dtype, "shape": [3]}}}
    with pytest.raises(ProtocolError, match="dtype"):
        decode(frame(raw("register", body=spec)))


def peak_while(fn, data: bytes) -> tuple[int, Exception | None]:
    """Bytes allocated at the peak while `fn(data)` runs, and what it raised."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    err: Exception | None = None
    try:
        fn(data)
    except Exception as e:
        err = e
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, err


def forged_lz4(claim: int) -> bytes:
    """A real lz4 frame header claiming `claim` bytes, then one small block (lz4 refuses to
    close a frame whose size is wrong, so this one is never closed)."""
    comp = lz4.frame.LZ4FrameCompressor()
    return bytes(comp.begin(source_size=claim) + comp.compress(msgpack.packb(raw())))


@pytest.mark.parametrize("name, data", [
    ("lz4 claims 2 GiB", forged_lz4(2 << 30)),
    ("lz4 claims 4 MiB", forged_lz4(4 << 20)),
    ("msgpack bin claims 4 GiB", bytes(lz4.frame.compress(
        b"\x81\xa1v\xc6\xff\xff\xff\xf0" + b"x" * 64, store_size=True))),
    ("msgpack array claims 4 G items", bytes(lz4.frame.compress(
        b"\xdd\xff\xff\xff\xff" + b"\0" * 64, store_size=True))),
    ("shape claims 2^60 floats", frame(raw("action", body={"chunk": {
        "dtype": "float32", "shape": [2**30, 2**30], "data": b""}, "policy_version": 0}))),
])
def test_forged_sizes_are_refused_before_allocation(name, data):
    peak, err = peak_while(decode, data)
    assert isinstance(err, ProtocolError), (name, err)
    assert peak < 256 * 1024, f"{name}: {peak} bytes allocated before refusing"


def test_the_allocation_check_can_fail():
    peak, err = peak_while(lambda d: bytearray(8 << 20), b"")
    assert err is None and peak >= 8 << 20


def _allowed(data: bytes) -> int:
    """What decoding `data` may allocate at most: what lz4 could produce from it, twice (the
    frame and the msgpack copy), plus fixed overhead; never the claims inside it."""
    return 2 * min(protocol.MAX_RATIO * len(data) + 1024, MAX_BODY_BYTES) + 256 * 1024


def check_decoder(data: bytes) -> None:
    peak, err = peak_while(decode, data)
    assert err is None or isinstance(err, ProtocolError), repr(err)
    assert peak <= _allowed(data), f"{peak} bytes allocated for {len(data)} bytes of input"


VALID = [encode(Message(k, "arm-1", 3, b)) for k, b in sorted(BODIES.items())]
leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(
    max_size=20) | st.binary(max_size=40)
trees = st.recursive(leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.text(max_size=10) | st.binary(max_size=4), c, max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(data):
    check_decoder(data)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_fuzz_mutated_valid_messages(valid, draw):
    data = bytearray(valid)
    for _ in range(draw.draw(st.integers(1, 8))):
        i = draw.draw(st.integers(0, len(data) - 1))
        data[i] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(1, len(data)))
    check_decoder(bytes(data[:cut]))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(BODIES)), st.sampled_from(["v", "kind", "robot_id", "seq",
                                                         "reply_to", "deadline_ms", "body"]),
       trees)
def test_fuzz_wrong_typed_fields(kind, field, value):
    """Any value in any header field, in a frame that decompresses: refused or valid, nothing
    else (no TypeError or KeyError leaking from the schema checks)."""
    check_decoder(frame({**raw(kind), field: value}))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(BODIES)), st.data())
def test_fuzz_wrong_typed_body_fields(kind, draw):
    body = dict(raw(kind)["body"])  # type: ignore[call-overload]
    name = draw.draw(st.sampled_from(sorted(body)))
    body[name] = draw.draw(trees)
    check_decoder(frame(raw(kind, body=body)))
