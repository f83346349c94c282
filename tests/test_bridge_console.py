"""The operator's console of `fleet robot run`: a robot process starts e-stopped, is armed and
stopped by words on its stdin, and the gateway sees each change in its heartbeats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq.auth

from actors.bridge.gateway import BridgeError, Gateway, GatewayConfig
from actors.bridge.keys import load_allowlist, make_keys
from tests.util import wait_for as wait_until

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


def wait_for(cond, timeout_s: float = 15.0) -> bool:
    return wait_until(cond, timeout_s, poll_s=0.02)


def test_console_arms_stops_and_quits_a_robot_process(tmp_path: Path) -> None:
    make_keys(tmp_path, ["arm-1"])
    server = zmq.auth.load_certificate(str(tmp_path / "server.key_secret"))
    keys = (server[0], server[1] or b"")
    with Gateway(GatewayConfig("tcp://127.0.0.1:*"), keys, load_allowlist(tmp_path)) as gw:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleet.robot_cli", "robot", "run", "arm-1", "--gateway",
             gw.endpoint, "--server-key", str(tmp_path / "server.key"), "--key",
             str(tmp_path / "robots" / "arm-1.key_secret"), "--gym", "Pendulum-v1", "--hz",
             "100", "--console", "--seconds", "40"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        assert proc.stdin is not None
        try:
            robot = gw.robot("arm-1", timeout_s=30)
            with pytest.raises(BridgeError, match="estop_engaged"):
                robot.reset(seed=1)  # starts e-stopped
            proc.stdin.write("arm\n")
            proc.stdin.flush()
            assert wait_for(lambda: not robot._link.estop), "never armed"
            robot.reset(seed=1)
            assert len(robot.send_chunk(robot_chunk())) == 2
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            assert wait_for(lambda: robot._link.estop), "never stopped"
            with pytest.raises(BridgeError, match="estop_engaged"):
                robot.send_chunk(robot_chunk())
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert '"acted": 2' in out


def robot_chunk() -> np.ndarray:
    return np.zeros((2, 1), np.float32)
