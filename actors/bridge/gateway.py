"""The fleet-side gateway: one CURVE ROUTER serving many bridged robots, each seen as a `Robot`.

Example (a robot actor drives a real robot exactly as it drives a simulated one):

    gateway = Gateway(GatewayConfig("tcp://0.0.0.0:5555"), server_keys, {robot_public: "arm-1"})
    gateway.start()
    robot = gateway.robot("arm-1", timeout_s=30)       # a BridgeRobot, once arm-1 registered
    RobotWorker(robot, policy, outbox, weights, WorkerConfig()).run(stop)

Only keys on the allowlist get through the CURVE handshake (a ZAP callback), and a key may speak
only for its own robot id. One thread owns the socket; a malformed, oversized or misaddressed
message is dropped with a logged reason and counted in `stats`, and serving goes on. A robot
silent for `lost_after_s` is lost: its pending call fails at once with `RobotLost`, and it rejoins
by registering again. Every call has a deadline (`call_timeout_s`).

One robot cannot starve another (`_receive`): frames are taken from the socket a few at a time,
queued per robot (per key, not per connection) and served in turn, one message per robot per
round, with calls sent between messages. Before anything is decoded, a robot must have credit:
the pending call's answers (its chunk's length, plus a little slack) at the size its `register`
declared, or else a small rate of messages outside calls (heartbeats, registers) at
`ENVELOPE_BYTES`. Whatever has no credit is dropped undecoded, so a flood costs a `recv` per
frame. Answers to finished or unknown calls are dropped, and an `observation`'s `step` must be
the next one its call expects. Stats keys, drop logs (1st, 10th, 100th... per robot and reason)
and `bad_message` replies are all bounded.

Registration is checked against the policy's `Contract` (sizes, dtypes, shapes) and refused with
an error naming the mismatch. Each registration starts a fresh link: nothing of a robot's earlier
connection (its inbox, the call it was waiting for, its e-stop state) carries over, and a call
still waiting on the old one fails with `RobotLost`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
import math
import queue
import socket
import threading
import time
from typing import Any

import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from actors.robots.base import Feedback, Observation, RobotFault, RobotSpec

from .contract import Contract, check_register
from .protocol import (
    ENVELOPE_BYTES,
    MAX_WIRE_BYTES,
    ROBOT_KINDS,
    BudgetError,
    Message,
    ProtocolError,
    body_limit,
    check_str,
    decode,
    encode,
)

log = logging.getLogger("fleet.bridge.gateway")


class BridgeError(RobotFault):
    """A call to a bridged robot failed: it refused, timed out or was lost."""


class RobotLost(BridgeError):
    """The robot went silent, or registered again (its earlier connection is over)."""


class RobotEstopped(BridgeError):
    """The robot's own e-stop is engaged: it answered a call with `estop_engaged`."""


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    endpoint: str = "tcp://127.0.0.1:5555"  # tcp://127.0.0.1:* picks a free port
    heartbeat_s: float = 0.5
    lost_after_s: float = 3.0
    call_timeout_s: float = 5.0
    max_wire_bytes: int = MAX_WIRE_BYTES
    # Messages a robot may send outside its calls (heartbeats, registers, stray answers): a
    # token bucket per robot; beyond it they are dropped without being decoded.
    unsolicited_per_s: float = 10.0
    unsolicited_burst: int = 20
    receive_hwm: int = 100  # frames ZeroMQ queues per connection (each <= 2 x max_wire_bytes)

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s < self.lost_after_s:
            raise ValueError("gateway.heartbeat_s must be > 0 and below lost_after_s")
        if not 0 < self.call_timeout_s <= 60:
            raise ValueError("gateway.call_timeout_s must be in (0, 60]")
        if not (self.unsolicited_per_s > 0 and self.unsolicited_burst >= 1):
            raise ValueError("gateway.unsolicited_per_s must be > 0 and unsolicited_burst >= 1 "
                             "(a robot must be able to send heartbeats and register)")
        if self.receive_hwm < 1:
            raise ValueError("gateway.receive_hwm must be >= 1")


