"""The robot-side bridge client: runs on the robot's computer with numpy, pyzmq, msgpack and lz4.

Example (about what `fleet robot run` does):

    driver = GymDriver("InvertedPendulum-v5", control_hz=50.0)     # or your own Driver
    client = BridgeClient(driver, ClientConfig("arm-1", "tcp://fleet:5555", keys...))
    client.arm()                      # the e-stop starts engaged: an operator arms it
    client.run(stop)                  # until stop is set

The client connects out (a DEALER to the gateway's ROUTER, CURVE-encrypted), registers the
driver's spec, answers `reset` with an observation, and runs `action` chunks through `Safety` at
the control rate, sending one observation per executed action. A driver whose spec says
`execution="chunk"` asks the fleet for each policy call's whole chunk (open loop) instead of one
action per round trip. It needs only this file,
`protocol.py` and `safety.py`; copy the three onto a robot that has no fleet installed.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import Any

import numpy as np
import zmq

from .protocol import (
    GATEWAY_KINDS,
    MAX_HORIZON,
    MAX_WIRE_BYTES,
    Message,
    ProtocolError,
    body_limit,
    decode,
    encode,
)
from .safety import Safety, SafetyConfig

log = logging.getLogger("fleet.bridge.client")
Observation = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DriverSpec:
    """What the gateway learns at registration. `obs_spec` maps names to (dtype, shape)."""

    embodiment: str
    task: str
    obs_spec: dict[str, tuple[str, tuple[int, ...]]]
    action_dim: int
    control_hz: float
    action_low: float = -1.0
    action_high: float = 1.0
    # "chunk": ask the fleet for each policy call's whole chunk, run open loop at control_hz;
    # "step" (the default): one action per message, a round trip per step
    execution: str = "step"


@dataclasses.dataclass(frozen=True)
class StepResult:
    reward: float
    success: bool = False
    failed: bool = False  # a terminal failure (the pole fell)
    truncated: bool = False  # the episode's step limit


class Driver:
    """Your hardware, in about 50 lines. Subclass and fill in the four methods:

        class MyArm(Driver):
            spec = DriverSpec("my-arm", "pick", {"state": ("float32", (7,))}, 7, 20.0)
            def reset(self, seed): self.arm.go_home()
            def observe(self): return {"state": self.arm.joints()}
            def act(self, action): self.arm.command(action); return StepResult(0.0)
            def hold(self): self.arm.command(self.arm.joints())     # stay where you are
    """

    spec: DriverSpec

    def reset(self, seed: int | None) -> None:
        raise NotImplementedError

    def observe(self) -> Observation:
        raise NotImplementedError

    def act(self, action: np.ndarray) -> StepResult:
        raise NotImplementedError

    def hold(self) -> None:
        """Hold still (the watchdog or the e-stop says so). A simulator just stops stepping."""

    def close(self) -> None:
        pass


class GymDriver(Driver):
    """Any gymnasium env with a Box action space, by id; actions in [-1, 1] scaled to its bounds.

        driver = GymDriver("InvertedPendulum-v5", control_hz=100.0)
    """

    def __init__(self, env_id: str, control_hz: float = 50.0,
                 max_episode_steps: int | None = None) -> None:
        import gymnasium as gym  # only robots that simulate need gymnasium

        self._env: Any = gym.make(env_id, max_episode_steps=max_episode_steps)
        space = self._env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"{env_id}: only Box action spaces are supported")
        self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
        obs_dim = int(np.prod(self._env.observation_space.shape or (1,)))
        self.spec = DriverSpec("gym", env_id, {"state": ("float32", (obs_dim,))},
                               int(np.prod(space.shape)), control_hz)
        self._obs = np.zeros(obs_dim, np.float32)

    def reset(self, seed: int | None) -> None:
        obs, _ = self._env.reset(seed=seed)
        self._obs = np.asarray(obs, np.float32).ravel()

    def observe(self) -> Observation:
        return {"state": self._obs.copy()}

    def act(self, action: np.ndarray) -> StepResult:
        scaled = self._low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)
        obs, reward, terminated, truncated, info = self._env.step(scaled)
        self._obs = np.asarray(obs, np.float32).ravel()
        success = bool(info.get("is_success", False))
        return StepResult(float(reward), success, bool(terminated) and not success,
                          bool(truncated) and not terminated)

    def close(self) -> None:
        self._env.close()


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Keys are Z85 text, as `fleet keys` writes them."""

    robot_id: str
    endpoint: str  # tcp://host:port of the gateway
    server_public_key: bytes
    public_key: bytes
    secret_key: bytes
    heartbeat_s: float = 0.5  # send one when nothing else went out this long
    gateway_timeout_s: float = 3.0  # silent gateway: register again (the watchdog holds still)
    deadline_ms: int = 1000  # on every message sent


