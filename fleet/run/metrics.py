"""Metrics to wandb (offline by default, under `runs/<name>/wandb/`, run id kept for resume) and
to `runs/<name>/metrics.jsonl`, one line per log call, which the results page plots from.

Example:

    with MetricsLogger(cfg, run_dir, say=console.print) as log:
        log.log({"train/success": 0.4}, step=env_steps)
        log.log_episodes("eval", evaluator.evaluate_episodes(state, record=1), step=env_steps)
        log.log_checkpoint(run_dir / "checkpoints" / "latest.safetensors", policy_version)

wandb gets what its users look for: system metrics (CPU, memory, GPU; wandb's own sampler),
held-out episodes' mean return and length, each recorded episode's camera frames as a video
(`eval/video/<camera>`, also written as a GIF under `runs/<name>/videos/` whatever the mode),
and, when online, checkpoints as `model` artifacts (offline: skipped, and said once).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import typing
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actors.worker import EvalEpisode
from fleet.config import Config, to_dict


class MetricsLogger:
    def __init__(self, cfg: Config, run_dir: Path, say: Callable[[str], Any] = print) -> None:
        self._run: Any = None
        self._run_dir, self._say, self._cfg = run_dir, say, cfg
        self._said_offline = False
        self.last_step = 0  # the highest step logged
        self._lines = (run_dir / "metrics.jsonl").open("a")
        if cfg.logger.wandb == "disabled":
            return
        import wandb

        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id)
        os.environ.setdefault("WANDB_SILENT", "true")
        self._run = wandb.init(
            project=cfg.logger.project, name=cfg.run.name, id=run_id, resume="allow",
            mode=typing.cast(Any, cfg.logger.wandb), dir=str(run_dir), group=cfg.robot.task,
            config=to_dict(cfg),
            settings=wandb.Settings(console="off"),  # system metrics stay on
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        numbers = {k: v for k, v in metrics.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        self._lines.write(json.dumps({"step": step, "time": time.time(), **numbers}) + "\n")
        self._lines.flush()
        self.last_step = max(self.last_step, step)
        if self._run is not None:
            self._run.log(numbers, step=step)

    def log_episodes(self, prefix: str, episodes: Sequence[EvalEpisode], step: int) -> None:
        """Mean return and length of `episodes` as `<prefix>/episode_return` and
        `<prefix>/episode_length`, and each recorded episode's frames as a GIF under
        `runs/<name>/videos/` and a wandb video `<prefix>/video/<camera>`."""
        if not episodes:
            return
        self.log({f"{prefix}/episode_return": float(np.mean([e.episode_return for e in episodes])),
                  f"{prefix}/episode_length": float(np.mean([e.length for e in episodes]))}, step)
        media: dict[str, Any] = {}
        for i, episode in enumerate(e for e in episodes if e.frames):
            for camera, frames in episode.frames.items():
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{prefix}-{step:09d}-{camera}-{i}")
                path = write_gif(self._run_dir / "videos" / f"{name}.gif", frames,
                                 self._cfg.logger.video_fps)
                if self._run is not None:
                    import wandb

                    media[f"{prefix}/video/{camera}" + (f"/{i}" if i else "")] = wandb.Video(
                        str(path), caption=f"{'success' if episode.success else 'failure'}, "
                        f"return {episode.episode_return:.2f}, {episode.length} steps")
        if media and self._run is not None:
            self._run.log(media, step=step)

    def log_checkpoint(self, path: Path, policy_version: int) -> None:
        """The checkpoint at `path` as a wandb `model` artifact (aliases `latest` and
        `policy_version-<n>`) when online; offline, skipped (syncing an offline run later
        would otherwise copy every checkpoint into its wandb folder) and said once."""
        if self._run is None:
            return
        if self._cfg.logger.wandb != "online":
            if not self._said_offline:
                self._say(f"wandb is {self._cfg.logger.wandb}: checkpoints are not logged as "
                          f"artifacts (they are in {path.parent})")
                self._said_offline = True
            return
        import wandb

        artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "_", f"policy-{self._run.name}"),
                                  type="model", metadata={"policy_version": policy_version})
        artifact.add_file(str(path.resolve()), name=path.resolve().name)
        self._run.log_artifact(artifact, aliases=["latest", f"policy_version-{policy_version}"])

    def summary(self, values: dict[str, Any]) -> None:
        if self._run is not None:
            self._run.summary.update(values)

    def close(self) -> None:
        self._lines.close()
        if self._run is not None:
            self._run.finish()
            self._run = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_gif(path: Path, frames: np.ndarray, fps: int) -> Path:
    """Frames [T, H, W, C] uint8 (C of 1, 3 or 4) as a looping GIF at `fps` (Pillow: no video
    encoder needed, and wandb shows GIFs as videos)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = frames[..., 0] if frames.shape[-1] == 1 else frames[..., :3]
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, math.floor(1000 / max(fps, 1))))  # ms; viewers floor at 20
    return path
