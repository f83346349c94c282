"""What a person watching `fleet train` sees: a rich live table, or plain lines when piped.

Example:

    with LiveView(console, live=True) as view:
        view.show(snapshot)         # a dict of fleet-wide numbers plus per-robot rows
"""

from __future__ import annotations

import collections
import math
import re
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

# ANSI/VT escape sequences (CSI, OSC, and two-byte ESC forms), then every other control character
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?"
                      r"|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(value: Any, limit: int = 200) -> Text:
    """What a robot sent, as rich shows it: never parsed as markup (`[/x]` is just text), with
    terminal escape sequences and control characters removed, and at most `limit` characters."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", str(value))).replace("\t", " ").replace("\n", " ")
    return Text(text[:limit] + ("…" if len(text) > limit else ""))


class Throughput:
    """Steps per second over a sliding window."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._marks: collections.deque[tuple[float, int]] = collections.deque()

    def update(self, total_steps: int) -> float:
        now = time.monotonic()
        self._marks.append((now, total_steps))
        while len(self._marks) > 2 and now - self._marks[0][0] > self.window_s:
            self._marks.popleft()
        (t0, s0), (t1, s1) = self._marks[0], self._marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


FLEET_ROWS = [("elapsed_s", "elapsed s"), ("env_steps", "env steps"), ("steps_per_s", "steps/s"),
              ("success_rate", "success (last 20 eps/robot)"), ("policy_version", "policy version"),
              ("staleness_mean", "staleness (versions)"),
              ("adopt_latency_s", "publish→adopted s"), ("updates", "learner updates"),
              ("intervention_rate", "intervened steps")]


def render(snapshot: dict[str, Any]) -> Group:
    fleet = Table(title=Text(f"fleet train · {safe_text(snapshot.get('run', ''))}"),
                  show_header=False)
    for key, label in FLEET_ROWS:
        fleet.add_row(label, safe_text(_fmt(snapshot.get(key, "–"))))
    robots = Table("robot", "task", "env steps", "episodes", "success", "policy version", "error")
    for r in snapshot.get("robots", []):
        robots.add_row(safe_text(r.get("robot_id")), safe_text(r.get("task") or ""),
                       safe_text(_fmt(r.get("env_steps"))), safe_text(_fmt(r.get("episodes"))),
                       safe_text(_fmt(r.get("success_rate"))),
                       safe_text(_fmt(r.get("policy_version"))), safe_text(r.get("error") or ""))
    return Group(fleet, robots)


def plain_line(snapshot: dict[str, Any]) -> str:
    return "  ".join(f"{label}={_fmt(snapshot.get(key, '–'))}" for key, label in FLEET_ROWS
                     if not label.startswith("success (")) + \
        f"  success={_fmt(snapshot.get('success_rate', float('nan')))}"


class LiveView:
    """A rich live view on a terminal; otherwise one plain line every `every_s` seconds."""

    def __init__(self, console: Console, live: bool = True, every_s: float = 5.0) -> None:
        self.console = console
        self.every_s = every_s
        self._live = Live(console=console, refresh_per_second=2) if (
            live and console.is_terminal) else None
        self._last_line = 0.0

    def __enter__(self) -> LiveView:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def show(self, snapshot: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(render(snapshot))
        elif time.monotonic() - self._last_line >= self.every_s:
            self.console.print(safe_text(plain_line(snapshot), 2000), highlight=False)
            self._last_line = time.monotonic()