SLACK = 4  # messages a call may bring beyond its answers (a heartbeat or register meanwhile)
TAKE = 64  # frames taken from the socket per round (ZeroMQ fair-queues them by connection)
DROPS = frozenset({"frames", "auth", "identity", "kind", "unregistered", "schema", "step",
                   "decode", "budget", "flood", "internal"})  # the `dropped:*` stats keys


class _Refused(ProtocolError):
    """A message refused for a reason in `DROPS`; `category` names it (a bounded stats key)."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(f"{category}: {message}")
        self.category = category


@dataclasses.dataclass
class _Bucket:
    """A token bucket: `take` says whether one more event fits `rate` per second."""

    rate: float
    burst: int
    tokens: float = 0.0
    stamp: float = 0.0

    def __post_init__(self) -> None:
        self.tokens, self.stamp = float(self.burst), time.monotonic()

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _sparse(n: int) -> bool:
    """Log the 1st, 10th, 100th... of a repeated event, never all of them."""
    return math.log10(n).is_integer()


class _Allowlist:
    """The ZAP callback: a public key (Z85) gets in only if it is listed."""

    def __init__(self, keys: dict[bytes, str], stats: collections.Counter[str]) -> None:
        self.keys, self.stats = keys, stats

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        n = self.stats["denied"] = self.stats["denied"] + 1
        # An unlisted client retries every 100 ms forever: log 1st, 10th, 100th... not all.
        if math.log10(n).is_integer():
            log.warning("refused a CURVE client with unlisted key %s (%d refusals so far)",
                        key.decode(errors="replace"), n)
        return False


@dataclasses.dataclass
class _Link:
    robot_id: str
    identity: bytes
    spec: RobotSpec
    obs_spec: dict[str, Any]
    last_seen: float
    inbox: queue.SimpleQueue[Message | None] = dataclasses.field(
        default_factory=queue.SimpleQueue)
    lost: bool = False  # silent too long, or registered again (then `replaced` too)
    replaced: bool = False
    holding: bool = True  # as its last heartbeat said
    estop: bool = False  # its heartbeat said so, or it answered a call with estop_engaged
    pending: int = 0  # the seq of the call being waited for; other answers are late
    # Set by the serving thread when it sends the call, read before decoding its answers:
    steps: int = 0  # the observations an action call asks for (its chunk's H); 0 for a reset
    next_step: int = 0  # the `step` its next observation must carry (-1: a reset's answer)
    credit: int = 0  # messages it may still bring, decoded at up to `max_body` bytes each
    max_body: int = ENVELOPE_BYTES  # an observation's size, from the registered obs_spec


class Gateway:
    """Serves every allowlisted robot from one thread. `allowlist` maps public keys (Z85) to ids."""

    def __init__(self, config: GatewayConfig, server_keys: tuple[bytes, bytes],
                 allowlist: dict[bytes, str], context: zmq.Context | None = None,
                 contract: Contract | None = None) -> None:
        self.config = config
        self.contract = contract
        self.refused: dict[str, str] = {}  # robot id -> why its newest registration was refused
        self.stats: collections.Counter[str] = collections.Counter()
        self.endpoint = ""
        self._public, self._secret = server_keys
        self._keys = dict(allowlist)
        for robot_id in self._keys.values():
            check_str("allowlist robot id", robot_id)
        self._seq = itertools.count(1)  # one counter for everything the gateway sends
        # Two I/O threads: ZeroMQ spreads connections over them, so one robot's big frames
        # (CURVE decryption runs in the I/O thread) do not delay another robot's small ones.
        self._ctx = context or zmq.Context(io_threads=2)
        self._own_ctx = context is None
        self._links: dict[str, _Link] = {}
        self._by_identity: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue[tuple[_Link, str, int, bytes, int]] = queue.SimpleQueue()
        # per allowlisted robot id (so bounded by the allowlist): messages outside calls,
        # bad_message replies, and how often each reason of drop was seen (for sparse logs)
        self._unsolicited: dict[str, _Bucket] = {}
        self._replies: dict[str, _Bucket] = {}
        self._drops: collections.Counter[tuple[str, str]] = collections.Counter()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._auth: ThreadAuthenticator | None = None

    # ---- lifecycle ----

    def start(self) -> str:
        """Bind and serve in a thread; returns the bound endpoint."""
        self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("fleet.bridge.zap"))
        self._auth.start()
        self._auth.configure_curve_callback("*", _Allowlist(self._keys, self.stats))
        sock = self._ctx.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_secretkey, sock.curve_publickey = self._secret, self._public
        for opt, value in ((zmq.LINGER, 0), (zmq.ROUTER_MANDATORY, 1),
                           (zmq.MAXMSGSIZE, 2 * self.config.max_wire_bytes),
                           (zmq.SNDHWM, 1000), (zmq.RCVHWM, self.config.receive_hwm)):
            sock.setsockopt(opt, value)
        sock.bind(self.config.endpoint)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                        name="bridge-gateway")
        self._thread.start()
        return self.endpoint

    def close(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._auth is not None:
            self._auth.stop()
        self._wake_r.close()
        self._wake_w.close()
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what robot actors use ----

    def robot(self, robot_id: str, timeout_s: float = 30.0) -> BridgeRobot:
        """The robot once it has registered; raises `BridgeError` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                link = self._links.get(robot_id)
            if link is not None and not link.lost:
                return BridgeRobot(self, link)
            time.sleep(0.01)
        raise BridgeError(f"robot {robot_id!r} did not register within {timeout_s} s")

    def wait_live(self, robot_id: str, stop: threading.Event) -> BridgeRobot | None:
        """The robot once it is registered and its own e-stop released; None once `stop` is set.

            robot = gateway.wait_live("arm-1", stop)      # after a fault, before the next episode
        """
        while not stop.is_set():
            with self._lock:
                link = self._links.get(robot_id)
            if link is not None and not link.lost and not link.estop:
                return BridgeRobot(self, link)
            stop.wait(0.02)
        return None

    def robots(self) -> dict[str, str]:
        """Every robot seen: id -> "live", "estop" (its own e-stop is engaged) or "lost"."""
        with self._lock:
            return {k: "lost" if v.lost else "estop" if v.estop else "live"
                    for k, v in self._links.items()}

    def is_lost(self, robot_id: str) -> bool:
        with self._lock:
            link = self._links.get(robot_id)
        return link is None or link.lost

    def link(self, robot_id: str) -> _Link | None:
        """The robot's current registration."""
        with self._lock:
            return self._links.get(robot_id)

    def call(self, link: _Link, kind: str, body: dict[str, Any]) -> int:
        """Queue a message for a robot; returns its seq (replies carry it as `reply_to`).
        Encoded here, so a bad body (a NaN action) raises `ProtocolError` in the caller."""
        if link.lost:
            raise RobotLost(f"robot {link.robot_id!r} is lost")
        seq = next(self._seq)
        deadline_ms = int(self.config.call_timeout_s * 1000)
        data = encode(Message(kind, link.robot_id, seq, body, 0, deadline_ms))
        link.pending = seq
        steps = len(body["chunk"]) if kind == "action" else 0
        self._outbox.put((link, kind, seq, data, steps))
        self._wake()
        return seq

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full buffer: the loop is awake already
            self._wake_w.send(b"\0")

    # ---- the serving thread ----

    def _serve(self, sock: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        next_beat = 0.0
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(int(self.config.heartbeat_s * 1000 / 2)))
                if self._wake_r.fileno() in ready:
                    with contextlib.suppress(OSError):  # drained: poll would spin otherwise
                        self._wake_r.recv(1 << 16)
                if sock in ready:
                    self._receive(sock)
                self._flush_outbox(sock)
                if time.monotonic() >= next_beat:
                    self._beat(sock)
                    next_beat = time.monotonic() + self.config.heartbeat_s
        finally:
            sock.close(linger=0)

    def _receive(self, sock: zmq.Socket) -> None:
        """Take up to TAKE frames into per-robot queues (admitted or dropped, undecoded), then
        serve the queues in turn, one message each, sending calls made meanwhile at once."""
        queues: dict[str, collections.deque[tuple[list[zmq.Frame], int]]] = {}  # by robot
        for _ in range(TAKE):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._admit(sock, frames, queues)
        while queues:
            for owner in list(queues):
                pending = queues[owner]
                frames, max_body = pending.popleft()
                if not pending:
                    del queues[owner]
                self._handle(sock, frames, max_body, owner)
                if not self._outbox.empty():
                    self._flush_outbox(sock)

    def _admit(self, sock: zmq.Socket, frames: list[zmq.Frame],
               queues: dict[str, collections.deque[tuple[list[zmq.Frame], int]]]) -> None:
        """Queue a frame with the decompressed size it may have, or drop it undecoded."""
        owner = self._keys.get(str(frames[-1].get("User-Id")).encode())
        if owner is None:  # the ZAP callback let it in, so this cannot happen; never trust it
            self._drop(sock, frames, "auth", "auth: no allowlisted key on the connection")
            return
        link = self._links.get(owner)
        if link is not None and link.credit > 0:  # an answer to the pending call, maybe
            link.credit -= 1
            max_body = link.max_body
        elif self._bucket(self._unsolicited, owner, self.config.unsolicited_per_s,
                          self.config.unsolicited_burst).take(time.monotonic()):
            max_body = ENVELOPE_BYTES  # no arrays outside a call
        else:  # the flood's path: count, now and then a log line, nothing else
            self.stats["dropped:flood"] += 1
            n = self._drops[(owner, "flood")] = self._drops[(owner, "flood")] + 1
            if _sparse(n):
                log.warning("dropped a message from %s: more messages than were asked for (%d "
                            "such drops so far)", owner, n)
            return
        queues.setdefault(owner, collections.deque()).append((frames, max_body))

    @staticmethod
    def _bucket(buckets: dict[str, _Bucket], owner: str, rate: float, burst: int) -> _Bucket:
        bucket = buckets.get(owner)
        if bucket is None:  # owners come from the allowlist, so these dicts stay small
            bucket = buckets[owner] = _Bucket(rate, burst)
        return bucket

    def _handle(self, sock: zmq.Socket, frames: list[zmq.Frame], max_body: int,
                owner: str) -> None:
        try:
            self._dispatch(sock, frames, max_body, owner)
        except _Refused as e:
            self._drop(sock, frames, e.category, str(e))
        except BudgetError as e:
            self._drop(sock, frames, "budget", f"budget: {e}")
        except ProtocolError as e:
            self._drop(sock, frames, "decode", str(e))
        except Exception as e:  # a bug must not stop the other robots' service
            log.exception("dropped a message that broke the gateway")
            self._drop(sock, frames, "internal", f"internal: {type(e).__name__}")

    def _drop(self, sock: zmq.Socket, frames: list[zmq.Frame], category: str,
              reason: str) -> None:
        """Count the reason, log it sparsely, and tell the sender (its key names it) what was
        wrong, at most `_REPLY_RATE` times a second (a flood is dropped in `_admit`)."""
        identity = frames[0].bytes
        self.stats[f"dropped:{category}"] += 1
        owner = self._keys.get(str(frames[-1].get("User-Id")).encode())
        who = owner or "?"
        n = self._drops[(who, category)] = self._drops[(who, category)] + 1
        if _sparse(n):
            log.warning("dropped a message from %s: %s (%d such drops so far)",
                        owner or identity.hex()[:10], reason[:300], n)
        if owner is None or not self._bucket(
                self._replies, owner, self._REPLY_RATE, 10).take(time.monotonic()):
            return
        code = "not_registered" if category == "unregistered" else "bad_message"
        err = Message("error", owner, next(self._seq), {"code": code, "message": reason[:1024]})
        with contextlib.suppress(zmq.ZMQError):
            sock.send_multipart([identity, encode(err)], zmq.NOBLOCK)

    _REPLY_RATE = 1.0  # bad_message replies per robot per second, after a burst of 10

    def _dispatch(self, sock: zmq.Socket, frames: list[zmq.Frame], max_body: int,
                  owner: str) -> None:
        """Decode and act on one message of `owner` (the robot id its key is listed for)."""
        if len(frames) != 2:
            raise _Refused("frames", f"{len(frames) - 1} frames, expected 1")
        identity, payload = frames[0].bytes, frames[1]
        msg = decode(payload.bytes, max_wire=self.config.max_wire_bytes, max_body=max_body)
        if msg.robot_id != owner:
            raise _Refused("identity", f"key of {owner!r} spoke for {msg.robot_id!r}")
        if msg.kind not in ROBOT_KINDS:
            raise _Refused("kind", f"{msg.kind!r} is not sent by robots")
        if msg.kind == "register":
            self._register(sock, identity, msg)
            return
        link = self._links.get(msg.robot_id)
        if link is None or link.identity != identity:
            raise _Refused("unregistered", f"{msg.kind} before register")
        link.last_seen, link.lost = time.monotonic(), False
        if msg.kind == "observation":
            try:
                _check_obs(msg, link.obs_spec, link.spec.action_dim)
            except ProtocolError as e:  # the call it answers fails now, not at its deadline
                if link.pending and msg.reply_to == link.pending:
                    self._end_call(link)
                    link.inbox.put(Message("error", msg.robot_id, msg.seq, {
                        "code": "bad_observation", "message": str(e)[:1024]}, msg.reply_to))
                raise
            link.estop = False  # it stepped or reset: its e-stop is released
        elif msg.kind == "heartbeat":
            link.holding, link.estop = msg.body["holding"], msg.body["estop"]
            return
        if not link.pending or msg.reply_to != link.pending:  # late or unasked: never queued
            self.stats[f"late:{msg.kind}"] += 1
            n = self._drops[(owner, "late")] = self._drops[(owner, "late")] + 1
            if msg.kind == "error" and _sparse(n):
                log.warning("robot %s: %s: %s (%d late answers so far)", msg.robot_id,
                            msg.body["code"], msg.body["message"][:300], n)
            return
        more = _next_step(link, msg.body) if msg.kind == "observation" else False
        if not more:  # its last observation, or an error: the call is over
            self._end_call(link)
        link.inbox.put(msg)
        self.stats[f"received:{msg.kind}"] += 1

    @staticmethod
    def _end_call(link: _Link) -> None:
        """The call has all its answers: anything more that names it is late."""
        link.pending = link.credit = 0

    def _register(self, sock: zmq.Socket, identity: bytes, msg: Message) -> None:
        b = msg.body
        why = check_register(b, self.contract)
        if why is not None:  # answered, and nothing of the robot's current link changes
            self.stats["refused:register"] += 1
            self.refused[msg.robot_id] = why
            log.warning("robot %s: registration refused: %s", msg.robot_id, why)
            with contextlib.suppress(zmq.ZMQError):
                sock.send_multipart([identity, encode(Message(
                    "error", msg.robot_id, next(self._seq),
                    {"code": "bad_register", "message": f"{msg.robot_id}: {why}"[:1024]},
                    msg.seq))], zmq.NOBLOCK)
            return
        spec = RobotSpec(msg.robot_id, b["embodiment"], b["task"], b["obs_dim"], b["action_dim"],
                         b["action_low"], b["action_high"], b["control_hz"], b["execution"])
        fresh = _Link(msg.robot_id, identity, spec, b["obs_spec"], time.monotonic())
        with self._lock:
            old = self._links.get(msg.robot_id)
            if old is not None:  # its earlier connection is over: a call on it fails now
                self._by_identity.pop(old.identity, None)
                if not old.lost:  # back before its silence was noticed: still a lost link
                    self.stats["lost"] += 1
                old.lost = old.replaced = True
                old.inbox.put(None)
            link = self._links[msg.robot_id] = fresh
            link.max_body = body_limit(b["obs_spec"], spec.action_dim)
            self.refused.pop(msg.robot_id, None)
            self._by_identity[identity] = msg.robot_id
        self.stats["registered"] += 1
        log.info("robot %s registered (%s, %s, %s execution)", msg.robot_id, spec.embodiment,
                 spec.task, spec.execution)
        cfg = self.config
        self._send(sock, link, "ack", encode(Message(
            "ack", msg.robot_id, next(self._seq), {"heartbeat_ms": int(cfg.heartbeat_s * 1000),
                                                   "lost_after_ms": int(cfg.lost_after_s * 1000)},
            msg.seq)))

    def _flush_outbox(self, sock: zmq.Socket) -> None:
        while True:
            try:
                link, kind, seq, data, steps = self._outbox.get_nowait()
            except queue.Empty:
                return
            if link.pending == seq:  # what its answers may be, before any of them can arrive
                link.steps, link.next_step = steps, 0 if kind == "action" else -1
                link.credit = max(steps, 1) + 1 + SLACK  # the answers, an error, and slack
            # A call made on a connection that ended (lost, registered again) is not sent to the
            # robot's new connection; its caller learns at once, not at its deadline.
            if link.lost or not self._send(sock, link, kind, data):
                if link.pending == seq:
                    self._end_call(link)
                link.inbox.put(Message("error", link.robot_id, seq, {
                    "code": "unreachable", "message": "the gateway could not send"}, seq))

    def _send(self, sock: zmq.Socket, link: _Link, kind: str, data: bytes) -> bool:
        try:
            sock.send_multipart([link.identity, data], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as e:  # EHOSTUNREACH (gone) or EAGAIN (its queue is full)
            log.warning("could not send %s to %s: %s", kind, link.robot_id, e)
            if e.errno == zmq.EHOSTUNREACH:  # that connection is closed for good: a robot
                self._lose(link, "its connection closed")  # that reconnects registers again
            return False

    def _lose(self, link: _Link, why: str) -> None:
        if link.lost:
            return
        with self._lock:
            link.lost = True
        self.stats["lost"] += 1
        log.warning("robot %s is lost (%s)", link.robot_id, why)
        link.inbox.put(None)  # wakes a waiting call

    def _beat(self, sock: zmq.Socket) -> None:
        now = time.monotonic()
        for link in list(self._links.values()):
            if link.lost:
                continue
            if now - link.last_seen > self.config.lost_after_s:
                self._lose(link, f"silent for {now - link.last_seen:.1f} s")
                continue
            self._send(sock, link, "heartbeat", encode(Message(
                "heartbeat", link.robot_id, next(self._seq), {"holding": False, "estop": False})))


def _check_obs(msg: Message, obs_spec: dict[str, Any], action_dim: int) -> None:
    obs, executed = msg.body["obs"], msg.body["executed"]
    if executed is not None and executed.shape != (action_dim,):
        raise _Refused("schema", f"executed has shape {executed.shape}, not ({action_dim},)")
    if set(obs) != set(obs_spec):
        raise _Refused("schema", f"observation keys {sorted(obs)} differ from the registered "
                                 f"{sorted(obs_spec)}")
    for name, arr in obs.items():
        want = obs_spec[name]
        if arr.dtype.name != want["dtype"] or list(arr.shape) != want["shape"]:
            raise _Refused("schema", f"obs.{name} is {arr.dtype} {list(arr.shape)}, "
                                     f"registered {want['dtype']} {want['shape']}")


def _next_step(link: _Link, body: dict[str, Any]) -> bool:
    """Check an answer's `step` against its call (-1 answers a reset; an action's answers count
    0, 1, 2... up to its H - 1); True while the call expects more observations."""
    step, want = body["step"], link.next_step
    if step != want:
        raise _Refused("step", f"observation step {step}, expected {want}")
    link.next_step = step + 1
    ended = body["success"] or body["failed"] or body["truncated"]
    return want >= 0 and not ended and link.next_step < link.steps


class BridgeRobot:
    """A bridged robot behind the `Robot` protocol (and `ChunkRobot`'s `start_chunk` for a robot
    that registered `execution: "chunk"`): each call is a message with a deadline.

        obs = robot.reset(seed=7)
        fb = robot.send_action(action)              # a chunk of one action, lock-step
        robot.start_chunk(chunk, policy_version=3)  # [H, A] in one message, run open loop...
        fb = robot.send_action(chunk[0])            # ...then its steps' answers, one by one
        feedbacks = robot.send_chunk(chunk)         # [H, A], all its answers at once
    """

    def __init__(self, gateway: Gateway, link: _Link) -> None:
        self._gateway, self._link = gateway, link
        self.spec = link.spec
        self._obs: Observation = {}
        self.executed: np.ndarray | None = None  # what the robot ran, after its safety limits
        # the chunk in flight (`start_chunk`): its call's seq, actions, and the next step's index
        self._chunk_seq, self._chunk, self._chunk_next = 0, np.zeros((0, 0), np.float32), 0

    def reset(self, seed: int | None = None) -> Observation:
        """Start an episode on the robot's current registration (it may have registered again
        since this handle was made; calls in flight never cross registrations)."""
        self._chunk_seq = 0  # a chunk still in flight belongs to no episode
        self._link = self._gateway.link(self._link.robot_id) or self._link
        self.spec = self._link.spec
        seq = self._gateway.call(self._link, "reset", {"seed": seed})
        self._await(seq)
        return self.get_observation()

    def get_observation(self) -> Observation:
        return {k: v.copy() for k, v in self._obs.items()}

    def start_chunk(self, chunk: np.ndarray, policy_version: int) -> None:
        """Send a whole chunk [H, A] at once, to run open loop at the robot's control rate; each
        of the next (up to) H `send_action` calls, given that step's action, returns its step."""
        chunk = np.ascontiguousarray(chunk, np.float32)
        self._chunk_seq = 0
        seq = self._gateway.call(self._link, "action", {"chunk": chunk,
                                                        "policy_version": policy_version})
        self._chunk_seq, self._chunk, self._chunk_next = seq, chunk, 0

    def send_action(self, action: np.ndarray) -> Feedback:
        if not self._chunk_seq:  # lock-step: a chunk of one action, a round trip
            return self.send_chunk(np.asarray(action, np.float32)[None])[-1]
        i, seq = self._chunk_next, self._chunk_seq
        if not np.array_equal(action, self._chunk[i]):
            raise ValueError(f"step {i} of the chunk in flight is {self._chunk[i]}, not {action}")
        self._chunk_next = i + 1
        self._chunk_seq = 0  # again below, unless this step fails or ends the chunk
        b = self._await(seq)
        fb = Feedback(b["reward"], b["success"], b["truncated"], failed=b["failed"])
        if not fb.done and i + 1 < len(self._chunk):
            self._chunk_seq = seq
        return fb

    def send_chunk(self, chunk: np.ndarray, policy_version: int = 0) -> list[Feedback]:
        """Run a chunk [H, A]; one Feedback per executed step, fewer if the episode ended."""
        chunk = np.ascontiguousarray(chunk, np.float32)
        seq = self._gateway.call(self._link, "action", {"chunk": chunk,
                                                        "policy_version": policy_version})
        out: list[Feedback] = []
        while len(out) < len(chunk):
            b = self._await(seq)
            fb = Feedback(b["reward"], b["success"], b["truncated"], failed=b["failed"])
            out.append(fb)
            if fb.done:
                break
        return out

    def _await(self, seq: int) -> dict[str, Any]:
        deadline = time.monotonic() + self._gateway.config.call_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self._link.inbox.get(timeout=left)
            except queue.Empty:
                break
            if self._link.lost:
                raise RobotLost(f"robot {self._link.robot_id!r} "
                                f"{'registered again' if self._link.replaced else 'is lost'}")
            if msg is None or msg.reply_to != seq:  # a wake-up from an earlier loss, or
                continue  # a late answer to an earlier call that timed out
            if msg.kind == "error":
                code = msg.body["code"]
                if code == "estop_engaged":
                    self._link.estop = True  # until a heartbeat or an observation says not
                kind = RobotEstopped if code == "estop_engaged" else BridgeError
                raise kind(f"robot {self._link.robot_id!r}: {code}: {msg.body['message']}")
            self._obs = msg.body["obs"]
            self.executed = msg.body["executed"]
            return msg.body
        if self._link.pending == seq:  # its answers from now on are late, never queued
            self._link.pending = 0
        raise BridgeError(f"robot {self._link.robot_id!r} did not answer within "
                          f"{self._gateway.config.call_timeout_s} s")

    def close(self) -> None:
        """The robot stays connected; only this handle is done."""
