"""`fleet bench bridge_latency`: action→observation round trip over the bridge, on loopback.

value = p50 of `BridgeRobot.send_action` (gateway encodes an `action`, CURVE, the robot process
decodes it, runs it through `Safety` and a no-op driver, answers with a 39-d `observation`, the
gateway decodes and checks it); baseline = p50 of a plain ZeroMQ REQ/REP round trip of the same
bytes (no CURVE, no codec), measured in the same run. The robot and the echo server each run in
their own process, as a robot's computer would; both sides share this machine's 2 cores.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from typing import Any

import numpy as np
import zmq

from actors.bridge.client import BridgeClient, ClientConfig, Driver, DriverSpec, StepResult
from actors.bridge.gateway import Gateway, GatewayConfig
from actors.bridge.protocol import Message, encode
from actors.bridge.safety import SafetyConfig

OBS_DIM, ACTION_DIM, HZ = 39, 4, 10_000.0  # the fastest rate the protocol allows: no pacing


class NullDriver(Driver):
    """A Meta-World-sized robot that does nothing, so only the bridge is measured."""

    def __init__(self) -> None:
        self.spec = DriverSpec("bench", "latency", {"state": ("float32", (OBS_DIM,))},
                               ACTION_DIM, HZ)
        self._obs = np.zeros(OBS_DIM, np.float32)

    def reset(self, seed: int | None) -> None:
        pass

    def observe(self) -> dict[str, np.ndarray]:
        return {"state": self._obs}

    def act(self, action: np.ndarray) -> StepResult:
        return StepResult(0.0)


def _robot(endpoint: str, keys: tuple[bytes, bytes, bytes], stop: Any) -> None:
    run_client(NullDriver(), endpoint, keys, stop)


def run_client(driver: Any, endpoint: str, keys: tuple[bytes, bytes, bytes], stop: Any) -> None:
    """A robot process of a bench: `driver` behind an armed client as `bench-0` until `stop`."""
    server, public, secret = keys
    safety = SafetyConfig(control_hz=HZ, watchdog_periods=10_000)  # 1 s: a slow core, not a trip
    client = BridgeClient(driver, ClientConfig("bench-0", endpoint, server, public, secret),
                          safety)
    client.arm()  # the bench is its own operator
    done = threading.Event()

    def relay() -> None:  # a process-shared event, turned into the thread event `run` wants
        stop.wait()
        done.set()

    threading.Thread(target=relay, daemon=True).start()
    client.run(done)


def _echo(endpoint: str, reply: bytes, server_public: bytes | None, stop: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    if server_public is not None:
        sock.curve_serverkey = server_public
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.connect(endpoint)
    while not stop.is_set():
        if sock.poll(100):
            sock.recv()
            sock.send(reply)
    sock.close(linger=0)
    ctx.term()


def _percentiles(samples: list[float]) -> tuple[float, float]:
    us = np.array(samples) * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def _bridge(n: int, ctx: Any) -> list[float]:
    server, robot_keys = zmq.curve_keypair(), zmq.curve_keypair()
    stop = ctx.Event()
    with Gateway(GatewayConfig("tcp://127.0.0.1:*"), server, {robot_keys[0]: "bench-0"}) as gw:
        proc = ctx.Process(target=_robot, args=(gw.endpoint, (server[0], *robot_keys), stop))
        proc.start()
        try:
            robot = gw.robot("bench-0", timeout_s=60)
            robot.reset(seed=0)
            action = np.zeros(ACTION_DIM, np.float32)
            times = []
            for i in range(n + n // 10):
                t0 = time.perf_counter()
                robot.send_action(action)
                if i >= n // 10:  # the first tenth warms up
                    times.append(time.perf_counter() - t0)
        finally:
            stop.set()
            proc.join(timeout=10)
    return times


def _raw(n: int, ctx: Any, curve: bool) -> list[float]:
    """REQ/REP of the bridge's own bytes: the action message out, an observation back."""
    request = encode(Message("action", "bench-0", 1, {
        "chunk": np.zeros((1, ACTION_DIM), np.float32), "policy_version": 0}))
    reply = encode(Message("observation", "bench-0", 1, {
        "obs": {"state": np.zeros(OBS_DIM, np.float32)}, "reward": 0.0, "success": False,
        "failed": False, "truncated": False, "step": 0,
        "executed": np.zeros(ACTION_DIM, np.float32)}, reply_to=1))
    zctx = zmq.Context()
    sock = zctx.socket(zmq.REQ)
    server = zmq.curve_keypair() if curve else None
    if server is not None:
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = server
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = ctx.Event()
    proc = ctx.Process(target=_echo, args=(f"tcp://127.0.0.1:{port}", reply,
                                           server[0] if server else None, stop))
    proc.start()
    times = []
    try:
        for i in range(n + n // 10):
            t0 = time.perf_counter()
            sock.send(request)
            if not sock.poll(10_000):
                raise TimeoutError("the echo process did not answer within 10 s")
            sock.recv()
            if i >= n // 10:
                times.append(time.perf_counter() - t0)
    finally:
        stop.set()
        proc.join(timeout=10)
        sock.close(linger=0)
        zctx.term()
    return times


def run(quick: bool) -> dict[str, object]:
    n = 300 if quick else 3000
    ctx = mp.get_context("spawn")  # a fresh process, as on a robot: no inherited zmq state
    bridge = _percentiles(_bridge(n, ctx))
    raw = _percentiles(_raw(n, ctx, curve=False))
    raw_curve = _percentiles(_raw(n, ctx, curve=True))
    return {"bench": "bridge_latency", "metric": "round_trip_p50", "value": round(bridge[0], 1),
            "unit": "us", "baseline": round(raw[0], 1), "ratio": round(bridge[0] / raw[0], 2),
            "p99_us": round(bridge[1], 1), "baseline_p99_us": round(raw[1], 1),
            "raw_curve_p50_us": round(raw_curve[0], 1), "raw_curve_p99_us": round(raw_curve[1], 1),
            "round_trips": n}
