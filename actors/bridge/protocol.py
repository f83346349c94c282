"""The bridge wire format: one ZeroMQ frame = one lz4 frame holding one msgpack map.

Example:

    data = encode(Message("heartbeat", "arm-1", seq=7, body={"holding": True, "estop": False}))
    msg = decode(data)        # raises ProtocolError on anything malformed, before using it

Every message is `{"v", "kind", "robot_id", "seq", "reply_to", "deadline_ms", "body"}`; each kind
has an exact body schema (`docs/protocol.md`). Decoding trusts nothing: the wire size, the size
the lz4 frame claims (decompressed with a hard `max_length`), msgpack lengths, no extension types,
dtypes from an allowlist, shapes against byte counts, and NaN/inf anywhere in floats. Nothing is
unpickled. Imports only numpy, msgpack and lz4, so robot computers can copy this file as it is.

Decoding runs under a budget fixed before any work (`BudgetError` when a message breaks it): the
receiver says how many decompressed bytes the sender may send (`max_body`: `body_limit(...)` from
what the sender declared, `ENVELOPE_BYTES` for messages that carry no arrays), and no message
holds more than `MAX_CONTAINERS` maps and arrays, maps of more than `MAX_MAP` entries or arrays
of more than `MAX_ARRAY_DIMS`. So a message costs at most about `max_body` bytes of copying, and
a 36 KB frame can no longer unfold into millions of objects. Every failure is a `ProtocolError`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import lz4.frame
import msgpack
import numpy as np

VERSION = 1
MAX_WIRE_BYTES = 1 << 20  # one message as sent (lz4-compressed)
MAX_BODY_BYTES = 8 << 20  # one message decompressed
MAX_STRING = 128
MAX_RATIO = 255  # lz4's best case: one length byte stands for at most 255 output bytes
MAX_ARRAY_DIMS = 4
MAX_OBS_KEYS = 16
MAX_HORIZON = 1024
MAX_ACTION_DIM = 256
MAX_DEADLINE_MS = 60_000
MAX_MAP = 16  # the most fields in any map: 16 observation names; the header has 7
MAX_CONTAINERS = 64  # maps and arrays in one message; the most a valid one needs is 37
ENVELOPE_BYTES = 16 << 10  # everything in a message but its array data, at the longest
DTYPES = frozenset({"float32", "float64", "uint8", "int32", "int64", "bool"})
ROBOT_KINDS = frozenset({"register", "observation", "heartbeat", "error"})  # robot -> gateway
GATEWAY_KINDS = frozenset({"ack", "reset", "action", "heartbeat", "error"})  # gateway -> robot
KINDS = ROBOT_KINDS | GATEWAY_KINDS
HEADER = frozenset({"v", "kind", "robot_id", "seq", "reply_to", "deadline_ms", "body"})


class ProtocolError(ValueError):
    """A message that breaks the format or its kind's schema. The message says which part."""


class BudgetError(ProtocolError):
    """A message bigger or more nested than its receiver allows; refused before the work."""


@dataclasses.dataclass(frozen=True)
class Message:
    """One bridge message. `seq` counts up from 1 per sender; `reply_to` is the `seq` of the
    message this one answers (0: none); `deadline_ms` is how long, from receipt, the message may
    still be acted on (and how long its sender waits for a reply)."""

    kind: str
    robot_id: str
    seq: int
    body: dict[str, Any]
    reply_to: int = 0
    deadline_ms: int = 1000


# ---- encoding ----------------------------------------------------------------------------------

def pack_array(a: np.ndarray) -> dict[str, Any]:
    """`{"dtype", "shape", "data"}` with `data` the C-order little-endian bytes."""
    a = np.ascontiguousarray(a)
    if a.dtype.name not in DTYPES:
        raise ProtocolError(f"dtype {a.dtype} is not allowed ({', '.join(sorted(DTYPES))})")
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.astype(a.dtype.newbyteorder(
        "<"), copy=False).tobytes()}


def _packable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return pack_array(value)
    if isinstance(value, dict):
        return {k: _packable(v) for k, v in value.items()}
    return value


