"""Gateway behaviour under load and abuse, over real CURVE sockets on 127.0.0.1: an idle gateway
sleeps, a bad call fails in its caller, unasked answers never pile up."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator

import lz4.frame
import msgpack
import numpy as np
import pytest
import zmq

from actors.bridge.client import BridgeClient, ClientConfig
from actors.bridge.gateway import DROPS, BridgeError, Gateway, GatewayConfig
from actors.bridge.protocol import MAX_CONTAINERS, Message, ProtocolError, decode, encode
from bench.bridge import NullDriver
from bench.gateway_flood import attack_frames
from tests.util import wait_for

pytestmark = pytest.mark.timeout(60)
SERVER, ROBOT = zmq.curve_keypair(), zmq.curve_keypair()
SPEC = {"embodiment": "raw", "task": "t", "obs_dim": 3, "action_dim": 2, "action_low": -1.0,
        "action_high": 1.0, "control_hz": 50.0, "client": "test/1",
        "obs_spec": {"state": {"dtype": "float32", "shape": [3]}}}


@contextlib.contextmanager
def gateway_and_robot() -> Iterator[tuple[Gateway, zmq.Socket]]:
    """A gateway and a hand-driven robot (a raw DEALER) that has registered."""
    ctx = zmq.Context()
    with Gateway(GatewayConfig("tcp://127.0.0.1:*"), SERVER, {ROBOT[0]: "raw-1"}) as gw:
        sock = ctx.socket(zmq.DEALER)
        sock.curve_publickey, sock.curve_secretkey = ROBOT
        sock.curve_serverkey = SERVER[0]
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(gw.endpoint)
        sock.send(encode(Message("register", "raw-1", 1, SPEC)))
        assert sock.poll(5000), "no ack"
        assert decode(sock.recv()).kind == "ack"
        try:
            yield gw, sock
        finally:
            sock.close()
    ctx.term()


def observation(seq: int, reply_to: int, step: int = 0) -> bytes:
    return encode(Message("observation", "raw-1", seq, {
        "obs": {"state": np.zeros(3, np.float32)}, "reward": 0.0, "success": False,
        "failed": False, "truncated": False, "step": step,
        "executed": np.zeros(2, np.float32) if step >= 0 else None}, reply_to=reply_to))


def next_call(sock: zmq.Socket) -> Message:
    """The next call from the gateway (not a heartbeat, nor an error about what we sent)."""
    while True:
        assert sock.poll(5000), "no call from the gateway"
        msg = decode(sock.recv())
        if msg.kind not in ("heartbeat", "error"):
            return msg


def test_an_idle_gateway_does_not_spin_after_a_call():
    with gateway_and_robot() as (gw, sock):
        robot = gw.robot("raw-1", timeout_s=5)
        gw.call(robot._link, "reset", {"seed": 1})  # wakes the serving thread once
        assert sock.poll(5000)
        cpu = time.process_time()
        time.sleep(0.5)
        assert time.process_time() - cpu < 0.15, "the gateway is busy while nothing happens"


def test_unasked_answers_are_counted_and_never_queued():
    with gateway_and_robot() as (gw, sock):
        robot = gw.robot("raw-1", timeout_s=5)
        for seq in range(2, 202):
            sock.send(observation(seq, reply_to=999_999 if seq % 2 else 0))
        # decoded and found late while the robot's allowance for messages outside calls
        # lasts; past it, dropped without being decoded
        assert wait_for(lambda: gw.stats["late:observation"] + gw.stats["dropped:flood"] == 200)
        assert 0 < gw.stats["late:observation"] < 100 and robot._link.inbox.qsize() == 0


def test_a_bad_call_fails_in_its_caller_and_serving_goes_on():
    with gateway_and_robot() as (gw, sock):
        robot = gw.robot("raw-1", timeout_s=5)
        with pytest.raises(ProtocolError, match="NaN"):
            robot.send_chunk(np.full((2, 2), np.nan, np.float32))
        gw.call(robot._link, "reset", {"seed": 3})
        assert sock.poll(5000)
        msg = decode(sock.recv())
        while msg.kind == "heartbeat":
            assert sock.poll(5000)
            msg = decode(sock.recv())
        assert (msg.kind, msg.body) == ("reset", {"seed": 3})


def test_an_executed_action_of_the_wrong_size_is_dropped():
    with gateway_and_robot() as (gw, sock):
        gw.robot("raw-1", timeout_s=5)
        bad = encode(Message("observation", "raw-1", 2, {
            "obs": {"state": np.zeros(3, np.float32)}, "reward": 0.0, "success": False,
            "failed": False, "truncated": False, "step": 0,
            "executed": np.zeros(5, np.float32)}))
        sock.send(bad)
        assert wait_for(lambda: gw.stats["dropped:schema"] == 1)


def test_refusals_of_an_unlisted_key_are_counted_but_logged_sparsely(caplog):
    from actors.bridge.gateway import _Allowlist

    allow = _Allowlist({ROBOT[0]: "raw-1"}, collections.Counter())
    with caplog.at_level("WARNING", logger="fleet.bridge.gateway"):
        assert not any(allow.callback("", SERVER[0]) for _ in range(100))
        assert allow.callback("", ROBOT[0])
    assert allow.stats["denied"] == 100
    assert [r.getMessage().split("(")[-1] for r in caplog.records] == [
        "1 refusals so far)", "10 refusals so far)", "100 refusals so far)"]


def test_step_numbers_are_checked_and_answers_after_the_last_are_late():
    with gateway_and_robot() as (gw, sock):
        robot = gw.robot("raw-1", timeout_s=5)
        result: list[object] = []
        caller = threading.Thread(target=lambda: result.append(
            robot.send_chunk(np.zeros((3, 2), np.float32))))
        caller.start()
        call = next_call(sock)
        assert call.kind == "action"
        for seq, step in enumerate([0, 0, 2, -1, 1, 2], start=10):  # 0, 2-before-1, -1 refused
            sock.send(observation(seq, call.seq, step))
        caller.join(timeout=10)
        assert len(result) == 1 and len(result[0]) == 3  # type: ignore[arg-type]
        assert gw.stats["dropped:step"] == 3 and gw.stats["received:observation"] == 3
        for seq in range(20, 60):  # the call is over: more answers to it are never queued
            sock.send(observation(seq, call.seq, 2))
        assert wait_for(lambda: gw.stats["late:observation"] + gw.stats["dropped:flood"] == 40)
        assert robot._link.inbox.qsize() == 0 and robot._link.pending == 0
        gw.call(robot._link, "reset", {"seed": 1})  # a reset is answered by step -1 only
        reset = next_call(sock)
        sock.send(observation(70, reset.seq, 0))
        assert wait_for(lambda: gw.stats["dropped:step"] == 4), dict(gw.stats)


def test_worst_case_frames_are_refused_before_they_are_decoded():
    """Issue 17's decode bomb (31 KB that unfold into 7 MiB of nested arrays) is refused at
    the size its lz4 header claims; nesting past the budget stops msgpack within 64 maps."""
    frames = attack_frames("raw-1")
    with gateway_and_robot() as (gw, sock):
        for name in ("decode_bomb", "claims_8mib"):
            sock.send(frames[name])
        assert wait_for(lambda: gw.stats["dropped:budget"] == 2)
        for name in ("deep", "wide"):
            sock.send(frames[name])
        assert wait_for(lambda: gw.stats["dropped:budget"] == 4)
    with pytest.raises(ProtocolError, match=f"more than {MAX_CONTAINERS}"):
        decode(frames["wide"])  # even at the largest body any robot may send


def test_a_flooding_robot_neither_starves_another_nor_grows_the_stats():
    healthy = zmq.curve_keypair()
    allow = {ROBOT[0]: "raw-1", healthy[0]: "bench-0"}
    ctx, stop = zmq.Context(), threading.Event()
    frames = list(attack_frames("raw-1").values())
    with Gateway(GatewayConfig("tcp://127.0.0.1:*"), SERVER, allow) as gw:
        client = BridgeClient(NullDriver(), ClientConfig("bench-0", gw.endpoint, SERVER[0],
                                                         *healthy), context=ctx)
        client.arm()
        robot_thread = threading.Thread(target=client.run, args=(stop,))
        robot_thread.start()
        flood = ctx.socket(zmq.DEALER)
        flood.curve_publickey, flood.curve_secretkey = ROBOT
        flood.curve_serverkey = SERVER[0]
        flood.setsockopt(zmq.LINGER, 0)
        flood.connect(gw.endpoint)
        flood.send(encode(Message("register", "raw-1", 1, SPEC)))

        def flooding() -> None:
            while not stop.is_set():
                for frame in frames:
                    with contextlib.suppress(zmq.Again):
                        flood.send(frame, zmq.NOBLOCK)

        flooder = threading.Thread(target=flooding)
        try:
            robot = gw.robot("bench-0", timeout_s=60)
            robot.reset(seed=0)
            flooder.start()
            assert wait_for(lambda: gw.stats["dropped:flood"] > 300, timeout_s=120)
            flooded = gw.stats["dropped:flood"]
            served = stale = 0
            while served < 20:  # calls served, none lost, while the flood goes on
                try:
                    robot.send_action(np.zeros(4, np.float32))
                    served += 1
                except BridgeError as e:  # the robot's own watchdog, when this busy process
                    assert "watchdog" in str(e), e  # ran its loop too late: not the gateway's
                    stale += 1
                    assert stale <= 20, "the healthy robot's actions kept arriving stale"
                    robot.reset(seed=0)
            assert gw.stats["dropped:flood"] > flooded and not gw.is_lost("bench-0")
        finally:
            stop.set()
            flooder.join(timeout=10) if flooder.is_alive() else None
            robot_thread.join(timeout=10)
            flood.close()
    ctx.term()
    dropped = {k.split(":", 1)[1] for k in gw.stats if k.startswith("dropped:")}
    assert dropped <= DROPS and len(gw.stats) < 30, dict(gw.stats)
    assert len(gw._drops) <= 2 * (len(DROPS) + 1)  # per robot and reason: bounded


def test_crafted_frames_from_a_gateway_do_not_end_the_robot_client():
    """Issue 17: one frame whose map keys mix str and bytes ended the client (a TypeError from
    the schema check); a decode bomb is refused at the size a robot allows a gateway message."""
    ctx, stop = zmq.Context(), threading.Event()
    server = ctx.socket(zmq.ROUTER)
    server.curve_server = True
    server.curve_publickey, server.curve_secretkey = SERVER
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client = BridgeClient(NullDriver(), ClientConfig("raw-1", f"tcp://127.0.0.1:{port}",
                                                     SERVER[0], *ROBOT), context=ctx)
    runner = threading.Thread(target=client.run, args=(stop,))
    runner.start()
    try:
        assert server.poll(5000), "the client did not register"
        identity, _ = server.recv_multipart()
        mixed = {"v": 1, "kind": "reset", "robot_id": "raw-1", "seq": 1, "reply_to": 0,
                 "deadline_ms": 1000, "body": {"seed": 1, b"x": 2}}
        server.send_multipart([identity, lz4.frame.compress(msgpack.packb(
            mixed, use_bin_type=True), store_size=True)])
        server.send_multipart([identity, attack_frames("raw-1")["decode_bomb"]])
        assert wait_for(lambda: client.stats.dropped == 2)
        assert runner.is_alive()
    finally:
        stop.set()
        runner.join(timeout=10)
        server.close()
        ctx.term()
