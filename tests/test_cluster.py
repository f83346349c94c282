"""`ray job submit ... -- fleet train` against a local two-node Ray cluster started with
`ray start`, robots placed by custom resources. Token authentication stays on."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
EXCLUDES = [".venv", "runs", ".git", ".hypothesis", ".mypy_cache", ".ruff_cache",
            ".pytest_cache"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               PYTHONWARNINGS="ignore")
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's sockets need a short path

    def ray(*args: str) -> None:
        done = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    ray("start", "--head", f"--port={gcs}", "--num-cpus=2", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}", "--include-dashboard=true", "--disable-usage-stats",
        f"--temp-dir={temp}", '--resources={"robot:robot-0": 1}')
    try:
        ray("start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1",
            '--resources={"robot:robot-1": 1}')
        yield env, f"http://127.0.0.1:{dash}"
    finally:
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_cluster(temp: str) -> None:
    """Kill only this cluster's processes (they name its temp dir): `ray stop` would also kill
    every other Ray on the machine, a training job included."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if temp.encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), sig)
            except (OSError, ValueError):
                pass
        time.sleep(2)


@pytest.mark.slow
def test_ray_job_submit_runs_fleet_train_across_nodes(cluster, tmp_path):
    env, address = cluster
    runs = tmp_path / "runs"
    submit = [RAY, "job", "submit", "--address", address, "--working-dir", ".",
              "--runtime-env-json", json.dumps({"excludes": EXCLUDES}), "--",
              sys.executable, "-m", "fleet.cli", "train", "experiment=smoke", "run.name=job",
              f"run.dir={runs}", f"pretrain.cache_dir={tmp_path / 'cache'}",
              "fleet.robot_resources=true", "logger.wandb=disabled"]
    deadline = time.monotonic() + 300  # a bound, not a timing assumption: the loop waits on the
    while True:  # agent's state; a fresh head's job agent takes minutes on a loaded machine
        done = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=400)
        if "No available agent" not in done.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    summary = json.loads((runs / "job" / "summary.json").read_text())
    assert summary["policy_version"] >= 1 and summary["env_steps"] > 0
    nodes = {r["robot_id"]: r["node_id"] for r in summary["per_robot"]}
    assert nodes["robot-0"] != nodes["robot-1"]  # each robot on the node wired to it
