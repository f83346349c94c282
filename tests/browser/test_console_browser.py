"""The operator console in a real browser: Playwright drives Debian's chromium against the console
of a running `fleet train experiment=smoke`, and every effect is checked through the API and the
run's buffer, not the page.

Needs `playwright` (the dev extra) and chromium (`make setup` installs it with apt when run as
root); without either the test skips and says which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buffers.codec import decode_chunk
from buffers.shards import open_buffer
from fleet.console.client import request
from tests.util import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed: pip install -e .[dev]")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed: `make setup` as root installs it with apt "
                    "(apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def smoke_fleet(tmp_path):
    """`fleet train experiment=smoke` with its console on a free port; yields (url, run dir)."""
    log = tmp_path / "train.log"
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="200")
    with log.open("w") as out:
        job = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "train", "experiment=smoke", "run.name=browser",
             f"run.dir={tmp_path}/runs", f"pretrain.cache_dir={tmp_path}/cache",
             "console.port=0", "logger.wandb=disabled", "logger.live=false",
             "train.env_steps=100000000", "train.max_wall_s=180"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found: list[str] = []

        def console_up() -> bool:
            found[:] = re.findall(r"operator console: (http://\S+)", log.read_text())
            assert job.poll() is None, log.read_text()[-3000:]
            return bool(found)

        assert wait_for(console_up, timeout_s=120, poll_s=0.2), log.read_text()[-3000:]
        yield found[0], tmp_path / "runs" / "browser"
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGINT)  # the driver shuts Ray down and exits
            try:
                job.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()


def robots(url: str) -> dict[str, dict]:
    status, view = request(url, "GET", "/api/robots")
    assert status == 200, view
    return {r["robot_id"]: r for r in view["robots"]}


def buffered(run: Path) -> list:
    """Every chunk the run's buffer holds so far (read beside the running writer)."""
    buf = open_buffer(run / "buffer", read_only=True)
    try:
        records, _ = buf.read(0, 10**6)
    finally:
        buf.close()
    return [decode_chunk(r) for r in records]


def flagged_steps(run: Path) -> list:
    """robot-1's intervened steps' actions in the buffer."""
    return [a for c in buffered(run) if c.robot_id == "robot-1"
            for a in c.action[c.intervened]]


def test_console_in_chromium(browser, smoke_fleet, tmp_path):
    url, run = smoke_fleet
    page = browser.new_page()
    page.goto(url)
    # sees the robots
    page.wait_for_selector('.robot[data-id="robot-1"]', timeout=30_000)
    assert page.locator(".robot").count() == 2
    assert wait_for(lambda: all((r.get("env_steps") or 0) > 0 for r in robots(url).values()),
                    timeout_s=60)  # the robots answer once built

    # clicks pause, and the robot pauses
    page.click('.robot[data-id="robot-0"] button[data-cmd="pause"]')
    assert wait_for(lambda: robots(url)["robot-0"]["holding"], timeout_s=60)
    held = robots(url)["robot-0"]["env_steps"]
    time.sleep(0.5)
    now = robots(url)
    assert now["robot-0"]["env_steps"] == held and now["robot-0"]["status"] == "paused"
    page.click('.robot[data-id="robot-0"] button[data-cmd="resume"]')

    # holds a key during a take-over: the steps are flagged interventions. Waits on state, not
    # time (a loaded machine delays every part): the page driving the robot before the key goes
    # down, and the key held until a flagged +1 step is in the buffer
    page.click('.robot[data-id="robot-1"] button[data-cmd="takeover"]')
    page.wait_for_selector('body[data-driving="robot-1"]', timeout=60_000)
    assert wait_for(lambda: robots(url)["robot-1"]["taken_over"], timeout_s=60)
    page.keyboard.down("ArrowUp")
    assert wait_for(lambda: any(a[0] == 1.0 for a in flagged_steps(run)), timeout_s=120,
                    poll_s=0.5), "no flagged step ran the key's action"
    page.keyboard.up("ArrowUp")
    page.click('.robot[data-id="robot-1"] button[data-cmd="takeover"]')
    page.wait_for_selector('body[data-driving=""]', timeout=60_000)
    assert wait_for(lambda: not robots(url)["robot-1"]["taken_over"], timeout_s=60)
    assert robots(url)["robot-1"]["intervened_steps"] > 0

    # clicks the fleet e-stop, and every robot holds
    page.click("#fleet-estop")
    assert wait_for(lambda: all(r["holding"] and r["status"] == "estopped"
                                for r in robots(url).values()), timeout_s=60)
    before = {k: r["env_steps"] for k, r in robots(url).items()}
    time.sleep(0.5)
    assert {k: r["env_steps"] for k, r in robots(url).items()} == before
    page.wait_for_selector('.robot[data-status="estopped"]')
    page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
    assert (tmp_path / "console.png").stat().st_size > 1000

    # the buffer holds robot-1's flagged steps, each the key's action or a still hold
    chunks = buffered(run)
    assert all(c.robot_id == "robot-1" for c in chunks if c.intervened.any())
    steps = flagged_steps(run)
    assert any(a[0] == 1.0 for a in steps)  # ArrowUp: +1 on action 0
    assert all(a[0] in (0.0, 1.0) and not a[1:].any() for a in steps)
    audit = [json.loads(x)["what"] for x in (run / "audit.jsonl").read_text().splitlines()]
    assert {"robot": "robot-0", "cmd": "pause"} in audit and {"robot": "*", "cmd": "estop"} in audit
