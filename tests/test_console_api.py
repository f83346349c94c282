"""The console's HTTP layer over real sockets, with robots that are plain control states (no Ray):
routes, schema checks, size limits, tokens and the audit log."""

from __future__ import annotations

import http.client
import json
from typing import Any

import numpy as np
import pytest

from actors.control import RobotControl
from fleet.console.client import request
from fleet.console.server import ConsoleConfig, ConsoleServer

pytestmark = pytest.mark.timeout(30)


class LocalRobots:
    """`fleet.console.Robots` over in-process control states."""

    def __init__(self, n: int) -> None:
        self.controls = {f"robot-{i}": RobotControl(action_dim=4) for i in range(n)}

    def ids(self) -> list[str]:
        return list(self.controls)

    def stats(self) -> list[dict[str, Any]]:
        return [{"robot_id": rid, "task": "reach-v3", "env_steps": 0, "episodes": 0,
                 "success_rate": float("nan"), "policy_version": 0, "intervened_steps": 0,
                 "control": c.state(), "error": None} for rid, c in self.controls.items()]

    def control(self, robot_id: str, command: dict[str, Any]) -> dict[str, Any]:
        return self.controls[robot_id].command(command)

    def frame(self, robot_id: str) -> np.ndarray | None:
        return self.controls[robot_id].frame()


@pytest.fixture
def served(tmp_path):
    robots = LocalRobots(2)
    server = ConsoleServer(ConsoleConfig(port=0), robots, tmp_path).start()
    yield server, robots, f"http://127.0.0.1:{server.port}"
    server.stop()


def audit(tmp_path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def test_page_robots_and_metrics_are_served(served):
    server, _, url = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    page = conn.getresponse()
    assert page.status == 200 and b"Fleet console" in page.read()
    status, view = request(url, "GET", "/api/robots")
    assert status == 200 and [r["robot_id"] for r in view["robots"]] == ["robot-0", "robot-1"]
    assert view["robots"][0]["success_rate"] is None  # NaN is not JSON: null
    server.record({"env_steps": 10, "success_rate": 0.5, "policy_version": 2})
    status, metrics = request(url, "GET", "/api/metrics")
    assert status == 200 and metrics["points"][0]["success_rate"] == 0.5


def test_commands_change_state_and_are_audited(served, tmp_path):
    _, robots, url = served
    status, reply = request(url, "POST", "/api/robots/robot-1/say", {"text": "go left"},
                            operator="ada")
    assert status == 200 and reply["correction"] == "go left"
    status, reply = request(url, "POST", "/api/fleet/estop", {})
    assert status == 200 and all(c.estopped for c in robots.controls.values())
    assert [r["status"] for r in reply["robots"]] == ["estopped", "estopped"]
    lines = audit(tmp_path)
    assert lines[0]["who"] == "ada" and lines[0]["what"] == {"robot": "robot-1", "cmd": "say",
                                                           "text": "go left"}
    assert lines[1]["what"]["robot"] == "*" and lines[1]["result"] == "ok"


@pytest.mark.parametrize("path,body,code", [
    ("/api/robots/robot-0/fly", {}, 404),
    ("/api/robots/robot-9/pause", {}, 404),
    ("/api/fleet/label", {"outcome": "success"}, 404),
    ("/api/robots/robot-0/label", {"outcome": "maybe"}, 400),
    ("/api/robots/robot-0/pause", {"cmd": "resume"}, 400),
    ("/api/robots/robot-0/pause", {"now": True}, 400),
    ("/api/robots/robot-0/teleop", {"action": [0, 0, 0, 0]}, 400),  # no take-over
])
def test_bad_requests_are_refused_and_change_nothing(served, path, body, code):
    _, robots, url = served
    status, reply = request(url, "POST", path, body)
    assert status == code and reply["error"]
    assert all(c.state()["status"] == "running" for c in robots.controls.values())


def test_oversized_non_json_and_cross_site_bodies_are_refused(served):
    server, robots, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for body, headers, code in (
            (b"{" + b" " * 5000 + b"}", {"Content-Type": "application/json"}, 413),
            (b"not json", {"Content-Type": "application/json"}, 400),
            (b"[1]", {"Content-Type": "application/json"}, 400),
            (b'{"x":1}', {"Content-Type": "text/plain"}, 415),
            (b"{}", {"Content-Type": "application/json", "Origin": "http://evil.example"}, 403)):
        conn.request("POST", "/api/robots/robot-0/pause", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        assert r.status == code, body[:20]
        if r.getheader("Connection") == "close":
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    assert not robots.controls["robot-0"].paused


def test_a_non_loopback_bind_requires_the_token(tmp_path):
    robots = LocalRobots(1)
    server = ConsoleServer(ConsoleConfig(host="0.0.0.0", port=0), robots, tmp_path).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert len(server.token) > 20 and f"#token={server.token}" in server.url
        for token in ("", "wrong"):
            assert request(url, "POST", "/api/fleet/estop", {}, token=token)[0] == 401
            assert request(url, "GET", "/api/robots", token=token)[0] == 401
        assert not robots.controls["robot-0"].estopped
        assert audit(tmp_path)[0]["status"] == 401  # refused attempts are audited too
        assert request(url, "POST", "/api/fleet/estop", {}, token=server.token)[0] == 200
        assert robots.controls["robot-0"].estopped
    finally:
        server.stop()


def test_cli_status_and_intervene_over_the_api(served, capsys):
    from fleet.cli import main

    _, robots, url = served
    assert main(["status", "--url", url]) == 0
    assert "robot-1" in capsys.readouterr().out
    assert main(["intervene", "robot-0", "say", "grasp", "the", "rim", "--url", url]) == 0
    assert main(["intervene", "robot-0", "label", "failure", "--url", url]) == 0
    assert main(["intervene", "all", "estop", "--url", url]) == 0
    assert robots.controls["robot-0"].correction == "grasp the rim"
    assert robots.controls["robot-0"].counts["labels"] == 1
    assert all(c.estopped for c in robots.controls.values())
    assert main(["intervene", "robot-0", "label", "maybe", "--url", url]) == 1  # the server: 400
    assert main(["intervene", "robot-0", "pause", "now", "--url", url]) == 2  # refused locally
    assert main(["status", "--url", "http://127.0.0.1:9"]) == 1  # nothing listens there


def test_a_camera_frame_is_served_as_png(served):
    import zlib

    server, robots, url = served
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    robots.controls["robot-0"].stepped({"state": np.zeros(3, np.float32), "pixels": image})
    rows = request(url, "GET", "/api/robots")[1]["robots"]
    assert [r["camera"] for r in rows] == [True, False]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/api/robots/robot-0/frame.png")
    r = conn.getresponse()
    data = r.read()
    assert r.status == 200 and r.getheader("Content-Type") == "image/png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(4, 1 + 5 * 3)
    assert not rows[:, 0].any() and np.array_equal(rows[:, 1:].reshape(4, 5, 3), image)
    assert request(url, "GET", "/api/robots/robot-1/frame.png")[0] == 404  # no camera


def test_a_tokenless_loopback_console_refuses_foreign_host_names(served):
    server, robots, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", "/api/fleet/estop", body=b"{}",
                 headers={"Content-Type": "application/json", "Host": "evil.example:8750"})
    r = conn.getresponse()
    r.read()
    assert r.status == 401 and not robots.controls["robot-0"].estopped
    conn.request("GET", "/api/robots", headers={"Host": f"localhost:{server.port}"})
    assert conn.getresponse().status == 200
