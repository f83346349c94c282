"""wandb as its users expect (`fleet.run.metrics`), with the real library in offline mode and
its run file read back: held-out episodes' return, length and camera video, system metrics,
checkpoints as artifacts only when online (said when skipped)."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from actors.evaluation import held_out
from fleet.config import load_config
from fleet.run.evaluate import DuringTraining
from fleet.run.metrics import MetricsLogger
from fleet.run.pretrain import new_policy

GOAL = "tests.gym_envs:fleet-tests/Goal-v0"  # a Dict env with a 24x24 camera


def offline_run(run_dir: Path, wait_s: float = 60.0) -> dict[str, Any]:
    """What a finished offline wandb run under `run_dir` recorded: its folder, every history
    row ({key: JSON text}), and how many system-metrics samples. wandb's service may still be
    writing the file when `finish()` returns (seen here: a read right after it found only the
    header), so this reads until the run's `exit` record is there, at most `wait_s`."""
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    (path,) = folder.glob("run-*.wandb")
    deadline = time.monotonic() + wait_s
    while not (got := read_run_file(path))["exited"]:
        assert time.monotonic() < deadline, f"{path}: no exit record after {wait_s} s"
        time.sleep(0.1)
    return {"folder": folder, **got}


def read_run_file(path: Path) -> dict[str, Any]:
    """The run file: W&B's record log (LevelDB's format: 32 KiB blocks of records [crc32 u32,
    length u16, type u8, data], type 1 full, 2 first, 3 middle, 4 last) of
    `wandb_internal_pb2.Record`s after a 7-byte header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    rows, stats, exited = [], 0, False
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length == 0 and kind == 0):  # the block's zero-filled tail
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written
            break
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            which = record.WhichOneof("record_type")
            if which == "history":
                rows.append({i.key or "/".join(i.nested_key): i.value_json
                             for i in record.history.item})
            stats += which == "stats"
            exited |= which == "exit"
    return {"rows": rows, "stats": stats, "exited": exited}


def test_held_out_episodes_reach_wandb_with_return_length_and_video(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = load_config(["robot=gym", f"robot.task={GOAL}", "robot.termination=success",
                       "policy.horizon=2", "policy.hidden=8", "eval.episodes=3",
                       "eval.every_steps=100", "logger.wandb=offline", "logger.video_fps=10",
                       "run.name=media"])
    episodes = held_out(cfg.robot, cfg.eval.episodes, cfg.eval.seed)
    during = DuringTraining(cfg, episodes)
    assert during.maybe_start(150, lambda: (4, new_policy(cfg).policy_state()))
    during.close()
    (result,) = during.finished()
    recorded = result.pop("eval/episodes")
    assert len(recorded) == 3 and [bool(e.frames) for e in recorded] == [True, False, False]
    frames = recorded[0].frames["camera"]
    assert frames.shape == (recorded[0].length + 1, 24, 24, 3) and frames.dtype == np.uint8
    assert not (frames == frames[0]).all()  # the point moved: frames are copies, not one buffer

    said: list[str] = []
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with MetricsLogger(cfg, run_dir, say=said.append) as metrics:
        metrics.log({"fleet/episode_return": -1.5, "fleet/episode_length": 12.0}, step=100)
        metrics.log_episodes("eval", recorded, step=150)
        metrics.log(result, step=150)
        metrics.log_checkpoint(run_dir / "latest.safetensors", 4)
        metrics.log_checkpoint(run_dir / "latest.safetensors", 5)
    assert len(said) == 1 and "not logged as artifacts" in said[0]  # offline: said once

    (gif,) = (run_dir / "videos").glob("*.gif")  # the GIF beside the run, whatever the mode
    assert gif.name == "eval-000000150-camera-0.gif"
    with Image.open(gif) as im:
        assert im.size == (24, 24) and im.n_frames > 1
        assert im.info["duration"] % 100 == 0  # 10 fps (a still frame lasts longer)
    got = offline_run(run_dir)
    rows = {int(r["_step"]): r for r in got["rows"]}
    assert float(rows[100]["fleet/episode_return"]) == -1.5
    row = rows[150]
    mean_return = np.mean([e.episode_return for e in recorded])
    assert np.isclose(float(row["eval/episode_return"]), mean_return)
    assert np.isclose(float(row["eval/episode_length"]), np.mean([e.length for e in recorded]))
    assert float(row["eval/policy_version"]) == 4
    assert row["eval/video/camera/_type"] == '"video-file"'
    media = got["folder"] / "files" / row["eval/video/camera/path"].strip('"')
    assert media.read_bytes() == gif.read_bytes()
    assert got["stats"] >= 1  # system metrics are on (no x_disable_stats)
