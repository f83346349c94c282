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
from actors.bridge.gateway import BridgeError, Gateway, GatewayConfig
from actors.bridge.protocol import Message, ProtocolError, decode, encode
from actors.bridge.safety import SafetyConfig
from actors.control import RobotControl
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

    def __init__(self, fault: str = "", ats: tuple[int, ...] = (), execution: str = "step"
                 ) -> None:
        self.spec = DriverSpec("point", "reach", {"state": ("float32", (2,))}, 2, 200.0,
                               execution=execution)
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
    """Sends nothing once its driver is dead, as a robot killed with SIGKILL. Keeps the shape and
    `policy_version` of every action chunk it was sent."""

    chunks: list[tuple[tuple[int, ...], int]]

    def _on_action(self, sock: zmq.Socket, msg: Message, now: float) -> None:
        self.chunks.append((msg.body["chunk"].shape, msg.body["policy_version"]))
        super()._on_action(sock, msg, now)

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
    c.chunks = []
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


@pytest.mark.parametrize("execution", ["step", "chunk"])
@pytest.mark.parametrize("fault", ["die", "estop", "bad"])
def test_a_bridged_robot_faulting_at_every_step_offset_is_closed_and_rejoins(fault, execution):
    """In chunk execution the robot holds the whole call's chunk when it faults mid-chunk."""
    with FleetSide() as side:
        worker, gw = side.worker, side.gw
        if fault == "die":  # a new robot process after each death
            for i, at in enumerate(AT):
                with client(gw, Scripted(fault, (at,), execution)):
                    assert wait_for(lambda i=i: worker.stats.faults > i, timeout_s=10), at
            healthy = Scripted(execution=execution)
        else:  # one robot, one fault in each of its first episodes
            healthy = Scripted(fault, AT, execution)
        with client(gw, healthy) as c:
            for i, at in enumerate(AT if fault != "die" else ()):
                assert wait_for(lambda i=i: worker.stats.faults > i, timeout_s=10), at
                if fault == "estop":
                    assert wait_for(lambda: gw.robots()["arm-1"] == "estop")
                    assert healthy.step == at  # step `at` never ran
                    c.arm()  # the worker resumes once a heartbeat says so
            assert wait_for(lambda: worker.stats.episodes >= 1, timeout_s=10)
            side.finish()
            rows = {shape[0] for shape, _ in c.chunks}
            assert rows == ({H} if execution == "chunk" else {1}), rows
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


def test_a_chunk_robot_runs_whole_chunks_open_loop_with_their_policy_version():
    """A robot that registered `execution: "chunk"` gets each policy call's chunk in one message,
    stamped with the weights' version, and answers every step; the stored records carry the
    same version. An episode the robot ends mid-chunk (step LIMIT = 14, not a multiple of H)
    drops the chunk's rest."""
    with FleetSide() as side:
        side.worker.stats.policy_version = 7
        with client(side.gw, Scripted(execution="chunk")) as c:
            assert wait_for(lambda: side.worker.stats.episodes >= 2, timeout_s=10)
            side.finish()
            assert side.gw.link("arm-1").spec.execution == "chunk"
    eps = episodes(side.outbox)
    done = [e for e in eps if e[-1].episode_end == EpisodeEnd("truncated")]
    assert len(done) >= 2 and side.worker.stats.faults == 0
    for chunks in done:
        assert sum(ch.num_steps for ch in chunks) == LIMIT
        assert {ch.policy_version for ch in chunks} == {7}
        assert all(np.allclose(ch.action, 0.1) for ch in chunks)  # the chunk the robot ran
    calls = -(-LIMIT // H)  # 4 messages an episode, not 14 round trips
    assert len(c.chunks) >= calls * len(done)
    assert set(c.chunks) == {((H, 2), 7)}
    assert side.gw.stats["received:observation"] >= (LIMIT + 1) * len(done)


def test_a_malformed_chunk_is_refused():
    """Before it is sent (NaN, an impossible H) the gateway's encoder refuses it in the caller;
    a chunk of the wrong width reaches the robot, which answers `refused_action`; a register
    with an unknown execution is refused by the schema."""
    gw = Gateway(GatewayConfig("tcp://127.0.0.1:*", call_timeout_s=2.0), KEYS["server"],
                 {KEYS["arm-1"][0]: "arm-1"}, contract=Contract(2, 2))
    with gw, client(gw, Scripted(execution="chunk")):
        robot = gw.robot("arm-1", timeout_s=10)
        robot.reset(seed=0)
        for bad in (np.full((H, 2), np.nan, np.float32), np.zeros((1025, 2), np.float32)):
            with pytest.raises(ProtocolError):
                robot.start_chunk(bad, 0)
        robot.start_chunk(np.zeros((H, 3), np.float32), 0)
        with pytest.raises(BridgeError, match="refused_action"):
            robot.send_action(np.zeros(3, np.float32))
        robot.reset(seed=1)  # the robot is fine: the next chunk runs whole
        robot.start_chunk(np.zeros((H, 2), np.float32), 3)
        assert len([robot.send_action(np.zeros(2, np.float32)) for _ in range(H)]) == H
        with pytest.raises(ValueError, match="step 0 of the chunk"):  # not the chunk it sent
            robot.start_chunk(np.zeros((H, 2), np.float32), 3)
            robot.send_action(np.ones(2, np.float32))
    spec = {"embodiment": "raw", "task": "t", "obs_dim": 2, "action_dim": 2, "action_low": -1.0,
            "action_high": 1.0, "control_hz": 50.0, "client": "test/1",
            "obs_spec": {"state": {"dtype": "float32", "shape": [2]}}}
    assert decode(encode(Message("register", "a", 1, spec))).body["execution"] == "step"
    with pytest.raises(ProtocolError, match=r"register\.execution"):
        encode(Message("register", "a", 1, {**spec, "execution": "burst"}))


def test_a_take_over_sends_a_chunk_robot_the_operators_actions_one_by_one():
    """While a person at the console has the robot, each of their actions goes alone (flagged
    intervened); once they let go, whole chunks again."""
    with FleetSide() as side:
        side.worker.control = control = RobotControl(2)
        control.command({"cmd": "takeover", "on": True})
        with client(side.gw, Scripted(execution="chunk")) as c:
            assert wait_for(lambda: side.worker.stats.intervened_steps >= 6, timeout_s=10)
            control.command({"cmd": "takeover", "on": False})
            n = len(c.chunks)
            assert wait_for(lambda: len(c.chunks) >= n + 3, timeout_s=10)
            side.finish()
    rows = [shape[0] for shape, _ in c.chunks]
    assert rows[:6] == [1] * 6 and rows[-1] == H, rows
    assert side.worker.stats.intervened_steps >= 6