@dataclasses.dataclass
class ClientStats:
    registered: bool = False
    sent: int = 0
    received: int = 0
    dropped: int = 0  # malformed messages from the gateway
    unsent: int = 0  # the send queue was full (gateway unreachable)
    acted: int = 0
    holds: int = 0  # times the robot went from acting to holding still
    resets: int = 0
    register_refused: str = ""  # the gateway's reason, when it refused our spec


class BridgeClient:
    """One robot's connection to the fleet. `run` owns the socket; other threads may only call
    `arm`, `estop` and read `stats`/`safety` state."""

    def __init__(self, driver: Driver, config: ClientConfig,
                 safety: SafetyConfig | None = None, context: zmq.Context | None = None) -> None:
        spec = driver.spec
        self.driver, self.config = driver, config
        self.safety = Safety(safety or SafetyConfig(control_hz=spec.control_hz,
                                                    action_low=spec.action_low,
                                                    action_high=spec.action_high),
                             spec.action_dim)
        self.stats = ClientStats()
        self._period = 1.0 / self.safety.config.control_hz
        # the biggest message a gateway sends us: an action chunk of MAX_HORIZON actions
        self._max_body = body_limit({}, MAX_HORIZON * spec.action_dim)
        self._ctx = context or zmq.Context.instance()
        self._requests: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._seq = 0
        self._last_sent = self._last_heard = self._next_tick = 0.0
        self._register_seq = 0
        self._registered_at = -1e9  # when the newest register went out

    # ---- operator controls (any thread) ----

    def arm(self) -> None:
        """Release the e-stop at the next control period; queued chunks are discarded."""
        self._requests.put(("arm", ""))

    def estop(self, reason: str = "operator") -> None:
        """Latch the e-stop at the next control period."""
        self._requests.put(("estop", reason))

    # ---- the loop ----

    def run(self, stop: threading.Event) -> None:
        sock = self._connect()
        try:
            self._register(sock, time.monotonic())
            self._next_tick = time.monotonic()
            while not stop.is_set():
                self._wait_until_tick(sock)
                now = time.monotonic()
                self._controls(sock)
                self._tick(sock, now)
                self._keepalive(sock, now)
                self._next_tick = max(self._next_tick + self._period, now)
        finally:
            sock.close(linger=0)
            self.driver.hold()

    def _connect(self) -> zmq.Socket:
        cfg = self.config
        sock = self._ctx.socket(zmq.DEALER)
        sock.curve_secretkey, sock.curve_publickey = cfg.secret_key, cfg.public_key
        sock.curve_serverkey = cfg.server_public_key
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * MAX_WIRE_BYTES)
        sock.setsockopt(zmq.SNDHWM, 64)
        sock.connect(cfg.endpoint)
        return sock

    def _wait_until_tick(self, sock: zmq.Socket) -> None:
        while (left := self._next_tick - time.monotonic()) > 0:
            if sock.poll(max(1, int(left * 1000))):
                self._drain(sock)

    def _drain(self, sock: zmq.Socket) -> None:
        for _ in range(100):  # bounded: a flood cannot starve the control loop
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle(sock, frames)

    def _handle(self, sock: zmq.Socket, frames: list[bytes]) -> None:
        now = time.monotonic()
        try:
            if len(frames) != 1:
                raise ProtocolError(f"{len(frames)} frames, expected 1")
            msg = decode(frames[0], max_body=self._max_body)
            if msg.robot_id != self.config.robot_id or msg.kind not in GATEWAY_KINDS:
                raise ProtocolError(f"{msg.kind} for robot {msg.robot_id!r} is not for us")
        except ProtocolError as e:
            self.stats.dropped += 1
            log.warning("dropped a message from the gateway: %s", e)
            return
        self.stats.received += 1
        self._last_heard = now
        if msg.kind == "action":
            self._on_action(sock, msg, now)
        elif msg.kind == "reset":
            self._on_reset(sock, msg)
        elif msg.kind == "ack" and msg.reply_to == self._register_seq:
            self.stats.registered = True
        elif msg.kind == "error":
            log.warning("gateway error %s: %s", msg.body["code"], msg.body["message"])
            if msg.body["code"] == "bad_register" and msg.reply_to == self._register_seq:
                self.stats.register_refused = msg.body["message"]  # it retries; fix the spec
            if msg.body["code"] == "not_registered" and now - self._registered_at > 1.0:
                self._register(sock, now)  # the gateway sees a new connection: register again

    def _on_action(self, sock: zmq.Socket, msg: Message, now: float) -> None:
        idle = self.safety.queued == 0
        why = self.safety.push(msg.body["chunk"], now, tag=msg.seq,
                               grace_s=msg.deadline_ms / 1000)
        if why is not None:
            self._send(sock, "error", {"code": "refused_action", "message": why}, msg.seq)
        elif self.safety.engaged:
            self._send(sock, "error", {"code": "estop_engaged", "message": self.safety.reason},
                       msg.seq)
        elif idle:  # a chunk for an idle robot starts now, not at the next tick
            self._next_tick = min(self._next_tick, max(now, self._last_act_time + self._period))

    _last_act_time = 0.0

    def _on_reset(self, sock: zmq.Socket, msg: Message) -> None:
        self.safety.clear()
        if self.safety.engaged:  # a reset moves hardware: not while stopped
            self._send(sock, "error", {"code": "estop_engaged", "message": self.safety.reason},
                       msg.seq)
            return
        self.driver.reset(msg.body["seed"])
        self.stats.resets += 1
        self._observe(sock, StepResult(0.0), -1, None, msg.seq)

    def _controls(self, sock: zmq.Socket) -> None:
        while True:
            try:
                what, reason = self._requests.get_nowait()
            except queue.Empty:
                return
            if what == "arm":
                log.info("armed; discarded %d queued actions", self.safety.arm())
            else:
                self.safety.engage(reason)
                self.driver.hold()
                # An action in flight will not run: its call is answered now, not left to time
                # out (the fleet closes the episode and waits for a heartbeat saying armed).
                for tag in self.safety.clear():
                    self._send(sock, "error", {"code": "estop_engaged", "message": reason}, tag)

    def _tick(self, sock: zmq.Socket, now: float) -> None:
        was_holding = self.safety.holding
        action = self.safety.next_action(now)
        if action is None:
            if not was_holding:
                self.stats.holds += 1
                self.driver.hold()
            if self.safety.tripped is not None:
                self._send(sock, "error", {"code": "watchdog", "message": "a stale action was "
                                           "dropped; holding still"}, self.safety.tripped)
                self.safety.tripped = None
            return
        tag, index = self.safety.current
        result = self.driver.act(action)
        self._last_act_time = now
        self.stats.acted += 1
        if result.success or result.failed or result.truncated:
            self.safety.clear()  # the rest of the chunk belongs to no episode
        self._observe(sock, result, index, action, tag)

    def _observe(self, sock: zmq.Socket, r: StepResult, step: int, executed: np.ndarray | None,
                 reply_to: int) -> None:
        body = {"obs": self.driver.observe(), "reward": r.reward, "success": r.success,
                "failed": r.failed, "truncated": r.truncated, "step": step,
                "executed": executed}
        self._send(sock, "observation", body, reply_to)

    def _keepalive(self, sock: zmq.Socket, now: float) -> None:
        if now - self._last_heard > self.config.gateway_timeout_s and (
                now - self._last_sent > self.config.gateway_timeout_s / 2
                or not self.stats.registered):
            self._register(sock, now)
        elif now - self._last_sent > self.config.heartbeat_s:
            self._send(sock, "heartbeat", {"holding": self.safety.holding,
                                           "estop": self.safety.engaged})

    def _register(self, sock: zmq.Socket, now: float) -> None:
        s = self.driver.spec
        body = {"embodiment": s.embodiment, "task": s.task, "obs_dim": _obs_dim(s),
                "action_dim": s.action_dim, "action_low": s.action_low,
                "action_high": s.action_high, "control_hz": s.control_hz,
                "obs_spec": {k: {"dtype": d, "shape": list(sh)} for k, (d, sh) in
                             s.obs_spec.items()}, "client": "fleet-python/1"}
        if s.execution != "step":  # optional: a step robot's register is what it always was
            body["execution"] = s.execution
        self.stats.registered = False
        self._last_heard = self._registered_at = now  # a full timeout for the answer
        self._register_seq = self._send(sock, "register", body)

    def _send(self, sock: zmq.Socket, kind: str, body: dict[str, Any], reply_to: int = 0) -> int:
        self._seq += 1
        msg = Message(kind, self.config.robot_id, self._seq, body, reply_to,
                      self.config.deadline_ms)
        try:
            sock.send(encode(msg), zmq.NOBLOCK)
            self.stats.sent += 1
        except zmq.Again:
            self.stats.unsent += 1
        self._last_sent = time.monotonic()
        return self._seq


def _obs_dim(spec: DriverSpec) -> int:
    return int(np.prod(spec.obs_spec["state"][1])) if "state" in spec.obs_spec else 1
