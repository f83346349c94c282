"""The operator console: an aiohttp server on its own event loop in the driver, a JSON API, a
server-sent event stream and one static page.

Example (what `fleet train` does; `docs/console.md` has the API with curl examples):

    server = ConsoleServer(ConsoleConfig(port=0), RayRobots(handles), run_dir)
    server.start()                    # a thread; server.url is http://127.0.0.1:<port>/
    server.record(snapshot)           # the driver adds a learning-curve point now and then
    server.stop()

Routes: GET / (the page), GET /api/robots, GET /api/metrics, GET /api/events (the grid and the
curve pushed as server-sent events), GET /api/robots/<id>/frame.png, POST
/api/robots/<id>/<command> and POST /api/fleet/<pause|resume|estop|arm> (every robot). A command's
JSON body holds its arguments (`actors.control`). Any bind but loopback needs a token (the
`FLEET_CONSOLE_TOKEN` environment variable or `console.token_file`, else one is generated and
printed): a request without `Authorization: Bearer <token>` gets 401 and changes nothing.

Why aiohttp: it comes with `ray[default]` (no new dependency), parses HTTP with llhttp (chunked
bodies, one Content-Length, header size limits), writes a small response in one send with
TCP_NODELAY, and one event loop holds hundreds of idle connections without a thread each. What it
lacks is added here: a connection cap (the oldest idle connection is dropped for a new one), a
deadline for a connection's request to arrive (slow or half-sent headers are cut), a body deadline,
and an e-stop path that never waits behind other calls: e-stops run on their own threads, so a
slow `stats()` or frame of some robot cannot delay them.

Every operator action and every refused request is appended to `<run_dir>/audit.jsonl` (who, when,
what, result); refusals are rate-limited per client and the file is rotated, so nobody can fill
the disk with it; the token never appears in it. The teleop stream is counted in the robot's
stats, its take-over start and end audited.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hmac
import ipaddress
import json
import logging
import math
import secrets
import socket
import struct
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from actors.control import COMMANDS, CommandError
from fleet.console.bodies import MAX_BODY, BodyError, parse_body
from fleet.console.guard import (
    TOKEN_ENV,
    AuditLog,
    TokenError,
    clean,
    token_from,
)
from fleet.console.robots import RayRobots, Robots

FLEET_COMMANDS = ("pause", "resume", "estop", "arm")
MAX_POINTS = 2000  # learning-curve points kept (older ones are thinned)
MAX_STREAMS = 16  # event-stream subscribers at once
STREAM_EVERY_S = 0.5  # the grid's push interval


@dataclasses.dataclass(frozen=True)
class ConsoleConfig:
    enabled: bool = True  # fleet train serves the console
    host: str = "127.0.0.1"  # anything but loopback requires a token
    port: int = 8750  # 0: any free port (tests)
    token: str = ""  # in-process use only (tests, benches): never from YAML/argv (fleet.config)
    token_file: str = ""  # a file (mode 0600) holding the token; else $FLEET_CONSOLE_TOKEN
    max_connections: int = 256  # open connections; beyond, the oldest idle one is dropped
    request_timeout_s: float = 10.0  # a connection's next request must be in by then
    body_timeout_s: float = 5.0  # a request's body must be in by then
    audit_max_bytes: int = 8 * 1024**2  # audit.jsonl is rotated (audit.jsonl.1, .2) past this
    audit_refusals_per_s: float = 5.0  # per client, with a burst of 20; the rest is counted

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"console.port must be in 0..65535, got {self.port}")
        if self.max_connections < 8 or self.request_timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ValueError("console.max_connections must be >= 8 and the timeouts > 0")


def read_token(config: ConsoleConfig, environ: Mapping[str, str] | None = None) -> str:
    """The console's token: `config.token` (in-process), `$FLEET_CONSOLE_TOKEN`, or the first line
    of `config.token_file`, which must be readable by its owner only (0600 or stricter)."""
    return config.token or token_from(config.token_file, environ)


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
            "teleop_messages": c.get("teleop", 0),
            "action_dim": c.get("action_dim"), "control_hz": hz, "controls": "control" in s,
            "camera": bool(c.get("camera")), "bridge": s.get("bridge"),
            "error": s.get("error")}


@dataclasses.dataclass
class _Conn:
    """One open connection, as the watchdog sees it."""

    transport: asyncio.Transport
    peer: str
    opened: float
    last: float  # when its last request ended (or it opened)
    busy: int = 0  # requests in progress
    requests: int = 0


class _Handler(RequestHandler):
    """aiohttp's connection handler; a request its parser refuses (bad framing, headers too
    large) is audited like every other refusal."""

    console: ConsoleServer

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status < 500:
            peer = self.transport.get_extra_info("peername") if self.transport else None
            self.console.audit.append("anonymous", str(peer[0]) if peer else "?",
                                      {"http": "malformed"}, f"{type(exc).__name__}: {exc}"
                                      [:300], status, refusal=True)
        return super().handle_error(request, status, exc, message)


_QUIET = logging.getLogger("fleet.console.http")  # the audit log says what matters
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class _Server(web.Server):
    """aiohttp's low-level server, telling the console of each connection as it opens and ends."""

    def __init__(self, console: ConsoleServer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.console = console

    def __call__(self) -> RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler.console = self.console
        return handler

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.console._opened(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.console._conns.pop(handler, None)
        super().connection_lost(handler, exc)


class _Refused(Exception):
    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


class ConsoleServer:
    """The console's HTTP server, on an asyncio loop in a daemon thread of the driver."""

    def __init__(self, config: ConsoleConfig, robots: Robots, run_dir: Path,
                 token: str | None = None) -> None:
        self.config = config
        self.robots = robots
        secret = read_token(config) if token is None else token
        self.token = secret or ("" if is_loopback(config.host) else secrets.token_urlsafe(24))
        self.audit = AuditLog(run_dir / "audit.jsonl", config.audit_max_bytes,
                              config.audit_refusals_per_s, secret=self.token)
        self.points: list[dict[str, Any]] = []
        self.learner_version = 0
        self.dropped_connections = 0  # closed by the watchdog or the cap
        self._lock = threading.Lock()
        self.page = resources.files("fleet.console").joinpath("static/index.html").read_bytes()
        self._sock = socket.create_server((config.host, config.port), backlog=1024,
                                          family=socket.AF_INET6 if ":" in config.host
                                          else socket.AF_INET)
        self._conns: dict[RequestHandler, _Conn] = {}
        # blocking calls into the fleet: e-stops on their own threads, never behind the rest
        self._estop_pool = concurrent.futures.ThreadPoolExecutor(4, "console-estop")
        self._pool = concurrent.futures.ThreadPoolExecutor(8, "console-calls")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing: asyncio.Event | None = None
        self._streams = 0
        self._view: dict[str, Any] | None = None  # the newest grid, for the event stream
        self._view_changed: asyncio.Condition | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        base = f"http://{host}:{self.port}/"
        return base + (f"#token={self.token}" if self.token else "")

    def start(self) -> ConsoleServer:
        ready = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, failed), daemon=True,
                                        name="fleet-console")
        self._thread.start()
        ready.wait(30)
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        self._estop_pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sock.close()

    def record(self, snapshot: dict[str, Any]) -> None:
        """A learning-curve point from the driver's fleet snapshot (`fleet.run.train`)."""
        point = {k: snapshot.get(k) for k in ("env_steps", "success_rate", "policy_version",
                                              "intervention_rate", "steps_per_s", "elapsed_s")}
        with self._lock:
            self.learner_version = int(snapshot.get("policy_version") or 0)
            self.points.append(point)
            if len(self.points) > MAX_POINTS:
                self.points = self.points[::2]

    # -- what the routes do (blocking: run on the pools) ---------------------------------------

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
        results = self.robots.control_many(ids, command)
        return {"robots": [dict(results[rid], robot_id=rid) for rid in ids]}

    # -- the event loop ------------------------------------------------------------------------

    def _serve(self, ready: threading.Event, failed: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            runner = loop.run_until_complete(self._open())
        except BaseException as e:  # reported by start()
            failed.append(e)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            assert self._closing is not None
            self._closing.set()
            for conn in list(self._conns.values()):
                conn.transport.abort()
            loop.run_until_complete(runner.cleanup())
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _open(self) -> web.BaseRunner:
        self._closing = asyncio.Event()
        self._view_changed = asyncio.Condition()
        server = _Server(self, self._handle, request_factory=self._make_request,
                         handler_cancellation=True, max_line_size=4096, max_field_size=4096,
                         max_headers=64, keepalive_timeout=self.config.request_timeout_s + 5,
                         access_log=None, logger=_QUIET)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, self._sock, backlog=1024).start()
        asyncio.get_running_loop().create_task(self._watchdog())
        return runner

    def _make_request(self, message: Any, payload: Any, protocol: Any, writer: Any,
                      task: Any) -> web.BaseRequest:
        assert self._loop is not None
        return web.BaseRequest(message, payload, protocol, writer, task, self._loop,
                               client_max_size=MAX_BODY)

    def _opened(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        now = time.monotonic()
        peer = transport.get_extra_info("peername")
        self._conns[handler] = _Conn(transport, str(peer[0]) if peer else "?", now, now)
        if len(self._conns) > self.config.max_connections:  # the oldest idle one makes room
            idle = [(c.last, h) for h, c in self._conns.items() if not c.busy and h is not handler]
            if idle:
                victim = min(idle, key=lambda x: x[0])[1]
                self._drop(victim, "over console.max_connections")

    def _drop(self, handler: RequestHandler, why: str) -> None:
        conn = self._conns.pop(handler, None)
        if conn is None:
            return
        self.dropped_connections += 1
        conn.transport.abort()
        self.audit.append("anonymous", conn.peer, {"connection": "dropped"}, why, 408,
                          refusal=True)

    async def _watchdog(self) -> None:
        """Cuts connections whose next request has not arrived (headers half sent, or idle)."""
        while True:
            await asyncio.sleep(0.25)
            deadline = time.monotonic() - self.config.request_timeout_s
            for handler, conn in list(self._conns.items()):
                if not conn.busy and conn.last < deadline:
                    self._drop(handler, f"no request within {self.config.request_timeout_s} s")

    async def _blocking(self, call: Callable[..., Any], *args: Any, estop: bool = False) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._estop_pool if estop else self._pool, call, *args)

    # -- requests ------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        conn = self._conns.get(request.protocol)
        if conn is not None:
            conn.busy += 1
            conn.requests += 1
        try:
            return await self._route(request)
        except _Refused as e:
            self._audit_refusal(request, e.status, e.message)
            response = _json(e.status, {"error": e.message})
            if e.close or request.body_exists:  # an unread body must not become a request
                response.force_close()
            return response
        finally:
            if conn is not None:
                conn.busy -= 1
                conn.last = time.monotonic()

    def _audit_refusal(self, request: web.BaseRequest, status: int, message: str) -> None:
        who = str(request.headers.get("X-Fleet-Operator", "anonymous"))[:64]
        self.audit.append(who, request.remote or "?",
                          {"method": request.method, "path": request.raw_path[:200]}, message,
                          status, refusal=True)

    def _authorized(self, request: web.BaseRequest) -> bool:
        if not self.token:  # loopback: only names of this machine, so DNS rebinding gets nothing
            host = request.headers.get("Host", "").rsplit(":", 1)[0].strip("[]")
            return is_loopback(host)
        got = request.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode())

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0]
        if request.method in ("GET", "HEAD") and raw in ("/", "/index.html"):
            nonce = secrets.token_urlsafe(16)  # only the page's own script and style run
            page = self.page.replace(b"<script>", f'<script nonce="{nonce}">'.encode()).replace(
                b"<style>", f'<style nonce="{nonce}">'.encode())
            return web.Response(body=page, content_type="text/html", charset="utf-8",
                                headers=_HEADERS | {"Content-Security-Policy": _CSP.format(
                                    nonce=nonce)})
        if not raw.startswith("/api/"):
            raise _Refused(404, f"no page {raw[:100]}")
        if not self._authorized(request):
            raise _Refused(401, "missing or wrong Authorization: Bearer token")
        origin = request.headers.get("Origin")
        if origin and origin.split("://", 1)[-1] != request.headers.get("Host"):
            raise _Refused(403, f"cross-origin request from {origin[:100]}")
        try:
            parts = [urllib.parse.unquote(p, errors="strict") for p in raw.strip("/").split("/")]
        except UnicodeDecodeError:
            raise _Refused(400, "the path is not UTF-8") from None
        if request.method == "GET":
            return await self._get(request, parts)
        if request.method == "POST":
            return await self._post(request, parts)
        raise _Refused(405, f"no method {request.method[:20]}")

    async def _get(self, request: web.BaseRequest, parts: list[str]) -> web.StreamResponse:
        if parts == ["api", "robots"]:
            return _json(200, await self._blocking(self.robots_view))
        if parts == ["api", "metrics"]:
            return _json(200, self.metrics_view())
        if parts == ["api", "events"]:
            return await self._events(request)
        if len(parts) == 4 and parts[:2] == ["api", "robots"] and parts[3] == "frame.png":
            return await self._frame(parts[2])
        raise _Refused(404, "no route GET " + "/".join(parts)[:100])

    async def _frame(self, robot_id: str) -> web.Response:
        if robot_id not in self.robots.ids():
            raise _Refused(404, f"no robot {robot_id[:64]!r}")
        try:
            image = await self._blocking(self.robots.frame, robot_id)
        except Exception as e:
            return _json(502, {"error": f"{type(e).__name__}: {e}"})
        if image is None:
            return _json(404, {"error": f"{robot_id} has no camera"})
        return web.Response(body=await self._blocking(png, image), content_type="image/png",
                            headers=_HEADERS)

    async def _events(self, request: web.BaseRequest) -> web.StreamResponse:
        """Server-sent events: `robots` (the grid) every half second while it changes, `metrics`
        (the curve) when a point is added; one poller feeds every subscriber."""
        if self._streams >= MAX_STREAMS:
            raise _Refused(503, f"at most {MAX_STREAMS} event streams at once")
        assert self._closing is not None and self._view_changed is not None
        response = web.StreamResponse(headers=_HEADERS | {"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self._streams += 1
        if self._streams == 1:
            asyncio.get_running_loop().create_task(self._poll())
        sent_view, sent_points = None, -1
        try:
            while not self._closing.is_set():
                view = self._view
                if view is not None and view is not sent_view:
                    await response.write(_event("robots", view))
                    sent_view = view
                metrics = self.metrics_view()
                if len(metrics["points"]) != sent_points:
                    await response.write(_event("metrics", metrics))
                    sent_points = len(metrics["points"])
                async with self._view_changed:
                    try:
                        await asyncio.wait_for(self._view_changed.wait(), 15.0)
                    except TimeoutError:
                        await response.write(b": keep-alive\n\n")
        except ConnectionResetError:
            pass
        finally:
            self._streams -= 1
        return response

    async def _poll(self) -> None:
        """Refresh the grid for the event streams while anyone listens."""
        assert self._view_changed is not None
        while self._streams > 0:
            try:
                self._view = await self._blocking(self.robots_view)
            except Exception as e:
                self._view = {"robots": [], "error": f"{type(e).__name__}: {e}"}
            async with self._view_changed:
                self._view_changed.notify_all()
            await asyncio.sleep(STREAM_EVERY_S)
        self._view = None

    async def _body(self, request: web.BaseRequest) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise _Refused(413, f"a body is at most {MAX_BODY} bytes", close=True)
        try:
            raw = await asyncio.wait_for(request.read(), self.config.body_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(413, f"a body is at most {MAX_BODY} bytes", close=True) from None
        except TimeoutError:
            raise _Refused(408, f"the body did not arrive within "
                                f"{self.config.body_timeout_s} s", close=True) from None
        try:  # only JSON: other web pages' cross-site form posts can't send it
            return parse_body(raw, request.content_type)
        except BodyError as e:
            raise _Refused(e.status, str(e)) from None

    async def _post(self, request: web.BaseRequest, parts: list[str]) -> web.Response:
        if len(parts) == 4 and parts[:2] == ["api", "robots"] and parts[3] in COMMANDS:
            robot_id, name = parts[2], parts[3]
        elif len(parts) == 3 and parts[:2] == ["api", "fleet"] and parts[2] in FLEET_COMMANDS:
            robot_id, name = "*", parts[2]
        else:
            raise _Refused(404, f"no route POST {'/'.join(parts)[:100]}; robot commands: "
                           f"{', '.join(COMMANDS)}; fleet commands: {', '.join(FLEET_COMMANDS)}")
        body = await self._body(request)
        who = str(request.headers.get("X-Fleet-Operator") or body.get("operator")
                  or "anonymous")[:64]
        command = {k: v for k, v in body.items() if k != "operator"}
        if "cmd" in command:
            raise _Refused(400, "the command is in the path, not the body")
        command["cmd"] = name
        estop = name == "estop"
        status, reply = 200, dict[str, Any]()
        try:
            if robot_id == "*":
                reply = await self._blocking(self.fleet_command, command, estop=estop)
            else:
                reply = await self._blocking(self.command, robot_id, command, estop=estop)
        except KeyError:
            status, reply = 404, {"error": f"no robot {robot_id[:64]!r}"}
        except CommandError as e:
            cause = getattr(e, "cause", None) or e  # through Ray: the robot's own error
            status, reply = 400, {"error": str(cause)}
        except Exception as e:  # a lost robot: say so, keep serving
            cause = getattr(e, "cause", None)
            if isinstance(cause, CommandError):
                status, reply = 400, {"error": str(cause)}
            else:
                status, reply = 502, {"error": f"{type(e).__name__}: {e}"}
        if name != "teleop" or status != 200:  # the stream is counted in the robot's stats
            self.audit.append(who, request.remote or "?", {"robot": robot_id, **command},
                              "ok" if status == 200 else reply["error"], status,
                              refusal=status != 200)
        return _json(status, reply)


_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
# the page's one inline script and style (by nonce); no handler attribute or injected script
# runs, nothing from elsewhere loads
_CSP = ("default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(clean(body)).encode(),
                        content_type="application/json", headers=_HEADERS)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(clean(data))}\n\n".encode()


__all__ = ["MAX_BODY", "TOKEN_ENV", "AuditLog", "BodyError", "ConsoleConfig", "ConsoleServer",
           "RayRobots", "Robots", "TokenError", "parse_body", "png", "read_token"]
