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

    def control_many(self, ids: list[str], command: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rid in ids:
            try:
                out[rid] = self.control(rid, command)
            except Exception as e:
                out[rid] = {"error": f"{type(e).__name__}: {e}"}
        return out

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


def raw(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes or goes quiet."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def test_http_is_parsed_for_real(served, tmp_path):
    server, robots, _ = served
    head = b"POST /api/robots/robot-0/say HTTP/1.1\r\nHost: 127.0.0.1\r\n" \
           b"Content-Type: application/json\r\n"
    # a chunked body is read as the body (not a second request hidden in the chunk data)
    body = b'{"text": "GET /api/fleet/estop HTTP/1.1"}'
    reply = raw(server.port, head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200")
    assert robots.controls["robot-0"].correction.startswith("GET /api")
    assert not robots.controls["robot-0"].estopped
    # two Content-Lengths, an odd one, or both framings: refused before any handler runs
    for headers in (b"Content-Length: 2\r\nContent-Length: 40\r\n",
                    b"Content-Length: +2\r\n", b"Content-Length: 0x2\r\n",
                    b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"):
        reply = raw(server.port, head + headers + b"\r\n{}")
        assert reply.split(b" ", 2)[1] == b"400", (headers, reply[:80])
    assert robots.controls["robot-0"].counts["corrections"] == 1
    assert [x["what"] for x in audit(tmp_path)].count({"http": "malformed"}) == 4


@pytest.mark.parametrize("body,code", [
    (b"[" * 2000 + b"]" * 2000, 400),  # nesting: no RecursionError
    (b'{"action": [1' + b"0" * 400 + b', 0, 0, 0]}', 400),  # a huge integer: no 502
    (b'{"action": [1e999, 0, 0, 0]}', 400),
    (b'{"action": [NaN, 0, 0, 0]}', 400),
    (b'{"text": "\xff"}', 400),
])
def test_hostile_bodies_get_400(served, body, code):
    server, robots, _ = served
    request_ = "/api/robots/robot-0/teleop"
    robots.controls["robot-0"].command({"cmd": "takeover", "on": True})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", request_, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == code and json.loads(r.read())["error"]
    assert robots.controls["robot-0"].counts["teleop"] == 0


def test_a_body_is_not_read_before_the_token_is_checked(tmp_path):
    robots = LocalRobots(1)
    server = ConsoleServer(ConsoleConfig(host="0.0.0.0", port=0), robots, tmp_path,
                           token="t0ken-abcdefgh").start()
    try:
        nested = b"[" * 3000
        reply = raw(server.port, b"POST /api/fleet/estop HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(nested)
                    + nested)
        assert reply.startswith(b"HTTP/1.1 401")
        # a token in the path is not written to the audit log
        assert request(f"http://127.0.0.1:{server.port}", "GET",
                       "/api/robots?token=t0ken-abcdefgh")[0] == 401
    finally:
        server.stop()
    text = (tmp_path / "audit.jsonl").read_text()
    assert "t0ken-abcdefgh" not in text and "[redacted]" in text
    assert {"method": "POST", "path": "/api/fleet/estop"} in [x["what"] for x in audit(tmp_path)]


def test_robot_ids_that_need_percent_encoding(tmp_path):
    robots = LocalRobots(0)
    robots.controls = {"arm 1/ü": RobotControl(action_dim=4)}
    server = ConsoleServer(ConsoleConfig(port=0), robots, tmp_path).start()
    try:
        from fleet.console.client import intervene

        status, reply = intervene(f"http://127.0.0.1:{server.port}", "arm 1/ü", "pause", [],
                                  "", "ada")
        assert status == 200, reply
        assert robots.controls["arm 1/ü"].paused
    finally:
        server.stop()


def test_a_half_sent_request_is_cut_and_audited(tmp_path):
    robots = LocalRobots(1)
    server = ConsoleServer(ConsoleConfig(port=0, request_timeout_s=0.5), robots, tmp_path).start()
    try:
        # headers never end: the server closes the connection (recv returns b"")
        assert raw(server.port, b"GET /api/robots HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                   timeout_s=10) == b""
        assert server.dropped_connections == 1
    finally:
        server.stop()
    assert audit(tmp_path)[0]["what"] == {"connection": "dropped"}


def test_refusals_are_rate_limited_per_client_and_the_log_rotates(tmp_path):
    from fleet.console.server import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=2000, per_s=1.0, burst=5)
    written = sum(log.append("x", "10.0.0.1", {"path": "/"}, "no", 404, refusal=True)
                  for _ in range(50))
    assert written == 5 and log.suppressed == 45
    assert log.append("x", "10.0.0.2", {"path": "/"}, "no", 404, refusal=True)  # its own bucket
    for _ in range(30):  # operator actions are never dropped, only rotated
        assert log.append("ada", "127.0.0.1", {"robot": "robot-0", "cmd": "pause"}, "ok", 200)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())


def test_the_event_stream_pushes_the_grid(served):
    server, robots, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/api/events")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    seen: dict[str, dict] = {}
    while len(seen) < 2:
        name = r.readline().decode().strip().removeprefix("event: ")
        data = r.readline().decode().strip().removeprefix("data: ")
        r.readline()
        seen[name] = json.loads(data)
    assert [x["robot_id"] for x in seen["robots"]["robots"]] == ["robot-0", "robot-1"]
    robots.controls["robot-1"].command({"cmd": "pause"})
    while True:  # the next grid shows the change without being asked
        name = r.readline().decode().strip()
        data = r.readline().decode().strip().removeprefix("data: ")
        r.readline()
        if name == "event: robots" and json.loads(data)["robots"][1]["status"] == "paused":
            break
    conn.close()


def test_the_page_forbids_inline_handlers(served):
    server, _, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    r = conn.getresponse()
    page = r.read().decode()
    csp = r.getheader("Content-Security-Policy")
    nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
    assert "unsafe-inline" not in csp and f'<script nonce="{nonce}">' in page
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page
