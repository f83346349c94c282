"""The console's HTTP API from a terminal or a test: `fleet status`, `fleet intervene`.

Example:

    status, view = request("http://127.0.0.1:8750", "GET", "/api/robots")
    status, reply = intervene(url, "robot-0", "label", ["success"], token, "cli:me")
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from actors.control import COMMANDS, CommandError
from fleet.console.server import FLEET_COMMANDS

DEFAULT_URL = "http://127.0.0.1:8750"


def request(url: str, method: str, path: str, body: dict[str, Any] | None = None,
            token: str = "", operator: str = "", timeout_s: float = 10.0,
            ) -> tuple[int, dict[str, Any]]:
    """One API call: (HTTP status, JSON reply). The client of `fleet status`, `fleet
    intervene`, the tests and the e-stop bench.

        status, view = request("http://127.0.0.1:8750", "GET", "/api/robots")
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.split("#", 1)[0].rstrip("/") + path, data=data,
                                 method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if operator:
        req.add_header("X-Fleet-Operator", operator)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return int(r.status), json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return int(e.code), json.loads(e.read() or b"{}")
        except ValueError:
            return int(e.code), {"error": e.reason}


def command_body(command: str, words: list[str]) -> dict[str, Any]:
    """`label success` -> {"outcome": "success"}, `say go left` -> {"text": "go left"},
    `takeover on` -> {"on": True}; a command without arguments takes no words."""
    if command == "label" and len(words) == 1:
        return {"outcome": words[0]}
    if command == "say" and words:
        return {"text": " ".join(words)}
    if command == "takeover" and words in (["on"], ["off"]):
        return {"on": words == ["on"]}
    if command in COMMANDS and command not in ("label", "say", "takeover", "teleop") \
            and not words:
        return {}
    raise CommandError(f"usage: fleet intervene ROBOT|all {' | '.join(FLEET_COMMANDS)} | reset "
                       f"| label success|failure | say \"...\" | takeover on|off; got "
                       f"{' '.join([command, *words])!r}")


def intervene(url: str, robot: str, command: str, words: list[str], token: str,
              operator: str) -> tuple[int, dict[str, Any]]:
    """One operator command from the terminal; `robot` "all" addresses the whole fleet."""
    body = command_body(command, words)
    path = (f"/api/fleet/{command}" if robot == "all"
            else f"/api/robots/{urllib.parse.quote(robot, safe='')}/{command}")
    return request(url, "POST", path, body, token=token, operator=operator)


def status_table(view: dict[str, Any]) -> Any:
    """The robot grid as a rich table."""
    from rich.table import Table

    from fleet.run.view import safe_text

    t = Table(title=safe_text(f"fleet · policy v{view.get('policy_version')}"))
    t.add_column("robot", no_wrap=True)
    for col in ("status", "task", "ep step", "success", "policy (behind)", "steps/s", "health",
                "env steps", "interventions"):
        t.add_column(col)
    for r in view["robots"]:
        rate = r.get("success_rate")
        cells = (r.get("robot_id"), str(r.get("status")) + (" ⏸" if r.get("holding") else ""),
                 r.get("task") or "–", r.get("episode_step") or 0,
                 "–" if not isinstance(rate, int | float) else f"{rate:.0%}",
                 f"v{r.get('policy_version')} ({r.get('staleness')})",
                 f"{float(r.get('steps_per_s') or 0):.0f}", r.get("health") or r.get("error"),
                 r.get("env_steps"), r.get("intervened_steps"))
        t.add_row(*(safe_text(c) for c in cells))  # what robots send is never markup
    return t
