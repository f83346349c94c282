"""`fleet bench gateway_flood`: a healthy robot's served calls per second while another
allowlisted robot floods the same gateway with worst-case frames.

value = the healthy robot's `send_action` calls/s during the flood; baseline = its calls/s on the
same gateway with the flooder connected but quiet, measured in the same run (phases alternate:
quiet, flood, quiet, flood...; medians; `pair_ratios` are each flood phase over the quiet phase
before it). The goal (issue 17) is ratio >= 0.9, with the gateway process's resident memory
growing by less than `RSS_BOUND_MIB` during the flood. A call that fails (it would time out
after 5 s) counts in `failed_calls`; none should.

The flooder has a key on the allowlist and registers like any robot, then sends, as fast as
ZeroMQ takes them, the frames in `attack_frames`: the decode bomb of issue 17 (a 36 KB lz4 frame
that unfolds into 8 MiB of nested empty msgpack arrays; it cost the old gateway 3.2 s and
~640 MiB), deep and wide nesting, a frame claiming an oversized body, and well-formed messages
nobody asked for. The healthy robot is `bench.bridge`'s no-op robot in its own process. The
flooder runs in its own process too, at a lower CPU priority (`nice 10`), standing in for another
computer: on this 2-core machine its own sending would otherwise take the core the gateway and
the healthy robot share, which says nothing about the gateway.

Memory bound: ZeroMQ queues at most `receive_hwm` frames per connection (each at most
`MAX_WIRE_BYTES` here; 2x that is cut by ZeroMQ) and the gateway holds at most `TAKE` frames a
round, so a connection can pin about (receive_hwm + TAKE) x 1 MiB while the gateway falls behind
it. The flood includes 1 MiB frames; in practice the gateway drops frames as fast as they come,
and `RSS_BOUND_MIB` is what the bench holds it to.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import threading
import time
from typing import Any

import lz4.frame
import msgpack
import numpy as np
import zmq

from actors.bridge.gateway import BridgeError, Gateway, GatewayConfig
from actors.bridge.protocol import MAX_WIRE_BYTES, Message, encode
from bench.bridge import _robot

RSS_BOUND_MIB = 64


def _frame(raw: bytes) -> bytes:
    return bytes(lz4.frame.compress(raw, store_size=True))


def _header(robot_id: str, kind: str = "observation") -> bytes:
    """A valid header map of 7 fields whose last value (the body) the caller appends."""
    head = msgpack.packb({"v": 1, "kind": kind, "robot_id": robot_id, "seq": 1, "reply_to": 1,
                          "deadline_ms": 1000})
    return b"\x87" + head[1:] + msgpack.packb("body")


def decode_bomb(robot_id: str) -> bytes:
    """Issue 17's frame: ~31 KB that decompress into 7 MiB of nested empty arrays."""
    inner = b"\xdc\x04\x00" + b"\x90" * 1024  # an array of 1024 empty arrays
    return _frame(_header(robot_id) + b"\x97" + (b"\xdc\x04\x00" + inner * 1024) * 7)


def attack_frames(robot_id: str) -> dict[str, bytes]:
    """Frames an allowlisted robot can send that cost a naive decoder the most."""
    obs = {"obs": {"state": np.zeros(39, np.float32)}, "reward": 0.0, "success": False,
           "failed": False, "truncated": False, "step": 5, "executed": None}
    return {
        "decode_bomb": decode_bomb(robot_id),
        "deep": _frame(_header(robot_id) + b"\x91" * 1000 + b"\x90"),  # 1,000 levels
        "wide": _frame(_header(robot_id) + b"\x8f" + b"".join(  # 15 x 15 x 4 containers
            msgpack.packb(f"k{i}") + b"\x8f" + b"".join(
                msgpack.packb(f"j{j}") + b"\x94\x90\x90\x90\x90" for j in range(15))
            for i in range(15))),
        "claims_8mib": _frame(msgpack.packb({"v": 1, "pad": b"\0" * ((8 << 20) - 64)})),
        "unasked_observation": encode(Message("observation", robot_id, 2, obs, reply_to=10**9)),
        "heartbeat": encode(Message("heartbeat", robot_id, 3, {"holding": False,
                                                               "estop": False})),
        # the biggest frame the protocol lets through to the decoder: memory and CURVE's cost
        "max_wire": np.random.default_rng(0).bytes(MAX_WIRE_BYTES),
    }


