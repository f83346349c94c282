"""The bridge wire format: round trips, refusals before use, and a fuzzed decoder."""

from __future__ import annotations

import ast
from pathlib import Path

import lz4.frame
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.bridge import protocol as P
from actors.bridge.protocol import Message, ProtocolError, decode, encode
from actors.bridge.safety import Safety, SafetyConfig

ROOT = Path(__file__).resolve().parent.parent


def register_body() -> dict:
    return {"embodiment": "gym", "task": "pendulum", "obs_dim": 4, "action_dim": 1,
            "action_low": -1.0, "action_high": 1.0, "control_hz": 50.0, "client": "test/1",
            "obs_spec": {"state": {"dtype": "float32", "shape": [4]}}}


def obs_body(state: np.ndarray) -> dict:
    return {"obs": {"state": state}, "reward": 1.0, "success": False, "failed": False,
            "truncated": False, "step": 0, "executed": np.zeros(1, np.float32)}


def raw_message(**override: object) -> bytes:
    """A message packed by hand, so tests can break it in ways `encode` refuses to."""
    raw = {"v": 1, "kind": "heartbeat", "robot_id": "arm-1", "seq": 1, "reply_to": 0,
           "deadline_ms": 100, "body": {"holding": True, "estop": False}, **override}
    return lz4.frame.compress(msgpack.packb(raw, use_bin_type=True))


def test_every_kind_round_trips() -> None:
    state = np.arange(4, dtype=np.float32)
    bodies = {"register": register_body(), "observation": obs_body(state),
              "action": {"chunk": np.ones((8, 3), np.float32), "policy_version": 12},
              "reset": {"seed": 7}, "heartbeat": {"holding": True, "estop": False},
              "error": {"code": "watchdog", "message": "held"}}
    for kind, body in bodies.items():
        msg = decode(encode(Message(kind, "arm-1", 5, body, reply_to=4, deadline_ms=250)))
        assert (msg.kind, msg.robot_id, msg.seq, msg.reply_to, msg.deadline_ms) == (
            kind, "arm-1", 5, 4, 250)
    got = decode(encode(Message("observation", "a", 1, obs_body(state))))
    np.testing.assert_array_equal(got.body["obs"]["state"], state)
    got = decode(encode(Message("action", "a", 1, bodies["action"])))
    assert got.body["chunk"].shape == (8, 3) and got.body["chunk"].dtype == np.float32
    assert decode(encode(Message("reset", "a", 1, {"seed": None}))).body["seed"] is None


def test_a_hand_packed_message_decodes() -> None:
    """The reference for other-language clients: no encode() involved."""
    assert decode(raw_message()).body == {"holding": True, "estop": False}


