"""`fleet train experiment=smoke fleet.inference=server`: every robot acts through one batching
InferenceServer, which adopts the learner's weights itself."""

import json

import pytest

from buffers.codec import decode_chunk
from buffers.store import ReplayBuffer
from tests.test_e2e import ROOT, fleet


@pytest.mark.slow
def test_smoke_run_with_an_inference_server(tmp_path):
    done = fleet("train", "experiment=smoke", "run.name=served", f"run.dir={tmp_path}/runs",
                 f"pretrain.cache_dir={tmp_path}/cache", "fleet.inference=server",
                 "logger.wandb=disabled", "train.env_steps=4000", cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "post-trained" in done.stdout  # the result table
    run = tmp_path / "runs" / "served"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["policy_version"] >= 1
    assert summary["buffer"]["records"] == summary["chunks_stored"] > 0
    with ReplayBuffer(run / "buffer", read_only=True) as buf:
        chunks = [decode_chunk(r) for r in buf.read(0, 10**6)[0]]
    for robot in {c.robot_id for c in chunks}:
        versions = [c.policy_version for c in sorted(chunks, key=lambda c: c.wall_time)
                    if c.robot_id == robot]
        assert versions == sorted(versions), "a robot's chunks went back in policy_version"
        assert versions[-1] > versions[0], f"{robot} never acted with newer weights"
    assert max(c.policy_version for c in chunks) <= summary["policy_version"]
