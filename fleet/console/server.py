"""The operator console: a small HTTP server in the driver, a JSON API and one static page.

Example (what `fleet train` does; `docs/console.md` has the API with curl examples):

    server = ConsoleServer(ConsoleConfig(port=0), RayRobots(ids, handles), run_dir)
    server.start()                    # a thread; server.url is http://127.0.0.1:<port>/
    server.record(snapshot)           # the driver adds a learning-curve point now and then
    server.stop()

Routes: GET / (the page), GET /api/robots, GET /api/metrics, POST /api/robots/<id>/<command>
and POST /api/fleet/<pause|resume|estop|arm> (every robot). A command's JSON body holds its
arguments (`actors.control`). Any bind but loopback needs a token (`console.token`, or one is
generated and printed): a request without `Authorization: Bearer <token>` gets 401 and changes
nothing. Every operator action is appended to `<run_dir>/audit.jsonl` (who, when, what, result);
the teleop stream itself is counted in the robot's stats, its take-over start and end audited.
"""

from __future__ import annotations

import dataclasses
import datetime
import hmac
import ipaddress
import json
import math
import secrets
import struct
import threading
import time
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from actors.control import COMMANDS, CommandError

MAX_BODY = 4096  # bytes of one request body
FLEET_COMMANDS = ("pause", "resume", "estop", "arm")
MAX_POINTS = 2000  # learning-curve points kept (older ones are thinned)


@dataclasses.dataclass(frozen=True)
class ConsoleConfig:
    enabled: bool = True  # fleet train serves the console
    host: str = "127.0.0.1"  # anything but loopback requires a token
    port: int = 8750  # 0: any free port (tests)
    token: str = ""  # Bearer token; empty: none on loopback, a generated one elsewhere

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"console.port must be in 0..65535, got {self.port}")


class Robots(Protocol):
    """What the console needs of a fleet: the robots' stats and a way to command them.

        rows = robots.stats()                      # one dict per robot
        robots.control("robot-0", {"cmd": "pause"})
    """

    def ids(self) -> list[str]: ...

    def stats(self) -> list[dict[str, Any]]: ...

    def control(self, robot_id: str, command: dict[str, Any]) -> dict[str, Any]: ...

    def frame(self, robot_id: str) -> np.ndarray | None: ...


class RayRobots:
    """`Robots` over `fleet.remote.RobotActor` handles (bridged robots show, without controls)."""

    def __init__(self, handles: dict[str, Any], timeout_s: float = 5.0) -> None:
        self.handles = handles
        self.timeout_s = timeout_s

    def ids(self) -> list[str]:
        return list(self.handles)

    def stats(self) -> list[dict[str, Any]]:
        import ray

        refs = {rid: h.stats.remote() for rid, h in self.handles.items()}
        ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.timeout_s)
        rows = []
        for rid, ref in refs.items():
            try:
                rows.append(ray.get(ref, timeout=0))
            except Exception as e:  # a restarting or lost robot still gets its row
                rows.append({"robot_id": rid, "error": f"unreachable: {type(e).__name__}"})
        return rows

    def control(self, robot_id: str, command: dict[str, Any]) -> dict[str, Any]:
        import ray

        try:
            call = self.handles[robot_id].control
        except AttributeError:
            raise CommandError(f"{robot_id} has no console controls") from None
        reply: dict[str, Any] = ray.get(call.remote(command), timeout=self.timeout_s)
        return reply

    def frame(self, robot_id: str) -> np.ndarray | None:
        import ray

        call = getattr(self.handles[robot_id], "frame", None)
        return None if call is None else ray.get(call.remote(), timeout=self.timeout_s)


