"""Metrics to wandb (offline by default, under `runs/<name>/wandb/`, run id kept for resume) and
to `runs/<name>/metrics.jsonl`, one line per log call, which the results page plots from.

Example:

    with MetricsLogger(cfg, run_dir) as log:
        log.log({"train/success": 0.4}, step=env_steps)
"""

from __future__ import annotations

import json
import os
import time
import typing
import uuid
from pathlib import Path
from typing import Any

from fleet.config import Config, to_dict


class MetricsLogger:
    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self._run: Any = None
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
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        numbers = {k: v for k, v in metrics.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        self._lines.write(json.dumps({"step": step, "time": time.time(), **numbers}) + "\n")
        self._lines.flush()
        if self._run is not None:
            self._run.log(numbers, step=step)

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
