"""Write a buffer of labelled PushT-near episodes from 96x96 pixels for `fleet reward-eval`: the
scripted expert with Gaussian action noise of several sizes, so some episodes succeed and some
fail, in the chunks a training robot writes (8 calls of H = 8 steps).

    PYTHONPATH=. python docs/pusht_reward_episodes.py OUT_BUFFER [episodes=60] [seed=0]

Noise cycles through 0.1, 0.3, 0.6 episode by episode; every episode is kept (success or not).
"""

from __future__ import annotations

import sys

import numpy as np

from actors.chunker import ChunkBuilder
from actors.robots.pusht import PushTConfig
from buffers.codec import encode_chunk
from buffers.records import EpisodeEnd
from buffers.store import ReplayBuffer

NOISES = (0.1, 0.3, 0.6)


def main(out: str, episodes: int = 60, seed: int = 0, horizon: int = 8, calls: int = 8) -> None:
    robot = PushTConfig("pusht", max_episode_steps=150, success_coverage=0.8,
                        start_offset=60.0).make("labelled-0")
    rng = np.random.default_rng(seed)
    wins = 0
    with ReplayBuffer(out) as buf:
        for ep in range(episodes):
            noise = NOISES[ep % len(NOISES)]
            builder = ChunkBuilder(robot.spec, horizon, calls_per_chunk=calls)
            builder.begin_episode(f"labelled-{seed}-{ep}", robot.reset(seed=500_000 + ep))
            while True:
                if builder.call_done:
                    builder.add_call(np.zeros((horizon, 2), np.float32), 0.0)
                action = robot.expert_action() + rng.normal(0.0, noise, 2)
                fb = robot.send_action(np.clip(action, -1, 1).astype(np.float32))
                builder.add_step(np.clip(action, -1, 1), fb, robot.get_observation())
                if fb.done:
                    buf.insert([encode_chunk(builder.flush(0, EpisodeEnd(fb.outcome)))])
                    wins += fb.success
                    break
                if builder.full:
                    buf.insert([encode_chunk(builder.flush(0))])
    robot.close()
    print(f"{episodes} episodes, {wins} successes -> {out}")


if __name__ == "__main__":
    kv = dict(a.split("=", 1) for a in sys.argv[2:])
    main(sys.argv[1], int(kv.get("episodes", 60)), int(kv.get("seed", 0)))