def encode(msg: Message) -> bytes:
    """Validate `msg` against its kind's schema, then pack and compress it."""
    raw = {"v": VERSION, "kind": msg.kind, "robot_id": msg.robot_id, "seq": msg.seq,
           "reply_to": msg.reply_to, "deadline_ms": msg.deadline_ms, "body": _packable(msg.body)}
    _validate({**raw, "body": dict(raw["body"])})  # the sender obeys the receiver's schema
    data = bytes(lz4.frame.compress(msgpack.packb(raw, use_bin_type=True), compression_level=0,
                                    store_size=True))
    if len(data) > MAX_WIRE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_WIRE_BYTES}")
    return data


# ---- decoding ----------------------------------------------------------------------------------

def decode(data: bytes, *, max_wire: int = MAX_WIRE_BYTES, max_body: int = MAX_BODY_BYTES
           ) -> Message:
    """Bytes from the network -> a `Message` whose body passed its kind's schema."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"a message must be bytes, got {type(data).__name__}")
    if len(data) > max_wire:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_wire}")
    raw = _unpack(_decompress(bytes(data), max_body), max_body)
    _validate(raw)
    return Message(raw["kind"], raw["robot_id"], raw["seq"], raw["body"], raw["reply_to"],
                   raw["deadline_ms"])


def body_limit(arrays: dict[str, Any], action_dim: int = 0) -> int:
    """The decompressed bytes a message may hold that carries `arrays` (name -> `{"dtype",
    "shape"}`, as in a `register`'s `obs_spec`) and an executed action of `action_dim` floats:
    their data plus `ENVELOPE_BYTES`, at most `MAX_BODY_BYTES`.

        gateway: decode(frame, max_body=body_limit(link.obs_spec, link.spec.action_dim))
        robot:   decode(frame, max_body=body_limit({}, MAX_HORIZON * action_dim))
    """
    data = 4 * action_dim
    for item in arrays.values():
        data += math.prod(item["shape"]) * np.dtype(item["dtype"]).itemsize
        if data > MAX_BODY_BYTES:
            return MAX_BODY_BYTES
    return min(MAX_BODY_BYTES, ENVELOPE_BYTES + data)


def _decompress(data: bytes, max_body: int) -> bytes:
    # The frame header must state the content size; a claim past the limit is refused before
    # anything is allocated, and decompression stops at the claim (headers lie, FACTS.md).
    try:
        size = lz4.frame.get_frame_info(data)["content_size"]
        if size == 0:
            raise ProtocolError("lz4 frame does not state its content size (required)")
        if size > max_body:
            raise BudgetError(f"lz4 frame claims {size} bytes, past the size limit of "
                              f"{max_body}")
        if size > MAX_RATIO * len(data) + 1024:  # lz4 cannot expand more: the claim is a lie
            raise ProtocolError(f"lz4 frame of {len(data)} bytes claims {size} bytes")
        dec = lz4.frame.LZ4FrameDecompressor()
        raw = dec.decompress(data, max_length=size)
    except RuntimeError as e:
        raise ProtocolError(f"bad lz4 frame: {e}") from e
    if not dec.eof or len(raw) != size:
        raise ProtocolError(f"lz4 frame is truncated or its {size} bytes claimed are wrong")
    if dec.unused_data:
        raise ProtocolError(f"{len(dec.unused_data)} bytes follow the lz4 frame")
    return bytes(raw)


_OPENERS = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])  # every map or array starts so


def _unpack(raw: bytes, max_body: int) -> Any:
    # unpackb, not an Unpacker: an Unpacker allocates a 1 MiB read buffer for every message.
    # A hook counts each map and array as it is finished and stops at MAX_CONTAINERS, so the
    # work is bounded by the budget whatever the bytes say (the C unpacker's own stack bounds
    # how deep it goes before the first one finishes). The hook doubles msgpack's time, so a
    # small message whose bytes cannot open more than MAX_CONTAINERS maps and arrays (counted
    # in C: the bytes that could start one) is unpacked without it.
    options: dict[str, Any] = {}
    if len(raw) > 65536 or len(raw) - len(raw.translate(None, _OPENERS)) > MAX_CONTAINERS:
        containers = 0

        def count(obj: Any) -> Any:
            nonlocal containers
            containers += 1
            if containers > MAX_CONTAINERS:
                raise BudgetError(f"more than {MAX_CONTAINERS} maps and arrays in one message")
            return obj

        options = {"list_hook": count, "object_hook": count}
    try:
        return msgpack.unpackb(raw, raw=False, max_str_len=4096, max_bin_len=max_body,
                               max_array_len=MAX_ARRAY_DIMS, max_map_len=MAX_MAP,
                               max_ext_len=0, strict_map_key=True, **options)
    except BudgetError:
        raise
    except msgpack.ExtraData as e:
        raise ProtocolError("more than one msgpack object in a message") from e
    except (ValueError, TypeError, msgpack.OutOfData, msgpack.FormatError,
            msgpack.StackError) as e:
        raise ProtocolError(f"bad msgpack: {e}") from e


# ---- schema ------------------------------------------------------------------------------------

def _fail(where: str, what: str) -> ProtocolError:
    return ProtocolError(f"{where}: {what}")


def check_str(where: str, v: Any, *, empty: bool = False) -> str:
    if not isinstance(v, str) or len(v) > MAX_STRING or (not empty and not v):
        raise _fail(where, f"must be a {'' if empty else 'non-empty '}string of at most "
                           f"{MAX_STRING} characters")
    return v


def check_int(where: str, v: Any, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _fail(where, f"must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def check_float(where: str, v: Any) -> float:
    if not isinstance(v, float | int) or isinstance(v, bool) or not math.isfinite(v):
        raise _fail(where, f"must be a finite number, got {v!r}")
    return float(v)


def check_bool(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(where, f"must be true or false, got {v!r}")
    return v


def check_fields(where: str, v: Any, fields: set[str]) -> dict[str, Any]:
    if not isinstance(v, dict) or set(v) != fields:
        got = sorted(v, key=repr) if isinstance(v, dict) else type(v).__name__
        raise _fail(where, f"needs exactly the fields {sorted(fields)}, got {got}")
    return v


def unpack_array(where: str, spec: Any) -> np.ndarray:
    """`{"dtype", "shape", "data"}` -> a read-only array; floats must be finite."""
    check_fields(where, spec, {"dtype", "shape", "data"})
    dtype, shape, data = spec["dtype"], spec["shape"], spec["data"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise _fail(where, f"dtype {dtype!r} is not allowed ({', '.join(sorted(DTYPES))})")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_ARRAY_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31
                       for d in shape)):
        raise _fail(where, f"bad shape {shape!r} (1 to {MAX_ARRAY_DIMS} sizes >= 0)")
    dt = np.dtype(dtype).newbyteorder("<")
    if not isinstance(data, bytes) or len(data) != math.prod(shape) * dt.itemsize:
        raise _fail(where, f"data does not hold shape {shape} of {dtype}")
    arr = np.frombuffer(data, dtype=dt).reshape(shape).astype(dtype, copy=False)
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        raise _fail(where, "holds NaN or inf")
    return arr


def _obs_spec(where: str, v: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(v, dict) or not 1 <= len(v) <= MAX_OBS_KEYS:
        raise _fail(where, f"must map 1 to {MAX_OBS_KEYS} names to {{dtype, shape}}")
    for name, item in v.items():
        check_str(f"{where} key", name)
        check_fields(f"{where}.{name}", item, {"dtype", "shape"})
        if not isinstance(item["dtype"], str) or item["dtype"] not in DTYPES:
            raise _fail(f"{where}.{name}", f"dtype {item['dtype']!r} is not allowed")
        shape = item["shape"]
        if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_ARRAY_DIMS
                or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d < 2**20
                           for d in shape)):
            raise _fail(f"{where}.{name}", f"bad shape {shape!r}")
    return v


SPEC_FIELDS = {"embodiment", "task", "obs_dim", "action_dim", "action_low", "action_high",
               "control_hz", "obs_spec", "client"}
# How a robot runs the actions it is sent (an optional `register` field; absent means "step"):
# "step": one action per `action` message, a round trip per control step (the fleet waits for
# each observation before it sends the next action); "chunk": the policy's whole chunk in one
# message, run open loop at the control rate, H observations back.
EXECUTIONS = ("step", "chunk")


def _register(b: dict[str, Any]) -> None:
    check_fields("register", b, SPEC_FIELDS | ({"execution"} if "execution" in b else set()))
    b.setdefault("execution", "step")
    if b["execution"] not in EXECUTIONS:
        raise _fail("register.execution", f"must be one of {list(EXECUTIONS)}, got "
                                          f"{b['execution']!r}")
    for k in ("embodiment", "task", "client"):
        check_str(f"register.{k}", b[k])
    check_int("register.obs_dim", b["obs_dim"], 1, 1 << 20)
    check_int("register.action_dim", b["action_dim"], 1, MAX_ACTION_DIM)
    low, high = check_float("action_low", b["action_low"]), check_float("high", b["action_high"])
    if not low < high:
        raise _fail("register", "action_low must be below action_high")
    if not 0.1 <= check_float("register.control_hz", b["control_hz"]) <= 10_000:
        raise _fail("register.control_hz", "must be in [0.1, 10000]")
    _obs_spec("register.obs_spec", b["obs_spec"])


def _observation(b: dict[str, Any]) -> None:
    check_fields("observation", b, {"obs", "reward", "success", "failed", "truncated", "step",
                                     "executed"})
    obs = b["obs"]
    if not isinstance(obs, dict) or not 1 <= len(obs) <= MAX_OBS_KEYS:
        raise _fail("observation.obs", f"must map 1 to {MAX_OBS_KEYS} names to arrays")
    b["obs"] = {check_str("observation.obs key", k): unpack_array(f"observation.obs.{k}", v)
                for k, v in obs.items()}
    b["reward"] = check_float("observation.reward", b["reward"])
    for k in ("success", "failed", "truncated"):
        check_bool(f"observation.{k}", b[k])
    check_int("observation.step", b["step"], -1, MAX_HORIZON - 1)
    if b["executed"] is not None:
        b["executed"] = unpack_array("observation.executed", b["executed"])
        if b["executed"].ndim != 1 or b["executed"].dtype != np.float32:
            raise _fail("observation.executed", "must be float32 [A]")


def _action(b: dict[str, Any]) -> None:
    check_fields("action", b, {"chunk", "policy_version"})
    chunk = b["chunk"] = unpack_array("action.chunk", b["chunk"])
    if (chunk.dtype != np.float32 or chunk.ndim != 2 or not 1 <= chunk.shape[0] <= MAX_HORIZON
            or not 1 <= chunk.shape[1] <= MAX_ACTION_DIM):
        raise _fail("action.chunk", f"must be float32 [H <= {MAX_HORIZON}, A <= "
                                    f"{MAX_ACTION_DIM}], got {chunk.dtype} {chunk.shape}")
    check_int("action.policy_version", b["policy_version"], 0, 2**63 - 1)


def _reset(b: dict[str, Any]) -> None:
    check_fields("reset", b, {"seed"})
    if b["seed"] is not None:
        check_int("reset.seed", b["seed"], 0, 2**63 - 1)


def _heartbeat(b: dict[str, Any]) -> None:
    check_fields("heartbeat", b, {"holding", "estop"})
    check_bool("heartbeat.holding", b["holding"])
    check_bool("heartbeat.estop", b["estop"])


def _ack(b: dict[str, Any]) -> None:
    check_fields("ack", b, {"heartbeat_ms", "lost_after_ms"})
    check_int("ack.heartbeat_ms", b["heartbeat_ms"], 1, MAX_DEADLINE_MS)
    check_int("ack.lost_after_ms", b["lost_after_ms"], 1, MAX_DEADLINE_MS)


def _error(b: dict[str, Any]) -> None:
    check_fields("error", b, {"code", "message"})
    check_str("error.code", b["code"])
    if not isinstance(b["message"], str) or len(b["message"]) > 1024:
        raise _fail("error.message", "must be a string of at most 1024 characters")


BODIES: dict[str, Callable[[dict[str, Any]], None]] = {
    "register": _register, "observation": _observation, "action": _action, "reset": _reset,
    "heartbeat": _heartbeat, "error": _error, "ack": _ack}


def _validate(raw: Any) -> None:
    check_fields("message", raw, set(HEADER))
    if type(raw["v"]) is not int or raw["v"] != VERSION:  # true == 1 in Python; not here
        raise ProtocolError(f"unsupported protocol version {raw['v']!r} (this side speaks "
                            f"{VERSION})")
    if not isinstance(raw["kind"], str) or raw["kind"] not in KINDS:
        raise ProtocolError(f"unknown kind {raw['kind']!r}")
    check_str("robot_id", raw["robot_id"])
    check_int("seq", raw["seq"], 1, 2**63 - 1)
    check_int("reply_to", raw["reply_to"], 0, 2**63 - 1)
    check_int("deadline_ms", raw["deadline_ms"], 1, MAX_DEADLINE_MS)
    if not isinstance(raw["body"], dict):
        raise _fail(raw["kind"], "body must be a map")
    BODIES[raw["kind"]](raw["body"])
