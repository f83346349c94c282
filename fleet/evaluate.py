"""`fleet pretrain`: build (or load) the BC base and measure it on the held-out seeds, no Ray.

Example:

    success = pretrain_and_measure(load_config([]), Console())
"""

from __future__ import annotations

import numpy as np
from rich.console import Console

from actors.robot import MetaWorldRobot
from actors.worker import RobotWorker, WorkerConfig
from fleet.config import Config
from fleet.pretrain import pretrained_base


class _Nowhere:
    """Outbox and weight source for a robot that only evaluates."""

    def put(self, record: bytes) -> None:
        raise RuntimeError("an evaluating robot streams nothing")

    def poll(self, have_version: int) -> None:
        return None


def pretrain_and_measure(cfg: Config, console: Console) -> float:
    policy, info = pretrained_base(cfg, log=console.print)
    robot = MetaWorldRobot(cfg.robot, "eval-0")
    worker = RobotWorker(robot, policy, _Nowhere(), _Nowhere(), WorkerConfig(cfg.policy.horizon))
    seeds = [cfg.eval.seed + i for i in range(cfg.eval.episodes)]
    success = float(np.mean(worker.evaluate(seeds)))
    console.print(f"base policy {info['path']} ({'cached' if info['cached'] else 'new'}, "
                  f"{info['demos']} demos): {success:.0%} success on {len(seeds)} held-out "
                  f"episodes of {cfg.robot.task}")
    return success
