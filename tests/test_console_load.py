"""The console under an unauthenticated flood: 200 slow and half-open connections, and the robots'
other calls stuck behind a slow fleet. The e-stop API must still answer and stop every robot."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from bench.slow_clients import SlowClients
from fleet.console.client import request
from fleet.console.server import ConsoleConfig, ConsoleServer
from tests.test_console_api import LocalRobots
from tests.util import wait_for

pytestmark = pytest.mark.timeout(60)


class StuckStatsRobots(LocalRobots):
    """Robots whose stats never answer until released (a fleet stuck on its slow calls): every
    other call of the console's queues behind them, the e-stop must not."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.release = threading.Event()

    def stats(self) -> list[dict[str, Any]]:
        self.release.wait(60)
        return super().stats()


def test_estop_answers_under_200_half_open_connections_and_slow_calls(tmp_path):
    robots = StuckStatsRobots(3)
    config = ConsoleConfig(port=0, max_connections=128, request_timeout_s=2.0)
    server = ConsoleServer(config, robots, tmp_path).start()
    url = f"http://127.0.0.1:{server.port}"
    stop = threading.Event()

    def poll() -> None:  # 16 clients keeping every general-purpose thread busy
        while not stop.is_set():
            request(url, "GET", "/api/robots", timeout_s=30)

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(16)]
    try:
        with SlowClients("127.0.0.1", server.port, n=200) as load:
            for t in pollers:
                t.start()
            assert wait_for(lambda: load.dropped > 0, timeout_s=10)  # the cap cut the oldest
            status, reply = request(url, "POST", "/api/fleet/estop", {}, operator="ada",
                                    timeout_s=20)
            assert status == 200, reply
            assert all(c.estopped for c in robots.controls.values())
            assert all(r["status"] == "estopped" for r in reply["robots"])
            # one robot's e-stop too, while the flood goes on
            robots.controls["robot-1"].command({"cmd": "arm"})
            assert request(url, "POST", "/api/robots/robot-1/estop", {}, timeout_s=20)[0] == 200
            assert robots.controls["robot-1"].estopped
            # half-sent requests are cut after request_timeout_s, and opened again by the load
            assert wait_for(lambda: load.dropped > 200, timeout_s=20)
            assert len(server._conns) <= config.max_connections + 20
    finally:
        stop.set()
        robots.release.set()
        for t in pollers:
            t.join(5)
        server.stop()
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {"robot": "*", "cmd": "estop"} in [x["what"] for x in lines]
    dropped = [x for x in lines if x["what"] == {"connection": "dropped"}]
    assert dropped and len(dropped) < 100  # refusals are audited, at a bounded rate per client
    assert server.audit.suppressed > 0