class AuditLog:
    """Append-only JSON lines: one per operator action, flushed as written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, who: str, client: str, what: dict[str, Any], result: str,
               status: int) -> None:
        now = time.time()
        line = {"time": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(),
                "unix": now, "who": who, "client": client, "what": what, "result": result,
                "status": status}
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")


def png(image: np.ndarray) -> bytes:
    """A PNG of a uint8 image [H, W] (grey) or [H, W, 3|4] (RGB, RGBA), stdlib only."""
    image = np.ascontiguousarray(image, np.uint8)
    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    kind = {1: 0, 3: 2, 4: 6}[channels]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * channels)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 8, kind, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _clean(x: Any) -> Any:
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def robot_row(s: dict[str, Any], learner_version: int) -> dict[str, Any]:
    """What the grid shows of one robot's stats."""
    if s.get("error") and "control" not in s:
        return {"robot_id": s.get("robot_id"), "status": "unreachable", "error": s["error"]}
    c = s.get("control", {})
    status = "error" if s.get("error") else c.get("status", "running")
    age, hz, rate = c.get("last_step_age_s", math.inf), c.get("control_hz", 0), c.get(
        "steps_per_s", 0)
    health = ("held" if c.get("holding") else "stalled" if age >= 1.0
              else "slow" if hz and rate < 0.8 * hz else "ok")  # paced robots: behind their rate
    return {"robot_id": s["robot_id"], "status": status, "task": s.get("task"),
            "holding": bool(c.get("holding")), "taken_over": bool(c.get("taken_over")),
            "episode_step": c.get("episode_step"), "episodes": s.get("episodes"),
            "env_steps": s.get("env_steps"), "success_rate": s.get("success_rate"),
            "policy_version": s.get("policy_version"),
            "staleness": max(0, learner_version - int(s.get("policy_version", 0))),
            "intervened_steps": s.get("intervened_steps"), "steps_per_s": c.get("steps_per_s"),
            "last_step_age_s": age, "missed_deadlines": s.get("missed_deadlines", 0),
            "health": health, "correction": c.get("correction", ""),
            "action_dim": c.get("action_dim"), "control_hz": hz, "controls": "control" in s,
            "camera": bool(c.get("camera")),
            "error": s.get("error")}