@pytest.mark.parametrize("override, words", [
    ({"v": 2}, "version"), ({"kind": "exec"}, "unknown kind"), ({"seq": 0}, "seq"),
    ({"seq": True}, "seq"), ({"deadline_ms": 0}, "deadline_ms"),
    ({"deadline_ms": 10**9}, "deadline_ms"), ({"robot_id": ""}, "robot_id"),
    ({"robot_id": "x" * 500}, "robot_id"), ({"body": {"holding": 1, "estop": False}}, "holding"),
    ({"body": {"holding": True}}, "fields"), ({"extra": 1}, "fields"),
])
def test_schema_refusals(override: dict, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        decode(raw_message(**override))


def nan_chunk() -> dict:
    chunk = np.zeros((2, 2), np.float32)
    chunk[1, 0] = np.nan
    return P.pack_array(chunk)


@pytest.mark.parametrize("body, words", [
    ({"chunk": nan_chunk(), "policy_version": 0}, "NaN"),
    ({"chunk": {"dtype": "object", "shape": [1, 1], "data": b"x"}, "policy_version": 0},
     "not allowed"),
    ({"chunk": {"dtype": "float32", "shape": [1000000, 1000000], "data": b"\0" * 8},
      "policy_version": 0}, "does not hold"),
    ({"chunk": P.pack_array(np.zeros((2, 2), np.float64)), "policy_version": 0}, "float32"),
    ({"chunk": P.pack_array(np.zeros((2, 2), np.float32)), "policy_version": -1}, "version"),
])
def test_action_refusals(body: dict, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        decode(raw_message(kind="action", body=body))


def test_nan_reward_and_nan_encode_are_refused() -> None:
    body = obs_body(np.zeros(4, np.float32))
    with pytest.raises(ProtocolError, match="finite"):
        encode(Message("observation", "a", 1, {**body, "reward": float("nan")}))
    with pytest.raises(ProtocolError, match="NaN"):
        encode(Message("observation", "a", 1, {**body, "obs": {"s": np.full(2, np.inf)}}))


def test_size_limits_hold_before_allocation() -> None:
    big = b"\0" * (P.MAX_WIRE_BYTES + 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(big)
    bomb = lz4.frame.compress(b"\0" * (4 << 20))  # 16 KB that claim 4 MiB
    with pytest.raises(ProtocolError, match="size limit"):
        decode(bomb, max_body=1 << 20)
    with pytest.raises(ProtocolError, match="follow"):
        decode(raw_message() + b"junk")
    with pytest.raises(ProtocolError, match="lz4"):
        decode(b"not an lz4 frame at all")


def test_ext_types_and_pickles_are_refused() -> None:
    ext = lz4.frame.compress(msgpack.packb(msgpack.ExtType(1, b"payload")))
    with pytest.raises(ProtocolError):
        decode(ext)
    import pickle

    with pytest.raises(ProtocolError):
        decode(lz4.frame.compress(pickle.dumps({"kind": "heartbeat"})))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_only_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_messages_decode_or_raise_protocol_error(data: st.DataObject) -> None:
    packed = msgpack.packb({"v": 1, "kind": "action", "robot_id": "a", "seq": 3, "reply_to": 0,
                            "deadline_ms": 9, "body": {"chunk": P.pack_array(
                                np.ones((4, 2), np.float32)), "policy_version": 1}})
    raw = bytearray(packed)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        msg = decode(lz4.frame.compress(bytes(raw)))
    except ProtocolError:
        return
    assert np.isfinite(msg.body["chunk"]).all()  # whatever got through obeys the schema


def test_robot_side_files_import_only_what_a_robot_has() -> None:
    allowed = {"numpy", "zmq", "msgpack", "lz4", "gymnasium", "__future__", "collections",
               "dataclasses", "logging", "math", "queue", "threading", "time", "typing"}
    for name in ("protocol.py", "safety.py", "client.py"):
        tree = ast.parse((ROOT / "actors" / "bridge" / name).read_text())
        found = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names}
        found |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        assert found <= allowed, f"{name} imports {found - allowed}"


# ---- safety, unit level (the socket-level checks are in test_bridge.py) ----

def test_estop_starts_engaged_and_arming_discards_the_queue() -> None:
    s = Safety(SafetyConfig(control_hz=10.0), action_dim=2)
    assert s.engaged and s.push(np.ones((3, 2), np.float32), now=0.0) is None
    assert s.next_action(0.0) is None and s.queued == 3
    assert s.arm() == 3 and s.queued == 0 and s.next_action(0.0) is None
    s.push(np.ones((1, 2), np.float32), now=0.0)
    assert s.next_action(0.0) is not None
    s.engage("button")
    s.push(np.ones((1, 2), np.float32), now=0.0)
    assert s.next_action(0.0) is None  # latched: stays stopped until armed again


def test_watchdog_drops_stale_actions_and_limits_clip() -> None:
    s = Safety(SafetyConfig(control_hz=10.0, watchdog_periods=2, max_delta=0.5), action_dim=1)
    s.arm()
    s.push(np.array([[5.0], [5.0], [-5.0]], np.float32), now=0.0, tag=9)
    assert s.next_action(0.0)[0] == pytest.approx(0.5)  # clipped to 1, then rate-limited
    assert s.next_action(0.1)[0] == pytest.approx(1.0)
    assert s.next_action(10.0) is None and s.holding and s.queued == 0 and s.tripped == 9
    assert s.push(np.array([[np.nan]], np.float32), now=0.0) is not None
    assert s.push(np.zeros((1, 3), np.float32), now=0.0) is not None
    assert s.stats.refused_chunks == 2
