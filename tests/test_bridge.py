"""The bridge over real sockets on 127.0.0.1 with real CURVE: robots and a gateway in threads."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import lz4.frame
import numpy as np
import pytest
import zmq

from actors.bridge.client import (
    BridgeClient,
    ClientConfig,
    Driver,
    DriverSpec,
    GymDriver,
    StepResult,
)
from actors.bridge.gateway import BridgeError, Gateway, GatewayConfig, RobotLost
from actors.bridge.protocol import MAX_WIRE_BYTES, Message, encode
from actors.bridge.safety import SafetyConfig
from actors.worker import RobotWorker, WorkerConfig
from buffers.codec import decode_chunk
from tests.fakes import ListOutbox, ListWeights, ScriptedPolicy
from tests.util import wait_for

pytestmark = pytest.mark.timeout(60)
KEYS = {name: zmq.curve_keypair() for name in ("server", "arm-1", "arm-2", "intruder", "probe")}


class CountingDriver(Driver):
    """A point on a line; counts what the client asked of it. `act_s` makes each act slow."""

    def __init__(self, control_hz: float = 50.0, act_s: float = 0.0) -> None:
        self.spec = DriverSpec("point", "reach", {"state": ("float32", (2,))}, 1, control_hz)
        self.act_s, self.acts, self.holds, self.x = act_s, 0, 0, np.zeros(2, np.float32)

    def reset(self, seed: int | None) -> None:
        self.x[:] = 0.0

    def observe(self) -> dict[str, np.ndarray]:
        return {"state": self.x.copy()}

    def act(self, action: np.ndarray) -> StepResult:
        time.sleep(self.act_s)
        self.acts += 1
        self.x[0] += action[0]
        return StepResult(-abs(float(self.x[0])))

    def hold(self) -> None:
        self.holds += 1


@contextlib.contextmanager
def gateway(**config: float) -> Iterator[Gateway]:
    allow = {KEYS[n][0]: n for n in ("arm-1", "arm-2", "probe")}
    gw = Gateway(GatewayConfig("tcp://127.0.0.1:*", **config), KEYS["server"], allow)
    gw.start()
    try:
        yield gw
    finally:
        gw.close()


@contextlib.contextmanager
def robot_client(gw: Gateway, driver: Driver, robot_id: str = "arm-1", key: str = "",
                 arm: bool = True, safety: SafetyConfig | None = None) -> Iterator[BridgeClient]:
    public, secret = KEYS[key or robot_id]
    cfg = ClientConfig(robot_id, gw.endpoint, KEYS["server"][0], public, secret,
                       heartbeat_s=0.1, gateway_timeout_s=1.0)
    # The watchdog's default 5 periods are 10-25 ms at these test rates: a loaded 2-core machine
    # stalls a thread that long, so tests not about the watchdog give it about a second.
    hz = driver.spec.control_hz
    client = BridgeClient(driver, cfg, safety or SafetyConfig(control_hz=hz,
                                                             watchdog_periods=max(5, int(hz))))
    if arm:
        client.arm()
    stop = threading.Event()
    thread = threading.Thread(target=client.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield client
    finally:
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_gym_robot_registers_observes_and_acts() -> None:
    with gateway() as gw, robot_client(gw, GymDriver("InvertedPendulum-v5", 50.0)) as client:
        robot = gw.robot("arm-1", timeout_s=5)
        assert (robot.spec.task, robot.spec.obs_dim, robot.spec.action_dim) == (
            "InvertedPendulum-v5", 4, 1)
        first = robot.reset(seed=3)["state"]
        again = robot.reset(seed=3)["state"]
        np.testing.assert_array_equal(first, again)  # the seed reached the env
        fb = robot.send_action(np.array([0.5], np.float32))
        assert not fb.done and fb.reward == 1.0
        assert not np.array_equal(robot.get_observation()["state"], first)
        assert [f.reward for f in robot.send_chunk(np.zeros((3, 1), np.float32))] == [1.0] * 3
        assert client.stats.acted == 4 and client.stats.dropped == 0


def test_robot_worker_drives_a_bridge_robot_unchanged() -> None:
    with gateway() as gw, robot_client(gw, GymDriver("InvertedPendulum-v5", 50.0)):
        robot = gw.robot("arm-1", timeout_s=5)
        outbox = ListOutbox()
        worker = RobotWorker(robot, ScriptedPolicy(horizon=4, action_dim=1), outbox,
                             ListWeights(), WorkerConfig(horizon=4, calls_per_chunk=2))
        worker.run_episode(seed=11)
        chunks = [decode_chunk(r) for r in outbox.records]
        assert chunks and chunks[-1].episode_end is not None
        assert chunks[-1].episode_end.outcome == "failure"  # a constant push topples the pole
        steps = sum(c.num_steps for c in chunks)
        assert steps == worker.stats.env_steps and steps > 1
        assert all(c.obs["state"].shape[1] == 4 and c.robot_id == "arm-1" for c in chunks)


def test_unlisted_and_spoofing_keys_are_refused_while_the_listed_robot_works() -> None:
    with gateway() as gw, robot_client(gw, CountingDriver()), \
            robot_client(gw, CountingDriver(), "intruder") as intruder, \
            robot_client(gw, CountingDriver(), "arm-2", key="probe") as spoof:
        robot = gw.robot("arm-1", timeout_s=5)
        assert wait_for(lambda: gw.stats["denied"] >= 1)
        assert wait_for(lambda: gw.stats["dropped:identity"] >= 1)
        robot.reset(seed=0)
        assert robot.send_action(np.array([0.25], np.float32)).reward == -0.25
        assert set(gw.robots()) == {"arm-1"}
        assert not intruder.stats.registered and not spoof.stats.registered


@contextlib.contextmanager
def raw_dealer(key: str, endpoint: str) -> Iterator[zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_publickey, sock.curve_secretkey = KEYS[key]
    sock.curve_serverkey = KEYS["server"][0]
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


def test_garbage_and_oversized_frames_are_dropped_and_serving_goes_on() -> None:
    with gateway() as gw, robot_client(gw, CountingDriver()), \
            raw_dealer("probe", gw.endpoint) as probe:
        robot = gw.robot("arm-1", timeout_s=5)
        probe.send(b"\x00garbage")
        probe.send_multipart([b"two", b"frames"])
        probe.send(b"\0" * (MAX_WIRE_BYTES + 10))  # over the protocol limit, under MAXMSGSIZE
        probe.send(lz4.frame.compress(b"\0" * (32 << 20)))  # a small frame that claims 32 MiB
        beat = Message("heartbeat", "probe", 1, {"holding": True, "estop": False})
        probe.send(encode(beat))  # valid, but not registered: refused with an error reply
        assert wait_for(lambda: sum(v for k, v in gw.stats.items()
                                    if k.startswith("dropped:")) >= 5)
        assert wait_for(lambda: probe.poll(10) and b"not_registered" in lz4.frame.decompress(
            probe.recv()))  # the gateway tells the sender why (bad_message for the others)
        robot.reset(seed=0)
        assert robot.send_action(np.array([0.5], np.float32)).reward == -0.5
        with raw_dealer("probe", gw.endpoint) as huge:  # over MAXMSGSIZE: zmq cuts the peer
            huge.send(b"\0" * (3 * MAX_WIRE_BYTES))
            time.sleep(0.2)
        assert robot.send_action(np.array([0.5], np.float32)).reward == -1.0
    assert gw.stats["dropped:frames"] == 1 and gw.stats["dropped:unregistered"] == 1


def test_watchdog_holds_still_and_drops_stale_actions() -> None:
    driver = CountingDriver(control_hz=50.0, act_s=0.2)  # each act takes ten periods
    safety = SafetyConfig(control_hz=50.0, watchdog_periods=3)
    with gateway() as gw, robot_client(gw, driver, safety=safety) as client:
        robot = gw.robot("arm-1", timeout_s=5)
        robot.reset(seed=0)
        with pytest.raises(BridgeError, match="watchdog"):
            robot.send_chunk(np.full((4, 1), 0.1, np.float32))
        assert driver.acts == 1 and client.safety.stats.watchdog_trips == 1
        assert wait_for(lambda: client.safety.holding and driver.holds >= 1)
        acts = driver.acts
        time.sleep(0.2)  # ten periods with no fresh action: still holding, nothing ran
        assert driver.acts == acts and client.safety.holding


def test_estop_starts_engaged_and_rearming_discards_queued_chunks() -> None:
    driver = CountingDriver()
    with gateway() as gw, robot_client(gw, driver, arm=False) as client:
        robot = gw.robot("arm-1", timeout_s=5)
        with pytest.raises(BridgeError, match="estop_engaged"):
            robot.reset(seed=0)
        with pytest.raises(BridgeError, match="estop_engaged"):
            robot.send_chunk(np.full((5, 1), 0.2, np.float32))
        assert client.safety.queued == 5 and driver.acts == 0
        client.arm()
        assert wait_for(lambda: not client.safety.engaged)
        assert client.safety.queued == 0 and client.safety.stats.discarded_on_arm == 5
        time.sleep(0.1)
        assert driver.acts == 0  # the queued trajectory never ran
        robot.reset(seed=0)
        assert robot.send_action(np.array([0.2], np.float32)).reward == pytest.approx(-0.2)


def test_a_dead_client_is_marked_lost_and_can_rejoin() -> None:
    with gateway(heartbeat_s=0.1, lost_after_s=0.5) as gw:
        with robot_client(gw, CountingDriver()):
            robot = gw.robot("arm-1", timeout_s=5)
            robot.reset(seed=0)
        started = time.monotonic()
        assert wait_for(lambda: gw.is_lost("arm-1"), timeout_s=3)
        assert time.monotonic() - started < 1.5
        with pytest.raises(RobotLost):
            robot.send_action(np.array([0.1], np.float32))
        with robot_client(gw, CountingDriver()):
            assert wait_for(lambda: not gw.is_lost("arm-1"))
            robot.reset(seed=0)  # the old handle works again after the robot rejoined
            assert robot.send_action(np.array([0.1], np.float32)).reward == pytest.approx(-0.1)