class ConsoleServer:
    """The console's HTTP server, in a daemon thread of the driver."""

    def __init__(self, config: ConsoleConfig, robots: Robots, run_dir: Path) -> None:
        self.config = config
        self.robots = robots
        self.audit = AuditLog(run_dir / "audit.jsonl")
        self.token = config.token or ("" if is_loopback(config.host)
                                      else secrets.token_urlsafe(24))
        self.points: list[dict[str, Any]] = []
        self.learner_version = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((config.host, config.port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.page = resources.files("fleet.console").joinpath("static/index.html").read_bytes()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        base = f"http://{host}:{self.port}/"
        return base + (f"#token={self.token}" if self.token else "")

    def start(self) -> ConsoleServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="fleet-console")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def record(self, snapshot: dict[str, Any]) -> None:
        """A learning-curve point from the driver's fleet snapshot (`fleet.run.train`)."""
        point = {k: snapshot.get(k) for k in ("env_steps", "success_rate", "policy_version",
                                              "intervention_rate", "steps_per_s", "elapsed_s")}
        with self._lock:
            self.learner_version = int(snapshot.get("policy_version") or 0)
            self.points.append(point)
            if len(self.points) > MAX_POINTS:
                self.points = self.points[::2]

    # -- what the routes do --------------------------------------------------------------------

    def robots_view(self) -> dict[str, Any]:
        rows = [robot_row(s, self.learner_version) for s in self.robots.stats()]
        return {"robots": rows, "policy_version": self.learner_version, "time": time.time()}

    def metrics_view(self) -> dict[str, Any]:
        with self._lock:
            return {"points": list(self.points), "policy_version": self.learner_version}

    def command(self, robot_id: str, command: dict[str, Any]) -> dict[str, Any]:
        if robot_id not in self.robots.ids():
            raise KeyError(robot_id)
        return self.robots.control(robot_id, command)

    def fleet_command(self, command: dict[str, Any]) -> dict[str, Any]:
        """The same command to every robot at once (an e-stop reaches all in one round)."""
        ids = self.robots.ids()
        results: dict[str, Any] = {}

        def one(rid: str) -> None:
            try:
                results[rid] = self.robots.control(rid, command)
            except Exception as e:
                results[rid] = {"error": f"{type(e).__name__}: {e}"}

        threads = [threading.Thread(target=one, args=(rid,)) for rid in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"robots": [dict(results[rid], robot_id=rid) for rid in ids]}


def _handler(server: ConsoleServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        console = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    console: ConsoleServer
    protocol_version = "HTTP/1.1"
    server_version = "FleetConsole/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the audit log records what matters; access lines would drown the live view

    # -- plumbing ------------------------------------------------------------------------------

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(_clean(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _authorized(self) -> bool:
        token = self.console.token
        if not token:  # loopback: only names of this machine, so DNS rebinding gets nothing
            host = self.headers.get("Host", "").rsplit(":", 1)[0].strip("[]")
            return is_loopback(host)
        got = self.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

    def _body(self) -> dict[str, Any] | None:
        """The request's JSON object (empty body: {}); None after answering an error."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True  # the unread body must not become the next request
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"a body is at most {MAX_BODY} bytes")
            return None
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        if self.headers.get_content_type() != "application/json":
            # also keeps other web pages out: their cross-site form posts can't send JSON
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send Content-Type: application/json")
            return None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._error(HTTPStatus.BAD_REQUEST, "the body is not JSON")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return None
        return body

    def _who(self, body: dict[str, Any]) -> str:
        who = self.headers.get("X-Fleet-Operator") or body.get("operator") or "anonymous"
        return str(who)[:64]

    # -- routes --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.console.page, "text/html; charset=utf-8")
            return
        if not path.startswith("/api/"):
            self._error(HTTPStatus.NOT_FOUND, f"no page {path}")
            return
        if not self._authorized():
            self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong Authorization: Bearer token")
            return
        parts = path.strip("/").split("/")
        if path == "/api/robots":
            self._send(HTTPStatus.OK, self.console.robots_view())
        elif len(parts) == 4 and parts[:2] == ["api", "robots"] and parts[3] == "frame.png":
            self._frame(parts[2])
        elif path == "/api/metrics":
            self._send(HTTPStatus.OK, self.console.metrics_view())
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route GET {path}")

    def _frame(self, robot_id: str) -> None:
        if robot_id not in self.console.robots.ids():
            self._error(HTTPStatus.NOT_FOUND, f"no robot {robot_id!r}")
            return
        try:
            image = self.console.robots.frame(robot_id)
        except Exception as e:
            self._error(HTTPStatus.BAD_GATEWAY, f"{type(e).__name__}: {e}")
            return
        if image is None:
            self._error(HTTPStatus.NOT_FOUND, f"{robot_id} has no camera")
            return
        self._send(HTTPStatus.OK, png(image), "image/png")

    def do_POST(self) -> None:
        body = self._body()  # read first, so a keep-alive connection stays in step
        if body is None:
            return
        if not self._authorized():
            self._refuse(HTTPStatus.UNAUTHORIZED, "missing or wrong Authorization: Bearer token")
            return
        origin = self.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != self.headers.get("Host"):
            self._refuse(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin}")
            return
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["api", "robots"] and parts[3] in COMMANDS:
            self._act(parts[2], parts[3], body)
        elif len(parts) == 3 and parts[:2] == ["api", "fleet"] and parts[2] in FLEET_COMMANDS:
            self._act("*", parts[2], body)
        else:
            self._refuse(HTTPStatus.NOT_FOUND, f"no route POST {self.path}; robot commands: "
                         f"{', '.join(COMMANDS)}; fleet commands: {', '.join(FLEET_COMMANDS)}")

    def _refuse(self, status: int, message: str) -> None:
        """Answer an error, and audit the refused attempt (nothing was changed)."""
        self.console.audit.append(self.headers.get("X-Fleet-Operator", "anonymous")[:64],
                                  self.client_address[0], {"path": self.path[:200]}, message,
                                  int(status))
        self._error(status, message)

    def _act(self, robot_id: str, name: str, body: dict[str, Any]) -> None:
        who = self._who(body)
        command = {k: v for k, v in body.items() if k != "operator"}
        if "cmd" in command:
            self._error(HTTPStatus.BAD_REQUEST, "the command is in the path, not the body")
            return
        command["cmd"] = name
        status, reply = HTTPStatus.OK, dict[str, Any]()
        try:
            if robot_id == "*":
                reply = self.console.fleet_command(command)
            else:
                reply = self.console.command(robot_id, command)
        except KeyError:
            status, reply = HTTPStatus.NOT_FOUND, {"error": f"no robot {robot_id!r}"}
        except CommandError as e:
            cause = getattr(e, "cause", None) or e  # through Ray: the robot's own error
            status, reply = HTTPStatus.BAD_REQUEST, {"error": str(cause)}
        except Exception as e:  # a lost robot: say so, keep serving
            status, reply = HTTPStatus.BAD_GATEWAY, {"error": f"{type(e).__name__}: {e}"}
        if name != "teleop":  # the stream is counted in the robot's stats, not line by line
            self.console.audit.append(who, self.client_address[0],
                                      {"robot": robot_id, **command},
                                      "ok" if status == HTTPStatus.OK else reply["error"],
                                      int(status))
        self._send(status, reply)
