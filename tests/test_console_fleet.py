"""The console over a real small fleet on a local Ray: robots in their actors, the buffer server,
and the HTTP API on a free port. What the API says is checked against what the robots did."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from actors.robots.metaworld import MetaWorldConfig  # noqa: E402
from actors.worker import WorkerConfig  # noqa: E402
from algorithms.policy import ChunkPolicy, PolicyConfig  # noqa: E402
from buffers.codec import decode_chunk  # noqa: E402
from buffers.store import BufferConfig  # noqa: E402
from fleet.console.client import request  # noqa: E402
from fleet.console.server import ConsoleConfig, ConsoleServer, RayRobots  # noqa: E402
from fleet.remote.buffer import BufferServer  # noqa: E402
from fleet.remote.robot import RobotLaunch, start_robot  # noqa: E402
from fleet.remote.weights import WeightHub  # noqa: E402
from tests.util import wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fleet(local_ray, tmp_path_factory):
    """Two robots streaming into a buffer, a console over them, and a way to read the buffer."""
    tmp = tmp_path_factory.mktemp("console")
    pcfg = PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32)
    buffer = BufferServer.remote(str(tmp / "buffer"), BufferConfig())
    hub = WeightHub.remote()
    handles = {f"robot-{i}": start_robot(RobotLaunch(
        f"robot-{i}", MetaWorldConfig(max_episode_steps=200), pcfg,
        WorkerConfig(calls_per_chunk=2, seed=i + 1), str(tmp / "spill")),
        ChunkPolicy(pcfg).policy_state(), buffer, hub, num_cpus=0.25) for i in range(2)}
    ray.get([r.start.remote() for r in handles.values()])
    server = ConsoleServer(ConsoleConfig(port=0), RayRobots(handles), tmp).start()
    yield f"http://127.0.0.1:{server.port}", handles, buffer, tmp
    server.stop()
    ray.get([r.stop.remote() for r in handles.values()])


def robots(url: str) -> dict[str, dict]:
    status, view = request(url, "GET", "/api/robots")
    assert status == 200, view
    return {r["robot_id"]: r for r in view["robots"]}


def steps(url: str) -> dict[str, int]:
    return {rid: r["env_steps"] for rid, r in robots(url).items()}


def test_grid_shows_every_robot_stepping(fleet):
    url = fleet[0]
    assert wait_for(lambda: all(n > 50 for n in steps(url).values()), timeout_s=60)
    row = robots(url)["robot-0"]
    assert row["status"] == "running" and row["task"] == "push-v3" and row["controls"]
    assert row["health"] == "ok" and row["action_dim"] == 4


def test_pause_stops_one_robot_and_resume_restarts_it(fleet):
    url = fleet[0]
    status, reply = request(url, "POST", "/api/robots/robot-0/pause", {})
    assert status == 200 and reply["holding"]  # answered once the robot holds
    before = steps(url)
    time.sleep(0.5)
    after = steps(url)
    assert after["robot-0"] == before["robot-0"]
    assert after["robot-1"] > before["robot-1"]  # the other robot works on
    assert request(url, "POST", "/api/robots/robot-0/resume", {})[0] == 200
    assert wait_for(lambda: steps(url)["robot-0"] > after["robot-0"])


def test_fleet_estop_holds_every_robot_until_armed(fleet):
    url = fleet[0]
    status, reply = request(url, "POST", "/api/fleet/estop", {})
    assert status == 200 and all(r["holding"] for r in reply["robots"])
    before = steps(url)
    assert request(url, "POST", "/api/fleet/resume", {})[0] == 200  # latched: resume is not arm
    time.sleep(0.5)
    assert steps(url) == before
    assert all(r["status"] == "estopped" and r["holding"] for r in robots(url).values())
    assert request(url, "POST", "/api/fleet/arm", {})[0] == 200
    assert wait_for(lambda: all(steps(url)[k] > before[k] for k in before))


def test_takeover_steps_reach_the_buffer_flagged(fleet):
    url, _, buffer, tmp = fleet
    assert request(url, "POST", "/api/robots/robot-1/takeover", {"on": True})[0] == 200
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # a keyboard's stream, at 20 Hz
        assert request(url, "POST", "/api/robots/robot-1/teleop",
                       {"action": [0.0, 0.7, 0.0, -1.0]})[0] == 200
        time.sleep(0.05)
    assert request(url, "POST", "/api/robots/robot-1/takeover", {"on": False})[0] == 200
    assert robots(url)["robot-1"]["intervened_steps"] > 0

    def flagged() -> list[np.ndarray]:
        records, _ = ray.get(buffer.read.remote(0, 10**6))
        chunks = [decode_chunk(r) for r in records]
        return [c.action[c.intervened] for c in chunks if c.robot_id == "robot-1"
                and c.intervened.any()]

    assert wait_for(lambda: bool(flagged()), timeout_s=30)
    taken = np.concatenate(flagged())
    # each flagged step ran the teleop action, or zero (hold still) when none was fresh
    assert all(np.allclose(a, [0.0, 0.7, 0.0, -1.0]) or not a.any() for a in taken)
    assert any(a.any() for a in taken)
    lines = [json.loads(x) for x in (tmp / "audit.jsonl").read_text().splitlines()]
    assert {"robot": "robot-1", "cmd": "takeover", "on": True} in [x["what"] for x in lines]
    assert {"robot": "*", "cmd": "estop"} in [x["what"] for x in lines]


def test_a_wrong_token_changes_nothing(fleet):
    _, handles, _, tmp = fleet
    (tmp / "guarded").mkdir(exist_ok=True)
    guarded = ConsoleServer(ConsoleConfig(host="0.0.0.0", port=0, token="s3cret"),
                            RayRobots(handles), tmp / "guarded").start()
    url = f"http://127.0.0.1:{guarded.port}"
    try:
        assert request(url, "POST", "/api/fleet/estop", {}, token="wrong")[0] == 401
        assert request(url, "GET", "/api/robots")[0] == 401
        before = steps_with(url, "s3cret")
        assert wait_for(lambda: all(steps_with(url, "s3cret")[k] > before[k] for k in before))
        assert all(r["status"] == "running" for r in robots_with(url, "s3cret").values())
    finally:
        guarded.stop()


def robots_with(url: str, token: str) -> dict[str, dict]:
    status, view = request(url, "GET", "/api/robots", token=token)
    assert status == 200, view
    return {r["robot_id"]: r for r in view["robots"]}


def steps_with(url: str, token: str) -> dict[str, int]:
    return {rid: r["env_steps"] for rid, r in robots_with(url, token).items()}
