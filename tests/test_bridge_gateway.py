"""Gateway behaviour under load and abuse, over real CURVE sockets on 127.0.0.1: an idle gateway
sleeps, a bad call fails in its caller, unasked answers never pile up."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from actors.bridge.gateway import Gateway, GatewayConfig
from actors.bridge.protocol import Message, ProtocolError, decode, encode
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


def observation(seq: int, reply_to: int) -> bytes:
    return encode(Message("observation", "raw-1", seq, {
        "obs": {"state": np.zeros(3, np.float32)}, "reward": 0.0, "success": False,
        "failed": False, "truncated": False, "step": 0, "executed": np.zeros(2, np.float32)},
        reply_to=reply_to))


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
            sock.send(observation(seq, reply_to=999_999))
        assert wait_for(lambda: gw.stats["late:observation"] == 200)
        assert robot._link.inbox.qsize() == 0


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
