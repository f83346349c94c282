"""A bridged robot's fault never ends the loop: a real gateway, a real `RobotWorker` and real bridge
clients over CURVE on 127.0.0.1. The robot dies (its connection drops mid-call), e-stops or sends a
refused observation at every step offset of a call, including each call's first step and the
first step after a full rollout chunk; each time the episode is closed as truncated with exactly
the steps that ran and the robot rejoins."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from actors.bridge.client import BridgeClient, ClientConfig, Driver, DriverSpec, StepResult
from actors.bridge.contract import Contract
from actors.bridge.gateway import Gateway, GatewayConfig
from actors.bridge.protocol import Message, decode, encode
from actors.bridge.safety import SafetyConfig
from actors.robots.base import RobotSpec
from actors.worker import RobotWorker, WorkerConfig
from buffers.codec import decode_chunk
from buffers.records import EpisodeEnd, RolloutChunk
from tests.fakes import ListOutbox, ListWeights, ScriptedPolicy
from tests.util import wait_for

pytestmark = pytest.mark.timeout(60)
KEYS = {name: zmq.curve_keypair() for name in ("server", "arm-1")}
H, K, LIMIT = 4, 2, 14  # horizon, calls per rollout chunk, the driver's episode step limit


class Scripted(Driver):
    """A point on a line whose episodes end at LIMIT steps. In its episode `j` it faults at step
    `ats[j]` as `fault` says: "die" (never answers again), "estop" (its operator latches the
    e-stop before that step runs) or "bad" (its observation after that step has the wrong
    dtype). Later episodes run clean."""

    def __init__(self, fault: str = "", ats: tuple[int, ...] = ()) -> None:
        self.spec = DriverSpec("point", "reach", {"state": ("float32", (2,))}, 2, 200.0)
        self.fault, self.ats, self.client = fault, ats, None
        self.episode, self.step, self.bad = -1, 0, False
        self.dead = threading.Event()
        self.x = np.zeros(2, np.float32)

    def reset(self, seed: int | None) -> None:
        self.episode, self.step, self.bad, self.x[:] = self.episode + 1, 0, False, 0.0

    @property
    def at(self) -> int:
        return self.ats[self.episode] if self.episode < len(self.ats) else -1

    def observe(self) -> dict[str, np.ndarray]:
        return {"state": self.x.astype(np.float64 if self.bad else np.float32)}

    def act(self, action: np.ndarray) -> StepResult:
        if self.fault == "estop" and self.step + 1 == self.at and self.client is not None:
            self.client.estop("test: operator")  # latched before step `at` runs
        if self.fault == "die" and self.step == self.at:
            self.dead.set()  # the computer dies mid-step: this step is never answered
        self.bad = self.fault == "bad" and self.step == self.at
        self.x += action
        self.step += 1
        return StepResult(0.0, truncated=self.step >= LIMIT)


class DyingClient(BridgeClient):
    """Sends nothing once its driver is dead, as a robot killed with SIGKILL."""

    def _send(self, sock: zmq.Socket, kind: str, body: dict[str, Any], reply_to: int = 0) -> int:
        if isinstance(self.driver, Scripted) and self.driver.dead.is_set():
            return self._seq
        return super()._send(sock, kind, body, reply_to)


@contextlib.contextmanager
def client(gw: Gateway, driver: Scripted) -> Iterator[BridgeClient]:
    public, secret = KEYS["arm-1"]
    cfg = ClientConfig("arm-1", gw.endpoint, KEYS["server"][0], public, secret,
                       heartbeat_s=0.05, gateway_timeout_s=1.0)
    c = DyingClient(driver, cfg, SafetyConfig(control_hz=200.0, watchdog_periods=200))
    driver.client = c
    c.arm()
    stop = threading.Event()
    thread = threading.Thread(target=c.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield c
    finally:
        stop.set()
        thread.join(timeout=5)


class FleetSide:
    """A gateway and a worker looping over its robot, rejoining as a bridged actor does."""

    def __init__(self) -> None:
        self.gw = Gateway(GatewayConfig("tcp://127.0.0.1:*", heartbeat_s=0.05,
                                        lost_after_s=0.4, call_timeout_s=2.0),
                          KEYS["server"], {KEYS["arm-1"][0]: "arm-1"}, contract=Contract(2, 2))
        self.outbox, self.stop = ListOutbox(), threading.Event()
        self.worker = RobotWorker(_Unregistered(), ScriptedPolicy(H, 2), self.outbox,
                                  ListWeights(), WorkerConfig(H, K), rejoin=self.rejoin)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def rejoin(self, stop: threading.Event) -> None:
        robot = self.gw.wait_live("arm-1", stop)
        if robot is not None:
            self.worker.robot = robot

    def run(self) -> None:
        self.rejoin(self.stop)
        self.worker.run(self.stop)

    def finish(self) -> None:
        """Stop after the episode in progress (while its robot is still connected)."""
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def __enter__(self) -> FleetSide:
        self.gw.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.gw.close()


class _Unregistered:
    """Stands in until the bridged robot registers (a worker starts from a robot's spec)."""

    spec = RobotSpec("arm-1", "point", "reach", 2, 2)


def episodes(outbox: ListOutbox) -> list[list[RolloutChunk]]:
    by_id: dict[str, list[RolloutChunk]] = {}
    for c in map(decode_chunk, outbox.records):
        by_id.setdefault(c.episode_id, []).append(c)
    return list(by_id.values())


def check_closed(chunks: list[RolloutChunk], steps: int) -> None:
    """One episode: exactly `steps` steps, ceil(T / H) calls per chunk, truncated at its end."""
    assert sum(c.num_steps for c in chunks) == steps
    assert [c.chunk_seq for c in chunks] == list(range(len(chunks)))
    assert all(c.num_calls == -(-c.num_steps // H) for c in chunks)
    assert [c.episode_end for c in chunks] == [None] * (len(chunks) - 1) + [
        EpisodeEnd("truncated")]


# Every offset of a call: 4 and 8 are first steps (8 also the first after a full rollout chunk
# of K * H = 8 steps), 9-11 the others, 1 one early in the episode.
AT = (8, 4, 9, 10, 11, 1)


@pytest.mark.parametrize("fault", ["die", "estop", "bad"])
def test_a_bridged_robot_faulting_at_every_step_offset_is_closed_and_rejoins(fault):
    with FleetSide() as side:
        worker, gw = side.worker, side.gw
        if fault == "die":  # a new robot process after each death
            for i, at in enumerate(AT):
                with client(gw, Scripted(fault, (at,))):
                    assert wait_for(lambda i=i: worker.stats.faults > i, timeout_s=10), at
            healthy = Scripted()
        else:  # one robot, one fault in each of its first episodes
            healthy = Scripted(fault, AT)
        with client(gw, healthy) as c:
            for i, at in enumerate(AT if fault != "die" else ()):
                assert wait_for(lambda i=i: worker.stats.faults > i, timeout_s=10), at
                if fault == "estop":
                    assert wait_for(lambda: gw.robots()["arm-1"] == "estop")
                    assert healthy.step == at  # step `at` never ran
                    c.arm()  # the worker resumes once a heartbeat says so
            assert wait_for(lambda: worker.stats.episodes >= 1, timeout_s=10)
            side.finish()
    eps = episodes(side.outbox)
    cut = [e for e in eps if sum(c.num_steps for c in e) < LIMIT]
    assert len(cut) == len(AT), [sum(c.num_steps for c in e) for e in eps]
    for chunks, at in zip(cut, AT, strict=True):
        check_closed(chunks, at)
    assert worker.stats.faults == len(AT)
    word = {"die": "lost", "estop": "estop_engaged", "bad": "bad_observation"}[fault]
    assert word in worker.stats.last_fault


def test_registration_is_checked_against_the_policy_and_refused_with_the_mismatch():
    spec = {"embodiment": "raw", "task": "t", "obs_dim": 2, "action_dim": 2, "action_low": -1.0,
            "action_high": 1.0, "control_hz": 50.0, "client": "test/1",
            "obs_spec": {"state": {"dtype": "float32", "shape": [2]}}}
    bad = {
        "obs_dim is 4, the policy's is 2": {"obs_dim": 4, "obs_spec": {"state": {
            "dtype": "float32", "shape": [4]}}},
        "action_dim is 3, the policy's is 2": {"action_dim": 3},
        "no 'state'": {"obs_spec": {"joints": {"dtype": "float32", "shape": [2]}}},
        "state is float64 [2], expected float32 [2]": {"obs_spec": {"state": {
            "dtype": "float64", "shape": [2]}}},
        "state is float32 [3], expected float32 [2]": {"obs_spec": {"state": {
            "dtype": "float32", "shape": [3]}}},
        "pixels is missing, the policy reads uint8 [8, 8, 3]": {},
    }
    ctx = zmq.Context()
    contract = Contract(2, 2, {"pixels": ("uint8", (8, 8, 3))})
    with Gateway(GatewayConfig("tcp://127.0.0.1:*"), KEYS["server"],
                 {KEYS["arm-1"][0]: "arm-1"}, contract=contract) as gw:
        sock = ctx.socket(zmq.DEALER)
        sock.curve_publickey, sock.curve_secretkey = KEYS["arm-1"]
        sock.curve_serverkey = KEYS["server"][0]
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(gw.endpoint)
        for seq, (why, change) in enumerate(bad.items(), start=1):
            sock.send(encode(Message("register", "arm-1", seq, {**spec, **change})))
            assert sock.poll(5000)
            reply = decode(sock.recv())
            assert reply.kind == "error" and reply.reply_to == seq, reply
            assert reply.body["code"] == "bad_register" and why in reply.body["message"], (
                why, reply.body)
        assert "arm-1" not in gw.robots() and gw.stats["refused:register"] == len(bad)
        assert "pixels is missing" in gw.refused["arm-1"]  # what the console shows
        good = {**spec, "obs_spec": {"state": {"dtype": "float32", "shape": [2]},
                                     "pixels": {"dtype": "uint8", "shape": [8, 8, 3]}}}
        sock.send(encode(Message("register", "arm-1", 99, good)))
        assert sock.poll(5000)
        assert decode(sock.recv()).kind == "ack" and gw.robots() == {"arm-1": "live"}
        assert gw.refused == {}
        sock.close()
    ctx.term()
