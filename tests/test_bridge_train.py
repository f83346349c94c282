"""A real robot in `fleet train`: a robot process (a Meta-World simulator behind the bridge
client) joins the run's gateway over CURVE-authenticated ZeroMQ and its chunks are trained on."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from buffers.codec import decode_chunk
from buffers.store import ReplayBuffer
from fleet.cli import main
from tests.test_bridge_cli import free_port
from tests.test_e2e import fleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parent.parent


def robot_process(keys: Path, robot_id: str, endpoint: str, seconds: float,
                  driver: str = "", execution: str = "step") -> subprocess.Popen:
    sim = ["--driver", driver] if driver else ["--metaworld", "push-v3", "--hz", "400"]
    sim += ["--execution", execution]
    return subprocess.Popen(
        [sys.executable, "-m", "fleet.robot_cli", "robot", "run", robot_id, "--gateway",
         endpoint, "--server-key", str(keys / "server.key"),
         "--key", str(keys / "robots" / f"{robot_id}.key_secret"), *sim,
         "--arm", "--seconds", str(seconds)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_bridged_robot_trains_beside_simulated_ones(tmp_path: Path) -> None:
    """The robot's first process dies at the first step of a policy call (the step whose chunk
    once could not be closed, ending the run); the run goes on, and a restarted process rejoins,
    asking this time for whole chunks to run open loop."""
    keys = tmp_path / "keys"
    assert main(["keys", "arm-0", "--dir", str(keys)]) == 0
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    robots = [robot_process(keys, "arm-0", endpoint, seconds=150,
                            driver="tests.bridge_drivers:DiesAtACallsFirstStep")]

    def restart() -> None:  # as systemd would, once the first process is gone
        robots[0].wait()
        robots.append(robot_process(keys, "arm-0", endpoint, seconds=150, execution="chunk"))

    supervisor = threading.Thread(target=restart, daemon=True)
    supervisor.start()
    try:
        done = fleet("train", "experiment=smoke", "run.name=bridged", f"run.dir={tmp_path}/runs",
                     f"pretrain.cache_dir={tmp_path}/cache", "fleet.num_robots=1",
                     "fleet.bridge_robots=[arm-0]", f"fleet.bridge_endpoint={endpoint}",
                     f"fleet.bridge_keys={keys}", "logger.wandb=disabled",
                     "train.env_steps=4000", cwd=ROOT)
    finally:
        supervisor.join(timeout=30)
        for robot in robots:
            robot.terminate()
        out, _ = robots[-1].communicate(timeout=30)
    assert robots[0].returncode == 9 and len(robots) == 2  # it died, and came back
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "bridged" / "summary.json").read_text())
    arm = next(s for s in summary["per_robot"] if s["robot_id"] == "arm-0")
    assert arm["error"] is None and arm["env_steps"] > 8 and arm["stored"] > 0
    assert arm["faults"] >= 1 and arm["lost"] >= 1, arm
    robot_stats = json.loads(out.strip().splitlines()[-1])
    assert robot_stats["robot_id"] == "arm-0"
    with ReplayBuffer(tmp_path / "runs" / "bridged" / "buffer", read_only=True) as buf:
        chunks = [decode_chunk(r) for r in buf.read(0, len(buf))[0]]
    mine = [c for c in chunks if c.robot_id == "arm-0"]
    assert len(mine) == arm["stored"]  # every chunk the bridged robot streamed is stored once
    assert {c.embodiment for c in mine} == {"sawyer"} and {c.task for c in mine} == {"push-v3"}
    assert all(c.obs["state"].shape[1] == 39 for c in mine)
    first = [c for c in mine if c.episode_id == mine[0].episode_id]  # the one the death cut
    assert sum(c.num_steps for c in first) == 8 and first[-1].episode_end is not None
    assert first[-1].episode_end.outcome == "truncated" and first[-1].num_calls == 2


@pytest.mark.chaos
def test_a_lost_robot_ends_its_episode_truncated_and_rejoins(local_ray, tmp_path: Path) -> None:
    import time

    from actors.worker import WorkerConfig
    from algorithms.policy import ChunkPolicy, PolicyConfig
    from buffers.store import BufferConfig
    from fleet.remote.buffer import BufferServer
    from fleet.remote.robot import Bridge, RobotLaunch, start_robot
    from fleet.remote.weights import WeightHub

    keys = tmp_path / "keys"
    main(["keys", "arm-0", "--dir", str(keys)])
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pcfg = PolicyConfig(obs_dim=39, action_dim=4, horizon=4, hidden=32)
    buffer = BufferServer.remote(str(tmp_path / "buffer"), BufferConfig())
    launch = RobotLaunch("arm-0", None, pcfg, WorkerConfig(4, calls_per_chunk=2, seed=1),
                         str(tmp_path / "spill"), bridge=Bridge(endpoint, str(keys)))
    actor = start_robot(launch, ChunkPolicy(pcfg).policy_state(), buffer, WeightHub.remote())
    local_ray.get(actor.start.remote())
    assert local_ray.get(actor.stats.remote())["bridge"] == "waiting"

    def steps_reach(n: int) -> None:
        deadline = time.monotonic() + 60
        while local_ray.get(actor.stats.remote())["env_steps"] < n:
            assert time.monotonic() < deadline, "the bridged robot made no progress"
            time.sleep(0.2)

    first = robot_process(keys, "arm-0", endpoint, seconds=60)
    steps_reach(100)
    first.kill()  # the robot's computer dies mid-episode
    first.wait()
    deadline = time.monotonic() + 30
    while local_ray.get(actor.stats.remote())["lost"] < 1:
        assert time.monotonic() < deadline, "the gateway never marked the robot lost"
        time.sleep(0.2)
    before = local_ray.get(actor.stats.remote())["env_steps"]
    second = robot_process(keys, "arm-0", endpoint, seconds=60)  # it comes back
    try:
        steps_reach(before + 100)
        stats = local_ray.get(actor.stop.remote())
    finally:
        second.terminate()
        second.wait()
    assert stats["error"] is None and stats["lost"] >= 1, stats["last_fault"]
    assert stats["faults"] >= 1 and stats["bridge"] == "live"
    records, _ = local_ray.get(buffer.read.remote(0, 10**6))
    chunks = [decode_chunk(r) for r in records]
    assert len(chunks) == stats["stored"]  # nothing lost, nothing twice
    steps: dict[str, int] = {}
    ended: dict[str, str] = {}
    for c in chunks:
        steps[c.episode_id] = steps.get(c.episode_id, 0) + len(c.action)
        if c.episode_end is not None:
            ended[c.episode_id] = c.episode_end.outcome
    # The episode the loss cut short (below the 200-step time limit, not a success) is closed
    # as truncated at whatever step the robot died, a chunk boundary included; only the episode
    # the actor's stop interrupted may end without an end.
    cut = [e for e, n in steps.items() if n < 200 and ended.get(e) != "success"]
    assert len(cut) >= 1 and all(ended.get(e) == "truncated" for e in cut[:-1]), (steps, ended)
    assert sum(ended.get(e) == "truncated" for e in cut) >= 1, (steps, ended)
