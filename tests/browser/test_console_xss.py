"""Markup through every field an outsider controls (robot id, task, correction/instruction)
reaches the page as text: Chromium runs none of it and parses none of it into elements.

The console serves robots whose ids and tasks are attack strings (what a bridged robot could
register); an operator's `say` carries another. Needs playwright and chromium, like
test_console_browser.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.control import RobotControl
from fleet.console.client import request
from fleet.console.server import ConsoleConfig, ConsoleServer
from tests.browser.test_console_browser import browser  # noqa: F401  (the fixture)
from tests.test_console_api import LocalRobots
from tests.util import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

PAYLOADS = ['<img src=x onerror="window.__pwned=1">',
            '"><svg onload="window.__pwned=2"></svg>',
            "<script>window.__pwned=3</script>",
            "<iframe srcdoc='<script>parent.__pwned=4</script>'></iframe>",
            "{{constructor.constructor('window.__pwned=5')()}}"]


class HostileRobots(LocalRobots):
    """Robots whose ids, tasks and errors are markup."""

    def __init__(self) -> None:
        super().__init__(0)
        self.controls = {p: RobotControl(action_dim=4) for p in PAYLOADS}

    def stats(self) -> list[dict[str, Any]]:
        rows = super().stats()
        for row, p in zip(rows, reversed(PAYLOADS), strict=True):
            row["task"] = p
        return rows


def test_markup_from_outsiders_is_shown_as_text(browser, tmp_path):  # noqa: F811
    robots = HostileRobots()
    server = ConsoleServer(ConsoleConfig(port=0), robots, tmp_path).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        for p in PAYLOADS:  # an operator's correction, shown in the grid and stored as the
            status, _ = request(url, "POST", f"/api/robots/{_quote(p)}/say", {"text": p})
            assert status == 200  # episode's instruction
        page = browser.new_page()
        messages: list[str] = []
        page.on("console", lambda m: messages.append(m.text))
        page.on("dialog", lambda d: messages.append("dialog " + d.message))
        page.goto(url + "/")
        # polled with `evaluate` (CDP, outside the page's CSP): `wait_for_function`'s poller
        # evaluates its string inside the page, which the console's CSP (no 'unsafe-eval')
        # refused once in a fresh-clone CI run
        rendered = (f"() => document.querySelectorAll('.robot').length === {len(PAYLOADS)}"
                    " && [...document.querySelectorAll('.robot .correction')]"
                    ".every((e) => e.textContent.length > 5)")
        # a hang guard; the grid renders in under a second
        assert wait_for(lambda: page.evaluate(rendered), timeout_s=120, poll_s=0.1), \
            "the robots' grid never showed every payload"
        shown = page.evaluate("""() => [...document.querySelectorAll('.robot')].map((el) => ({
            id: el.dataset.id, span: el.querySelector('.id').textContent,
            task: el.querySelector('.task').textContent,
            correction: el.querySelector('.correction').textContent}))""")
        assert sorted(s["id"] for s in shown) == sorted(PAYLOADS)
        for s in shown:
            assert s["span"] == s["id"] and s["correction"] == s["id"]
            assert s["task"] in PAYLOADS
        assert page.evaluate("window.__pwned") is None and page.evaluate("parent.__pwned") is None
        # nothing was parsed into elements: no injected img/svg/script/iframe, no handler attributes
        injected = page.evaluate("""() => document.querySelectorAll(
            'img:not(.frame), svg, iframe, script:not([nonce]), [onerror], [onload]').length""")
        assert injected == 0
        assert page.evaluate("document.scripts.length") == 1
        assert not [m for m in messages if "Refused" in m or "dialog" in m], messages
    finally:
        server.stop()


def _quote(s: str) -> str:
    import urllib.parse

    return urllib.parse.quote(s, safe="")
