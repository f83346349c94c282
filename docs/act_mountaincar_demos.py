"""Weak demonstrations for the ACT lift on MountainCarContinuous-v0 (docs/results.md).

    python docs/act_mountaincar_demos.py OUT [--episodes 10] [--gain 0.6]

A pumping controller, action = gain * sign(velocity) plus N(0, 0.1) noise, run to the flag
(seeds 0..episodes-1), each episode written as `OUT/epN.npz` (`obs.state`, `action`, the
`.npz` layout `fleet pretrain pretrain.data=OUT` reads). At gain 0.6 the flag takes 118-128
steps, so with `robot.max_episode_steps=120` a faithful clone of it mostly fails, and one that
pushes harder (gain 1: 105-109 steps) succeeds: the room post-training has to find.
The run it is for (per seed N: ~1 CPU-minute of ACT BC, 143 ms a step at batch 256 on one
thread at load 29, 40x the MLP chunk policy; then PPO for up to 10 minutes):

    fleet train robot=gym robot.task=MountainCarContinuous-v0 robot.termination=success \
        robot.max_episode_steps=120 policy=act pretrain.data=OUT pretrain.bc.steps=400 \
        learner.batch_calls=64 train.env_steps=30000 train.max_wall_s=600 eval.episodes=20 \
        run.seed=N run.name=mc-act-N
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--gain", type=float, default=0.6)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = gym.make("MountainCarContinuous-v0", max_episode_steps=400)
    rng = np.random.default_rng(0)
    for e in range(args.episodes):
        obs, _ = env.reset(seed=e)
        states, actions = [obs], []
        while True:
            a = np.clip(args.gain * np.sign(obs[1] or 1.0) + rng.normal(0, 0.1), -1, 1)
            obs, _, term, trunc, _ = env.step(np.array([a], np.float32))
            states.append(obs)
            actions.append([a])
            if term or trunc:
                break
        np.savez(args.out / f"ep{e}.npz", **{"obs.state": np.asarray(states, np.float32),
                                            "action": np.asarray(actions, np.float32)})
        print(f"episode {e}: {len(actions)} steps, reached the flag: {term}")


if __name__ == "__main__":
    main()
