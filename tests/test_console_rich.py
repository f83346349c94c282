"""What robots send reaches the terminal as text: the live view of `fleet train` and the table of
`fleet status` survive any string (Rich markup, ANSI escapes, control characters) and print it
inert."""

from __future__ import annotations

import io

from rich.console import Console

from fleet.console.client import status_table
from fleet.run.view import LiveView, render, safe_text
from tests.util import wait_for

HOSTILE = ["[/x]", "[/]", "[bold red]owned[/bold red]", "\x1b[2J\x1b[31mred\x1b[0m",
           "\x1b]0;title\x07", "bell\x07 nul\x00 del\x7f c1\x9b2J", "[link=file:///etc]x[/link]",
           "a" * 5000]


def snapshot(text: str, run: str = "") -> dict:
    return {"run": run or text, "env_steps": 10, "robots": [
        {"robot_id": text, "task": text, "env_steps": 1, "episodes": 0,
         "success_rate": float("nan"), "policy_version": 0, "error": text}]}


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=200, color_system="truecolor"), out


def test_hostile_strings_render_as_text():
    for text in HOSTILE:
        console, out = terminal()
        console.print(render(snapshot(text)))
        console.print(status_table({"policy_version": 1, "robots": [
            {"robot_id": text, "status": text, "task": text, "health": text}]}))
        printed = out.getvalue()
        assert "\x1b[2J" not in printed and "\x1b]0;" not in printed and "\x07" not in printed
        assert "\x00" not in printed and "\x9b" not in printed and "\x1b[31mred" not in printed
        if text.startswith("["):
            assert text[:4] in printed  # shown as typed, not taken as markup
    assert safe_text("\x1b[31mred\x1b[0m [/x]").plain == "red [/x]"


def test_the_live_view_keeps_refreshing_through_any_string():
    console, out = terminal()
    with LiveView(console, live=True) as view:
        assert view._live is not None  # a terminal: the refresh thread runs
        for i, text in enumerate(HOSTILE):  # each one drawn by the refresh thread
            view.show(snapshot(text, run=f"drawn-{i}"))
            assert wait_for(lambda i=i: f"drawn-{i}" in out.getvalue(), timeout_s=10), text
        assert view._live._refresh_thread is not None and view._live._refresh_thread.is_alive()
    assert "\x1b[31mred" not in out.getvalue() and "\x1b]0;title" not in out.getvalue()
