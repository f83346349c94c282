"""The CLI end to end: `fleet train experiment=smoke` on an embedded local Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buffers.codec import decode_chunk
from buffers.store import ReplayBuffer

ROOT = Path(__file__).resolve().parent.parent


def fleet(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path):
    args = ["experiment=smoke", "run.name=e2e", f"run.dir={tmp_path}/runs",
            f"pretrain.cache_dir={tmp_path}/cache"]
    done = fleet("train", *args, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "runs" / "e2e"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("success_before", "success_after", "env_steps", "wall_s", "policy_version",
                "eval_episodes"):
        assert key in summary
    assert summary["policy_version"] >= 1 and summary["env_steps"] > 0
    assert summary["eval_episodes"] == 4
    # every streamed chunk is on disk, once
    assert summary["buffer"]["records"] == summary["chunks_stored"] > 0
    assert summary["buffer"]["steps"] == summary["env_steps"]
    assert list((run / "buffer").glob("segment-*.log"))
    assert (run / "checkpoints" / "latest.safetensors").exists()
    assert list((run / "wandb").glob("offline-run-*"))
    assert "post-trained" in done.stdout
    # the same run directory is never overwritten
    again = fleet("train", *args, cwd=ROOT)
    assert again.returncode == 2 and "already holds a run" in again.stdout
    # and the buffer it left can be inspected
    info = fleet("buffer", "info", str(run / "buffer"), cwd=ROOT)
    assert json.loads(info.stdout)["records"] == summary["buffer"]["records"]


@pytest.mark.slow
def test_grpo_smoke_run(tmp_path):
    done = fleet("train", "experiment=smoke", "algorithm=grpo", "run.name=grpo",
                 f"run.dir={tmp_path}/runs", f"pretrain.cache_dir={tmp_path}/cache",
                 "algorithm.grpo.group_size=4", "logger.wandb=disabled", cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "grpo" / "summary.json").read_text())
    assert summary["policy_version"] >= 1
    with ReplayBuffer(tmp_path / "runs" / "grpo" / "buffer") as buf:
        chunks = [decode_chunk(r) for r in buf.read(0, 10**6)[0]]
    episodes: dict[str, set[str]] = {}
    for c in chunks:  # robots ran each start state 4 times in a row, as one named group
        episodes.setdefault(c.group, set()).add(c.episode_id)
    assert all(g.startswith("robot-") for g in episodes)
    assert max(len(e) for e in episodes.values()) == 4


@pytest.mark.parametrize("override, message", [("learner.nope=1", "nope"),
                                               ("experiment=missing", "missing")])
def test_bad_config_exits_nonzero_with_a_message(tmp_path, override, message):
    done = fleet("train", override, f"run.dir={tmp_path}", cwd=ROOT, timeout=180)
    assert done.returncode == 2
    assert "config error" in done.stdout and message in done.stdout
    assert not any(tmp_path.iterdir())  # nothing was created


@pytest.mark.slow
@pytest.mark.timeout(1200)  # its hang guards below leave room for a machine loaded 15x over
def test_kill_9_then_resume_continues_the_run(tmp_path):
    """kill -9 the whole job mid-training; `resume=` continues from the last checkpoint with the
    same wandb run, a higher policy_version and the buffer intact."""
    args = ["experiment=smoke", "run.name=crash", f"run.dir={tmp_path}/runs",
            f"pretrain.cache_dir={tmp_path}/cache", "learner.checkpoint_every_s=0.5"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    job = subprocess.Popen([sys.executable, "-m", "fleet.cli", "train", *args,
                            "train.env_steps=10000000", "train.max_wall_s=900"], cwd=ROOT,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    run = tmp_path / "runs" / "crash"
    deadline = time.monotonic() + 480  # a hang guard: ~30 s here, 180 s was passed at load ~30
    while not list((run / "checkpoints").glob("ckpt-00000[3-9].safetensors")):
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoints appeared"
        time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    latest = run / "checkpoints" / "latest.safetensors"
    version_at_kill = int(Path(os.readlink(latest)).stem.split("-")[1])
    wandb_id = (run / "wandb_id").read_text()
    done = fleet("train", *args, "resume=crash", "train.env_steps=1", cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"resuming {run}" in done.stdout.replace("\n", "")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] and summary["policy_version"] >= version_at_kill
    assert (run / "wandb_id").read_text() == wandb_id
    assert summary["buffer"]["corrupt_records"] == 0
    assert summary["env_steps"] == summary["buffer"]["steps"] > 0
