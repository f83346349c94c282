"""`fleet bench fuzz [--quick]`: every decoder that reads bytes from outside, fed mutated inputs;
each must return a value or raise its own error type, nothing else.

Decoders: `actors.bridge.protocol.decode` (`ProtocolError`), `buffers.codec.decode_chunk`
(`RecordError`) and `fleet.console.bodies.parse_body` (`BodyError`). Inputs are valid messages,
records and bodies, mutated at every layer: a field of the decoded tree replaced by a value of
another type or size (then packed and framed again, so it reaches the schema checks), bytes of
the inner msgpack or JSON flipped, cut or repeated (then framed again), bytes of the outer lz4
frame flipped or cut, and plain random bytes. 1 M inputs per decoder (`--quick`: 30 k).

value = inputs/s through our decoders; baseline = the same inputs through the plain
libraries with the same size cap and no schema (lz4 then `msgpack.unpackb`; `json.loads`), timed
in the same run on the same batches; `unexpected` counts exceptions of any other type (the goal
is 0), with the first few named in `unexpected_examples`.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import lz4.frame
import msgpack
import numpy as np

from actors.bridge.protocol import Message, ProtocolError, decode, encode
from bench.common import state_chunk
from buffers import layout
from buffers.check import _check_full, check_record
from buffers.codec import MAX_RECORD_BYTES, RecordError, _from_body, decode_chunk, encode_chunk
from buffers.codec import body as codec_body
from buffers.records import EpisodeEnd
from fleet.console.bodies import BodyError, parse_body

_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 7, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 0.5, -1e300,
    float("nan"), float("inf"), "", "x", "float32", "uint8", "success", "env", "é" * 200,
    "x" * 5000, b"", b"\0" * 3, b"\xff" * 64, [], [1], [2**31, 2**31], [1, 2, 3, 4, 5], {},
    {"a": 1}, {b"k": 1}, {"dtype": "float32", "shape": [1], "data": b"\0\0\0\0"},
    {"dtype": "float64", "shape": [2**30, 2**30], "data": b""}, [[[[[]]]]], {"": {"": {}}},
]
_JSON_VALUES: list[Any] = [
    None, True, 0, -1, 2**53, 2**53 + 1, 10**30, 0.5, 1e308, "", "x" * 2000, [], [1.0] * 70,
    {}, {"a": [1, [2, [3]]]}, "success", "on", [float("nan")], float("inf"),
]


def _mutate_tree(obj: Any, rng: random.Random, values: list[Any]) -> Any:
    """A copy of `obj` with one node replaced, deleted or given a sibling (path copying)."""
    if isinstance(obj, dict) and obj and rng.random() < 0.8:
        key = rng.choice(list(obj))
        out = dict(obj)
        r = rng.random()
        if r < 0.1:
            del out[key]
        elif r < 0.2:
            out[rng.choice(["extra", b"bytes-key", key + "x" if isinstance(key, str) else "k"])] = (
                rng.choice(values))
        else:
            out[key] = _mutate_tree(obj[key], rng, values)
        return out
    if isinstance(obj, list) and obj and rng.random() < 0.8:
        out_list = list(obj)
        i = rng.randrange(len(obj))
        out_list[i] = _mutate_tree(obj[i], rng, values)
        return out_list
    if isinstance(obj, bytes) and obj and rng.random() < 0.5:
        return _mutate_bytes(obj, rng)
    return rng.choice(values)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        r, i = rng.random(), rng.randrange(len(buf) or 1)
        if r < 0.5 and buf:
            buf[i] = rng.randrange(256)
        elif r < 0.7:
            del buf[i:i + rng.randint(1, 16)]
        elif r < 0.85:
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            buf[i:i] = buf[i:i + rng.randint(1, 32)] * rng.randint(1, 4)
    return bytes(buf)


def _framed(raw: bytes) -> bytes:
    return bytes(lz4.frame.compress(raw, store_size=True))


class _Target:
    """One decoder: its seeds (decoded trees and their encodings) and how to make inputs."""

    def __init__(self, name: str, decode: Callable[[bytes], Any], error: type[Exception],
                 plain: Callable[[bytes], Any], trees: list[Any],
                 encode_tree: Callable[[Any], bytes], frame: Callable[[bytes], bytes]) -> None:
        self.name, self.decode, self.error, self.plain = name, decode, error, plain
        self.trees, self.encode_tree, self.frame = trees, encode_tree, frame
        self.inner = [encode_tree(t) for t in trees]
        self.outer = [frame(b) for b in self.inner]
        self.values = _JSON_VALUES if name == "console_body" else _VALUES

    def input(self, rng: random.Random) -> bytes:
        r = rng.random()
        try:
            if r < 0.5:  # wrong fields, well framed: reaches the schema checks
                tree = rng.choice(self.trees)
                for _ in range(rng.choice((1, 1, 2, 3))):
                    tree = _mutate_tree(tree, rng, self.values)
                return self.frame(self.encode_tree(tree))
            if r < 0.75:  # damaged msgpack or JSON inside a good frame
                return self.frame(_mutate_bytes(rng.choice(self.inner), rng))
        except (ValueError, TypeError, OverflowError):  # a tree the encoder cannot write
            return rng.choice(self.outer)
        if r < 0.95:  # a damaged frame
            return _mutate_bytes(rng.choice(self.outer), rng)
        return rng.randbytes(rng.randint(0, 64))


def _plain_frame(data: bytes) -> Any:
    dec = lz4.frame.LZ4FrameDecompressor()
    return msgpack.unpackb(dec.decompress(data, max_length=8 << 20))


def _targets() -> list[_Target]:
    bridge_bodies: dict[str, dict[str, Any]] = {
        "register": {"embodiment": "arm", "task": "t", "obs_dim": 3, "action_dim": 2,
                     "action_low": -1.0, "action_high": 1.0, "control_hz": 50.0,
                     "client": "fuzz/1", "obs_spec": {
                         "state": {"dtype": "float32", "shape": [3]},
                         "cam": {"dtype": "uint8", "shape": [2, 2, 3]}}},
        "observation": {"obs": {"state": np.arange(3, dtype=np.float32),
                                "cam": np.zeros((2, 2, 3), np.uint8)}, "reward": 0.5,
                        "success": False, "failed": False, "truncated": False, "step": 1,
                        "executed": np.zeros(2, np.float32)},
        "action": {"chunk": np.zeros((4, 2), np.float32), "policy_version": 3},
        "reset": {"seed": 7}, "heartbeat": {"holding": True, "estop": False},
        "ack": {"heartbeat_ms": 500, "lost_after_ms": 3000},
        "error": {"code": "watchdog", "message": "holding still"}}
    bridge_trees = [msgpack.unpackb(lz4.frame.decompress(encode(Message(k, "arm-1", 5, b, 4))))
                    for k, b in bridge_bodies.items()]
    chunks = [state_chunk(steps=4, horizon=2),
              _with(state_chunk(steps=3, horizon=4), episode_end=EpisodeEnd("success"),
                    instruction="push", group="r/1")]
    flat = np.zeros((5, 16, 16, 3), np.uint8)  # lz4 shrinks it: a compressed observation
    chunks.append(_with(chunks[0], obs={**chunks[0].obs, "wrist": flat}))
    record_trees = [msgpack.unpackb(encode_chunk(c)) for c in chunks]
    old_trees = [{**t, "v": 2, "obs": {k: _raw_spec(o) for k, o in t["obs"].items()}}
                 for t in record_trees]
    body_trees: list[Any] = [{}, {"on": True}, {"action": [0.1, -0.2, 0.3, 1.0]},
                             {"outcome": "success"}, {"text": "push the red block"},
                             {"operator": "ana"}]

    def pack(tree: Any) -> bytes:
        return msgpack.packb(tree, use_bin_type=True)

    def dumps(tree: Any) -> bytes:
        return json.dumps(tree).encode()

    def body(data: bytes) -> Any:
        return parse_body(data)

    return [
        _Target("bridge_frame", decode, ProtocolError, _plain_frame, bridge_trees, pack, _framed),
        _Target("buffer_record", decode_chunk, RecordError, _plain_frame, old_trees, pack,
                _framed),  # format version 2: one lz4 frame around the map
        _Target("buffer_record_v3", _decode_v3, RecordError, _plain_v3, record_trees, pack,
                lambda b: b),
        _Target("buffer_ingest_v3", _check, RecordError, _plain_v3, record_trees, pack,
                lambda b: b),
        _Target("console_body", body, BodyError, json.loads, body_trees, dumps, lambda b: b),
    ]


def _raw_spec(spec: dict[str, Any]) -> dict[str, Any]:
    if "lz4" not in spec:
        return spec
    return {"dtype": spec["dtype"], "shape": spec["shape"],
            "data": lz4.frame.decompress(spec["lz4"])}


def _plain_v3(data: bytes) -> Any:
    return msgpack.unpackb(data, max_bin_len=8 << 20)


def _check(data: bytes) -> Any:
    """Ingest's check, held to the full check's verdict: a record its layout path (a record
    laid out like one checked before) judges differently is an unexpected outcome."""
    try:
        fast: Any = check_record(data)
    except RecordError as e:
        fast = e
    try:
        full: Any = _check_full(data, MAX_RECORD_BYTES)
    except RecordError as e:
        full = e
    if isinstance(fast, RecordError) != isinstance(full, RecordError) or (
            str(fast) != str(full)):
        raise AssertionError(f"the layout path says {fast!r}, the full check {full!r}")
    if isinstance(fast, RecordError):
        raise fast
    return fast


def _decode_v3(data: bytes) -> Any:
    """`decode_chunk`, held to the decoder's own way: a record built from a known layout
    (`buffers.layout.decode_by_layout`) must come out as the decoder builds it."""
    chunk = decode_chunk(data)
    if layout.decode_by_layout(data, MAX_RECORD_BYTES) is not None:
        plain = _from_body(codec_body(data, MAX_RECORD_BYTES), MAX_RECORD_BYTES, True)
        for f in dataclasses.fields(chunk):
            a, b = getattr(chunk, f.name), getattr(plain, f.name)
            same = (list(a) == list(b) and all(_same_array(a[k], b[k]) for k in a)
                    if isinstance(a, dict) else _same_array(a, b)
                    if isinstance(a, np.ndarray) else a == b and type(a) is type(b))
            if not same:
                raise AssertionError(f"{f.name}: the layout gives {a!r}, the decoder {b!r}")
    return chunk


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit (a NaN in an observation is a value like any other)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _with(chunk: Any, **fields: Any) -> Any:
    return dataclasses.replace(chunk, **fields)


def _time(fn: Callable[[bytes], Any], inputs: list[bytes], error: type[Exception] | None,
          counts: Counter[str], examples: list[str]) -> float:
    t0 = time.perf_counter()
    for data in inputs:
        try:
            fn(data)
            counts["accepted"] += 1
        except Exception as e:
            if error is None or isinstance(e, error):
                counts["refused"] += 1
            else:
                counts["unexpected"] += 1
                if len(examples) < 10:
                    examples.append(f"{type(e).__name__}: {str(e)[:80]} <- {data[:48].hex()}")
    return time.perf_counter() - t0


def run(quick: bool, per_decoder: int | None = None, seed: int = 0) -> dict[str, object]:
    n = per_decoder or (30_000 if quick else 1_000_000)
    rng = random.Random(seed)
    per: dict[str, dict[str, Any]] = {}
    ours_s = plain_s = 0.0
    examples: list[str] = []
    for target in _targets():
        counts: Counter[str] = Counter()
        plain_counts: Counter[str] = Counter()
        t_ours = t_plain = 0.0
        done = 0
        while done < n:
            batch = [target.input(rng) for _ in range(min(20_000, n - done))]
            t_ours += _time(target.decode, batch, target.error, counts, examples)
            t_plain += _time(target.plain, batch, None, plain_counts, [])
            done += len(batch)
        ours_s += t_ours
        plain_s += t_plain
        per[target.name] = {"inputs": done, "accepted": counts["accepted"],
                            "refused": counts["refused"], "unexpected": counts["unexpected"],
                            "inputs_per_s": round(done / t_ours),
                            "plain_inputs_per_s": round(done / t_plain)}
    total = sum(p["inputs"] for p in per.values())
    unexpected = sum(p["unexpected"] for p in per.values())
    value, baseline = total / ours_s, total / plain_s
    return {"bench": "fuzz", "metric": "fuzzed_inputs_per_s", "value": round(value),
            "unit": "inputs/s", "baseline": round(baseline), "ratio": round(value / baseline, 3),
            "unexpected": unexpected, "inputs_per_decoder": n, "decoders": per,
            "unexpected_examples": examples, "seed": seed}