def _flood(endpoint: str, keys: tuple[bytes, bytes, bytes], robot_id: str, go: Any,
           stop: Any, sent: Any) -> None:
    """The flooder: register, then send `attack_frames` round and round while `go` is set."""
    os.nice(10)
    server, public, secret = keys
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server, public, secret
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send(encode(Message("register", robot_id, 1, {
        "embodiment": "flood", "task": "flood", "obs_dim": 39, "action_dim": 4,
        "action_low": -1.0, "action_high": 1.0, "control_hz": 10_000.0, "client": "flood/1",
        "obs_spec": {"state": {"dtype": "float32", "shape": [39]}}})))
    frames = list(attack_frames(robot_id).values())
    n = 0
    while not stop.is_set():
        if not go.wait(0.05):
            continue
        for frame in frames:
            try:
                sock.send(frame, zmq.NOBLOCK)
                n += 1
            except zmq.Again:  # the gateway's queue for us is full: go round again
                time.sleep(0)
        while sock.poll(0):  # replies (bad_message...), so they never back up
            sock.recv()
        sent.value = n
    sock.close(linger=0)
    ctx.term()


class _Rss:
    """Samples this process's resident memory every 10 ms; `peak()` since `reset()`."""

    def __init__(self) -> None:
        self._peak, self._stop = 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, self.now())

    def reset(self) -> None:
        self._peak = self.now()

    def peak(self) -> int:
        return max(self._peak, self.now())

    def close(self) -> None:
        self._stop.set()


def _calls_per_s(robot: Any, seconds: float, failed: list[int]) -> float:
    action = np.zeros(4, np.float32)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            robot.send_action(action)
            n += 1
        except BridgeError:
            failed[0] += 1
    return n / (time.perf_counter() - t0)


def run(quick: bool) -> dict[str, object]:
    # many short phases: this machine's noise (other jobs) comes in bursts of seconds
    rounds, seconds = (12, 0.5) if quick else (30, 1.0)
    ctx = mp.get_context("spawn")
    server, healthy_keys, flood_keys = (zmq.curve_keypair() for _ in range(3))
    allow = {healthy_keys[0]: "bench-0", flood_keys[0]: "flood-0"}
    stop, go, sent = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    quiet: list[float] = []
    flooded: list[float] = []
    growth: list[int] = []
    failed = [0]
    rss = _Rss()
    with Gateway(GatewayConfig("tcp://127.0.0.1:*"), server, allow) as gw:
        procs = [ctx.Process(target=_robot, args=(gw.endpoint, (server[0], *healthy_keys),
                                                  stop)),
                 ctx.Process(target=_flood, args=(gw.endpoint, (server[0], *flood_keys),
                                                  "flood-0", go, stop, sent))]
        for p in procs:
            p.start()
        try:
            robot = gw.robot("bench-0", timeout_s=60)
            gw.robot("flood-0", timeout_s=60)
            robot.reset(seed=0)
            _calls_per_s(robot, 1.0, failed)  # warm up
            for _ in range(rounds):
                quiet.append(_calls_per_s(robot, seconds, failed))
                base = rss.now()
                rss.reset()
                go.set()
                time.sleep(0.2)  # the flood is under way
                flooded.append(_calls_per_s(robot, seconds, failed))
                go.clear()
                growth.append(rss.peak() - base)
                time.sleep(0.2)  # the flood has stopped
            stats = dict(gw.stats)
        finally:
            stop.set()
            go.set()
            for p in procs:
                p.join(timeout=10)
            rss.close()
    value, baseline = statistics.median(flooded), statistics.median(quiet)
    peak_mib = max(growth) / 2**20
    return {"bench": "gateway_flood", "metric": "healthy_calls_per_s_under_flood",
            "value": round(value, 1), "unit": "calls/s", "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3), "goal_ratio": 0.9,
            "pair_ratio_median": round(statistics.median(
                f / q for q, f in zip(quiet, flooded, strict=True)), 3),
            "pair_ratios": [round(f / q, 3) for q, f in zip(quiet, flooded, strict=True)],
            "failed_calls": failed[0],
            "flood_frames_sent": int(sent.value),
            "flood_dropped_undecoded": stats.get("dropped:flood", 0),
            "flood_refused_by_budget": stats.get("dropped:budget", 0),
            "dropped": {k[8:]: v for k, v in sorted(stats.items()) if k.startswith("dropped:")},
            "rss_growth_mib": round(peak_mib, 1), "rss_bound_mib": RSS_BOUND_MIB,
            "within_rss_bound": peak_mib < RSS_BOUND_MIB,
            "runs_quiet": [round(x, 1) for x in quiet],
            "runs_flood": [round(x, 1) for x in flooded],
            "flood_frames": sorted(attack_frames("flood-0"))}
