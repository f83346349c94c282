"""Write a buffer of labelled push_pixels episodes for `fleet reward-eval`: the cached BC base
(`fleet pretrain experiment=push_pixels`) run as a training robot runs it (stochastic, chunks
of 16 calls of H = 4 steps), every episode kept, success or not.

    PYTHONPATH=. python docs/push_pixels_reward_episodes.py OUT_BUFFER [episodes=80] [seed=0]

Training seeds of their own (700000 + n), apart from the held-out ones (900000 + n).
"""

from __future__ import annotations

import sys

from actors.evaluation import Collected
from actors.robots import make_robot
from actors.worker import RobotWorker, WorkerConfig
from buffers.store import ReplayBuffer
from fleet.config import load_config
from fleet.run.pretrain import pretrained_base


def main(out: str, episodes: int = 80, seed: int = 0) -> None:
    cfg = load_config(["experiment=push_pixels"])
    policy, _ = pretrained_base(cfg)
    robot = make_robot(cfg.robot, "labelled-0")
    sink = Collected()
    worker = RobotWorker(robot, policy, sink, sink,
                         WorkerConfig(cfg.policy.horizon, cfg.fleet.calls_per_chunk, seed=seed))
    wins = sum(worker.run_episode(700_000 + 1000 * seed + n) for n in range(episodes))
    robot.close()
    with ReplayBuffer(out) as buf:
        buf.insert(sink.records)
    print(f"{episodes} episodes, {wins} successes -> {out}")


if __name__ == "__main__":
    kv = dict(a.split("=", 1) for a in sys.argv[2:])
    main(sys.argv[1], int(kv.get("episodes", 80)), int(kv.get("seed", 0)))
